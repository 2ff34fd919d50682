"""Ref-YouTube-VOS (the RVOS part of AVOS) in the official release layout (docs/protocol.md §6).

    <root>/<split>/JPEGImages/<video>/<frame>.jpg
    <root>/<split>/Annotations/<video>/<frame>.png      palette PNG, pixel value = object id
    <root>/<split>/meta.json                            optional: object ids (and categories) per video
    <root>/meta_expressions/<split>/meta_expressions.json
    <root>/ann/instances_{train,test}_sub.json           the official split: training and test videos
    <audio_root>/<video>_<exp_id>.npy                    MFCC-39 (frames, 39)
    <wav_root>/<video>_<exp_id>.wav                      or the recordings (`wav_root`): MFCC-39 on the fly

Targets come from the PNGs (mask = pixels equal to the expression's `obj_id`), or, when `ann_file` is
given, from a YouTube-VIS style `instances_*_sub.json` as the official: its videos (and their frame
lists) define the dataset, and an expression's annotation is the `obj_id`-th annotation of its video.
Both give the same boxes, masks and valid flags. Labels: the VIS `category_id` (0 where absent) with an
`ann_file`; 1 where present / 0 where absent with the PNGs (the release's PNGs carry no category).

Samples: one per (video, frame, expression), the clip ending at that frame (`rvos_clip_indices`).
The official trains on the videos of `ann/instances_train_sub.json`, i.e. without the videos it holds out
for testing (`ann/instances_test_sub.json`). `build` does the same by default: without `--ytvos_ann_file`
it uses `<root>/ann/instances_train_sub.json` (`instances_test_sub.json` for the validation set) when the
file exists; `--ytvos_ann_file none` takes every video of `meta_expressions.json` (for a release without
the split files).
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from datasets.audio.loader import audio_source, check_audio_file
from datasets.common import (ClipDataset, apply_transforms, boxes_from_masks, check_feature, check_frame_sizes,
                             check_items, decode_images, make_target, read_frames, rvos_clip_indices)
from datasets.formats import DataFormatError, read_json, read_palette_png, read_rgb
from datasets.ytvos_format import (decode_segmentation, read_meta_expressions, read_vis_instances, refuse_duplicates,
                                   vis_annotations_by_video)
from datasets.transforms import video_transforms_from_args
from util.config import is_none
from util.names import check_name

PathLike = Union[str, Path]
FRAME_EXTENSION = ".jpg"
MASK_EXTENSION = ".png"
# The official split files `<root>/ann/instances_<part>_sub.json`; the training set uses part 'train', the
# validation set (and inference, evaluation) part 'test'.
SPLIT_FILE_DIR = "ann"
TRAIN_PART, TEST_PART = "train", "test"
IMAGE_SET_PARTS = {"train": TRAIN_PART, "val": TEST_PART}


@dataclass
class RVOSExpression:
    exp_id: str
    text: str
    obj_id: Optional[int]  # None in the test split's file


@dataclass
class RVOSVideo:
    """One video: its frame names (in order) and expressions; `annotations` is the VIS file's list for it."""

    name: str
    frames: List[str]
    expressions: List[RVOSExpression]
    annotations: Optional[List[dict]] = None
    height: Optional[int] = None
    width: Optional[int] = None
    object_ids: Optional[List[int]] = None  # from meta.json when present, else found in the PNGs
    vis_id: Optional[int] = None  # the VIS file's video id (what results.json calls video_id)


def split_paths(root: PathLike, split: str) -> Dict[str, Path]:
    """The release's paths of one split."""
    root = Path(root)
    return {"frames": root / split / "JPEGImages", "masks": root / split / "Annotations",
            "meta": root / split / "meta.json",
            "meta_expressions": root / "meta_expressions" / split / "meta_expressions.json"}


def frame_path(root: PathLike, split: str, video: str, frame: str) -> Path:
    return split_paths(root, split)["frames"] / video / f"{frame}{FRAME_EXTENSION}"


def mask_path(root: PathLike, split: str, video: str, frame: str) -> Path:
    return split_paths(root, split)["masks"] / video / f"{frame}{MASK_EXTENSION}"


def video_frame_paths(root: PathLike, split: str, video: RVOSVideo) -> List[Path]:
    """The JPEG path of every frame of `video`, in order."""
    return [frame_path(root, split, video.name, frame) for frame in video.frames]


def audio_stem(video: str, exp_id: str) -> str:
    """The official name of an expression's recording and features, without suffix."""
    return f"{video}_{exp_id}"


def audio_feature_path(audio_root: PathLike, video: str, exp_id: str) -> Path:
    return Path(audio_root) / f"{audio_stem(video, exp_id)}.npy"


def official_split_file(root: PathLike, part: str) -> Path:
    """`<root>/ann/instances_<part>_sub.json`: the official training ('train') or test ('test') videos."""
    return Path(root) / SPLIT_FILE_DIR / f"instances_{part}_sub.json"


def resolve_split_file(option: str, root: PathLike, part: str) -> Optional[Path]:
    """The file a split option (`--ytvos_ann_file`, `--split_file`) means: the given path; `None` for 'none'
    (every video of the split); when not given, the official split file of `part` if it exists, else `None`."""
    if option and not is_none(option):
        return Path(option)
    if option:  # 'none'
        return None
    official = official_split_file(root, part)
    return official if official.is_file() else None


def _meta_object_ids(meta_path: Path) -> Dict[str, List[int]]:
    """`meta.json` -> {video: [object ids]} ({} when the file is absent)."""
    if not meta_path.is_file():
        return {}
    videos = read_json(meta_path).get("videos")
    if not isinstance(videos, dict):
        raise DataFormatError(f"{meta_path}: expected an object with a 'videos' mapping")
    return {vid: sorted(int(k) for k in (info.get("objects") or {})) for vid, info in videos.items()}


def read_ytvos_videos(root: PathLike, split: str = "train", ann_file: PathLike = "") -> List[RVOSVideo]:
    """The videos of a split with their frames and expressions, in file order.

    Without `ann_file`: every video of `meta_expressions.json`, frames as listed there. With it: the
    videos of the VIS file (frames from its `file_names`), expressions from `meta_expressions.json`.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Ref-YouTube-VOS root {root} does not exist (--ytvos_path)")
    paths = split_paths(root, split)
    meta_expressions = read_meta_expressions(paths["meta_expressions"])
    object_ids = _meta_object_ids(paths["meta"])

    def expressions_of(name: str, info: dict) -> List[RVOSExpression]:
        return [RVOSExpression(str(exp_id), e["exp"], None if e.get("obj_id") is None else int(e["obj_id"]))
                for exp_id, e in info["expressions"].items()]

    if not ann_file:
        return [RVOSVideo(name, list(info["frames"]), expressions_of(name, info), object_ids=object_ids.get(name))
                for name, info in meta_expressions.items()]

    instances = read_vis_instances(ann_file)
    by_video = vis_annotations_by_video(instances)
    videos, seen = [], set()
    for vis_video in instances["videos"]:
        names = {Path(f).parent.name for f in vis_video["file_names"]}
        if len(names) != 1:
            raise DataFormatError(f"{ann_file}: video {vis_video['id']} has file names in several folders {sorted(names)}")
        (name,) = names
        check_name(name, "video id", ann_file)
        if name in seen:
            refuse_duplicates(ann_file, "video id", [name])
        seen.add(name)
        info = meta_expressions.get(name, {"expressions": {}})
        videos.append(RVOSVideo(name, [Path(f).stem for f in vis_video["file_names"]], expressions_of(name, info),
                                annotations=by_video[vis_video["id"]], height=int(vis_video["height"]),
                                width=int(vis_video["width"]), object_ids=object_ids.get(name),
                                vis_id=vis_video["id"]))
    return videos


class RVOSDataset(ClipDataset):
    """Ref-YouTube-VOS clips: item `(clip [T,3,H,W], audio [39,L], target with T entries)`."""

    name = "ytvos"

    def __init__(self, root: PathLike, audio_root: PathLike, num_frames: int, transforms: Optional[Callable] = None,
                 split: str = "train", ann_file: PathLike = "", skip_bad_samples: bool = False,
                 wav_root: PathLike = ""):
        super().__init__(skip_bad_samples)
        self.root, self.split, self.audio_root = Path(root), split, Path(audio_root)
        self.wav_root = wav_root  # recordings instead of features when given
        self.num_frames = num_frames
        self.transforms = transforms
        self.use_vis = bool(ann_file)
        self.ann_file = Path(ann_file) if ann_file else None
        videos = read_ytvos_videos(root, split, ann_file)
        total_videos = len(videos)
        self.videos = check_items(videos, self._check_video, lambda v: f"video {v.name}", skip_bad_samples,
                                  self.name, "videos", self.problems)
        pairs = [(v, e) for v in self.videos for e in v.expressions]
        total_expressions = len(pairs)
        good = {(v.name, e.exp_id) for v, e in check_items(
            pairs, self._check_expression, lambda p: f"video {p[0].name} expression {p[1].exp_id}",
            skip_bad_samples, self.name, "expressions", self.problems)}
        for v in self.videos:
            v.expressions = [e for e in v.expressions if (v.name, e.exp_id) in good]
        self.num_dropped = (total_videos - len(self.videos)) + (total_expressions - len(good))
        # one sample per (video, end frame, expression), in the official order
        self.samples: List[Tuple[int, int, int]] = [
            (video_index, frame, exp_index)
            for video_index, video in enumerate(self.videos)
            for frame in range(len(video.frames))
            for exp_index in range(len(video.expressions))]

    @property
    def videos_source(self) -> str:
        """Which file defined the videos (for the training log)."""
        if self.ann_file is not None:
            return str(self.ann_file)
        return f"{split_paths(self.root, self.split)['meta_expressions']} (every video of the split)"

    # ------------------------------------------------------------------ validation (cheap, at construction)
    def _check_video(self, video: RVOSVideo) -> None:
        if not video.frames:
            raise DataFormatError("lists no frames")
        if not video.expressions:
            raise DataFormatError("has no expression in meta_expressions.json")
        folders = [("frame", split_paths(self.root, self.split)["frames"] / video.name, FRAME_EXTENSION)]
        if not self.use_vis:
            folders.append(("mask", split_paths(self.root, self.split)["masks"] / video.name, MASK_EXTENSION))
        for kind, folder, extension in folders:
            if not folder.is_dir():
                raise FileNotFoundError(f"{kind} folder not found: {folder}")
            present = {p.name for p in folder.iterdir()}
            missing = [f for f in video.frames if f + extension not in present]
            if missing:
                raise FileNotFoundError(f"{len(missing)} {kind} file(s) missing in {folder}, e.g. {missing[0]}{extension}")
        if not self.use_vis and video.object_ids is None:
            # no meta.json: find the object ids in the PNGs (reads the video's masks once)
            ids = set()
            for frame in video.frames:
                ids.update(np.unique(read_palette_png(mask_path(self.root, self.split, video.name, frame))).tolist())
            video.object_ids = sorted(ids - {0})

    def _check_expression(self, pair: Tuple[RVOSVideo, RVOSExpression]) -> None:
        video, expression = pair
        if expression.obj_id is None:
            raise DataFormatError("has no obj_id (a test split's file cannot be trained on)")
        if self.use_vis:
            if not 1 <= expression.obj_id <= len(video.annotations):
                raise DataFormatError(f"names object {expression.obj_id}, but the annotation file has "
                                      f"{len(video.annotations)} annotation(s) for the video")
        elif expression.obj_id not in video.object_ids:
            raise DataFormatError(f"names object {expression.obj_id}, unknown in the video (objects {video.object_ids})")
        check_audio_file(self.audio_path(video.name, expression.exp_id))

    def clip_key(self, index: int) -> Tuple[int, int]:
        video_index, frame, _ = self.samples[index]
        return video_index, frame

    def sample_audio_path(self, index: int) -> Path:
        video_index, _, exp_index = self.samples[index]
        video = self.videos[video_index]
        return self.audio_path(video.name, video.expressions[exp_index].exp_id)

    def audio_path(self, video: str, exp_id: str) -> Path:
        """The expression's recording under `wav_root` when given, else its features under `audio_root`."""
        return audio_source(self.audio_root, self.wav_root, audio_stem(video, exp_id))

    def check_content(self) -> List[str]:
        problems: List[str] = []
        for video in self.videos:
            describe = f"{self.name}: video {video.name}"
            frames = decode_images([frame_path(self.root, self.split, video.name, f) for f in video.frames],
                                   read_rgb, describe, problems)
            size = check_frame_sizes(frames, describe, problems)
            if self.use_vis:
                if size is not None and (video.height, video.width) != size:
                    problems.append(f"{describe}: the annotation file says {video.height}x{video.width}, "
                                    f"the frames are {size[0]}x{size[1]}")
            else:
                masks = decode_images([mask_path(self.root, self.split, video.name, f) for f in video.frames],
                                      read_palette_png, describe, problems)
                check_frame_sizes(masks, describe, problems, size)
            for expression in video.expressions:
                check_feature(self.audio_path(video.name, expression.exp_id),
                              f"{describe} expression {expression.exp_id}", problems)
        return problems

    # ------------------------------------------------------------------ items
    def __len__(self) -> int:
        return len(self.samples)

    def describe(self, index: int) -> str:
        video_index, frame, exp_index = self.samples[index]
        video = self.videos[video_index]
        return f"video {video.name} frame {video.frames[frame]} expression {video.expressions[exp_index].exp_id}"

    def sample_video(self, index: int) -> str:
        return self.videos[self.samples[index][0]].name

    def clip_indices(self, index: int) -> List[int]:
        video_index, frame, _ = self.samples[index]
        return rvos_clip_indices(frame, len(self.videos[video_index].frames), self.num_frames)

    def _masks_from_pngs(self, video: RVOSVideo, obj_id: int, clip: Sequence[int], height: int,
                         width: int) -> np.ndarray:
        masks = {}
        for i in set(clip):
            path = mask_path(self.root, self.split, video.name, video.frames[i])
            labels = read_palette_png(path)
            if labels.shape != (height, width):
                raise DataFormatError(f"{path} is {labels.shape[0]}x{labels.shape[1]}, the frames are {height}x{width}")
            masks[i] = labels == obj_id
        return np.stack([masks[i] for i in clip]).astype(np.uint8)

    def _targets_from_vis(self, video: RVOSVideo, obj_id: int, clip: Sequence[int], height: int, width: int):
        if (video.height, video.width) != (height, width):
            raise DataFormatError(f"annotation file says {video.height}x{video.width}, frames are {height}x{width}")
        annotation = video.annotations[obj_id - 1]
        boxes, masks, valid, labels = [], [], [], []
        for i in clip:
            box = annotation["bboxes"][i]
            present = box is not None
            x, y, w, h = box if present else (0, 0, 0, 0)
            boxes.append((x, y, x + w, y + h))  # xywh -> xyxy (the official AVOS loader forgets this)
            masks.append(decode_segmentation(annotation["segmentations"][i], height, width) if present
                         else np.zeros((height, width), dtype=np.uint8))
            valid.append(int(present))
            labels.append(int(annotation["category_id"]) if present else 0)
        return np.asarray(boxes, dtype=np.float32), np.stack(masks), np.asarray(valid), np.asarray(labels)

    def load(self, index: int):
        video_index, frame, exp_index = self.samples[index]
        video, expression = self.videos[video_index], self.videos[video_index].expressions[exp_index]
        clip = self.clip_indices(index)
        frames = read_frames([frame_path(self.root, self.split, video.name, video.frames[i]) for i in clip])
        width, height = frames[0].size
        if any(f.size != (width, height) for f in frames):
            raise DataFormatError("frames of the video have different sizes")
        if self.use_vis:
            boxes, masks, valid, labels = self._targets_from_vis(video, expression.obj_id, clip, height, width)
        else:
            masks = self._masks_from_pngs(video, expression.obj_id, clip, height, width)
            valid = masks.reshape(len(clip), -1).any(1).astype(np.int64)
            boxes, labels = boxes_from_masks(masks), valid.copy()
        audio = self.sample_audio(index)
        target = make_target(boxes, masks, valid, labels, height, width, video=video.name,
                             exp_id=expression.exp_id, frame_id=frame, clip_frames=clip)
        clip_tensor, target = apply_transforms(frames, target, self.transforms)
        return clip_tensor, audio, target


def build(image_set: str, args, transforms: Optional[Callable] = None) -> RVOSDataset:
    """`--ytvos_ann_file`, or by default the official split file of `image_set` when it exists."""
    ann_file = resolve_split_file(args.ytvos_ann_file, args.ytvos_path, IMAGE_SET_PARTS[image_set])
    return RVOSDataset(args.ytvos_path, args.rvos_audio_path, args.num_frames,
                       transforms or video_transforms_from_args(image_set, args),
                       split=args.ytvos_split, ann_file=ann_file or "", skip_bad_samples=args.skip_bad_samples,
                       wav_root=args.rvos_wav_path)
