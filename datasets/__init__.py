"""Datasets: the registry `DATASETS` of the `--dataset_file` choices and `build_dataset(image_set, args)`.

Each dataset is one module with a `build(image_set, args, transforms)` and, beside it, a module of the
readers and writers of its own files (`ytvos.py` / `ytvos_format.py`, ...). To add a dataset, write its
`build` and register it in `DATASETS`: the training set's argument group (`add_training_data_args`) offers every
registered name as a `--dataset_file`; the data's options are defined in datasets/options.py.
"""
import argparse
import hashlib
from typing import Callable, Dict, List, Optional, Tuple

from torch.utils.data import Dataset

from datasets import a2d, avos, jhmdb, ytvos
from datasets import options
from datasets.audio.loader import build_audio_loader
from datasets.options import add_dataset_args  # noqa: F401 (the data's options, beside the training set's)

# `build(image_set, args, transforms)`: the dataset of 'train' or 'val', with `transforms` or the official ones.
DatasetBuilder = Callable[[str, argparse.Namespace, Optional[Callable]], Dataset]

# The first name is the default `--dataset_file`.
DATASETS: Dict[str, DatasetBuilder] = {
    "avos": avos.build,  # Ref-YouTube-VOS followed by A2D-Sentences: the official training set
    "ytvos": ytvos.build,
    "a2d": a2d.build,
    "jhmdb": jhmdb.build,  # evaluation only
}
IMAGE_SETS = ("train", "val")


def add_training_data_args(parser: argparse.ArgumentParser) -> None:
    """The training set's options (datasets/options.py), `--dataset_file` choosing among the registered
    `DATASETS`."""
    options.add_training_data_args(parser, dataset_files=tuple(DATASETS))


def build_dataset(image_set: str, args: argparse.Namespace, transforms: Optional[Callable] = None) -> Dataset:
    """The dataset of `args.dataset_file` for `image_set` 'train' or 'val', with the official clip
    transforms of that set (or `transforms` when given). Items: `(clip [T,3,H,W], audio [39,L], target)`.
    `--subset N` keeps the samples of the first N training videos."""
    if image_set not in IMAGE_SETS:
        raise ValueError(f"unknown image set {image_set!r}; expected one of {IMAGE_SETS}")
    if args.dataset_file not in DATASETS:
        raise ValueError(f"unknown --dataset_file {args.dataset_file!r}; the registered datasets are "
                         f"{', '.join(DATASETS)} (datasets/__init__.py)")
    dataset = DATASETS[args.dataset_file](image_set, args, transforms)
    if image_set == "train" and args.subset:
        dataset = dataset.first_videos(args.subset)
    for part in audio_parts(dataset):  # the audio options (and, for training, the augmentation)
        part.audio_loader = build_audio_loader(args, part.audio_paths(), train=image_set == "train")
    return dataset


def dataset_parts(dataset: Dataset) -> Dict[str, Dataset]:
    """`{name: part}`: the RVOS and A2D parts of AVOS, else the dataset itself under its name (its class name for
    a registered dataset without one)."""
    if isinstance(dataset, avos.AVOSDataset):
        return {dataset.rvos.name: dataset.rvos, dataset.a2d.name: dataset.a2d}
    return {getattr(dataset, "name", type(dataset).__name__): dataset}


def audio_parts(dataset: Dataset) -> List[Dataset]:
    """The parts that read recordings through an `AudioLoader` (`audio_paths`, `audio_loader`, `set_epoch`); a
    registered dataset that brings its own audio has none."""
    return [part for part in dataset_parts(dataset).values() if hasattr(part, "audio_paths")]


def clip_groups(dataset: Dataset) -> List[List[int]]:
    """The indices of `dataset` grouped by clip (`ClipDataset.clip_key`), each group in index order, the groups in
    order of first appearance; AVOS's A2D part is offset by the length of its Ref-YouTube-VOS part."""
    groups: Dict[Tuple[str, object], List[int]] = {}
    offset = 0
    for name, part in dataset_parts(dataset).items():
        for index in range(len(part)):
            key = part.clip_key(index) if hasattr(part, "clip_key") else index  # no clip key: a group per sample
            groups.setdefault((name, key), []).append(offset + index)
        offset += len(part)
    return list(groups.values())


def set_epoch(dataset: Dataset, epoch: int) -> None:
    """`set_epoch` on every part (the audio augmentation is seeded by sample and epoch)."""
    for part in audio_parts(dataset):
        part.set_epoch(epoch)


def without_augmentation(dataset: Dataset) -> None:
    """Every part of `dataset` (a copy, e.g. `first_videos`) hears its recordings without `--audio_augment`."""
    for part in audio_parts(dataset):
        part.audio_loader = part.audio_loader.without_augment()


def videos_sources(dataset: Dataset) -> Dict[str, str]:
    """`{part: the file that defined its videos}`, for the training log."""
    return {name: part.videos_source for name, part in dataset_parts(dataset).items()
            if hasattr(part, "videos_source")}


def video_names(dataset: Dataset) -> Dict[str, List[str]]:
    """`{part: names of the videos its samples come from}` (what a checkpoint records as trained on)."""
    return {name: part.video_names() for name, part in dataset_parts(dataset).items() if hasattr(part, "video_names")}


def sample_digest(dataset: Dataset) -> str:
    """SHA-1 of the samples' identities in order (each part's name and `describe(i)`: video, frame, expression
    ids), not of the files: cheap, and equal on two processes exactly when they read the same samples in the
    same order (what the ranks of a distributed run compare before training)."""
    digest = hashlib.sha1()
    for name, part in dataset_parts(dataset).items():
        digest.update(f"{name}\n".encode())
        for index in range(len(part)):
            describe = part.describe(index) if hasattr(part, "describe") else str(index)
            digest.update(f"{describe}\n".encode())
    return digest.hexdigest()
