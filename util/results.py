"""Ref-YouTube-VOS `results.json`: per-frame RLE masks of every (video, expression), read and written.

The official layout is a list of `{"video_id": int, "obj_id": int, "file_name": vid,
"segmentations": [COCO RLE per frame]}` (docs/protocol.md §7); our entries also carry `exp_id`, the key
of the expression in `meta_expressions.json`, because several expressions can share one object, and
`frames`, the frame names in the order of `segmentations` (optional: files written before it lack it).
RLE `counts` are stored as str so that the file is plain JSON. `file_name`, `exp_id` and the frame names
become file names (`util.names`): one that is a path is refused where the file is read.
"""
import json
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
from pycocotools import mask as mask_utils

from util.errors import UserError
from util.misc import atomic_json_dump
from util.names import name_problem

PathLike = Union[str, Path]
RESULT_KEYS = ("video_id", "obj_id", "file_name", "exp_id", "segmentations")
FRAMES_KEY = "frames"  # optional: the frame names, one per segmentation
# The compressed COCO RLE alphabet: characters 48 + (5 value bits | 0x20 "more follows").
_RLE_CHAR_OFFSET = 48
_RLE_CHUNK_MAX = 0x3F
_RLE_MORE_BIT = 0x20
_RLE_SIGN_BIT = 0x10
_RLE_VALUE_BITS = 0x1F
_RLE_BITS_PER_CHUNK = 5
_RLE_MAX_CHUNKS = 12  # 60 bits: far beyond any mask, and no int64 overflow
_PYCOCOTOOLS_NUMPY2_WARNING = "__array__ implementation doesn't accept a copy keyword"


class ResultsFormatError(UserError, ValueError):
    """A results.json entry does not follow the format (the message names the file and the entry)."""


def encode_masks(masks: np.ndarray) -> List[Dict[str, Any]]:
    """Binary masks `[N, H, W]` -> N COCO RLEs `{"size": [H, W], "counts": str}`."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"expected masks [N, H, W], got shape {masks.shape}")
    # pycocotools wants Fortran-ordered [H, W, N] uint8
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in rles]


def encode_rle(mask: np.ndarray) -> Dict[str, Any]:
    """One binary mask `[H, W]` -> its COCO RLE `{"size": [H, W], "counts": str}`."""
    return encode_masks(np.asarray(mask)[None])[0]


def decode_masks(rles: Sequence[Dict[str, Any]]) -> np.ndarray:
    """RLEs of one size (str or bytes `counts`) -> boolean masks `[N, H, W]`."""
    if len(rles) == 0:
        raise ValueError("decode_masks needs at least one RLE (the size comes from them)")
    coco_rles = [{"size": list(rle["size"]),
                  "counts": rle["counts"].encode("ascii") if isinstance(rle["counts"], str) else rle["counts"]}
                 for rle in rles]
    with warnings.catch_warnings():  # pycocotools' own NumPy 2 deprecation, nothing a user can act on
        warnings.filterwarnings("ignore", message=_PYCOCOTOOLS_NUMPY2_WARNING, category=DeprecationWarning)
        masks = mask_utils.decode(coco_rles)  # [H, W, N]
    return np.ascontiguousarray(masks.transpose(2, 0, 1)).astype(bool)


def rle_run_lengths(counts: str) -> np.ndarray:
    """The run lengths of a compressed COCO RLE string (pycocotools' `rleFrString`, vectorised).

    Each count is a little-endian sequence of 5-bit chunks, one per character (value + 48), bit 0x20
    meaning "more chunks follow" and bit 0x10 of the last chunk the sign; from the fourth count on,
    each is stored as the difference to the count two places earlier. Raises ValueError when the
    string is not such a sequence or a run length comes out negative.
    """
    chunks = np.frombuffer(counts.encode("ascii"), dtype=np.uint8).astype(np.int64) - _RLE_CHAR_OFFSET
    if chunks.size == 0:
        raise ValueError("empty RLE counts")
    if chunks.min() < 0 or chunks.max() > _RLE_CHUNK_MAX:
        raise ValueError("RLE counts hold characters outside the compressed alphabet")
    continues = (chunks & _RLE_MORE_BIT) != 0
    if continues[-1]:
        raise ValueError("RLE counts end in the middle of a number")
    ends = np.flatnonzero(~continues)  # last chunk of each number
    starts = np.concatenate([[0], ends[:-1] + 1])
    number = np.repeat(np.arange(len(ends)), ends - starts + 1)  # which number each chunk belongs to
    chunk_index = np.arange(len(chunks)) - starts[number]
    if chunk_index.max() >= _RLE_MAX_CHUNKS:
        raise ValueError("RLE counts hold a number too large for a mask")
    values = np.zeros(len(ends), dtype=np.int64)
    np.add.at(values, number, (chunks & _RLE_VALUE_BITS) << (_RLE_BITS_PER_CHUNK * chunk_index))
    negative = (chunks[ends] & _RLE_SIGN_BIT) != 0
    values[negative] -= np.int64(1) << (_RLE_BITS_PER_CHUNK * (chunk_index[ends][negative] + 1))
    # undo the differences: counts 3, 5, 7, ... accumulate from count 1; counts 4, 6, ... from count 2
    values[1::2] = np.cumsum(values[1::2])
    values[2::2] = np.cumsum(values[2::2])
    if values.min() < 0:
        raise ValueError("RLE counts decode to a negative run length")
    return values


def make_entry(video_id: int, obj_id: int, file_name: str, exp_id: str, masks: np.ndarray,
               frames: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """One results.json entry from the masks `[num_frames, H, W]` of one expression; with `frames` (their names,
    in the order of the masks) recorded under `frames`."""
    entry = {"video_id": int(video_id), "obj_id": int(obj_id), "file_name": str(file_name),
             "exp_id": str(exp_id), "segmentations": encode_masks(masks)}
    if frames is not None:
        entry[FRAMES_KEY] = [str(name) for name in frames]
    return entry


def write_results(path: PathLike, entries: Sequence[Dict[str, Any]]) -> None:
    """Validate `entries` and write them as results.json atomically."""
    for index, entry in enumerate(entries):
        validate_entry(entry, index, path)
    atomic_json_dump(list(entries), path)


def validate_results(entries: Any, source: str = "results") -> List[Dict[str, Any]]:
    """Validate in-memory entries (`source` names them in errors) -> copies with `exp_id` as str."""
    if not isinstance(entries, (list, tuple)):
        raise ResultsFormatError(f"{source}: expected a list of entries, got {type(entries).__name__}")
    validated = []
    for index, entry in enumerate(entries):
        validate_entry(entry, index, source)
        validated.append({**entry, "exp_id": str(entry["exp_id"])})
    return validated


def read_results(path: PathLike) -> List[Dict[str, Any]]:
    """Read and validate results.json -> entries (`exp_id` as str, `obj_id`/`video_id` as int)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"results file not found: {path}") from None
    except json.JSONDecodeError as error:
        raise ResultsFormatError(f"{path}: not valid JSON ({error})") from None
    except UnicodeDecodeError as error:
        raise ResultsFormatError(f"{path}: not UTF-8 text ({error.reason} at byte "
                                 f"{error.start})") from None
    if not isinstance(entries, list):
        raise ResultsFormatError(f"{path}: expected a list of entries, got {type(entries).__name__}")
    return validate_results(entries, str(path))


def describe_entry(entry: Dict[str, Any], index: int) -> str:
    """'entry 3 (video 'abc', expression '1')' for error messages."""
    if not isinstance(entry, dict):
        return f"entry {index}"
    return f"entry {index} (video {entry.get('file_name')!r}, expression {entry.get('exp_id')!r})"


def validate_entry(entry: Any, index: int, path: PathLike) -> None:
    """Check the keys, types and RLEs of one entry; raise `ResultsFormatError` naming it."""
    where = f"{path}: {describe_entry(entry, index)}"
    if not isinstance(entry, dict):
        raise ResultsFormatError(f"{where}: expected an object, got {type(entry).__name__}")
    missing = [key for key in RESULT_KEYS if key not in entry]
    if missing:
        hint = " (official results files lack exp_id; ours add it)" if missing == ["exp_id"] else ""
        raise ResultsFormatError(f"{where}: missing keys {missing}{hint}")
    for key in ("video_id", "obj_id"):
        if not _is_int(entry[key]):
            raise ResultsFormatError(f"{where}: '{key}' must be an integer, got {entry[key]!r}")
    if not isinstance(entry["file_name"], str) or not entry["file_name"]:
        raise ResultsFormatError(f"{where}: 'file_name' must be the video name, got {entry['file_name']!r}")
    if not (isinstance(entry["exp_id"], str) or _is_int(entry["exp_id"])):
        raise ResultsFormatError(f"{where}: 'exp_id' must be the expression key, got {entry['exp_id']!r}")
    for key in ("file_name", "exp_id"):
        problem = name_problem(str(entry[key]))
        if problem is not None:
            raise ResultsFormatError(f"{where}: '{key}' {entry[key]!r} {problem}; ids become file names, "
                                     f"so they may not be paths")
    segmentations = entry["segmentations"]
    if not isinstance(segmentations, list):
        raise ResultsFormatError(f"{where}: 'segmentations' must be a list of RLEs, one per frame")
    frames = entry.get(FRAMES_KEY)
    if frames is not None:
        if not isinstance(frames, list) or len(frames) != len(segmentations):
            raise ResultsFormatError(f"{where}: '{FRAMES_KEY}' must list one frame name per segmentation "
                                     f"({len(segmentations)})")
        bad = next((name for name in frames if name_problem(name) is not None), None)
        if bad is not None:
            raise ResultsFormatError(f"{where}: frame name {bad!r} {name_problem(bad)}")
    sizes = set()
    for frame, rle in enumerate(segmentations):
        if not isinstance(rle, dict) or not isinstance(rle.get("counts"), str):
            raise ResultsFormatError(f"{where}: frame {frame}: expected an RLE with str 'counts', got {rle!r:.100}")
        size = rle.get("size")
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(s) and s > 0 for s in size)):
            raise ResultsFormatError(f"{where}: frame {frame}: RLE 'size' must be [H, W], got {size!r}")
        try:
            num_pixels = int(rle_run_lengths(rle["counts"]).sum())
        except ValueError as error:  # also a non-ASCII string
            raise ResultsFormatError(f"{where}: frame {frame}: malformed RLE counts ({error})") from None
        if num_pixels != size[0] * size[1]:
            raise ResultsFormatError(f"{where}: frame {frame}: RLE counts cover {num_pixels} pixels, "
                                     f"its size {size} has {size[0] * size[1]}")
        sizes.add(tuple(size))
    if len(sizes) > 1:
        raise ResultsFormatError(f"{where}: frames have different RLE sizes {sorted(sizes)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
