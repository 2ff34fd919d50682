"""Readers and writers of the datasets' real on-disk formats.

Shared by the loaders, the tests' data factory and the demo generator, so that every file our
code writes is read back by the same code that reads the official releases:

- Ref-YouTube-VOS: palette PNG masks (pixel value = object id), JPEG frames,
  `meta_expressions.json`, YouTube-VIS style `instances_*_sub.json` (RLE / polygon segmentations).
- A2D-Sentences: `videoset.csv`, per-frame instance `.h5` files, `a2d_annotation.txt`,
  `a2d_annotation_info.txt`.
- JHMDB-Sentences: `puppet_mask.mat` (`part_mask`), `jhmdb_annotation.txt`.

Every writer is atomic (temporary file + rename). Every reader raises `DataFormatError` naming the
file (and the video / row) when the content is not what the format says.
"""
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import h5py
import numpy as np
import scipy.io
from PIL import Image
from pycocotools import mask as coco_mask

from util.errors import UserError
from util.misc import atomic_write
from util.results import encode_rle

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


def _write_text(path: PathLike, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            f.write(text)
    atomic_write(path, write)


def _read_json(path: PathLike) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"file not found: {path}") from None
    except json.JSONDecodeError as error:
        raise DataFormatError(f"{path}: not valid JSON ({error})") from None


def _write_json(path: PathLike, obj: Any) -> None:
    _write_text(path, json.dumps(obj))


# ----------------------------------------------------------------------------- Ref-YouTube-VOS
def read_meta_expressions(path: PathLike) -> Dict[str, dict]:
    """Read `meta_expressions.json` -> its `videos` mapping, validated.

    `{vid: {"expressions": {exp_id: {"exp": str, "obj_id": str}}, "frames": [frame names]}}`.
    (The test split's file has no `obj_id`; it is then absent.)
    """
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("videos"), dict):
        raise DataFormatError(f"{path}: expected an object with a 'videos' mapping")
    videos = data["videos"]
    for vid, video in videos.items():
        if not isinstance(video, dict):
            raise DataFormatError(f"{path}: video {vid!r} is not an object")
        frames, expressions = video.get("frames"), video.get("expressions")
        if not isinstance(frames, list) or not all(isinstance(f, str) for f in frames):
            raise DataFormatError(f"{path}: video {vid!r} has no list of frame names")
        if not isinstance(expressions, dict):
            raise DataFormatError(f"{path}: video {vid!r} has no 'expressions' mapping")
        for exp_id, expression in expressions.items():
            if not isinstance(expression, dict) or not isinstance(expression.get("exp"), str):
                raise DataFormatError(f"{path}: video {vid!r} expression {exp_id!r} has no 'exp' text")
            obj_id = expression.get("obj_id")
            if obj_id is not None and not str(obj_id).isdigit():
                raise DataFormatError(f"{path}: video {vid!r} expression {exp_id!r} has a non-integer obj_id {obj_id!r}")
    return videos


def write_meta_expressions(path: PathLike, videos: Dict[str, dict]) -> None:
    """Write `{"videos": videos}` in the official `meta_expressions.json` layout."""
    _write_json(path, {"videos": videos})


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """One VIS segmentation (None, polygons, uncompressed or compressed RLE) -> `[H, W]` uint8 mask."""
    if not segmentation:
        return np.zeros((height, width), dtype=np.uint8)
    if isinstance(segmentation, list):  # polygons: a list of flat [x0, y0, x1, y1, ...] lists
        rles = coco_mask.frPyObjects(segmentation, height, width)
        return coco_mask.decode(coco_mask.merge(rles)).astype(np.uint8)
    if isinstance(segmentation, dict) and "counts" in segmentation:
        if isinstance(segmentation["counts"], list):  # uncompressed RLE
            rle = coco_mask.frPyObjects(segmentation, height, width)
        else:
            counts = segmentation["counts"]
            rle = {"size": list(segmentation["size"]),
                   "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        return coco_mask.decode(rle).astype(np.uint8)
    raise ValueError(f"unknown segmentation type {type(segmentation).__name__}")


def read_vis_instances(path: PathLike) -> Dict[str, Any]:
    """Read a YouTube-VIS style `instances_*_sub.json`, validated.

    Returns `{"videos": [{"id", "file_names", "width", "height", ...}], "annotations": [{"id",
    "video_id", "category_id", "segmentations", "bboxes", "areas", ...}], "categories": [...]}`
    with the lists in file order (the official picks an expression's annotation by its position
    among the video's annotations in that order). Per-frame entries are None where the object is absent.
    """
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list) or not isinstance(data.get("annotations"), list):
        raise DataFormatError(f"{path}: expected an object with 'videos' and 'annotations' lists")
    num_frames = {}
    for video in data["videos"]:
        if not isinstance(video, dict) or not all(k in video for k in ("id", "file_names", "width", "height")):
            raise DataFormatError(f"{path}: every video needs 'id', 'file_names', 'width' and 'height' (got {video!r:.200})")
        num_frames[video["id"]] = len(video["file_names"])
    for annotation in data["annotations"]:
        video_id = annotation.get("video_id") if isinstance(annotation, dict) else None
        if video_id not in num_frames:
            raise DataFormatError(f"{path}: annotation {annotation.get('id') if isinstance(annotation, dict) else annotation!r} names unknown video {video_id!r}")
        for key in ("segmentations", "bboxes"):
            entries = annotation.get(key)
            if not isinstance(entries, list) or len(entries) != num_frames[video_id]:
                raise DataFormatError(f"{path}: annotation {annotation.get('id')} of video {video_id}: '{key}' must list "
                                      f"one entry per frame ({num_frames[video_id]})")
        for box in annotation["bboxes"]:
            if box is not None and len(box) != 4:
                raise DataFormatError(f"{path}: annotation {annotation.get('id')} of video {video_id}: box {box!r} is not xywh")
        if "category_id" not in annotation:
            raise DataFormatError(f"{path}: annotation {annotation.get('id')} of video {video_id} has no category_id")
    data.setdefault("categories", [])
    return data


def vis_annotations_by_video(instances: Dict[str, Any]) -> Dict[Any, List[dict]]:
    """`{video id: [annotations of that video in file order]}` (what pycocotools' YTVOS getAnnIds gives)."""
    by_video: Dict[Any, List[dict]] = {video["id"]: [] for video in instances["videos"]}
    for annotation in instances["annotations"]:
        by_video[annotation["video_id"]].append(annotation)
    return by_video


def write_vis_instances(path: PathLike, videos: List[dict], annotations: List[dict],
                        categories: Optional[List[dict]] = None) -> None:
    """Write a YouTube-VIS style instances json (`videos`, `annotations`, `categories`)."""
    _write_json(path, {"info": {}, "licenses": [], "videos": videos, "annotations": annotations,
                       "categories": categories or []})


def vis_annotation_from_masks(annotation_id: int, video_id: int, category_id: int,
                              masks: Sequence[Optional[np.ndarray]]) -> Dict[str, Any]:
    """A VIS annotation from per-frame binary masks (None or empty = absent): RLE, xywh box, area."""
    segmentations, bboxes, areas = [], [], []
    for mask in masks:
        if mask is None or not np.any(mask):
            segmentations.append(None)
            bboxes.append(None)
            areas.append(None)
            continue
        rle = encode_rle(mask)
        segmentations.append(rle)
        bboxes.append([float(v) for v in coco_mask.toBbox(rle)])
        areas.append(int(coco_mask.area(rle)))
    return {"id": annotation_id, "video_id": video_id, "category_id": category_id, "iscrowd": 0,
            "segmentations": segmentations, "bboxes": bboxes, "areas": areas,
            "height": int(masks[0].shape[0]) if masks and masks[0] is not None else None,
            "width": int(masks[0].shape[1]) if masks and masks[0] is not None else None}


# ----------------------------------------------------------------------------- A2D-Sentences
A2D_TRAIN_SPLIT, A2D_TEST_SPLIT = 0, 1
_VIDEOSET_COLUMNS = 9


@dataclass
class A2DVideo:
    """One row of `videoset.csv` (no header): id, label, start, end, height, width, frames, annotated, split."""

    video_id: str
    label: int
    start: str
    end: str
    height: int
    width: int
    num_frames: int
    num_annotated_frames: int
    split: int  # 0 train, 1 test


def read_videoset_csv(path: PathLike) -> Dict[str, A2DVideo]:
    """`videoset.csv` -> `{video_id: A2DVideo}` in file order."""
    videos: Dict[str, A2DVideo] = {}
    try:
        with open(path, newline="") as f:
            for line_number, row in enumerate(csv.reader(f), start=1):
                if not row:
                    continue
                if len(row) != _VIDEOSET_COLUMNS:
                    raise DataFormatError(f"{path}:{line_number}: expected {_VIDEOSET_COLUMNS} columns, got {len(row)}")
                try:
                    videos[row[0]] = A2DVideo(row[0], int(row[1]), row[2], row[3], int(row[4]), int(row[5]),
                                              int(row[6]), int(row[7]), int(row[8]))
                except ValueError:
                    raise DataFormatError(f"{path}:{line_number}: non-integer field in {row}") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"A2D videoset file not found: {path}") from None
    return videos


def write_videoset_csv(path: PathLike, videos: Sequence[A2DVideo]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for v in videos:
        writer.writerow([v.video_id, v.label, v.start, v.end, v.height, v.width, v.num_frames,
                         v.num_annotated_frames, v.split])
    _write_text(path, buffer.getvalue())


@dataclass
class A2DFrameAnnotation:
    """The instances of one annotated A2D frame (one `.h5`), in our orientation.

    `instance_ids [N]` int, `masks [N, H, W]` uint8, `boxes [N, 4]` float32 (x0, y0, x1, y1 in pixels),
    `class_ids [N]` int (A2D actor-action labels). A few release files disagree on N between their
    datasets; they are read as they are (`count_mismatch` says so) and indexed by instance position.
    """

    instance_ids: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    class_ids: np.ndarray

    def counts(self) -> Dict[str, int]:
        """The instance count of each on-disk dataset."""
        return {"instance": len(self.instance_ids), "reMask": len(self.masks), "reBBox": len(self.boxes),
                "id": len(self.class_ids)}

    def count_mismatch(self) -> Optional[str]:
        """'instance 2, reMask 3, reBBox 3, id 3' when the datasets disagree on the instance count, else None."""
        counts = self.counts()
        if len(set(counts.values())) == 1:
            return None
        return ", ".join(f"{name} {count}" for name, count in counts.items())


def read_a2d_h5(path: PathLike) -> A2DFrameAnnotation:
    """Read an `a2d_annotation_with_instances/<vid>/<frame>.h5` file.

    On disk (MATLAB v7.3 layout): `reMask` is `[W, H]` for one instance or `[N, W, H]` (transposed),
    `reBBox` is `[4, N]`, `id` is `[1, N]`, `instance` holds N instance ids.
    """
    try:
        with h5py.File(path, mode="r") as f:
            missing = [k for k in ("instance", "reMask", "reBBox", "id") if k not in f]
            if missing:
                raise DataFormatError(f"{path}: missing datasets {missing}")
            instance_ids = np.asarray(f["instance"]).reshape(-1).astype(np.int64)
            masks = np.asarray(f["reMask"])
            boxes = np.asarray(f["reBBox"], dtype=np.float32)
            class_ids = np.asarray(f["id"]).reshape(-1).astype(np.int64)
    except FileNotFoundError:
        raise FileNotFoundError(f"A2D annotation not found: {path}") from None
    except OSError as error:
        raise DataFormatError(f"{path}: not a readable HDF5 file ({error})") from None
    if masks.ndim == 2:  # MATLAB drops the instance axis when there is one instance
        masks = masks[None]
    if masks.ndim != 3:
        raise DataFormatError(f"{path}: reMask must be [W, H] or [N, W, H], got {masks.shape}")
    masks = np.ascontiguousarray(masks.transpose(0, 2, 1)).astype(np.uint8)  # [N, W, H] -> [N, H, W]
    if boxes.ndim != 2 or boxes.shape[0] != 4:
        raise DataFormatError(f"{path}: reBBox must be [4, N], got {boxes.shape}")
    return A2DFrameAnnotation(instance_ids, masks, np.ascontiguousarray(boxes.T), class_ids)


def write_a2d_h5(path: PathLike, annotation: A2DFrameAnnotation) -> None:
    """Write an A2D instance `.h5` in the on-disk layout `read_a2d_h5` documents."""
    masks = np.asarray(annotation.masks, dtype=np.uint8)
    stored_masks = masks.transpose(0, 2, 1)  # [N, H, W] -> [N, W, H], as stored
    if stored_masks.shape[0] == 1:
        stored_masks = stored_masks[0]

    def write(tmp: str) -> None:
        with h5py.File(tmp, mode="w") as f:
            f.create_dataset("instance", data=np.asarray(annotation.instance_ids, dtype=np.float64).reshape(-1, 1))
            f.create_dataset("reMask", data=stored_masks)
            f.create_dataset("reBBox", data=np.asarray(annotation.boxes, dtype=np.float64).reshape(-1, 4).T)
            f.create_dataset("id", data=np.asarray(annotation.class_ids, dtype=np.float64).reshape(1, -1))
    atomic_write(path, write)


@dataclass
class A2DQuery:
    """One row of `a2d_annotation.txt` (header `video_id,instance_id,query`)."""

    video_id: str
    instance_id: str  # kept as text: the release has an id "1 (copy)"
    query: str


@dataclass
class A2DSample:
    """One row of `a2d_annotation_info.txt`: `frame_idx` is 0-based; its h5 is `%05d.h5 % (frame_idx + 1)`."""

    video_id: str
    instance_id: str
    frame_idx: int
    query: str


def _read_csv_rows(path: PathLike, required: Sequence[str]) -> List[Dict[str, str]]:
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise DataFormatError(f"{path}: header lacks columns {missing} (has {reader.fieldnames})")
            return list(reader)
    except FileNotFoundError:
        raise FileNotFoundError(f"annotation file not found: {path}") from None


def _write_csv_rows(path: PathLike, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    _write_text(path, buffer.getvalue())


def read_a2d_annotations(path: PathLike) -> List[A2DQuery]:
    return [A2DQuery(r["video_id"], r["instance_id"], r["query"])
            for r in _read_csv_rows(path, ("video_id", "instance_id", "query"))]


def write_a2d_annotations(path: PathLike, queries: Sequence[A2DQuery]) -> None:
    _write_csv_rows(path, ("video_id", "instance_id", "query"), [(q.video_id, q.instance_id, q.query) for q in queries])


def read_a2d_annotation_info(path: PathLike) -> List[A2DSample]:
    samples = []
    for line_number, r in enumerate(_read_csv_rows(path, ("video_id", "instance_id", "frame_idx", "query")), start=2):
        try:
            frame_idx = int(r["frame_idx"])
        except ValueError:
            raise DataFormatError(f"{path}:{line_number}: frame_idx {r['frame_idx']!r} is not an integer") from None
        samples.append(A2DSample(r["video_id"], r["instance_id"], frame_idx, r["query"]))
    return samples


def write_a2d_annotation_info(path: PathLike, samples: Sequence[A2DSample]) -> None:
    _write_csv_rows(path, ("video_id", "instance_id", "frame_idx", "query"),
                    [(s.video_id, s.instance_id, s.frame_idx, s.query) for s in samples])


# ----------------------------------------------------------------------------- JHMDB-Sentences
def read_puppet_mask(path: PathLike) -> np.ndarray:
    """`puppet_mask.mat` -> `part_mask [H, W, frames]` uint8."""
    try:
        data = scipy.io.loadmat(str(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"JHMDB puppet mask not found: {path}") from None
    # scipy reports a truncated or corrupt file as MatReadError, zlib.error, IndexError, TypeError, ...
    # depending on where it breaks: any failure of its parser means this file cannot be read.
    except Exception as error:
        raise DataFormatError(f"{path}: not a readable .mat file ({error})") from None
    if "part_mask" not in data:
        raise DataFormatError(f"{path}: no 'part_mask' variable")
    part_mask = np.asarray(data["part_mask"])
    if part_mask.ndim == 2:  # MATLAB drops a trailing singleton frame axis
        part_mask = part_mask[:, :, None]
    if part_mask.ndim != 3:
        raise DataFormatError(f"{path}: part_mask must be [H, W, frames], got {part_mask.shape}")
    return part_mask.astype(np.uint8)


def write_puppet_mask(path: PathLike, part_mask: np.ndarray) -> None:
    part_mask = np.asarray(part_mask, dtype=np.uint8)
    if part_mask.ndim != 3:
        raise ValueError(f"{path}: part_mask must be [H, W, frames], got {part_mask.shape}")

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            scipy.io.savemat(f, {"part_mask": part_mask}, do_compression=True)
    atomic_write(path, write)


@dataclass
class JHMDBQuery:
    """One row of `jhmdb_annotation.txt` (header `video_id,query`)."""

    video_id: str
    query: str


def read_jhmdb_annotations(path: PathLike) -> List[JHMDBQuery]:
    return [JHMDBQuery(r["video_id"], r["query"]) for r in _read_csv_rows(path, ("video_id", "query"))]


def write_jhmdb_annotations(path: PathLike, queries: Sequence[JHMDBQuery]) -> None:
    _write_csv_rows(path, ("video_id", "query"), [(q.video_id, q.query) for q in queries])


def read_json(path: PathLike) -> Any:
    """Any JSON file (e.g. JHMDB `video_info.json`), with errors naming the file."""
    return _read_json(path)


def write_json(path: PathLike, obj: Any) -> None:
    _write_json(path, obj)
