"""--amp (bfloat16 autocast) on the CPU: the official parity fixtures' outputs within stated bounds, and
training steps with finite losses (`amp_training_steps` also serves the CUDA tests in test_cuda.py).

bfloat16 keeps 8 significant bits (relative rounding 2**-8 ~ 0.4%). Measured on both fixtures
(plain and optimised model, CPU autocast): boxes and aux boxes max abs error <= 0.0029, masks
relative L2 <= 0.035, memory and fusion relative L2 <= 0.011. The bounds below leave about 3x margin.
"""
import math
from pathlib import Path
from typing import Any, Dict

import pytest
import torch

from data_factory import make_ytvos
from models import build_model, optimize_for_inference
from test_model_parity import assert_within, load_parity_case

AMP_BOX_ABS_TOL = 1e-2
AMP_MASK_REL_L2_TOL = 0.1
AMP_FEATURE_REL_L2_TOL = 0.03  # memory and fusion
# The default model (ResNet-50, hidden 384) on the data factory's tiny clips: realistic widths for the
# float16 range, small enough to take seconds.
TRAIN_ARGV = ["--num_frames", "2", "--num_queries", "2", "--masks", "--dataset_file", "ytvos", "--num_workers", "0",
              "--data_scale", "0.1", "--epochs", "1"]
TRAIN_VIDEOS, TRAIN_VIDEO_FRAMES = 1, 2  # 4 samples: 4 optimiser steps at batch size 1


@pytest.mark.parametrize("num_frames", [4, 2])
def test_bfloat16_autocast_stays_within_bounds(reference_dir, num_frames):
    fixture, model, clip, audio = load_parity_case(reference_dir, num_frames)
    for optimise in (False, True):
        if optimise:
            optimize_for_inference(model)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(clip, audio)
        assert out["pred_masks"].dtype == torch.bfloat16, "autocast did not reach the mask head"
        assert_within(out, fixture, AMP_BOX_ABS_TOL, AMP_MASK_REL_L2_TOL, AMP_FEATURE_REL_L2_TOL)


def amp_training_steps(data_root: Path, device: str, amp_dtype: str) -> Dict[str, Any]:
    """One epoch (4 steps) of --amp training on tiny data as main.py runs it; returns the epoch's losses,
    the autocast dtype, the grad scaler (None for bfloat16), how many trainable parameters the optimiser
    changed, and the dtypes of the model's raw mask logits in each step (the autocast dtype when it was on)."""
    from datasets import build_dataset
    from engine.train import amp_settings, build_loader, build_optimizer, train_one_epoch
    from main import get_args_parser
    from util.config import parse_args

    data = make_ytvos(data_root, num_videos=TRAIN_VIDEOS, num_frames=TRAIN_VIDEO_FRAMES)
    args = parse_args(get_args_parser(), TRAIN_ARGV + ["--ytvos_path", data["root"], "--rvos_audio_path",
                                                       data["audio_root"], "--device", device, "--amp",
                                                       "--amp_dtype", amp_dtype])
    torch.manual_seed(args.seed)
    model, criterion, _ = build_model(args)
    model.to(device)
    mask_dtypes = []
    model.register_forward_hook(lambda module, inputs, out: mask_dtypes.append(out["pred_masks"].dtype))
    optimizer = build_optimizer(model, args)
    dtype, scaler = amp_settings(args, torch.device(device))
    trainable = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    loader = build_loader(build_dataset("train", args), args, shuffle=True)
    stats = train_one_epoch(model, criterion, loader, optimizer, torch.device(device), 0, args.clip_max_norm,
                            amp=True, amp_dtype=dtype, scaler=scaler)
    after = dict(model.named_parameters())
    changed = sum(not torch.equal(before, after[name].detach()) for name, before in trainable.items())
    return {"stats": stats, "dtype": dtype, "scaler": scaler, "changed": changed, "trainable": len(trainable),
            "mask_dtypes": mask_dtypes}


def test_bfloat16_amp_training_on_cpu(tmp_path: Path) -> None:
    result = amp_training_steps(tmp_path, "cpu", "bfloat16")
    assert result["dtype"] == torch.bfloat16 and result["scaler"] is None
    assert result["stats"]["steps"] > 0
    assert result["mask_dtypes"] == [torch.bfloat16] * int(result["stats"]["steps"]), "autocast was off"
    assert all(math.isfinite(v) for v in result["stats"].values()), result["stats"]
    assert result["changed"] > 0
