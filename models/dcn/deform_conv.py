"""Deformable convolution v1 module with the official Wnet parameter layout.

`DeformConv` holds `weight [out, in/groups, k, k]` (and `bias` only when asked for), exactly the
layout of the official `mask_head.dcn`, so released checkpoints load strictly.
"""
import math
from typing import Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torchvision.ops import deform_conv2d as torchvision_deform_conv2d

IntPair = Union[int, Tuple[int, int]]


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
                groups: int = 1, deformable_groups: int = 1) -> Tensor:
    """Deformable convolution v1: bilinear sampling at the offset taps, zero outside the image.

    x: [N, C_in, H, W]; offset: [N, 2*deformable_groups*kh*kw, H_out, W_out] holding (dy, dx) per tap
    in row-major tap order; weight: [C_out, C_in/groups, kh, kw]. Returns [N, C_out, H_out, W_out].
    """
    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    _check_inputs(x, offset, weight, bias, stride, padding, dilation, groups, deformable_groups)
    # torchvision infers groups and deformable groups from the channel counts.
    return torchvision_deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding,
                                     dilation=dilation)


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
        # SPEC: the official mask head initialises the deformable conv weight kaiming_uniform (relu).
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
