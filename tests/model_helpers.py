"""Test helper shared by the end-to-end tests: a small model with random weights, saved as a Wnet checkpoint."""
from pathlib import Path
from typing import Sequence

import torch

import inference_rvos
import main
from models import build_inference_model
from util.config import own_argv

CHECKPOINT_NAME = "checkpoint.pth"


def save_untrained_checkpoint(folder: Path, argv: Sequence[str], seed: int = 0) -> Path:
    """Build the model of `argv` with `seed`'s random weights and save it as `folder/checkpoint.pth`
    (`{"model": state_dict}`, what the inference scripts' `--model_path` loads); returns the path. `argv` may
    hold training options too (a demo command line): the inference options of it build the model."""
    torch.manual_seed(seed)
    args = inference_rvos.parse(own_argv(list(argv), inference_rvos.get_parser(), main.get_parser()))
    model, _ = build_inference_model(args)
    path = Path(folder) / CHECKPOINT_NAME
    torch.save({"model": model.state_dict()}, path)
    return path
