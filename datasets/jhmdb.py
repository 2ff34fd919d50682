"""JHMDB-Sentences, evaluation only (docs/protocol.md §6).

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
from typing import Callable, Dict, List, Optional

import numpy as np

from datasets.audio.loader import audio_source, check_audio_file
from datasets.common import (AnnotatedFrame, MiddleFrameDataset, boxes_from_masks, check_feature, check_frame_sizes,
                             check_items, decode_images)
from datasets.formats import DataFormatError, PathLike, read_json, read_rgb
from datasets.jhmdb_format import JHMDBQuery, read_jhmdb_annotations, read_puppet_mask
from datasets.transforms import make_inference_transforms, video_transforms_from_args
from util.config import inference_scale
from util.errors import OptionError
from util.names import check_name, natural_sorted

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
    return natural_sorted((p for p in folder.iterdir() if p.suffix == FRAME_EXTENSION and p.stem.isdigit()), folder)


def read_video_classes(root: PathLike) -> Dict[str, str]:
    """{video: class}: from `video_info.json`, else from the `Rename_Images/<class>/<video>` folders."""
    paths = jhmdb_paths(root)
    if paths["video_info"].is_file():
        info = read_json(paths["video_info"])
        if not isinstance(info, dict) or not all(isinstance(v, dict) and "class" in v for v in info.values()):
            raise DataFormatError(f"{paths['video_info']}: expected {{video: {{'class': ..., 'frames': ...}}}}")
        source = paths["video_info"]
        return {check_name(video, "video id", source): check_name(str(v["class"]), f"video {video!r}: class", source)
                for video, v in info.items()}
    if not paths["frames"].is_dir():
        raise FileNotFoundError(f"JHMDB frames not found: {paths['frames']}")
    return {video.name: class_dir.name for class_dir in sorted(paths["frames"].iterdir()) if class_dir.is_dir()
            for video in sorted(class_dir.iterdir()) if video.is_dir()}


def evaluation_frames(num_video_frames: int) -> List[int]:
    """The official three frames: `linspace(4, n - 5, 3)` truncated towards zero."""
    points = np.linspace(FIRST_FRAME_OFFSET, num_video_frames - LAST_FRAME_OFFSET, num=FRAMES_PER_QUERY)
    return points.astype(np.int64).tolist()


class JHMDBDataset(MiddleFrameDataset):
    """JHMDB-Sentences evaluation clips: item `(clip [T,3,H,W], audio [39,L], target with 1 entry)`."""

    name = "jhmdb"
    title = "JHMDB-Sentences"
    root_option = "--jhmdb_path"
    mask_name = "part_mask"

    def __init__(self, root: PathLike, audio_root: PathLike, num_frames: int, transforms: Optional[Callable] = None,
                 skip_bad_samples: bool = False, wav_root: PathLike = ""):
        super().__init__(root, audio_root, num_frames, transforms, skip_bad_samples, wav_root)
        self.classes = read_video_classes(root)
        queries = [q for q in read_jhmdb_annotations(jhmdb_paths(root)["queries"])
                   if q.video_id not in JHMDB_MISSING_VIDEOS]
        good = check_items(queries, self._check_query, lambda q: f"video {q.video_id}", skip_bad_samples, self.name,
                           "queries", self.problems)
        self.num_dropped = len(queries) - len(good)
        self.samples: List[JHMDBSample] = [
            JHMDBSample(q.video_id, self.classes[q.video_id], frame, q.query)
            for q in good for frame in evaluation_frames(len(self.frame_paths(q.video_id)))]

    def list_frames(self, video_id: str) -> List[Path]:
        if video_id not in self.classes:
            raise DataFormatError("video not found in video_info.json / Rename_Images")
        return jhmdb_frame_paths(self.root, self.classes[video_id], video_id)

    def _check_query(self, query: JHMDBQuery) -> None:
        if not self.frame_paths(query.video_id):
            raise DataFormatError("the video has no frames")
        mask_path = puppet_mask_path(self.root, self.classes[query.video_id], query.video_id)
        if not mask_path.is_file():
            raise FileNotFoundError(f"puppet mask not found: {mask_path}")
        check_audio_file(self.audio_path(query.video_id))

    def audio_path(self, video_id: str) -> Path:
        """The video's recording under `wav_root` when given, else its features under `audio_root`."""
        return audio_source(self.audio_root, self.wav_root, video_id)

    def sample_audio_path(self, index: int) -> Path:
        return self.audio_path(self.samples[index].video_id)

    def check_content(self) -> List[str]:
        problems: List[str] = []
        for video_id, indices in self.clip_frames_by_video().items():
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

    def describe(self, index: int) -> str:
        sample = self.samples[index]
        return f"video {sample.video_id} frame {sample.frame_idx}"

    def annotated_frame(self, index: int) -> AnnotatedFrame:
        """The scored mask (frame clamped to the .mat's frames, as the official), its box; label and valid flag
        are 1 where the actor is visible, 0 where the mask is empty."""
        sample = self.samples[index]
        part_mask = read_puppet_mask(puppet_mask_path(self.root, sample.class_name, sample.video_id))
        frame = min(max(sample.frame_idx, 0), part_mask.shape[2] - 1)
        mask = (part_mask[:, :, frame] > 0).astype(np.uint8)
        visible = int(mask.any())
        return AnnotatedFrame(mask, boxes_from_masks(mask[None])[0], label=visible, valid=visible)

    def identifiers(self, index: int) -> Dict[str, object]:
        return {"video": self.samples[index].video_id}


def build(image_set: str, args, transforms: Optional[Callable] = None) -> JHMDBDataset:
    if image_set == "train":
        raise OptionError("--dataset_file jhmdb is an evaluation set; train with --dataset_file avos, ytvos or a2d")
    return JHMDBDataset(args.jhmdb_path, args.a2d_audio_path, args.num_frames,
                        transforms or video_transforms_from_args(image_set, args),
                        skip_bad_samples=args.skip_bad_samples, wav_root=args.a2d_wav_path)


def build_test_set(args) -> JHMDBDataset:
    """The evaluation set as the official protocol (`inference_jhmdb.py`) reads it: the frames through the
    inference transform (short side 300 times `util.config.inference_scale`), each clip selected and read as
    training reads it."""
    return JHMDBDataset(args.jhmdb_path, args.a2d_audio_path, args.num_frames,
                        make_inference_transforms(inference_scale(args)),
                        skip_bad_samples=args.skip_bad_samples, wav_root=args.a2d_wav_path)
