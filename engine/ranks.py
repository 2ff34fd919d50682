"""The processes (ranks) of a distributed training run agree or stop together: they check that they read the same
samples before training (`check_same_data`).
"""
from torch.utils.data import Dataset

import util.misc as utils
from datasets import sample_digest
from util.errors import StoppedByPeer, UserError


class DifferentData(UserError):
    """The ranks read different samples (their counts or their identities differ): every rank stops before training."""


def check_same_data(dataset: Dataset, image_set: str) -> None:
    """Every rank of a distributed run reads the same samples in the same order (their count and
    `datasets.sample_digest` gathered); otherwise rank 0 raises `DifferentData` naming the ranks that differ from it,
    the others `StoppedByPeer`. Ranks that read different data would wait for each other's collectives forever."""
    if utils.get_world_size() == 1:
        return
    seen = utils.all_gather_object((len(dataset), sample_digest(dataset)))
    if len(set(seen)) == 1:
        return
    if utils.get_rank() != 0:
        raise StoppedByPeer(f"rank {utils.get_rank()} stopped: the ranks read different data (rank 0 names them)")
    count, digest = seen[0]
    differ = "; ".join(f"rank {rank} sees {n} {image_set} samples (hash {h[:12]})"
                       for rank, (n, h) in enumerate(seen) if (n, h) != seen[0])
    raise DifferentData(f"{differ}, rank 0 sees {count} (hash {digest[:12]}): every rank must read the same data "
                        f"(the same dataset files and options on every machine)")
