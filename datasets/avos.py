"""AVOS training data: the Ref-YouTube-VOS clips followed by the A2D-Sentences clips, as the official.

RVOS items carry `T` targets (one per frame), A2D items one (the annotated middle frame); the criterion
handles both. Audio features come from `--rvos_audio_path` and `--a2d_audio_path` respectively.
"""
import copy
from typing import Callable, List, Optional

from torch.utils.data import ConcatDataset

from datasets import a2d, ytvos


class AVOSDataset(ConcatDataset):
    """`ConcatDataset([RVOSDataset, A2DDataset])` with both parts reachable as `.rvos` and `.a2d`."""

    def __init__(self, rvos: ytvos.RVOSDataset, a2d_dataset: a2d.A2DDataset):
        super().__init__([rvos, a2d_dataset])
        self.rvos, self.a2d = rvos, a2d_dataset
        self.num_dropped = rvos.num_dropped + a2d_dataset.num_dropped

    def first_videos(self, count: int) -> "AVOSDataset":
        """The first `count` videos of the concatenation: Ref-YouTube-VOS first, then A2D (`--subset`)."""
        rvos_videos = len(self.rvos.video_names())
        if count > rvos_videos:
            a2d_part = self.a2d.first_videos(count - rvos_videos)
        else:  # the first `count` videos are all Ref-YouTube-VOS ones
            a2d_part = copy.copy(self.a2d)
            a2d_part.samples = []
        return AVOSDataset(self.rvos.first_videos(count), a2d_part)

    def check_data(self) -> List[str]:
        return self.rvos.check_data() + self.a2d.check_data()


def build(image_set: str, args, transforms: Optional[Callable] = None) -> AVOSDataset:
    return AVOSDataset(ytvos.build(image_set, args, transforms), a2d.build(image_set, args, transforms))
