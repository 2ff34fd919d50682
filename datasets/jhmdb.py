"""JHMDB-Sentences, evaluation only (SPEC §6).

    <root>/Rename_Images/<class>/<video>/<00001>.png      frames, ordered by their number
    <root>/puppet_mask/<class>/<video>/puppet_mask.mat    part_mask [H, W, frames]
    <root>/jhmdb_annotation.txt                           video_id, query
    <root>/video_info.json                                optional {video: {"class", "frames"}}; else from the folders
    <audio_root>/<video>.npy                              MFCC-39 (frames, 39)
    <wav_root>/<video>.wav                                or the recordings (`wav_root`): MFCC-39 on the fly

The official protocol: per annotation row, three frames at `linspace(4, n - 5, 3)` truncated to integers
(`n` frames), a clip centred on each (clamped), the middle clip frame's prediction scored against
`part_mask[:, :, idx]` (idx clamped to the .mat's last frame when it is shorter). Six videos with missing
data are skipped, as the official.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set, Union

import numpy as np

from datasets.common import (ClipDataset, apply_transforms, audio_source, boxes_from_masks, centred_clip_indices,
                             check_audio_feature, check_feature, check_frame_sizes, check_items, decode_images,
                             load_audio_feature, make_target, middle_frame_index, read_annotated_clip)
from datasets.formats import DataFormatError, read_json, read_rgb
from datasets.jhmdb_format import read_jhmdb_annotations, read_puppet_mask
from util.errors import OptionError

PathLike = Union[str, Path]
FRAME_EXTENSION = ".png"
# linspace(FIRST_FRAME_OFFSET, n - LAST_FRAME_OFFSET, FRAMES_PER_QUERY): the official evaluated frames
FIRST_FRAME_OFFSET, LAST_FRAME_OFFSET, FRAMES_PER_QUERY = 4, 5, 3
JHMDB_MISSING_VIDEOS = (
    "32_Pull-ups_at_193IBS_pullup_f_cm_np1_ba_med_0", "32_Pull-ups_at_193IBS_pullup_f_cm_np1_ba_med_1",
    "_Boom_Snap_Clap__challenge_clap_u_nm_np1_fr_med_0", "_Boom_Snap_Clap__challenge_clap_u_nm_np1_fr_med_1",
    "Boom_Snap_Clap_clap_u_nm_np1_fr_med_0", "Boom_Snap_Clap_clap_u_nm_np1_fr_med_1",
)


@dataclass
class JHMDBSample:
    video_id: str
    class_name: str
    frame_idx: int  # 0-based frame of the video the prediction is scored on
    query: str


def jhmdb_paths(root: PathLike) -> Dict[str, Path]:
    root = Path(root)
    return {"frames": root / "Rename_Images", "masks": root / "puppet_mask",
            "queries": root / "jhmdb_annotation.txt", "video_info": root / "video_info.json"}


def audio_feature_path(audio_root: PathLike, video_id: str) -> Path:
    return Path(audio_root) / f"{video_id}.npy"


def puppet_mask_path(root: PathLike, class_name: str, video_id: str) -> Path:
    return jhmdb_paths(root)["masks"] / class_name / video_id / "puppet_mask.mat"


def jhmdb_frame_paths(root: PathLike, class_name: str, video_id: str) -> List[Path]:
    """The video's frames ordered by their number (stray files such as .DS_Store ignored)."""
    folder = jhmdb_paths(root)["frames"] / class_name / video_id
    if not folder.is_dir():
        raise FileNotFoundError(f"frame folder not found: {folder}")
    return sorted((p for p in folder.iterdir() if p.suffix == FRAME_EXTENSION and p.stem.isdigit()),
                  key=lambda p: int(p.stem))


def read_video_classes(root: PathLike) -> Dict[str, str]:
    """{video: class}: from `video_info.json`, else from the `Rename_Images/<class>/<video>` folders."""
    paths = jhmdb_paths(root)
    if paths["video_info"].is_file():
        info = read_json(paths["video_info"])
        if not isinstance(info, dict) or not all(isinstance(v, dict) and "class" in v for v in info.values()):
            raise DataFormatError(f"{paths['video_info']}: expected {{video: {{'class': ..., 'frames': ...}}}}")
        return {video: str(v["class"]) for video, v in info.items()}
    if not paths["frames"].is_dir():
        raise FileNotFoundError(f"JHMDB frames not found: {paths['frames']}")
    return {video.name: class_dir.name for class_dir in sorted(paths["frames"].iterdir()) if class_dir.is_dir()
            for video in sorted(class_dir.iterdir()) if video.is_dir()}


def evaluation_frames(num_video_frames: int) -> List[int]:
    """The official three frames: `linspace(4, n - 5, 3)` truncated towards zero."""
    points = np.linspace(FIRST_FRAME_OFFSET, num_video_frames - LAST_FRAME_OFFSET, num=FRAMES_PER_QUERY)
    return points.astype(np.int64).tolist()


class JHMDBDataset(ClipDataset):
    """JHMDB-Sentences evaluation clips: item `(clip [T,3,H,W], audio [39,L], target with 1 entry)`."""

    name = "jhmdb"

    def __init__(self, root: PathLike, audio_root: PathLike, num_frames: int, transforms: Optional[Callable] = None,
                 skip_bad_samples: bool = False, wav_root: PathLike = ""):
        super().__init__(skip_bad_samples)
        self.root, self.audio_root = Path(root), Path(audio_root)
        self.wav_root = wav_root  # recordings instead of features when given
        if not self.root.is_dir():
            raise FileNotFoundError(f"JHMDB-Sentences root {self.root} does not exist (--jhmdb_path)")
        self.num_frames = num_frames
        self.transforms = transforms
        self.classes = read_video_classes(root)
        self._frames: Dict[str, List[Path]] = {}
        queries = [q for q in read_jhmdb_annotations(jhmdb_paths(root)["queries"])
                   if q.video_id not in JHMDB_MISSING_VIDEOS]
        good = check_items(queries, self._check_query, lambda q: f"video {q.video_id}", skip_bad_samples, self.name,
                           "queries", self.problems)
        self.num_dropped = len(queries) - len(good)
        self.samples: List[JHMDBSample] = [
            JHMDBSample(q.video_id, self.classes[q.video_id], frame, q.query)
            for q in good for frame in evaluation_frames(len(self.frame_paths(q.video_id)))]

    def frame_paths(self, video_id: str) -> List[Path]:
        if video_id not in self._frames:
            if video_id not in self.classes:
                raise DataFormatError("video not found in video_info.json / Rename_Images")
            self._frames[video_id] = jhmdb_frame_paths(self.root, self.classes[video_id], video_id)
        return self._frames[video_id]

    def _check_query(self, query) -> None:
        if not self.frame_paths(query.video_id):
            raise DataFormatError("the video has no frames")
        mask_path = puppet_mask_path(self.root, self.classes[query.video_id], query.video_id)
        if not mask_path.is_file():
            raise FileNotFoundError(f"puppet mask not found: {mask_path}")
        check_audio_feature(self.audio_path(query.video_id))

    def audio_path(self, video_id: str) -> Path:
        """The video's recording under `wav_root` when given, else its features under `audio_root`."""
        return audio_source(self.audio_root, self.wav_root, video_id)

    def check_content(self) -> List[str]:
        problems: List[str] = []
        frames_by_video: Dict[str, Set[int]] = {}
        for index, sample in enumerate(self.samples):
            frames_by_video.setdefault(sample.video_id, set()).update(self.clip_indices(index))
        for video_id, indices in frames_by_video.items():
            describe = f"{self.name}: video {video_id}"
            paths = self.frame_paths(video_id)
            sizes = decode_images([paths[i] for i in sorted(indices)], read_rgb, describe, problems)
            try:
                part_mask = read_puppet_mask(puppet_mask_path(self.root, self.classes[video_id], video_id))
            except (OSError, DataFormatError) as error:
                problems.append(f"{describe}: {error}")
            else:
                check_frame_sizes(sizes, describe, problems, part_mask.shape[:2], "the masks of its part_mask")
            check_feature(self.audio_path(video_id), describe, problems)
        return problems

    def __len__(self) -> int:
        return len(self.samples)

    def sample_video(self, index: int) -> str:
        return self.samples[index].video_id

    def describe(self, index: int) -> str:
        sample = self.samples[index]
        return f"video {sample.video_id} frame {sample.frame_idx}"

    def clip_indices(self, index: int) -> List[int]:
        sample = self.samples[index]
        return centred_clip_indices(sample.frame_idx, len(self.frame_paths(sample.video_id)), self.num_frames)

    def ground_truth(self, index: int) -> np.ndarray:
        """The scored mask `[H, W]` uint8 (frame clamped to the .mat's frames, as the official)."""
        sample = self.samples[index]
        part_mask = read_puppet_mask(puppet_mask_path(self.root, sample.class_name, sample.video_id))
        frame = min(max(sample.frame_idx, 0), part_mask.shape[2] - 1)
        return (part_mask[:, :, frame] > 0).astype(np.uint8)

    def load(self, index: int):
        sample = self.samples[index]
        clip = self.clip_indices(index)
        mask = self.ground_truth(index)
        frames = read_annotated_clip(self.frame_paths(sample.video_id), clip, mask, "part_mask")
        height, width = mask.shape
        valid = np.asarray([int(mask.any())])
        target = make_target(boxes_from_masks(mask[None]), mask[None], valid, valid.copy(), height, width,
                             video=sample.video_id, frame_id=sample.frame_idx,
                             frame_idx=middle_frame_index(self.num_frames), clip_frames=clip)
        audio = load_audio_feature(self.audio_path(sample.video_id))
        clip_tensor, target = apply_transforms(frames, target, self.transforms)
        return clip_tensor, audio, target


def build(image_set: str, args, transforms: Optional[Callable] = None) -> JHMDBDataset:
    if image_set == "train":
        raise OptionError("--dataset_file jhmdb is an evaluation set; train with --dataset_file avos, ytvos or a2d")
    from datasets.transforms import video_transforms_from_args
    return JHMDBDataset(args.jhmdb_path, args.a2d_audio_path, args.num_frames,
                        transforms or video_transforms_from_args(image_set, args),
                        skip_bad_samples=args.skip_bad_samples, wav_root=args.a2d_wav_path)
