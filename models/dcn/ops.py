"""Deformable convolution v1 module with the official Wnet parameter layout.

`DeformConv` holds `weight [out, in/groups, k, k]` (and `bias` only when asked for), exactly the
layout of the official `mask_head.dcn`, so released checkpoints load strictly.

Two interchangeable backends compute it: the compiled extension `models/dcn/_C` (C++ CPU with
OpenMP, plus CUDA kernels where it was built with them) and `torchvision.ops.deform_conv2d`. The
extension is used when it is built; the environment variable WNET_DCN_BACKEND=extension|torchvision
forces one.
"""
import math
import os
from types import ModuleType
from typing import Any, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable
from torchvision.ops import deform_conv2d as torchvision_deform_conv2d

IntPair = Union[int, Tuple[int, int]]

BACKEND_ENV = "WNET_DCN_BACKEND"
EXTENSION = "extension"
TORCHVISION = "torchvision"
BUILD_HINT = "run `make build-ext` in the repository root, or `cd models/dcn && python setup.py build_ext --inplace`"
# dtypes both backends' kernels run in; others (float16, bfloat16) are computed in float32.
_KERNEL_DTYPES = (torch.float32, torch.float64)

try:
    from . import _C as _extension
    _EXTENSION_ERROR: Optional[str] = None
except ImportError as error:  # not built (or built for another torch): torchvision is the fallback
    _extension = None
    _EXTENSION_ERROR = str(error)


def extension_available() -> bool:
    """Whether the compiled extension models/dcn/_C is built and importable."""
    return _extension is not None


def extension_has_cuda() -> bool:
    """Whether the compiled extension was built with its CUDA kernels."""
    return _extension is not None and bool(_extension.compiled_with_cuda())


def selected_backend() -> str:
    """The backend deform_conv uses now: WNET_DCN_BACKEND if set, else the extension when built."""
    forced = os.environ.get(BACKEND_ENV, "").strip().lower()
    if forced == "":
        return EXTENSION if extension_available() else TORCHVISION
    if forced not in (EXTENSION, TORCHVISION):
        raise ValueError(f"{BACKEND_ENV}={forced!r} is not a backend; use {EXTENSION!r} or {TORCHVISION!r}")
    if forced == EXTENSION and not extension_available():
        raise RuntimeError(f"{BACKEND_ENV}={EXTENSION} but the compiled extension models/dcn/_C is not "
                           f"available ({_EXTENSION_ERROR}); to build it, {BUILD_HINT}")
    return forced


def _require_extension() -> ModuleType:
    if _extension is None:
        raise RuntimeError(f"the compiled extension models/dcn/_C is not available ({_EXTENSION_ERROR}); "
                           f"to build it, {BUILD_HINT}")
    return _extension


class DeformConvFunction(torch.autograd.Function):
    """Autograd wrapper of the compiled forward and backward (first-order gradients only)."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, offset: Tensor, weight: Tensor, bias: Optional[Tensor],
                stride: Tuple[int, int], padding: Tuple[int, int], dilation: Tuple[int, int],
                groups: int, deformable_groups: int) -> Tensor:
        extension = _require_extension()
        ctx.geometry = (stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
                        groups, deformable_groups)
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, offset, weight)
        return extension.forward(x, offset, weight, bias, *ctx.geometry)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> Tuple[Optional[Tensor], ...]:
        x, offset, weight = ctx.saved_tensors
        need_input, need_offset, need_weight, need_bias = ctx.needs_input_grad[:4]
        grad_input, grad_offset, grad_weight, grad_bias = _require_extension().backward(
            grad_output, x, offset, weight, *ctx.geometry, need_input, need_offset, need_weight,
            need_bias and ctx.has_bias)
        return grad_input, grad_offset, grad_weight, grad_bias, None, None, None, None, None


def _extension_deform_conv(x: Tensor, offset: Tensor, weight: Tensor, bias: Optional[Tensor],
                           stride: Tuple[int, int], padding: Tuple[int, int], dilation: Tuple[int, int],
                           groups: int, deformable_groups: int) -> Tensor:
    return DeformConvFunction.apply(x, offset, weight, bias, stride, padding, dilation, groups, deformable_groups)


def _torchvision_deform_conv(x: Tensor, offset: Tensor, weight: Tensor, bias: Optional[Tensor],
                             stride: Tuple[int, int], padding: Tuple[int, int], dilation: Tuple[int, int],
                             groups: int, deformable_groups: int) -> Tensor:
    # torchvision infers groups and deformable groups from the channel counts.
    return torchvision_deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation)


def _run_in_kernel_dtype(kernel: Any, x: Tensor, offset: Tensor, weight: Tensor, bias: Optional[Tensor],
                         *geometry: Any) -> Tensor:
    """`kernel` on inputs of one dtype the kernels have (float32, float64) as they are; otherwise (bfloat16 or
    float16 inputs, or a mix such as a float32 weight with bfloat16 activations under CPU autocast) in float32,
    the result cast to `x`'s dtype: torchvision's own autocast rule on CUDA. Neither backend's CPU kernels have
    half-precision versions, and both refuse inputs of mixed dtypes."""
    tensors = (x, offset, weight) + ((bias,) if bias is not None else ())
    if x.dtype in _KERNEL_DTYPES and all(t.dtype == x.dtype for t in tensors):
        return kernel(x, offset, weight, bias, *geometry)
    as_float = [t.float() if t is not None else None for t in (x, offset, weight, bias)]
    return kernel(*as_float, *geometry).to(x.dtype)


def _pair(value: IntPair, name: str) -> Tuple[int, int]:
    if isinstance(value, int):
        return value, value
    pair = tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"DeformConv: {name} must be an int or a pair of ints, got {value!r}")
    return pair  # type: ignore[return-value]


def _check_inputs(x: Tensor, offset: Tensor, weight: Tensor, bias: Optional[Tensor],
                  stride: Tuple[int, int], padding: Tuple[int, int], dilation: Tuple[int, int],
                  groups: int, deformable_groups: int) -> None:
    """Raise a ValueError naming the first inconsistent shape."""
    if x.dim() != 4:
        raise ValueError(f"DeformConv: input must be [N, C, H, W], got shape {tuple(x.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"DeformConv: weight must be [out, in/groups, kh, kw], got {tuple(weight.shape)}")
    batch, channels, height, width = x.shape
    out_channels, channels_per_group, kernel_h, kernel_w = weight.shape
    if channels != channels_per_group * groups:
        raise ValueError(f"DeformConv: input has {channels} channels, expected "
                         f"{channels_per_group * groups} (weight {tuple(weight.shape)}, groups={groups})")
    if out_channels % groups != 0:
        raise ValueError(f"DeformConv: out_channels {out_channels} is not divisible by groups {groups}")
    if channels % deformable_groups != 0:
        raise ValueError(f"DeformConv: in_channels {channels} is not divisible by "
                         f"deformable_groups {deformable_groups}")
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(f"DeformConv: need stride >= 1, dilation >= 1, padding >= 0; got "
                         f"stride={stride}, dilation={dilation}, padding={padding}")
    out_h = (height + 2 * padding[0] - dilation[0] * (kernel_h - 1) - 1) // stride[0] + 1
    out_w = (width + 2 * padding[1] - dilation[1] * (kernel_w - 1) - 1) // stride[1] + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"DeformConv: input {height}x{width} is too small for kernel "
                         f"{kernel_h}x{kernel_w}, padding {padding}, dilation {dilation}")
    expected_offset = (batch, 2 * deformable_groups * kernel_h * kernel_w, out_h, out_w)
    if offset.dim() != 4 or tuple(offset.shape) != expected_offset:
        raise ValueError(f"DeformConv: offset must have shape {expected_offset} "
                         f"([N, 2*deformable_groups*kh*kw, H_out, W_out] of (dy, dx) pairs per tap), "
                         f"got {tuple(offset.shape)}")
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(f"DeformConv: bias must have shape ({out_channels},), got {tuple(bias.shape)}")


def deform_conv(x: Tensor, offset: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1,
                groups: int = 1, deformable_groups: int = 1, backend: Optional[str] = None) -> Tensor:
    """Deformable convolution v1: bilinear sampling at the offset taps, zero outside the image.

    x: [N, C_in, H, W]; offset: [N, 2*deformable_groups*kh*kw, H_out, W_out] holding (dy, dx) per tap
    in row-major tap order; weight: [C_out, C_in/groups, kh, kw]. Returns [N, C_out, H_out, W_out].
    backend: "extension" or "torchvision"; None picks `selected_backend()`.
    """
    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    _check_inputs(x, offset, weight, bias, stride, padding, dilation, groups, deformable_groups)
    backend = selected_backend() if backend is None else backend
    kernels = {EXTENSION: _extension_deform_conv, TORCHVISION: _torchvision_deform_conv}
    if backend not in kernels:
        raise ValueError(f"deform_conv: unknown backend {backend!r}; use {EXTENSION!r} or {TORCHVISION!r}")
    return _run_in_kernel_dtype(kernels[backend], x, offset, weight, bias, stride, padding, dilation, groups,
                                deformable_groups)


class DeformConv(nn.Module):
    """Deformable convolution v1 layer; `forward(x, offset)` with offsets from a separate conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1,
                 deformable_groups: int = 1, bias: bool = False) -> None:
        super().__init__()
        if in_channels % groups != 0 or out_channels % groups != 0:
            raise ValueError(f"DeformConv: in_channels {in_channels} and out_channels {out_channels} "
                             f"must be divisible by groups {groups}")
        if in_channels % deformable_groups != 0:
            raise ValueError(f"DeformConv: in_channels {in_channels} is not divisible by "
                             f"deformable_groups {deformable_groups}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The official mask head initialises the deformable conv weight kaiming_uniform (relu): docs/protocol.md §2.
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor, offset: Tensor) -> Tensor:
        """x: [N, in, H, W]; offset: [N, 2*deformable_groups*k*k, H_out, W_out] (dy, dx) per tap.

        Returns [N, out, H_out, W_out].
        """
        return deform_conv(x, offset, self.weight, self.bias, self.stride, self.padding,
                           self.dilation, self.groups, self.deformable_groups)

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}")
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.deformable_groups != 1:
            text += f", deformable_groups={self.deformable_groups}"
        if self.bias is None:
            text += ", bias=False"
        return text
