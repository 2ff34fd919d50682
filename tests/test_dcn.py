"""The compiled deformable convolution (models/dcn/_C) against torchvision, and backend selection.

`make test` builds the extension first (`make build-ext`); tests that need it fail with the build
command when it is missing.
"""
import importlib
from typing import Dict, Tuple

import pytest
import torch
from torch import Tensor
from torchvision.ops import deform_conv2d as torchvision_deform_conv2d

from models.dcn import (BACKEND_ENV, DeformConv, DeformConvFunction, deform_conv, extension_available,
                        extension_has_cuda, selected_backend)

# The module itself, whose names the tests patch.
dcn_module = importlib.import_module("models.dcn.ops")

MAX_RELATIVE_ERROR = 1e-9
FLOAT32_RELATIVE_ERROR = 1e-5
BFLOAT16_RELATIVE_ERROR = 1e-2  # only the final rounding to bfloat16 differs
BFLOAT16_INPUTS_RELATIVE_ERROR = 3e-2  # the inputs too are rounded to bfloat16 (offsets of several pixels)
# Offsets of several pixels push many taps across and beyond the image border.
OFFSET_SCALE = 4.0


def require_extension() -> None:
    if not extension_available():
        pytest.fail(f"models/dcn/_C is not built ({dcn_module._EXTENSION_ERROR}); run `make build-ext` "
                    f"or `cd models/dcn && python setup.py build_ext --inplace`")


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def random_problem(batch: int, channels: int, out_channels: int, height: int, width: int, kernel: int,
                   stride: int, padding: int, dilation: int, groups: int, deformable_groups: int,
                   dtype: torch.dtype = torch.float64, seed: int = 0,
                   device: str = "cpu") -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    out_h = output_size(height, kernel, stride, padding, dilation)
    out_w = output_size(width, kernel, stride, padding, dilation)
    x = torch.randn(batch, channels, height, width, generator=generator, dtype=dtype)
    offset = OFFSET_SCALE * torch.randn(batch, 2 * deformable_groups * kernel * kernel, out_h, out_w,
                                        generator=generator, dtype=dtype)
    weight = torch.randn(out_channels, channels // groups, kernel, kernel, generator=generator, dtype=dtype)
    bias = torch.randn(out_channels, generator=generator, dtype=dtype)
    return tuple(t.to(device).requires_grad_() for t in (x, offset, weight, bias))  # type: ignore[return-value]


def relative_error(actual: Tensor, expected: Tensor) -> float:
    return ((actual - expected).norm() / expected.norm().clamp_min(torch.finfo(expected.dtype).tiny)).item()


def outputs_and_grads(backend: str, tensors: Tuple[Tensor, ...], stride: int, padding: int, dilation: int,
                      groups: int, deformable_groups: int) -> Dict[str, Tensor]:
    x, offset, weight, bias = tensors
    output = deform_conv(x, offset, weight, bias, stride, padding, dilation, groups, deformable_groups,
                         backend=backend)
    grad_output = torch.randn(output.shape, generator=torch.Generator().manual_seed(1), dtype=output.dtype)
    grads = torch.autograd.grad(output, tensors, grad_output.to(output.device), allow_unused=True)
    return dict(output=output, **{name: g for name, g in zip(("input", "offset", "weight", "bias"), grads)})


# (batch, in, out, height, width, kernel, stride, padding, dilation, groups, deformable groups)
CASES = [
    (2, 4, 6, 9, 11, 3, 1, 1, 1, 1, 1),
    (1, 6, 4, 10, 7, 3, 2, 0, 1, 1, 1),
    (2, 4, 4, 12, 9, 3, 1, 2, 2, 1, 2),
    (2, 6, 6, 8, 8, 3, 2, 1, 1, 2, 3),
    (1, 8, 4, 7, 10, 1, 1, 0, 1, 4, 2),
    (3, 4, 2, 6, 5, 2, 1, 1, 1, 2, 4),
    (1, 3, 5, 9, 9, 5, 3, 2, 2, 1, 3),
    # Large enough for the CPU kernels to run their OpenMP threads (kMinParallelSamples).
    (2, 8, 4, 32, 33, 3, 1, 1, 1, 1, 2),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: "x".join(map(str, case)))
def test_extension_matches_torchvision(case: Tuple[int, ...]) -> None:
    require_extension()
    batch, channels, out_channels, height, width, kernel, stride, padding, dilation, groups, dgroups = case
    tensors = random_problem(batch, channels, out_channels, height, width, kernel, stride, padding, dilation,
                             groups, dgroups)
    expected = outputs_and_grads("torchvision", tensors, stride, padding, dilation, groups, dgroups)
    actual = outputs_and_grads("extension", tensors, stride, padding, dilation, groups, dgroups)
    # The offsets must actually reach outside the image for the border handling to be tested.
    assert tensors[1].abs().max() > max(height, width) / 2
    for name, reference in expected.items():
        assert actual[name].shape == reference.shape, name
        assert reference.abs().max() > 0, name
        assert relative_error(actual[name], reference) <= MAX_RELATIVE_ERROR, name


def test_empty_batch() -> None:
    require_extension()
    x, offset, weight, bias = random_problem(0, 4, 6, 8, 9, 3, 1, 1, 1, 2, 2)
    output = deform_conv(x, offset, weight, bias, 1, 1, 1, 2, 2, backend="extension")
    assert output.shape == (0, 6, 8, 9)
    grads = torch.autograd.grad(output.sum(), (x, offset, weight, bias))
    for grad, tensor in zip(grads, (x, offset, weight, bias)):
        assert grad.shape == tensor.shape
        assert not grad.any()


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False), (False, False, True)],
                         ids=["input-only", "offset-only", "weight-only"])
def test_partial_gradients(needs: Tuple[bool, bool, bool]) -> None:
    """Each gradient is right when it is the only one asked for (the kernels skip the others)."""
    require_extension()
    tensors = [t.detach() for t in random_problem(2, 4, 4, 7, 8, 3, 1, 1, 1, 2, 2)[:3]]
    for tensor, need in zip(tensors, needs):
        tensor.requires_grad_(need)
    wanted = [t for t in tensors if t.requires_grad]
    results = {}
    for backend in ("torchvision", "extension"):
        output = deform_conv(*tensors, None, 1, 1, 1, 2, 2, backend=backend)
        results[backend] = torch.autograd.grad(output.square().sum(), wanted)[0]
    assert relative_error(results["extension"], results["torchvision"]) <= MAX_RELATIVE_ERROR


def test_gradcheck_small() -> None:
    require_extension()
    x, offset, weight, bias = random_problem(1, 4, 2, 4, 5, 3, 1, 1, 1, 2, 2, seed=3)
    with torch.no_grad():
        offset.mul_(0.5)  # within reach of the image, so most samples have non-zero neighbours
    assert torch.autograd.gradcheck(
        lambda *t: DeformConvFunction.apply(*t, (1, 1), (1, 1), (1, 1), 2, 2), (x, offset, weight, bias))
    x, offset, weight, bias = random_problem(2, 2, 2, 6, 5, 2, 2, 0, 2, 1, 1, seed=4)
    assert torch.autograd.gradcheck(
        lambda *t: DeformConvFunction.apply(*t, None, (2, 2), (0, 0), (2, 2), 1, 1), (x, offset, weight))


def test_float32_and_half_inputs() -> None:
    require_extension()
    tensors = random_problem(2, 4, 4, 9, 9, 3, 1, 1, 1, 1, 1, dtype=torch.float32)
    expected = outputs_and_grads("torchvision", tensors, 1, 1, 1, 1, 1)
    actual = outputs_and_grads("extension", tensors, 1, 1, 1, 1, 1)
    for name in expected:
        assert relative_error(actual[name], expected[name]) <= FLOAT32_RELATIVE_ERROR, name
    # Half precision runs the float32 kernels (as under torchvision's autocast rule).
    x, offset, weight, _ = (t.detach().to(torch.bfloat16) for t in tensors)
    output = deform_conv(x, offset, weight, padding=1, backend="extension")
    assert output.dtype == torch.bfloat16
    reference = deform_conv(x.float(), offset.float(), weight.float(), padding=1, backend="torchvision")
    assert relative_error(output.float(), reference) <= BFLOAT16_RELATIVE_ERROR


@pytest.mark.parametrize("backend", ["extension", "torchvision"])
def test_cpu_bfloat16_autocast(backend: str) -> None:
    """Under CPU bfloat16 autocast (`--amp` inference) the offsets come from a bfloat16 conv while the layer's
    weight stays float32: both backends compute in float32 (neither has bfloat16 CPU kernels) and agree with the
    float32 result to bfloat16 rounding; the output takes the input's dtype."""
    if backend == "extension":
        require_extension()
    x, offset, weight, _ = (t.detach() for t in random_problem(2, 4, 4, 9, 9, 3, 1, 1, 1, 1, 1, dtype=torch.float32))
    reference = deform_conv(x, offset, weight, padding=1, backend="torchvision")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = deform_conv(x, offset.to(torch.bfloat16), weight, padding=1, backend=backend)
        half = deform_conv(x.to(torch.bfloat16), offset.to(torch.bfloat16), weight, padding=1, backend=backend)
    assert mixed.dtype == torch.float32 and half.dtype == torch.bfloat16
    for output in (mixed, half):
        assert relative_error(output.float(), reference) <= BFLOAT16_INPUTS_RELATIVE_ERROR


def test_module_uses_selected_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    require_extension()
    calls = []

    def spy(*args: object, **kwargs: object) -> Tensor:
        calls.append(True)
        return torchvision_deform_conv2d(*args, **kwargs)

    monkeypatch.setattr(dcn_module, "torchvision_deform_conv2d", spy)
    layer = DeformConv(4, 6, 3, padding=1, groups=2, deformable_groups=2).double()
    x = torch.randn(1, 4, 6, 7, dtype=torch.float64)
    offset = OFFSET_SCALE * torch.randn(1, 36, 6, 7, dtype=torch.float64)

    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert selected_backend() == "extension"
    from_extension = layer(x, offset)
    assert calls == []
    monkeypatch.setenv(BACKEND_ENV, "torchvision")
    assert selected_backend() == "torchvision"
    from_torchvision = layer(x, offset)
    assert calls == [True]
    monkeypatch.setenv(BACKEND_ENV, "extension")
    assert selected_backend() == "extension"
    assert relative_error(from_extension, from_torchvision) <= MAX_RELATIVE_ERROR
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    assert layer.weight.shape == (6, 2, 3, 3)


def test_backend_without_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dcn_module, "_extension", None)
    monkeypatch.setattr(dcn_module, "_EXTENSION_ERROR", "No module named 'models.dcn._C'")
    assert not extension_available()
    assert not extension_has_cuda()
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert selected_backend() == "torchvision"
    layer = DeformConv(2, 2, 3, padding=1)
    assert layer(torch.randn(1, 2, 4, 4), torch.randn(1, 18, 4, 4)).shape == (1, 2, 4, 4)
    monkeypatch.setenv(BACKEND_ENV, "extension")
    with pytest.raises(RuntimeError, match=r"make build-ext.*cd models/dcn && python setup.py build_ext --inplace"):
        selected_backend()
    with pytest.raises(RuntimeError, match="make build-ext"):
        layer(torch.randn(1, 2, 4, 4), torch.randn(1, 18, 4, 4))


def test_unknown_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "cudnn")
    with pytest.raises(ValueError, match="WNET_DCN_BACKEND='cudnn'"):
        selected_backend()


def test_bad_offset_shape_is_reported() -> None:
    layer = DeformConv(2, 2, 3, padding=1)
    with pytest.raises(ValueError, match=r"offset must have shape \(1, 18, 4, 4\)"):
        layer(torch.randn(1, 2, 4, 4), torch.randn(1, 9, 4, 4))

