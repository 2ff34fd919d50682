"""Tiny datasets in the REAL on-disk formats, for the tests and the demo (written with the datasets' own writers).

    make_ytvos(root, ...)  -> Ref-YouTube-VOS: JPEG frames, palette PNG masks, meta_expressions.json,
                              meta.json, <video>_<exp_id>.npy audio, optionally ann/instances_train_sub.json
    make_a2d(root, ...)    -> A2D-Sentences: videoset.csv, pngs320H PNG frames, instance .h5 files,
                              a2d_annotation.txt (+ a2d_annotation_info.txt), <video>_<instance>.npy audio
    make_jhmdb(root, ...)  -> JHMDB-Sentences: Rename_Images PNG frames, puppet_mask.mat, jhmdb_annotation.txt,
                              video_info.json, <video>.npy audio

Every function returns a dict of what it wrote (paths, names, ground-truth boxes). Frames are checkable:
the background's blue channel encodes the frame index (`background_colour`) and object k is a solid
rectangle of colour `OBJECT_COLOURS[k]`, moving one pixel per frame (`object_box`); its mask is exactly
that rectangle. Audio features are random `(frames, 39)` float64 arrays (their content is not checked).
"""
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

from datasets.a2d_format import (A2D_TEST_SPLIT, A2D_TRAIN_SPLIT, A2DFrameAnnotation, A2DQuery, A2DSample, A2DVideo,
                                  write_a2d_annotation_info, write_a2d_annotations, write_a2d_h5, write_videoset_csv)
from datasets.formats import write_jpeg, write_json, write_npy, write_palette_png, write_png
from datasets.jhmdb_format import JHMDBQuery, write_jhmdb_annotations, write_puppet_mask
from datasets.ytvos_format import vis_annotation_from_masks, write_meta_expressions, write_vis_instances
from main import get_args_parser

PathLike = Union[str, Path]
Box = Tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1 / y1 exclusive

OBJECT_COLOURS = {1: (230, 30, 30), 2: (30, 230, 30)}  # object k: channel k-1 bright
AUDIO_FEATURE_DIM = 39
BACKGROUND_BLUE_START, BACKGROUND_BLUE_STEP = 40, 12
YTVOS_FRAME_STEP = 5  # the release names annotated frames 00000, 00005, ...


def background_colour(frame_index: int) -> Tuple[int, int, int]:
    """Background of frame `frame_index`: its blue channel encodes the index (up to 17 frames apart)."""
    return (20, 20, BACKGROUND_BLUE_START + BACKGROUND_BLUE_STEP * frame_index)


def frame_index_from_blue(blue: float) -> int:
    """Inverse of `background_colour` (blue in 0..255)."""
    return int(round((blue - BACKGROUND_BLUE_START) / BACKGROUND_BLUE_STEP))


def object_box(obj_id: int, frame_index: int, height: int, width: int) -> Box:
    """Object `obj_id` in frame `frame_index`: a rectangle in its own part of the frame, moving right."""
    box_w, box_h = max(2, width // 4), max(2, height // 3)
    x0 = 1 + frame_index % 4 + (obj_id - 1) * (width // 2)
    y0 = 2 + (obj_id - 1) * (height // 3)
    return (x0, y0, min(width, x0 + box_w), min(height, y0 + box_h))


def draw_frame(frame_index: int, boxes: Dict[int, Optional[Box]], height: int, width: int):
    """-> (rgb [H, W, 3] uint8, labels [H, W] uint8 object ids)."""
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    rgb[:] = background_colour(frame_index)
    labels = np.zeros((height, width), dtype=np.uint8)
    for obj_id, box in boxes.items():
        if box is None:
            continue
        x0, y0, x1, y1 = box
        rgb[y0:y1, x0:x1] = OBJECT_COLOURS[obj_id]
        labels[y0:y1, x0:x1] = obj_id
    return rgb, labels


def write_audio(path: PathLike, num_audio_frames: int, seed: int) -> None:
    write_npy(path, np.random.default_rng(seed).standard_normal((num_audio_frames, AUDIO_FEATURE_DIM)))


def _object_boxes(obj_ids: Sequence[int], frame_index: int, absent: Dict[int, Sequence[int]], height: int,
                  width: int) -> Dict[int, Optional[Box]]:
    return {k: None if frame_index in absent.get(k, ()) else object_box(k, frame_index, height, width)
            for k in obj_ids}


# ----------------------------------------------------------------------------- Ref-YouTube-VOS
def make_ytvos(root: PathLike, audio_root: Optional[PathLike] = None, num_videos: int = 2,
               num_frames: Union[int, Sequence[int]] = 5, height: int = 24, width: int = 32,
               absent: Optional[Dict[int, Sequence[int]]] = None, split: str = "train",
               vis_file: bool = False, audio_frames: int = 12, test_videos: Sequence[int] = ()) -> dict:
    """A Ref-YouTube-VOS split with `num_videos` videos `vid000, vid001, ...` of `num_frames` frames each
    (an int or one count per video). Objects 1 and 2, expression "0" -> object 1, "1" -> object 2.
    `absent` = {obj_id: frame indices where the object is missing} (default: object 2 absent in frame 0).
    `vis_file` also writes `ann/instances_train_sub.json` (YouTube-VIS style) from the same masks; with
    `test_videos` (video indices) those videos go to `ann/instances_test_sub.json` instead, the official split.

    Returns {"root", "audio_root", "ann_file" ('' if none), "test_ann_file" ('' if none), "videos": {name:
    {"frames": [names], "boxes": {obj_id: [box or None per frame]}}}}.
    """
    root = Path(root)
    audio_root = Path(audio_root) if audio_root is not None else root / "audio_feature"
    absent = {2: [0]} if absent is None else absent
    counts = [num_frames] * num_videos if isinstance(num_frames, int) else list(num_frames)
    obj_ids = (1, 2)
    meta_expressions, meta, info = {}, {}, {"root": str(root), "audio_root": str(audio_root), "videos": {}}
    vis_videos, vis_annotations, held_out = [], [], set(test_videos)
    for v, count in enumerate(counts):
        name = f"vid{v:03d}"
        frame_names = [f"{i * YTVOS_FRAME_STEP:05d}" for i in range(count)]
        boxes = {k: [] for k in obj_ids}
        masks = {k: [] for k in obj_ids}
        for i, frame in enumerate(frame_names):
            frame_boxes = _object_boxes(obj_ids, i, absent, height, width)
            rgb, labels = draw_frame(i, frame_boxes, height, width)
            write_jpeg(root / split / "JPEGImages" / name / f"{frame}.jpg", rgb)
            write_palette_png(root / split / "Annotations" / name / f"{frame}.png", labels)
            for k in obj_ids:
                boxes[k].append(frame_boxes[k])
                masks[k].append(labels == k)
        expressions = {str(k - 1): {"exp": f"the {'red' if k == 1 else 'green'} square", "obj_id": str(k)}
                       for k in obj_ids}
        meta_expressions[name] = {"expressions": expressions, "frames": frame_names}
        meta[name] = {"objects": {str(k): {"category": "square",
                                           "frames": [f for f, b in zip(frame_names, boxes[k]) if b is not None]}
                                  for k in obj_ids}}
        for exp_id in expressions:
            write_audio(audio_root / f"{name}_{exp_id}.npy", audio_frames + v, seed=v * 10 + int(exp_id))
        vis_videos.append({"id": v + 1, "file_names": [f"{name}/{f}.jpg" for f in frame_names],
                           "width": width, "height": height, "length": count})
        for k in obj_ids:
            vis_annotations.append(vis_annotation_from_masks(len(vis_annotations) + 1, v + 1, k, masks[k]))
        info["videos"][name] = {"frames": frame_names, "boxes": boxes}
    write_meta_expressions(root / "meta_expressions" / split / "meta_expressions.json", meta_expressions)
    write_json(root / split / "meta.json", {"videos": meta})
    info["ann_file"] = info["test_ann_file"] = ""
    if vis_file:
        categories = [{"id": k, "name": f"obj{k}"} for k in obj_ids]
        for key, part, keep in (("ann_file", split, False), ("test_ann_file", "test", True)):
            ids = {v + 1 for v in range(len(counts)) if (v in held_out) == keep}
            if ids:
                info[key] = str(root / "ann" / f"instances_{part}_sub.json")
                write_vis_instances(info[key], [v for v in vis_videos if v["id"] in ids],
                                    [a for a in vis_annotations if a["video_id"] in ids], categories)
    return info


# ----------------------------------------------------------------------------- A2D-Sentences
def make_a2d(root: PathLike, audio_root: Optional[PathLike] = None, num_frames: int = 9, height: int = 24,
             width: int = 32, annotated: Sequence[int] = (0, 4, 8), splits: Sequence[int] = (A2D_TRAIN_SPLIT, A2D_TEST_SPLIT),
             write_info: bool = True, audio_frames: int = 12) -> dict:
    """A2D-Sentences with one video per entry of `splits` (`a2dvid0, ...`; 0 = train, 1 = test), each of
    `num_frames` frames, instances 1 and 2 (class ids 11 and 22) annotated on the 0-based frames `annotated`.
    Writes `a2d_annotation.txt` and, if `write_info`, `a2d_annotation_info.txt` (one sample per video,
    instance and annotated frame).

    Returns {"root", "audio_root", "videos": {id: {"split", "boxes": {instance: {frame: box}}}}, "samples": [A2DSample]}.
    """
    root = Path(root)
    audio_root = Path(audio_root) if audio_root is not None else root / "a2d_j_audio_feature"
    instance_ids, class_ids = (1, 2), (11, 22)
    videos, queries, samples = [], [], []
    info = {"root": str(root), "audio_root": str(audio_root), "videos": {}}
    for v, split in enumerate(splits):
        video_id = f"a2dvid{v}"
        videos.append(A2DVideo(video_id, class_ids[0], "0", "1", height, width, num_frames, len(annotated), split))
        boxes = {k: {} for k in instance_ids}
        for i in range(num_frames):
            frame_boxes = _object_boxes(instance_ids, i, {}, height, width)
            rgb, labels = draw_frame(i, frame_boxes, height, width)
            write_png(root / "Release" / "pngs320H" / video_id / f"{i + 1:05d}.png", rgb)
            if i in annotated:
                masks = np.stack([(labels == k).astype(np.uint8) for k in instance_ids])
                write_a2d_h5(root / "a2d_annotation_with_instances" / video_id / f"{i + 1:05d}.h5",
                             A2DFrameAnnotation(np.asarray(instance_ids), masks,
                                                np.asarray([frame_boxes[k] for k in instance_ids], dtype=np.float32),
                                                np.asarray(class_ids)))
                for k in instance_ids:
                    boxes[k][i] = frame_boxes[k]
        for k in instance_ids:
            query = f"the {'red' if k == 1 else 'green'} thing in {video_id}"
            queries.append(A2DQuery(video_id, str(k), query))
            samples += [A2DSample(video_id, str(k), i, query) for i in annotated]
            write_audio(audio_root / f"{video_id}_{k}.npy", audio_frames + k, seed=100 + v * 10 + k)
        info["videos"][video_id] = {"split": split, "boxes": boxes}
    write_videoset_csv(root / "Release" / "videoset.csv", videos)
    write_a2d_annotations(root / "a2d_annotation.txt", queries)
    if write_info:
        write_a2d_annotation_info(root / "a2d_annotation_info.txt", samples)
    info["samples"] = samples
    return info


# ----------------------------------------------------------------------------- JHMDB-Sentences
def make_jhmdb(root: PathLike, audio_root: Optional[PathLike] = None, num_videos: int = 2, num_frames: int = 12,
               height: int = 24, width: int = 32, class_name: str = "clap", mask_frames: Optional[int] = None,
               write_video_info: bool = True, audio_frames: int = 12) -> dict:
    """JHMDB-Sentences with `num_videos` videos `jvid0, ...` of class `class_name`, object 1 in every
    frame. `mask_frames` makes the .mat shorter than the video (the official clamps to its last frame).

    Returns {"root", "audio_root", "videos": {id: {"class", "boxes": [box per frame]}}}.
    """
    root = Path(root)
    audio_root = Path(audio_root) if audio_root is not None else root / "a2d_j_audio_feature"
    info = {"root": str(root), "audio_root": str(audio_root), "videos": {}}
    queries, video_info = [], {}
    for v in range(num_videos):
        video_id = f"jvid{v}"
        part_mask, boxes, frame_names = [], [], []
        for i in range(num_frames):
            frame_boxes = {1: object_box(1, i, height, width)}
            rgb, labels = draw_frame(i, frame_boxes, height, width)
            frame_names.append(f"{i + 1:05d}.png")
            write_png(root / "Rename_Images" / class_name / video_id / frame_names[-1], rgb)
            part_mask.append(labels == 1)
            boxes.append(frame_boxes[1])
        part_mask = np.stack(part_mask[:mask_frames or num_frames], axis=-1).astype(np.uint8)  # [H, W, frames]
        write_puppet_mask(root / "puppet_mask" / class_name / video_id / "puppet_mask.mat", part_mask)
        queries.append(JHMDBQuery(video_id, f"the person in {video_id}"))
        video_info[video_id] = {"class": class_name, "frames": frame_names}
        write_audio(audio_root / f"{video_id}.npy", audio_frames, seed=200 + v)
        info["videos"][video_id] = {"class": class_name, "boxes": boxes}
    write_jhmdb_annotations(root / "jhmdb_annotation.txt", queries)
    if write_video_info:
        write_json(root / "video_info.json", video_info)
    return info


def dataset_args(**overrides):
    """The shared parser's defaults with `overrides` (e.g. ytvos_path=..., num_frames=3) as a Namespace."""
    args = get_args_parser().parse_args([])
    for key, value in overrides.items():
        if not hasattr(args, key):
            raise AttributeError(f"the parser has no option {key!r}")
        setattr(args, key, value)
    return args
