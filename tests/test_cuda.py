"""CUDA numerics (run by `make gpu-check`; every test here is skipped without a CUDA device).

- The deformable convolution's CUDA kernels against the CPU extension and torchvision: the output and
  the input, offset and weight (and bias) gradients, in float64 and float32.
- The official parity fixtures on CUDA in float32: with TF32 off at the CPU tolerances of
  tests/test_model_parity.py, with TF32 on at the stated TF32 tolerances below; under bfloat16 and
  float16 autocast at the --amp tolerances of tests/test_amp.py.
- Training steps through engine.train_one_epoch with `--amp --amp_dtype float16` (grad scaler) and
  `--amp` (bfloat16): finite losses, and the optimiser really stepped.
"""
import contextlib
import copy
import functools
import math
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import pytest
import torch

from models import optimize_for_inference
from models.dcn import extension_has_cuda
from test_amp import AMP_BOX_ABS_TOL, AMP_FEATURE_REL_L2_TOL, AMP_MASK_REL_L2_TOL, amp_training_steps
from test_dcn import (CASES, FLOAT32_RELATIVE_ERROR, MAX_RELATIVE_ERROR, outputs_and_grads, random_problem,
                      relative_error, require_extension)
from test_model_parity import assert_matches, assert_within, load_parity_case

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (run by `make gpu-check` on a GPU machine)")

# TF32 rounds matmul and convolution inputs to a 10-bit mantissa (relative 2**-11, 8x finer than
# bfloat16's 2**-8) and accumulates in float32, so its errors should stay well under the bfloat16
# autocast figures measured on the CPU (boxes 0.0029, masks 0.035, memory/fusion 0.011, see
# tests/test_amp.py); these bounds are about those figures, i.e. several times the expected TF32 error.
TF32_BOX_ABS_TOL = 3e-3
TF32_MASK_REL_L2_TOL = 3e-2
TF32_FEATURE_REL_L2_TOL = 1e-2  # memory and fusion
PARITY_FRAMES = (4, 2)
DTYPES = {"float64": (torch.float64, MAX_RELATIVE_ERROR), "float32": (torch.float32, FLOAT32_RELATIVE_ERROR)}
AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 in matmuls and cuDNN convolutions on or off (cuDNN's default is on), restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def to_cpu(value: Any) -> Any:
    """Tensors (in dicts and lists) to the CPU, for comparison with the fixtures."""
    if torch.is_tensor(value):
        return value.cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_cpu(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------- DCN
def require_cuda_extension() -> None:
    require_extension()
    assert extension_has_cuda(), ("models/dcn/_C was built without its CUDA kernels; rebuild it where nvcc is "
                                  "present (make build-ext, or scripts/gpu_check.py's build step)")


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("case", CASES, ids=lambda case: "x".join(map(str, case)))
def test_dcn_cuda_matches_cpu_and_torchvision(case: Tuple[int, ...], dtype_name: str) -> None:
    require_cuda_extension()
    dtype, tolerance = DTYPES[dtype_name]
    batch, channels, out_channels, height, width, kernel, stride, padding, dilation, groups, dgroups = case
    geometry = (stride, padding, dilation, groups, dgroups)
    cpu = random_problem(batch, channels, out_channels, height, width, kernel, stride, padding, dilation, groups,
                         dgroups, dtype=dtype)
    gpu = tuple(t.detach().cuda().requires_grad_() for t in cpu)
    with tf32(False):  # the extension's GEMMs and torchvision's go through cuBLAS
        cpu_extension = outputs_and_grads("extension", cpu, *geometry)
        cuda_extension = outputs_and_grads("extension", gpu, *geometry)
        cuda_torchvision = outputs_and_grads("torchvision", gpu, *geometry)
    assert set(cuda_extension) == {"output", "input", "offset", "weight", "bias"}
    for name, actual in cuda_extension.items():
        assert actual.is_cuda and actual.dtype == dtype, name
        assert cpu_extension[name].abs().max() > 0, name
        assert relative_error(actual.cpu(), cpu_extension[name]) <= tolerance, f"{name} against the CPU extension"
        assert relative_error(actual, cuda_torchvision[name]) <= tolerance, f"{name} against torchvision on CUDA"


# ---------------------------------------------------------------------------------------------- parity
@functools.lru_cache(maxsize=None)
def _parity_case(reference_dir: Path, num_frames: int) -> Tuple[dict, torch.nn.Module, torch.Tensor, torch.Tensor]:
    return load_parity_case(reference_dir, num_frames)


def parity_case_on_cuda(reference_dir: Path, num_frames: int) -> Tuple[dict, torch.nn.Module, torch.Tensor,
                                                                        torch.Tensor]:
    """A fresh copy of the fixture's model (built once per frame count) and its inputs, on CUDA."""
    fixture, model, clip, audio = _parity_case(reference_dir, num_frames)
    return fixture, copy.deepcopy(model).cuda(), clip.cuda(), audio.cuda()


def plain_and_optimised_outputs(model: torch.nn.Module, clip: torch.Tensor, audio: torch.Tensor,
                                allow_tf32: bool) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The model's outputs on the CPU, as built and after `optimize_for_inference`, with TF32 on or off."""
    with tf32(allow_tf32), torch.no_grad():
        return to_cpu(model(clip, audio)), to_cpu(optimize_for_inference(model)(clip, audio))


@pytest.mark.parametrize("num_frames", PARITY_FRAMES)
def test_parity_float32_without_tf32(reference_dir: Path, num_frames: int) -> None:
    """The same tolerances as on the CPU, plain and optimised."""
    fixture, model, clip, audio = parity_case_on_cuda(reference_dir, num_frames)
    for out in plain_and_optimised_outputs(model, clip, audio, allow_tf32=False):
        assert_matches(out, fixture)


@pytest.mark.parametrize("num_frames", PARITY_FRAMES)
def test_parity_float32_with_tf32(reference_dir: Path, num_frames: int) -> None:
    fixture, model, clip, audio = parity_case_on_cuda(reference_dir, num_frames)
    for out in plain_and_optimised_outputs(model, clip, audio, allow_tf32=True):
        assert_within(out, fixture, TF32_BOX_ABS_TOL, TF32_MASK_REL_L2_TOL, TF32_FEATURE_REL_L2_TOL)


@pytest.mark.parametrize("dtype_name", list(AUTOCAST_DTYPES))
@pytest.mark.parametrize("num_frames", PARITY_FRAMES)
def test_parity_under_autocast(reference_dir: Path, num_frames: int, dtype_name: str) -> None:
    """--amp on CUDA: float16 has a finer mantissa than bfloat16, so the bfloat16 bounds hold for it too
    unless something overflows its range (which is what this catches)."""
    fixture, model, clip, audio = parity_case_on_cuda(reference_dir, num_frames)
    optimize_for_inference(model)
    with tf32(False), torch.no_grad(), torch.autocast("cuda", dtype=AUTOCAST_DTYPES[dtype_name]):
        out = model(clip, audio)
    assert out["pred_masks"].dtype == AUTOCAST_DTYPES[dtype_name], "autocast did not reach the mask head"
    assert_within(to_cpu(out), fixture, AMP_BOX_ABS_TOL, AMP_MASK_REL_L2_TOL, AMP_FEATURE_REL_L2_TOL)


# ---------------------------------------------------------------------------------------------- training
def test_float16_amp_training_with_grad_scaler(tmp_path: Path) -> None:
    result = amp_training_steps(tmp_path, "cuda", "float16")
    assert result["dtype"] == torch.float16 and result["scaler"] is not None
    assert all(math.isfinite(v) for v in result["stats"].values()), result["stats"]
    scale = result["scaler"].get_scale()
    assert math.isfinite(scale) and scale > 0
    # the scaler skips steps whose gradients overflow; at least one must have gone through
    assert result["changed"] > 0, f"no parameter changed in 4 steps (scale now {scale})"


def test_bfloat16_amp_training(tmp_path: Path) -> None:
    result = amp_training_steps(tmp_path, "cuda", "bfloat16")
    assert result["dtype"] == torch.bfloat16 and result["scaler"] is None
    assert all(math.isfinite(v) for v in result["stats"].values()), result["stats"]
    assert result["changed"] > 0
