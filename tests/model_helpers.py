"""Test helper shared by the end-to-end tests: a small model with random weights, saved as a Wnet checkpoint."""
from pathlib import Path
from typing import Sequence

import torch

from main import get_args_parser
from models import build_model
from util.config import parse_args

CHECKPOINT_NAME = "checkpoint.pth"


def save_untrained_checkpoint(folder: Path, argv: Sequence[str], seed: int = 0) -> Path:
    """Build the model of `argv` with `seed`'s random weights and save it as `folder/checkpoint.pth`
    (`{"model": state_dict}`, what the inference scripts' `--model_path` loads); returns the path."""
    torch.manual_seed(seed)
    model, _, _ = build_model(parse_args(get_args_parser(), list(argv)))
    path = Path(folder) / CHECKPOINT_NAME
    torch.save({"model": model.state_dict()}, path)
    return path
