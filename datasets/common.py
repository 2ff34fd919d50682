"""Helpers every clip dataset shares: clip windows, audio features, targets and bad-sample handling.

Dataset items are `(clip [T, 3, H, W] float normalised, audio [39, L] float, target)` with `target`:

- `boxes [N, 4]` normalised (cx, cy, w, h), all zero where the object is absent;
- `masks [N, H, W]` uint8 aligned with the transformed frames; `valid [N]` int64 (0 = absent);
- `labels [N]` int64 (category where the format stores one, 0 where absent);
- `orig_size`, `size`: (H, W) before and after the transforms;
- identifiers for messages: `video`, `exp_id` (RVOS) or `instance_id` (A2D), `frame_id` (frame of the
  video the sample is about) and, when N = 1, `frame_idx` (the annotated frame's index within the clip);
  `clip_frames` lists the video frame index of every clip frame.

N is T (RVOS: one target per frame) or 1 (A2D / JHMDB: the annotated middle frame). `ClipDataset` is the
base of every clip dataset, `MiddleFrameDataset` that of A2D-Sentences and JHMDB-Sentences.
"""
import copy
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Hashable, Iterable, List, Optional, Sequence, Set, Tuple, TypeVar, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from datasets.audio.loader import AudioLoader
from datasets.formats import DataFormatError, read_rgb
from datasets.transforms import Normalize
import util.misc as utils
from util.clips import middle_frame_index
from util.errors import DataWarning, UserError

PathLike = Union[str, Path]
Sample = TypeVar("Sample")

# A sample that fails while loading is replaced by the next one at most this many times in a row.
MAX_CONSECUTIVE_BAD_SAMPLES = 16


class SampleError(DataFormatError):
    """Broken data for one sample; the message names the dataset item and what is wrong."""


class BadSampleWarning(DataWarning):
    """A broken sample was dropped because of `--skip_bad_samples`."""


SKIP_HINT = " (--skip_bad_samples drops broken samples, --check_data lists them all)"


# ----------------------------------------------------------------------------- clip windows
def rvos_clip_indices(end_frame: int, num_video_frames: int, num_frames: int) -> List[int]:
    """Frames of the RVOS clip ending at `end_frame` (the official window, docs/protocol.md §6).

    Clip frame j is `end_frame - ((T - 1 - j) mod n)`, negative indices wrapping to the end of the video,
    so a video shorter than T repeats cyclically.
    """
    if not 0 <= end_frame < num_video_frames:
        raise IndexError(f"frame {end_frame} outside a video of {num_video_frames} frames")
    return [(end_frame - (num_frames - 1 - j) % num_video_frames) % num_video_frames for j in range(num_frames)]


def centred_clip_indices(frame_idx: int, num_video_frames: int, num_frames: int) -> List[int]:
    """`T` frames centred on `frame_idx` (`frame_idx - (T-1)//2 + j`), clamped to the video (A2D / JHMDB)."""
    first = frame_idx - middle_frame_index(num_frames)
    return [min(max(first + j, 0), num_video_frames - 1) for j in range(num_frames)]


# ----------------------------------------------------------------------------- frames
def read_frames(paths: Sequence[PathLike]) -> List[Image.Image]:
    """RGB PIL images of `paths`; a path repeated in a clip is decoded once."""
    cache: Dict[str, Image.Image] = {}
    frames = []
    for path in paths:
        key = str(path)
        if key not in cache:
            cache[key] = read_rgb(path)
        frames.append(cache[key])
    return frames


def read_annotated_clip(paths: Sequence[PathLike], clip: Sequence[int], mask: np.ndarray,
                        what: str) -> List[Image.Image]:
    """The frames `paths[i]` for `i` in `clip`, checked against the size of the annotated frame's mask."""
    frames = read_frames([paths[i] for i in clip])
    width, height = frames[0].size
    if mask.shape != (height, width):
        raise DataFormatError(f"{what} is {mask.shape[0]}x{mask.shape[1]}, frames {height}x{width}")
    return frames


# ----------------------------------------------------------------------------- targets
def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """`[N, H, W]` binary masks -> `[N, 4]` float32 pixel boxes (x0, y0, x1, y1), x1/y1 exclusive
    (the COCO box of the mask); all zero for an empty mask."""
    boxes = np.zeros((masks.shape[0], 4), dtype=np.float32)
    for i, mask in enumerate(masks):
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if rows.size:
            boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


def clamp_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixel (x0, y0, x1, y1) boxes clamped to the frame."""
    boxes = np.asarray(boxes, dtype=np.float32).copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    return boxes


def make_target(boxes: np.ndarray, masks: np.ndarray, valid: np.ndarray, labels: np.ndarray,
                height: int, width: int, **identifiers) -> Dict[str, object]:
    """The pre-transform target: pixel (x0, y0, x1, y1) `boxes [N, 4]`, `masks [N, H, W]`, `valid [N]`,
    `labels [N]`, sizes and the identifiers (kept as plain Python values)."""
    if masks.shape[1:] != (height, width):
        raise DataFormatError(f"masks of size {masks.shape[1:]} do not match frames of size {(height, width)}")
    valid = np.asarray(valid, dtype=np.int64)
    boxes = (clamp_boxes(boxes, height, width) * valid[:, None]).astype(np.float32)
    target = {
        "boxes": torch.from_numpy(boxes),
        "masks": torch.from_numpy(np.ascontiguousarray(masks, dtype=np.uint8)),
        "valid": torch.from_numpy(valid),
        "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64)),
        "orig_size": torch.tensor([height, width]),
        "size": torch.tensor([height, width]),
    }
    target.update(identifiers)
    return target


def apply_transforms(frames: List[Image.Image], target: Dict[str, object],
                     transforms: Optional[Callable]) -> Tuple[Tensor, Dict[str, object]]:
    """Run the clip transforms and stack the frames: -> `[T, 3, H, W]`, target."""
    if transforms is None:
        transforms = Normalize()
    frames, target = transforms(frames, target)
    return torch.stack(frames), target


# ----------------------------------------------------------------------------- bad samples
def report_dropped(dataset_name: str, dropped: int, kept: int, what: str = "samples") -> None:
    if dropped:
        warnings.warn(f"{dataset_name}: dropped {dropped} broken {what} (--skip_bad_samples); {kept} remain",
                      BadSampleWarning, stacklevel=3)


def check_items(items: Sequence[Sample], check: Callable[[Sample], None], describe: Callable[[Sample], str],
                skip_bad: bool, dataset_name: str, what: str = "samples",
                problems: Optional[List[str]] = None) -> List[Sample]:
    """Run `check` on every item. A failure raises an error naming the item, or with `skip_bad` warns,
    drops the item (its message appended to `problems`) and, at the end, reports how many were dropped."""
    kept, dropped = [], 0
    for item in items:
        try:
            check(item)
        except (OSError, DataFormatError, IndexError) as error:
            message = f"{dataset_name}: {describe(item)}: {error}"
            if not skip_bad:
                raise SampleError(message + SKIP_HINT) from error
            warnings.warn(message, BadSampleWarning, stacklevel=2)
            if problems is not None:
                problems.append(message)
            dropped += 1
            continue
        kept.append(item)
    report_dropped(dataset_name, dropped, len(kept), what)
    return kept


def decode_images(paths: Iterable[Path], read: Callable[[Path], object], describe: str,
                  problems: List[str]) -> Dict[Path, Tuple[int, int]]:
    """`--check_data`: decode every file of `paths` once with `read` (-> PIL image or array); returns
    `{path: (height, width)}` of those that decode and appends one problem per file that does not."""
    sizes = {}
    for path in paths:
        try:
            image = read(path)
        except (OSError, DataFormatError) as error:
            problems.append(f"{describe}: {error}")
            continue
        sizes[path] = (image.height, image.width) if isinstance(image, Image.Image) else tuple(image.shape[:2])
    return sizes


def check_frame_sizes(sizes: Dict[Path, Tuple[int, int]], describe: str, problems: List[str],
                      expected: Optional[Tuple[int, int]] = None,
                      reference: str = "the video's frames") -> Optional[Tuple[int, int]]:
    """`--check_data`: one problem per file whose size is not `expected` (default: the most common size
    among `sizes`, the video's frame size); returns the size the files should have."""
    if not sizes:
        return expected
    if expected is None:
        counts: Dict[Tuple[int, int], int] = {}
        for size in sizes.values():
            counts[size] = counts.get(size, 0) + 1
        expected = max(counts, key=counts.get)
    for path, size in sizes.items():
        if size != tuple(expected):
            problems.append(f"{describe}: {path} is {size[0]}x{size[1]}, {reference} are "
                            f"{expected[0]}x{expected[1]}")
    return expected


def check_feature(path: Path, describe: str, problems: List[str]) -> None:
    """`--check_data`: load one audio feature completely (shape, NaN and infinite values)."""
    try:
        AudioLoader()(path)
    except (OSError, DataFormatError) as error:
        problems.append(f"{describe}: {error}")


def report_data_check(problems: Sequence[str], summary: Dict[str, object]) -> int:
    """`--check_data`'s report: one `error:` line per problem, a JSON summary; a UserError when there are any."""
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print(json.dumps({"event": "check_data", **summary, "problems": len(problems)}), flush=True)
    if problems:
        raise UserError(f"--check_data: {len(problems)} problem(s) in the data (listed above)")
    return 0


def build_for_check(build: Callable[[], Sample]) -> Sample:
    """`--check_data`: a dataset built with `skip_bad_samples` (its `problems` list every broken sample),
    without the warnings (the check's report names them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadSampleWarning)
        return build()


class BadSampleLog:
    """The broken samples a run met while loading (`--skip_bad_samples`): each named once by a warning,
    counted together with those dropped before the run (`dropped_before`) for the log."""

    def __init__(self, dropped_before: int = 0):
        self.dropped_before = dropped_before
        self.names: Set[str] = set()

    def add(self, targets: Sequence[Dict[str, object]]) -> None:
        for target in targets:
            for message in target.get("bad_samples", ()):
                if message not in self.names:
                    self.names.add(message)
                    warnings.warn(f"{message}; using the next sample instead", BadSampleWarning, stacklevel=2)

    @property
    def count(self) -> int:
        return self.dropped_before + len(self.names)

    def count_over_ranks(self) -> int:
        """`count` over every process of a distributed run (each must call it): the samples each met, a sample
        met by two counted once, and those dropped before the run (the same on every rank) once."""
        names = set().union(*(set(names) for names in utils.all_gather_object(sorted(self.names))))
        return self.dropped_before + len(names)


class ClipDataset(Dataset):
    """Base of the clip datasets: `load(index)` builds an item, `describe(index)` names it.

    A sample whose files fail while loading raises `SampleError` naming it; with `skip_bad_samples` it is
    replaced by the next sample (the dataset's length is fixed once a sampler holds it) and named in the
    item's `target["bad_samples"]` (a DataLoader worker cannot warn the main process once per sample;
    `BadSampleLog` does). `num_skipped_at_load` counts such replacements in this process. `problems`
    lists the samples dropped at construction; `check_data()` adds what decoding every file finds.
    """

    name = "dataset"

    def __init__(self, skip_bad_samples: bool = False, audio_loader: Optional[AudioLoader] = None):
        self.skip_bad_samples = skip_bad_samples
        # path -> [39, L]; `datasets.build_dataset` gives the options' loader (augmentation, conditions)
        self.audio_loader = audio_loader or AudioLoader()
        self.epoch = 0  # seeds the audio augmentation with the sample index (`set_epoch`)
        self.num_dropped = 0
        self.num_skipped_at_load = 0
        self.problems: List[str] = []

    def load(self, index: int):
        raise NotImplementedError

    def describe(self, index: int) -> str:
        raise NotImplementedError

    def sample_video(self, index: int) -> str:
        """The id of the video that sample `index` comes from."""
        raise NotImplementedError

    def sample_audio_path(self, index: int) -> Path:
        """The recording or features that sample `index` hears."""
        raise NotImplementedError

    def sample_audio(self, index: int) -> Tensor:
        """The features `[39, L]` sample `index` hears in this epoch (augmented per sample and epoch when the
        loader augments)."""
        return self.audio_loader(self.sample_audio_path(index), self.epoch, index)

    def audio_paths(self) -> List[Path]:
        """Every recording or feature file the samples hear, sorted (the babble talkers of noise)."""
        return sorted({self.sample_audio_path(i) for i in range(len(self))})

    def clip_key(self, index: int) -> Hashable:
        """What sample `index` shows (its clip): samples with the same key differ only in their expression
        (`--group_expressions` batches them together). Default: every sample its own."""
        return index

    def set_epoch(self, epoch: int) -> None:
        """Call before each epoch (as `DistributedSampler.set_epoch`): the augmentation of sample i in epoch e
        depends only on (seed, e, i), so a resumed run hears what the uninterrupted one heard. DataLoader
        workers get a copy of the dataset when an epoch's iteration starts, so they see the new epoch."""
        self.epoch = int(epoch)

    def video_names(self) -> List[str]:
        """The videos the samples come from, in order of first appearance."""
        return list(dict.fromkeys(self.sample_video(i) for i in range(len(self))))

    def first_videos(self, count: int) -> "ClipDataset":
        """A copy holding only the samples of the first `count` videos, in sample order (`--subset`,
        `--warmup_subset`); the files stay shared, nothing is read again."""
        if count < 1:
            raise ValueError(f"a subset needs >= 1 video, got {count}")
        kept = set(self.video_names()[:count])
        subset = copy.copy(self)
        subset.samples = [s for i, s in enumerate(self.samples) if self.sample_video(i) in kept]
        return subset

    def check_content(self) -> List[str]:
        """Decode every frame, mask and audio feature the samples use once; one message per problem."""
        raise NotImplementedError

    def check_data(self) -> List[str]:
        """`--check_data`: every problem of the dataset (those dropped at construction, then the content's)."""
        return self.problems + self.check_content()

    def __getitem__(self, index: int):
        bad_samples = []
        for attempt in range(MAX_CONSECUTIVE_BAD_SAMPLES):
            current = (index + attempt) % len(self)
            try:
                item = self.load(current)
            except (OSError, DataFormatError, IndexError) as error:
                message = f"{self.name}: {self.describe(current)}: {error}"
                if not self.skip_bad_samples:
                    raise SampleError(message + SKIP_HINT) from error
                self.num_skipped_at_load += 1
                bad_samples.append(message)
                continue
            if bad_samples:
                item[2]["bad_samples"] = bad_samples
            return item
        raise SampleError(f"{self.name}: {MAX_CONSECUTIVE_BAD_SAMPLES} consecutive broken samples from "
                          f"{self.describe(index)} on")


@dataclass
class AnnotatedFrame:
    """The annotated frame of a middle-frame sample, at the original size."""

    mask: np.ndarray  # [H, W] uint8
    box: np.ndarray  # [4] float pixels (x0, y0, x1, y1)
    label: int
    valid: int  # 0 where the object is absent from the frame


class MiddleFrameDataset(ClipDataset):
    """Base of the datasets whose sample is one annotated frame of a video (A2D-Sentences, JHMDB-Sentences).

    Item `(clip [T,3,H,W], audio [39,L], target with 1 entry)`: the clip is `T` frames centred on the annotated
    frame (clamped to the video), which sits at the clip's middle position `(T-1)//2`. The frames of a video are
    listed once. A subclass fills `samples` (each with a `video_id` and the 0-based annotated `frame_idx`), sets
    `title` and `root_option` (named when the root is missing) and `mask_name` (named when the mask and frame
    sizes differ), and gives `list_frames`, `sample_audio_path`, `annotated_frame` and `identifiers`.
    """

    title = "dataset"
    root_option = ""
    mask_name = "mask"

    def __init__(self, root: PathLike, audio_root: PathLike, num_frames: int, transforms: Optional[Callable] = None,
                 skip_bad_samples: bool = False, wav_root: PathLike = ""):
        super().__init__(skip_bad_samples)
        self.root, self.audio_root = Path(root), Path(audio_root)
        self.wav_root = wav_root  # recordings instead of features when given
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.title} root {self.root} does not exist ({self.root_option})")
        self.num_frames = num_frames
        self.transforms = transforms
        self.samples: list = []
        self._frames: Dict[str, List[Path]] = {}

    # ------------------------------------------------------------------ what a subclass gives
    def list_frames(self, video_id: str) -> List[Path]:
        """The video's frame files, in order (read from disk; `frame_paths` caches them)."""
        raise NotImplementedError

    def annotated_frame(self, index: int) -> AnnotatedFrame:
        """The mask, box, label and valid flag of sample `index`'s annotated frame."""
        raise NotImplementedError

    def identifiers(self, index: int) -> Dict[str, object]:
        """What names sample `index` in its target (before `frame_id`, `frame_idx` and `clip_frames`)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    def frame_paths(self, video_id: str) -> List[Path]:
        """The video's frame files, in order (listed once)."""
        if video_id not in self._frames:
            self._frames[video_id] = self.list_frames(video_id)
        return self._frames[video_id]

    def clip_frames_by_video(self) -> Dict[str, Set[int]]:
        """`{video: every frame index that a sample's clip uses}` (what `--check_data` decodes)."""
        frames_by_video: Dict[str, Set[int]] = {}
        for index, sample in enumerate(self.samples):
            frames_by_video.setdefault(sample.video_id, set()).update(self.clip_indices(index))
        return frames_by_video

    def __len__(self) -> int:
        return len(self.samples)

    def sample_video(self, index: int) -> str:
        return self.samples[index].video_id

    def clip_key(self, index: int) -> Hashable:
        sample = self.samples[index]
        return sample.video_id, sample.frame_idx

    def clip_indices(self, index: int) -> List[int]:
        sample = self.samples[index]
        return centred_clip_indices(sample.frame_idx, len(self.frame_paths(sample.video_id)), self.num_frames)

    def ground_truth(self, index: int) -> np.ndarray:
        """The annotated frame's mask `[H, W]` uint8 at the original size (what the evaluation scores)."""
        return self.annotated_frame(index).mask

    def load(self, index: int):
        clip_tensor, features, target, _ = self.load_with_ground_truth(index)
        return clip_tensor, features, target

    def load_with_ground_truth(self, index: int) -> Tuple[Tensor, Tensor, Dict[str, object], np.ndarray]:
        """`load`'s item and the annotated frame's mask `[H, W]` uint8 at the original size, read once: the
        evaluation (`engine.middle_frame`) scores what training reads, the same clip through its own transforms."""
        sample = self.samples[index]
        clip = self.clip_indices(index)
        annotated = self.annotated_frame(index)
        frames = read_annotated_clip(self.frame_paths(sample.video_id), clip, annotated.mask, self.mask_name)
        height, width = annotated.mask.shape
        features = self.sample_audio(index)
        target = make_target(np.asarray(annotated.box)[None], annotated.mask[None], np.asarray([annotated.valid]),
                             np.asarray([annotated.label]), height, width, **self.identifiers(index),
                             frame_id=sample.frame_idx, frame_idx=middle_frame_index(self.num_frames),
                             clip_frames=clip)
        clip_tensor, target = apply_transforms(frames, target, self.transforms)
        return clip_tensor, features, target, annotated.mask
