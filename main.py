"""Training and validation-loss entry point of Wnet (DETR style).

    python -m torch.distributed.launch --nproc_per_node=4 --use_env main.py \
        --backbone resnet50 --dataset_file avos --masks        # data/rvos, data/a2d, ... as the official
    torchrun --nproc_per_node=2 main.py --config configs/ytvos_r50.yaml --device cpu
    sbatch scripts/slurm_train.sh --config configs/avos_r50.yaml  # SLURM: one task per GPU

The run itself lives in `engine/run.py` (`train`), so scripts that train import it from there.
"""
import argparse
import sys
from typing import Optional, Sequence

from engine.checkpoint import LATEST_CHECKPOINT  # noqa: F401  (where a run's latest checkpoint is)
from engine.run import get_args_parser, get_parser, parse, train, training_args  # noqa: F401
from util.errors import run_main


def main(args: argparse.Namespace):
    """Train (or with `--eval` run the validation-loss loop); returns the model (unwrapped from DDP), or with
    `--check_data` the exit code of the data check."""
    return train(args)


def cli(argv: Optional[Sequence[str]] = None):
    return main(parse(argv))


if __name__ == "__main__":
    sys.exit(run_main(cli))
