"""Readers and writers shared by several datasets: images, JSON, CSV tables, `.npy`, and `DataFormatError`.

Each dataset's own files are read and written next to its loader: `datasets/ytvos_format.py`
(Ref-YouTube-VOS), `datasets/a2d_format.py` (A2D-Sentences), `datasets/jhmdb_format.py` (JHMDB-Sentences).
The loaders, the tests' data factory and the demo generator all use these, so that every file our code
writes is read back by the same code that reads the official releases. Shared here: palette PNG masks
(pixel value = object id), JPEG / PNG frames, `.npy` arrays, JSON files, CSV tables with a header row.

Every writer is atomic (temporary file + rename). Every reader raises `DataFormatError` naming the
file (and the video / row) when the content is not what the format says.
"""
import csv
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from util.errors import UserError
from util.misc import atomic_write

PathLike = Union[str, Path]

# JPEG quality of written frames: high so that colour tests survive compression.
JPEG_QUALITY = 95
PALETTE_SIZE = 256


class DataFormatError(UserError, ValueError):
    """A dataset file exists but its content does not follow the format."""


# ----------------------------------------------------------------------------- images
def voc_palette(num_colors: int = PALETTE_SIZE) -> List[int]:
    """The PASCAL VOC / DAVIS colour map (flat `[r0, g0, b0, r1, ...]`) used by the official PNGs."""
    palette = []
    for index in range(num_colors):
        r = g = b = 0
        label = index
        for bit in range(8):
            r |= ((label >> 0) & 1) << (7 - bit)
            g |= ((label >> 1) & 1) << (7 - bit)
            b |= ((label >> 2) & 1) << (7 - bit)
            label >>= 3
        palette += [r, g, b]
    return palette


def write_palette_png(path: PathLike, labels: np.ndarray, palette: Optional[Sequence[int]] = None) -> None:
    """Write `labels [H, W]` (uint8, 0 = background, k = object k) as a palette ("P") PNG."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{path}: expected a [H, W] label map, got shape {labels.shape}")
    if labels.dtype != np.uint8:
        if labels.min(initial=0) < 0 or labels.max(initial=0) >= PALETTE_SIZE:
            raise ValueError(f"{path}: label values must lie in [0, {PALETTE_SIZE - 1}]")
        labels = labels.astype(np.uint8)
    image = Image.fromarray(labels)  # mode L; putpalette makes it P
    image.putpalette(list(palette) if palette is not None else voc_palette())
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def read_palette_png(path: PathLike) -> np.ndarray:
    """Read a palette ("P") or grey ("L") PNG as its raw indices `[H, W]` uint8 (object ids)."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise DataFormatError(f"{path}: expected a palette (P) or greyscale (L) PNG of object ids, "
                                      f"got mode {image.mode}")
            return np.array(image, dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"mask not found: {path}") from None
    except OSError as error:
        raise DataFormatError(f"{path}: cannot decode the mask ({error})") from None


def write_jpeg(path: PathLike, rgb: np.ndarray, quality: int = JPEG_QUALITY) -> None:
    """Write an `[H, W, 3]` uint8 RGB array as a JPEG."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"{path}: expected an [H, W, 3] uint8 RGB array, got {rgb.shape} {rgb.dtype}")
    image = Image.fromarray(rgb)
    atomic_write(path, lambda tmp: image.save(tmp, format="JPEG", quality=quality))


def write_png(path: PathLike, rgb: np.ndarray) -> None:
    """Write an `[H, W, 3]` uint8 RGB array as a lossless PNG (A2D / JHMDB frames)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"{path}: expected an [H, W, 3] uint8 RGB array, got {rgb.shape} {rgb.dtype}")
    image = Image.fromarray(rgb)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def read_rgb(path: PathLike) -> Image.Image:
    """Open a frame as an RGB PIL image (grey / palette / RGBA frames are converted)."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"frame not found: {path}") from None
    except OSError as error:
        raise DataFormatError(f"{path}: cannot decode the image ({error})") from None


def write_npy(path: PathLike, array: np.ndarray) -> None:
    """`np.save` through a temporary file (np.save would append `.npy` to a temporary name)."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)
    atomic_write(path, write)


def write_text(path: PathLike, text: str) -> None:
    """Write `text` as it is (no newline translation)."""
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            f.write(text)
    atomic_write(path, write)


class JSONObject(dict):
    """A JSON object as `read_json(path, note_duplicates=True)` reads it (its `(key, value)` pairs in file order):
    `duplicates` lists the keys it holds more than once (the last value is kept, as `json.load` keeps it silently)."""

    def __init__(self, pairs: List[Tuple[str, Any]]):
        super().__init__(pairs)
        counts = Counter(key for key, _ in pairs)
        self.duplicates: List[str] = [key for key in counts if counts[key] > 1]


def read_json(path: PathLike, note_duplicates: bool = False) -> Any:
    """Any JSON file (e.g. JHMDB `video_info.json`), with errors naming the file. With `note_duplicates` its
    objects are `JSONObject`s that list their repeated keys (`duplicate_keys`)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f, object_pairs_hook=JSONObject if note_duplicates else None)
    except FileNotFoundError:
        raise FileNotFoundError(f"file not found: {path}") from None
    except json.JSONDecodeError as error:
        raise DataFormatError(f"{path}: not valid JSON ({error})") from None
    except UnicodeDecodeError as error:
        raise DataFormatError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def duplicate_keys(obj: Any) -> List[str]:
    """The keys a JSON object read with `note_duplicates` holds more than once ([] for anything else)."""
    return obj.duplicates if isinstance(obj, JSONObject) else []


def write_json(path: PathLike, obj: Any) -> None:
    """`obj` as a JSON file."""
    write_text(path, json.dumps(obj))


# ----------------------------------------------------------------------------- tables
def read_csv_rows(path: PathLike, required: Sequence[str]) -> List[Dict[str, str]]:
    """The rows of a CSV table with a header row (A2D and JHMDB annotation files), which must name `required`."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise DataFormatError(f"{path}: header lacks columns {missing} (has {reader.fieldnames})")
            return list(reader)
    except FileNotFoundError:
        raise FileNotFoundError(f"annotation file not found: {path}") from None


def write_csv_rows(path: PathLike, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A CSV table: `header`, then `rows`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


# ----------------------------------------------------------------------------- masks
