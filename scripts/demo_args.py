"""What the demo and the listening report share: the training/inference argv of a demo-layout dataset and the
derangement of a video's recordings."""
from pathlib import Path
from typing import List, Sequence

import numpy as np

SPLIT = "train"  # the demo data keeps every video in the train split; split files say which are held out


def model_args(config: Path, data: Path, out: Path, overrides: Sequence[str]) -> List[str]:
    """The training/inference parser's argv: the demo config, the data and output paths, then the overrides."""
    return ["--config", str(config), "--ytvos_path", str(data), "--ytvos_split", SPLIT,
            "--ytvos_ann_file", str(data / "ann" / "instances_train_sub.json"),
            "--rvos_audio_path", str(data / "audio_feature"), "--split_file", str(data / "test_videos.txt"),
            "--output_dir", str(out), "--overwrite", *overrides]  # a rerun of the demo replaces its last run


def derangement(count: int, rng: np.random.Generator) -> List[int]:
    """A random permutation of `range(count)` without a fixed point (count >= 2)."""
    if count < 2:
        raise ValueError(f"cannot shuffle {count} recording(s) so that none keeps its own; need at least 2")
    while True:
        order = rng.permutation(count)
        if not np.any(order == np.arange(count)):
            return [int(i) for i in order]
