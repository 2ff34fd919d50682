"""Datasets: `build_dataset(image_set, args)` for `--dataset_file avos | ytvos | a2d | jhmdb`."""
from typing import Callable, Dict, List, Optional

from torch.utils.data import Dataset

DATASET_FILES = ("avos", "ytvos", "a2d", "jhmdb")


def build_dataset(image_set: str, args, transforms: Optional[Callable] = None) -> Dataset:
    """The dataset of `args.dataset_file` for `image_set` 'train' or 'val', with the official clip
    transforms of that set (or `transforms` when given). Items: `(clip [T,3,H,W], audio [39,L], target)`.
    `--subset N` keeps the samples of the first N training videos."""
    if image_set not in ("train", "val"):
        raise ValueError(f"unknown image set {image_set!r}; expected 'train' or 'val'")
    if args.dataset_file == "avos":
        from datasets.avos import build
    elif args.dataset_file == "ytvos":
        from datasets.ytvos import build
    elif args.dataset_file == "a2d":
        from datasets.a2d import build
    elif args.dataset_file == "jhmdb":
        from datasets.jhmdb import build
    else:
        raise ValueError(f"unknown --dataset_file {args.dataset_file!r}; expected one of {DATASET_FILES}")
    dataset = build(image_set, args, transforms)
    if image_set == "train" and args.subset:
        dataset = dataset.first_videos(args.subset)
    return dataset


def dataset_parts(dataset: Dataset) -> Dict[str, Dataset]:
    """`{name: part}`: the RVOS and A2D parts of AVOS, else the dataset itself under its name."""
    if hasattr(dataset, "rvos") and hasattr(dataset, "a2d"):
        return {dataset.rvos.name: dataset.rvos, dataset.a2d.name: dataset.a2d}
    return {dataset.name: dataset}


def videos_sources(dataset: Dataset) -> Dict[str, str]:
    """`{part: the file that defined its videos}`, for the training log."""
    return {name: part.videos_source for name, part in dataset_parts(dataset).items()
            if hasattr(part, "videos_source")}


def video_names(dataset: Dataset) -> Dict[str, List[str]]:
    """`{part: names of the videos its samples come from}` (what a checkpoint records as trained on)."""
    return {name: part.video_names() for name, part in dataset_parts(dataset).items() if hasattr(part, "video_names")}
