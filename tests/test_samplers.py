"""--group_expressions: every expression of a clip in the same batch, a (seed, epoch) order, equal ranks."""
from pathlib import Path

import pytest

from data_factory import make_ytvos
from datasets import clip_groups
from datasets.ytvos import RVOSDataset
from util.samplers import GroupedDistributedSampler


def test_groups_stay_together_and_the_order_follows_seed_and_epoch():
    groups = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11]]
    sampler = GroupedDistributedSampler(groups, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(12)) and len(sampler) == 12
    pairs = [first[i:i + 2] for i in range(0, 12, 2)]
    assert all(pair in groups for pair in pairs)  # a batch of 2 or 4 never splits a clip's expressions
    assert list(GroupedDistributedSampler(groups, seed=3)) == first  # the same (seed, epoch): the same order
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(sampler) == list(range(12))


def test_ranks_get_disjoint_groups_and_the_same_count():
    groups = [[0, 1], [2, 3, 4], [5], [6, 7], [8, 9, 10]]
    ranks = [GroupedDistributedSampler(groups, num_replicas=2, rank=r, seed=0) for r in range(2)]
    seen = [list(r) for r in ranks]
    assert len(seen[0]) == len(seen[1]) == len(ranks[0]) == len(ranks[1])
    assert not set(seen[0]) & set(seen[1])
    with pytest.raises(ValueError, match="rank"):
        GroupedDistributedSampler(groups, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="non-empty"):
        GroupedDistributedSampler([[0], []])


def test_rvos_samples_are_grouped_by_clip(tmp_path: Path):
    data = make_ytvos(tmp_path / "ytvos", num_videos=2, num_frames=3)
    dataset = RVOSDataset(data["root"], data["audio_root"], num_frames=2)
    groups = clip_groups(dataset)
    assert sorted(i for g in groups for i in g) == list(range(len(dataset)))
    for group in groups:
        keys = {(dataset.describe(i).split(" expression")[0], tuple(dataset.clip_indices(i))) for i in group}
        assert len(keys) == 1 and len(group) == 2  # the clip's two expressions
