"""Run by tests/test_training.py under torchrun: train with main.py, then save this rank's parameters."""
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import main as train  # noqa: E402
from util.config import get_args_parser, parse_args  # noqa: E402

if __name__ == "__main__":
    args = parse_args(get_args_parser(), sys.argv[1:])
    model = train.main(args)
    torch.save(model.state_dict(), Path(args.output_dir) / f"rank{os.environ['RANK']}_state.pt")
