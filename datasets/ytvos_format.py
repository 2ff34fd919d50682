"""Readers and writers of Ref-YouTube-VOS's own files (the loader is `datasets/ytvos.py`).

`meta_expressions.json` (the referring expressions of every video) and YouTube-VIS style
`instances_*_sub.json` (per-frame RLE / polygon segmentations of every object). The frames and palette PNG
masks use the shared readers of `datasets/formats.py`.
"""
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from pycocotools import mask as coco_mask

from datasets.formats import DataFormatError, PathLike, duplicate_keys, read_json, write_json
from util.names import check_name
from util.results import encode_rle


def read_meta_expressions(path: PathLike) -> Dict[str, dict]:
    """Read `meta_expressions.json` -> its `videos` mapping, validated.

    `{vid: {"expressions": {exp_id: {"exp": str, "obj_id": str}}, "frames": [frame names]}}`.
    (The test split's file has no `obj_id`; it is then absent.) Video and expression ids and frame names are
    checked as file names (`util.names`), and an id written twice is an error (`json.load` keeps the last).
    """
    data = read_json(path, note_duplicates=True)
    if not isinstance(data, dict) or not isinstance(data.get("videos"), dict):
        raise DataFormatError(f"{path}: expected an object with a 'videos' mapping")
    videos = data["videos"]
    refuse_duplicates(path, "video id", duplicate_keys(videos))
    for vid, video in videos.items():
        check_name(vid, "video id", path)
        if not isinstance(video, dict):
            raise DataFormatError(f"{path}: video {vid!r} is not an object")
        frames, expressions = video.get("frames"), video.get("expressions")
        if not isinstance(frames, list) or not all(isinstance(f, str) for f in frames):
            raise DataFormatError(f"{path}: video {vid!r} has no list of frame names")
        if not frames:
            raise DataFormatError(f"{path}: video {vid!r} lists no frames")
        for frame in frames:
            check_name(frame, f"video {vid!r}: frame name", path)
        if not isinstance(expressions, dict):
            raise DataFormatError(f"{path}: video {vid!r} has no 'expressions' mapping")
        refuse_duplicates(path, f"video {vid!r}: expression id", duplicate_keys(expressions))
        for exp_id, expression in expressions.items():
            check_name(exp_id, f"video {vid!r}: expression id", path)
            if not isinstance(expression, dict) or not isinstance(expression.get("exp"), str):
                raise DataFormatError(f"{path}: video {vid!r} expression {exp_id!r} has no 'exp' text")
            obj_id = expression.get("obj_id")
            if obj_id is not None and not str(obj_id).isdigit():
                raise DataFormatError(f"{path}: video {vid!r} expression {exp_id!r} has a non-integer obj_id {obj_id!r}")
    return videos


def refuse_duplicates(path: PathLike, what: str, duplicates: Sequence[str]) -> None:
    """A `DataFormatError` naming the first of `duplicates` (ids `path` holds twice), when there is one."""
    if duplicates:
        raise DataFormatError(f"{path}: {what} {duplicates[0]!r} appears twice (an id names one thing)")


def read_video_list(path: PathLike) -> List[str]:
    """A text split file: one video id per line (blank lines skipped), each checked as a name and named once."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"split file not found: {path}") from None
    except UnicodeDecodeError as error:
        raise DataFormatError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    names = [check_name(line.strip(), "video id", path) for line in lines if line.strip()]
    refuse_duplicates(path, "video id", [name for name, count in Counter(names).items() if count > 1])
    return names


def write_meta_expressions(path: PathLike, videos: Dict[str, dict]) -> None:
    """Write `{"videos": videos}` in the official `meta_expressions.json` layout."""
    write_json(path, {"videos": videos})


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
    data = read_json(path)
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
    write_json(path, {"info": {}, "licenses": [], "videos": videos, "annotations": annotations,
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


