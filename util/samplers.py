"""A sampler that keeps groups of samples together: every expression of the same clip in the same batch.

Why (`--group_expressions`): in a clip that shows several objects, each named by its own recording, the gradient of
a model that covers every object is, summed over the clip's expressions, mostly its audio-dependent part: the
pushes towards one object for one expression and towards the other for the other cancel. In a batch of unrelated
clips they do not cancel, and under gradient clipping they crowd out the part that teaches the model to listen.
"""
from typing import Iterator, List, Sequence

import torch
from torch.utils.data import Sampler


class GroupedDistributedSampler(Sampler[int]):
    """Like `DistributedSampler(shuffle=True, drop_last=True)`, but over groups of indices: the groups are shuffled
    by (seed, epoch), dealt to the ranks in turn, and each group's indices are yielded one after another (in their
    own order). Every rank yields the same number of indices, so that distributed ranks take the same number of
    steps: as many as the smallest `len(groups) // num_replicas` groups hold, which any rank has in any epoch
    (one rank: every index)."""

    def __init__(self, groups: Sequence[Sequence[int]], num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        if not groups or any(len(g) == 0 for g in groups):
            raise ValueError("expected non-empty groups of sample indices")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside [0, {num_replicas})")
        self.groups: List[List[int]] = [list(g) for g in groups]
        self.num_replicas, self.rank, self.seed, self.epoch = num_replicas, rank, seed, 0
        sizes = sorted(len(g) for g in self.groups)
        self.num_samples = sum(sizes[:len(self.groups) // num_replicas])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)  # as DistributedSampler: the order depends on (seed, epoch)
        order = torch.randperm(len(self.groups), generator=generator).tolist()
        mine = [index for position in order[self.rank::self.num_replicas] for index in self.groups[position]]
        return iter(mine[:self.num_samples])

    def __len__(self) -> int:
        return self.num_samples
