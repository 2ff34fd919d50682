"""A2D-Sentences (the A2D part of AVOS; docs/protocol.md §6).

    <root>/Release/videoset.csv                          id, label, start, end, H, W, frames, annotated, split
    <root>/Release/pngs320H/<video>/<00001>.png           frames (scripts/extract_frames.py makes them)
    <root>/a2d_annotation_with_instances/<video>/<frame 1-based>.h5   instance, reMask, reBBox, id
    <root>/a2d_annotation_info.txt                       samples: video_id, instance_id, frame_idx (0-based), query
    <root>/a2d_annotation.txt                            queries: video_id, instance_id, query
    <audio_root>/<video>_<instance_id>.npy               MFCC-39 (frames, 39)
    <wav_root>/<video>_<instance_id>.wav                 or the recordings (`wav_root`): MFCC-39 on the fly

Samples come from `a2d_annotation_info.txt`, or, when it is absent, are derived from `a2d_annotation.txt`:
one per (query, annotated frame whose .h5 lists the query's instance). A clip is `T` frames centred on the
annotated frame (clamped to the video); the target is that one frame (`frame_idx = (T-1)//2` in the clip).
Split 'train' = videoset split 0, 'val' / 'test' = split 1. Unlike the official (which falls back to
`00025.h5`), a sample whose .h5 is missing is reported.

A few release .h5 files disagree on the instance count between `instance`, `reMask`, `reBBox` and `id`.
As the official, such a sample is kept (the official prints a line): the instance's position in
`instance` indexes the other datasets. Each such file is reported once per process
(`InstanceCountWarning`, naming the file and the counts); a position that one of them lacks is an error
naming the file.
"""
import re
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set, Tuple

import numpy as np

from datasets.a2d_format import (A2D_TEST_SPLIT, A2D_TRAIN_SPLIT, A2DFrameAnnotation, A2DSample, A2DVideo,
                                  read_a2d_annotation_info, read_a2d_annotations, read_a2d_h5, read_videoset_csv)
from datasets.audio.loader import audio_source, check_audio_file
from datasets.common import (AnnotatedFrame, MiddleFrameDataset, check_feature, check_frame_sizes, check_items,
                             decode_images)
from datasets.formats import DataFormatError, PathLike, read_rgb
from datasets.transforms import make_inference_transforms, video_transforms_from_args
from util.config import inference_scale
from util.names import natural_sorted

A2D_SPLITS = {"train": A2D_TRAIN_SPLIT, "val": A2D_TEST_SPLIT, "test": A2D_TEST_SPLIT}
FRAME_EXTENSION = ".png"
H5_EXTENSION = ".h5"


class InstanceCountWarning(UserWarning):
    """An A2D .h5 whose datasets disagree on the instance count (kept, as the official)."""


_reported_count_mismatches: Set[Path] = set()  # files already reported in this process


def report_count_mismatch(path: Path, annotation: A2DFrameAnnotation) -> None:
    """Warn once per file that its instance counts disagree."""
    mismatch = annotation.count_mismatch()
    if mismatch is None or path in _reported_count_mismatches:
        return
    _reported_count_mismatches.add(path)
    warnings.warn(f"{path}: instance counts disagree ({mismatch}); the sample is kept, as the official does, "
                  f"with the instance's position in 'instance' indexing reMask, reBBox and id",
                  InstanceCountWarning, stacklevel=2)


def a2d_paths(root: PathLike) -> Dict[str, Path]:
    root = Path(root)
    return {"videoset": root / "Release" / "videoset.csv", "frames": root / "Release" / "pngs320H",
            "clips": root / "Release" / "clips320H", "instances": root / "a2d_annotation_with_instances",
            "info": root / "a2d_annotation_info.txt", "queries": root / "a2d_annotation.txt"}


def h5_path(root: PathLike, video_id: str, frame_idx: int) -> Path:
    """The instance annotation of 0-based frame `frame_idx` (files are named 1-based)."""
    return a2d_paths(root)["instances"] / video_id / f"{frame_idx + 1:05d}{H5_EXTENSION}"


def audio_stem(video_id: str, instance_id: str) -> str:
    """The official name of a query's recording and features, without suffix."""
    return f"{video_id}_{instance_id}"


def audio_feature_path(audio_root: PathLike, video_id: str, instance_id: str) -> Path:
    return Path(audio_root) / f"{audio_stem(video_id, instance_id)}.npy"


def a2d_frame_paths(root: PathLike, video_id: str) -> List[Path]:
    """The video's frames: its PNG folder in the natural order of the names (hidden files ignored)."""
    folder = a2d_paths(root)["frames"] / video_id
    if not folder.is_dir():
        raise FileNotFoundError(f"frame folder not found: {folder} (run scripts/extract_frames.py)")
    return natural_sorted((p for p in folder.iterdir() if p.suffix == FRAME_EXTENSION and not p.name.startswith(".")),
                          folder)


def parse_instance_id(instance_id: str) -> int:
    """The number of an instance id as written in the annotation files (the release has '1 (copy)')."""
    match = re.match(r"\s*(\d+)", instance_id)
    if match is None:
        raise DataFormatError(f"instance id {instance_id!r} does not start with a number")
    return int(match.group(1))


def select_instance(annotation: A2DFrameAnnotation, instance_id: str) -> int:
    """Index of `instance_id` among the .h5's instances. As the official, a file with a single instance
    gives that instance whatever its id."""
    number = parse_instance_id(instance_id)
    matches = np.flatnonzero(annotation.instance_ids == number)
    if matches.size:
        return int(matches[0])
    if len(annotation.instance_ids) == 1:
        return 0
    raise DataFormatError(f"instance {instance_id} not among the annotated instances {annotation.instance_ids.tolist()}")


def derive_a2d_samples(root: PathLike) -> List[A2DSample]:
    """Samples from `a2d_annotation.txt` and the .h5 files: every annotated frame that lists the instance."""
    paths = a2d_paths(root)
    queries = read_a2d_annotations(paths["queries"])
    instances_of: Dict[Tuple[str, int], List[int]] = {}  # (video, frame_idx) -> instance ids
    frames_of: Dict[str, List[int]] = {}
    samples = []
    for query in queries:
        if query.video_id not in frames_of:
            folder = paths["instances"] / query.video_id
            files = sorted(folder.glob(f"*{H5_EXTENSION}")) if folder.is_dir() else []
            frames_of[query.video_id] = [int(f.stem) - 1 for f in files if f.stem.isdigit()]
        for frame_idx in frames_of[query.video_id]:
            key = (query.video_id, frame_idx)
            if key not in instances_of:
                instances_of[key] = read_a2d_h5(h5_path(root, *key)).instance_ids.tolist()
            if parse_instance_id(query.instance_id) in instances_of[key]:
                samples.append(A2DSample(query.video_id, query.instance_id, frame_idx, query.query))
    return samples


def read_a2d_samples(root: PathLike) -> List[A2DSample]:
    """All samples (both splits): `a2d_annotation_info.txt`, else derived from `a2d_annotation.txt`."""
    paths = a2d_paths(root)
    if paths["info"].is_file():
        return read_a2d_annotation_info(paths["info"])
    if paths["queries"].is_file():
        return derive_a2d_samples(root)
    raise FileNotFoundError(f"A2D samples not found: neither {paths['info']} nor {paths['queries']} exists")


def load_a2d_ground_truth(root: PathLike, sample: A2DSample) -> Tuple[np.ndarray, np.ndarray, int]:
    """The annotated frame of a sample: mask `[H, W]` uint8, box (x0, y0, x1, y1) pixels, class id."""
    path = h5_path(root, sample.video_id, sample.frame_idx)
    annotation = read_a2d_h5(path)
    report_count_mismatch(path, annotation)
    index = select_instance(annotation, sample.instance_id)
    lacking = [name for name, count in annotation.counts().items() if index >= count]
    if lacking:
        raise DataFormatError(f"{path}: instance {sample.instance_id} is at position {index} of 'instance', but "
                              f"{', '.join(lacking)} hold(s) fewer entries ({annotation.count_mismatch()})")
    return annotation.masks[index], annotation.boxes[index], int(annotation.class_ids[index])


class A2DDataset(MiddleFrameDataset):
    """A2D-Sentences clips: item `(clip [T,3,H,W], audio [39,L], target with 1 entry)`."""

    name = "a2d"
    title = "A2D-Sentences"
    root_option = "--a2d_path"

    def __init__(self, root: PathLike, audio_root: PathLike, num_frames: int, transforms: Optional[Callable] = None,
                 split: str = "train", skip_bad_samples: bool = False, wav_root: PathLike = ""):
        if split not in A2D_SPLITS:
            raise ValueError(f"unknown A2D split {split!r}; expected one of {sorted(A2D_SPLITS)}")
        super().__init__(root, audio_root, num_frames, transforms, skip_bad_samples, wav_root)
        self.videos: Dict[str, A2DVideo] = read_videoset_csv(a2d_paths(root)["videoset"])
        wanted = A2D_SPLITS[split]
        self.videos_source = f"{a2d_paths(root)['videoset']} (split {wanted})"
        samples = [s for s in read_a2d_samples(root)
                   if s.video_id not in self.videos or self.videos[s.video_id].split == wanted]
        self.samples: List[A2DSample] = check_items(samples, self._check_sample, self._describe_sample,
                                                    skip_bad_samples, self.name, problems=self.problems)
        self.num_dropped = len(samples) - len(self.samples)

    def list_frames(self, video_id: str) -> List[Path]:
        """The video's frames, checked against the frame count of `videoset.csv`."""
        if video_id not in self.videos:
            raise DataFormatError(f"video {video_id} is not in {a2d_paths(self.root)['videoset']}")
        frames = a2d_frame_paths(self.root, video_id)
        expected = self.videos[video_id].num_frames
        if len(frames) != expected:
            raise DataFormatError(f"{len(frames)} frames in {a2d_paths(self.root)['frames'] / video_id}, "
                                  f"videoset.csv says {expected}")
        return frames

    @staticmethod
    def _describe_sample(sample: A2DSample) -> str:
        return f"video {sample.video_id} instance {sample.instance_id} frame {sample.frame_idx}"

    def _check_sample(self, sample: A2DSample) -> None:
        num_video_frames = len(self.frame_paths(sample.video_id))
        if not 0 <= sample.frame_idx < num_video_frames:
            raise IndexError(f"annotated frame {sample.frame_idx} outside the video's {num_video_frames} frames")
        load_a2d_ground_truth(self.root, sample)
        check_audio_file(self.audio_path(sample))

    def audio_path(self, sample: A2DSample) -> Path:
        """The query's recording under `wav_root` when given, else its features under `audio_root`."""
        return audio_source(self.audio_root, self.wav_root, audio_stem(sample.video_id, sample.instance_id))

    def sample_audio_path(self, index: int) -> Path:
        return self.audio_path(self.samples[index])

    def check_content(self) -> List[str]:
        problems: List[str] = []
        sizes = {}
        for video_id, indices in self.clip_frames_by_video().items():
            paths = self.frame_paths(video_id)
            sizes[video_id] = decode_images([paths[i] for i in sorted(indices)], read_rgb,
                                            f"{self.name}: video {video_id}", problems)
        masks, features = set(), set()
        for sample in self.samples:
            describe = f"{self.name}: {self._describe_sample(sample)}"
            if (sample.video_id, sample.frame_idx) not in masks:
                masks.add((sample.video_id, sample.frame_idx))
                mask = load_a2d_ground_truth(self.root, sample)[0]
                check_frame_sizes(sizes[sample.video_id], f"{self.name}: video {sample.video_id}", problems,
                                  mask.shape, f"the masks of {h5_path(self.root, sample.video_id, sample.frame_idx)}")
            path = self.audio_path(sample)
            if path not in features:
                features.add(path)
                check_feature(path, describe, problems)
        return list(dict.fromkeys(problems))  # a frame of the wrong size is named once, not once per mask

    def describe(self, index: int) -> str:
        return self._describe_sample(self.samples[index])

    def annotated_frame(self, index: int) -> AnnotatedFrame:
        mask, box, class_id = load_a2d_ground_truth(self.root, self.samples[index])
        return AnnotatedFrame(mask, box, class_id, valid=1)

    def identifiers(self, index: int) -> Dict[str, object]:
        sample = self.samples[index]
        return {"video": sample.video_id, "instance_id": sample.instance_id}


def build(image_set: str, args, transforms: Optional[Callable] = None) -> A2DDataset:
    return A2DDataset(args.a2d_path, args.a2d_audio_path, args.num_frames,
                      transforms or video_transforms_from_args(image_set, args),
                      split=image_set, skip_bad_samples=args.skip_bad_samples, wav_root=args.a2d_wav_path)


def build_test_set(args) -> A2DDataset:
    """The test split as the official protocol (`inference_a2d.py`) reads it: the frames through the
    inference transform (short side 300 times `util.config.inference_scale`), each clip selected and read as
    training reads it."""
    return A2DDataset(args.a2d_path, args.a2d_audio_path, args.num_frames,
                      make_inference_transforms(inference_scale(args)), split="test",
                      skip_bad_samples=args.skip_bad_samples, wav_root=args.a2d_wav_path)
