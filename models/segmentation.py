"""Wnet mask model: the detector plus the mask branch (attention maps, FPN head, 3-D instance head).

Frames of all clips are processed as one batch by the attention maps and the FPN head (both act per
frame); the 3-D head runs over the frame axis of each clip and query slot separately.
"""
import math
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .dcn import DeformConv
from .audio_encoder import Audio
from .wnet import Clips, Wnet, build_wnet

GROUP_NORM_GROUPS = 8
DEFORM_KERNEL = 3
INSTANCE_HIDDEN = 12
INSTANCE_GROUPS = 4
INSTANCE_DILATION = 2


def group_norm(channels: int, groups: int = GROUP_NORM_GROUPS) -> nn.GroupNorm:
    """GroupNorm with the official group count, or the largest that divides `channels` (small widths)."""
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class MHAttentionMap(nn.Module):
    """Per-frame attention of the box queries over the memory; returns the softmax only.

    One softmax runs over heads and pixels together (as the official).
    """

    def __init__(self, query_dim: int, hidden_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.q_linear = nn.Linear(query_dim, hidden_dim)
        self.k_linear = nn.Linear(query_dim, hidden_dim)
        for linear in (self.q_linear, self.k_linear):
            nn.init.zeros_(linear.bias)
            nn.init.xavier_uniform_(linear.weight)
        self.normalize_fact = float(hidden_dim / num_heads) ** -0.5

    def forward(self, q: Tensor, k: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """q `[N, n_q, C]`, k `[N, C, h, w]`, mask `[N, h, w]` True on padding -> `[N, n_q, heads, h, w]`."""
        q = self.q_linear(q)
        k = F.conv2d(k, self.k_linear.weight[:, :, None, None], self.k_linear.bias)
        head_dim = self.hidden_dim // self.num_heads
        qh = q.reshape(q.shape[0], q.shape[1], self.num_heads, head_dim)  # [N, n_q, heads, d]
        kh = k.reshape(k.shape[0], self.num_heads, head_dim, k.shape[-2], k.shape[-1])  # [N, heads, d, h, w]
        weights = torch.einsum("bqnc,bnchw->bqnhw", qh * self.normalize_fact, kh)
        if mask is not None:
            weights = weights.masked_fill(mask[:, None, None], float("-inf"))
        return F.softmax(weights.flatten(2), dim=-1).view_as(weights)


class MaskHeadSmallConv(nn.Module):
    """FPN mask head: memory + attention maps, upsampled with layer3/2/1 features, deformable conv last.

    Widths `[dim, C/2, C/4, C/8, C/16]` for context dim C (`[392, 192, 96, 48, 24]` by default).
    """

    def __init__(self, dim: int, fpn_dims: List[int], context_dim: int) -> None:
        super().__init__()
        inter_dims = [dim, context_dim // 2, context_dim // 4, context_dim // 8, context_dim // 16]
        if inter_dims[-1] < 1:
            raise ValueError(f"hidden dim {context_dim} is too small for the mask head (needs >= 16)")
        offset_channels = 2 * DEFORM_KERNEL * DEFORM_KERNEL  # (dy, dx) per tap
        # Registration order fixes the state_dict order of the official checkpoints.
        self.lay1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.gn1 = group_norm(dim)
        self.lay2 = nn.Conv2d(dim, inter_dims[1], 3, padding=1)
        self.gn2 = group_norm(inter_dims[1])
        self.lay3 = nn.Conv2d(inter_dims[1], inter_dims[2], 3, padding=1)
        self.gn3 = group_norm(inter_dims[2])
        self.lay4 = nn.Conv2d(inter_dims[2], inter_dims[3], 3, padding=1)
        self.gn4 = group_norm(inter_dims[3])
        self.gn5 = group_norm(inter_dims[4])
        self.conv_offset = nn.Conv2d(inter_dims[3], offset_channels, 1)
        self.dcn = DeformConv(inter_dims[3], inter_dims[4], DEFORM_KERNEL, padding=DEFORM_KERNEL // 2)
        self.adapter1 = nn.Conv2d(fpn_dims[0], inter_dims[1], 1)
        self.adapter2 = nn.Conv2d(fpn_dims[1], inter_dims[2], 1)
        self.adapter3 = nn.Conv2d(fpn_dims[2], inter_dims[3], 1)
        self.out_channels = inter_dims[4]
        for name, module in self.named_children():
            if name == "conv_offset":  # start as a plain convolution
                nn.init.zeros_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, a=1)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor, bbox_mask: Tensor, fpns: List[Tensor]) -> Tensor:
        """x `[N, C, h, w]`, bbox_mask `[N, n_q, heads, h, w]`, fpns layer3/2/1 `[N, C_l, h_l, w_l]`.

        Returns `[N*n_q, C/16, H/4, W/4]`.
        """
        num_queries = bbox_mask.shape[1]
        x = x.repeat_interleave(num_queries, dim=0)  # [N*n_q, C, h, w]
        x = torch.cat([x, bbox_mask.flatten(0, 1)], dim=1)  # [N*n_q, C+heads, h, w]
        x = F.relu(self.gn1(self.lay1(x)))
        x = F.relu(self.gn2(self.lay2(x)))
        for adapter, conv, norm, fpn in ((self.adapter1, self.lay3, self.gn3, fpns[0]),
                                         (self.adapter2, self.lay4, self.gn4, fpns[1])):
            x = self._merge(adapter(fpn), x, num_queries)
            x = F.relu(norm(conv(x)))
        x = self._merge(self.adapter3(fpns[2]), x, num_queries)
        x = self.dcn(x, self.conv_offset(x))
        return F.relu(self.gn5(x))

    @staticmethod
    def _merge(lateral: Tensor, x: Tensor, num_queries: int) -> Tensor:
        """Lateral feature (repeated per query) plus x upsampled (nearest) to its size."""
        if num_queries > 1:
            lateral = lateral.repeat_interleave(num_queries, dim=0)
        return lateral + F.interpolate(x, size=lateral.shape[-2:], mode="nearest")


class FrameDecomposedConv3d(nn.Conv3d):
    """Conv3d that on the CPU runs as one batched 2-D conv per temporal tap, summed (same parameters).

    PyTorch's CPU conv3d takes a slow im2col path (no oneDNN), several times slower than the 2-D
    convs and with a large column buffer; the result equals it up to float summation order.
    Each tap convolves every input frame once (no padded copies of the input), in channels-last
    layout; its result is added to the output frames that read those frames. The output is in
    channels_last_3d layout, which the next layer reads without a copy.
    """

    def forward(self, x: Tensor) -> Tensor:
        if (x.device.type != "cpu" or self.stride != (1, 1, 1) or self.groups != 1
                or self.padding_mode != "zeros" or not isinstance(self.padding, tuple)):
            return super().forward(x)
        batch, channels, frames, height, width = x.shape
        pad_t, dil_t = self.padding[0], self.dilation[0]
        taps = self.kernel_size[0]
        out_frames = frames + 2 * pad_t - dil_t * (taps - 1)
        # each frame once as an image, channels-last: oneDNN's NHWC kernels are 2-3x faster than NCHW at these
        # few channels (a view when x is channels_last_3d)
        images = x.transpose(1, 2).reshape(batch * frames, channels, height, width)
        images = images.contiguous(memory_format=torch.channels_last)
        out: Optional[Tensor] = None
        for tap in range(taps):
            shift = tap * dil_t - pad_t  # output frame t reads input frame t + shift
            first, last = max(0, -shift), min(out_frames, frames - shift)  # output frames with a real input
            y = F.conv2d(images, self.weight[:, :, tap], self.bias if tap == 0 else None,
                         padding=self.padding[1:], dilation=self.dilation[1:])  # [B*T, C_out, H', W']
            if out is None:
                # zeros in y's layout; 0 + y is y exactly, so the sum keeps the taps' order
                out = _frames_like(y, batch, out_frames).zero_()
                if self.bias is not None:  # tap 0 on a padding frame: its bias alone
                    bias = self.bias[:, None, None]
                    out[:, :first] += bias
                    out[:, last:] += bias
            if first < last:
                y = y.reshape(batch, frames, *y.shape[1:])
                out[:, first:last] += y[:, first + shift:last + shift]
        # [B, T', C_out, H', W'] -> [B, C_out, T', H', W']
        return out.transpose(1, 2)


def _frames_like(images: Tensor, batch: int, frames: int) -> Tensor:
    """An uninitialised `[batch, frames, C, H, W]` for `images` `[N, C, H, W]`, each frame in their layout
    (channels-last or contiguous). One allocation, no view: autograd accepts in-place sums into its slices."""
    channels, height, width = images.shape[1:]
    if channels > 1 and images.is_contiguous(memory_format=torch.channels_last):
        strides = (frames * height * width * channels, height * width * channels, 1, width * channels, channels)
    else:
        strides = (frames * channels * height * width, channels * height * width, height * width, width, 1)
    return torch.empty_strided((batch, frames, channels, height, width), strides, dtype=images.dtype,
                               device=images.device)


def instance_head(in_channels: int) -> nn.Sequential:
    """3-D convolutions over (frame, y, x) of one clip's per-frame mask features -> mask logits."""
    layers: List[nn.Module] = []
    channels = in_channels
    for _ in range(3):
        layers += [FrameDecomposedConv3d(channels, INSTANCE_HIDDEN, 3, padding=INSTANCE_DILATION,
                                         dilation=INSTANCE_DILATION),
                   nn.GroupNorm(INSTANCE_GROUPS, INSTANCE_HIDDEN), nn.ReLU()]
        channels = INSTANCE_HIDDEN
    layers.append(FrameDecomposedConv3d(INSTANCE_HIDDEN, 1, 1))
    return nn.Sequential(*layers)


class WnetSegm(nn.Module):
    """The mask model: `wnet` (detector) + `bbox_attention`, `mask_head`, `insmask_head`."""

    def __init__(self, wnet: Wnet, fpn_dims: List[int], checkpoint_activations: bool = False) -> None:
        super().__init__()
        self.wnet = wnet
        self.checkpoint_activations = checkpoint_activations
        hidden_dim, nheads = wnet.transformer.d_model, wnet.transformer.nhead
        self.bbox_attention = MHAttentionMap(hidden_dim, hidden_dim, nheads)
        self.mask_head = MaskHeadSmallConv(hidden_dim + nheads, fpn_dims, hidden_dim)
        self.insmask_head = instance_head(self.mask_head.out_channels)

    def _run(self, head: nn.Module, *inputs) -> Tensor:
        """head(*inputs), recomputed in backward with --checkpoint_activations (training only)."""
        if self.checkpoint_activations and self.training and torch.is_grad_enabled():
            return checkpoint(head, *inputs, use_reentrant=False)
        return head(*inputs)

    def forward(self, samples: Clips, audio: Audio) -> Dict[str, object]:
        """samples: a clip `[T,3,H,W]`, a list of clips or a NestedTensor `[B*T,3,H,W]`;
        audio: `[B,39,L]`, a list of `[39,L_i]` or a NestedTensor with mask `[B,L]`.

        Returns `pred_boxes` `(B, Q, 4)`, `pred_masks` `(B, Q, H/4, W/4)` logits, `aux_outputs`
        (list of `{'pred_boxes': (B, Q, 4)}`, with aux loss), `memory` and `fusion` `(L_v, B, C)`.
        """
        wnet = self.wnet
        encoded = wnet.encode(samples, audio)
        out = wnet.box_outputs(encoded.hs)
        out["memory"] = encoded.memory
        out["fusion"] = encoded.fusion

        num_frames = wnet.num_frames  # one query per frame (`Wnet` refuses other counts)
        last, level_mask = encoded.features[-1].decompose()
        frames, _, height, width = last.shape
        batch = frames // num_frames
        channels = encoded.memory.shape[-1]
        # (T*h*w, B, C) -> [B*T, C, h, w]: each frame's memory as an image
        memory = encoded.memory.reshape(num_frames, height, width, batch, channels).permute(3, 0, 4, 1, 2)
        memory = memory.reshape(frames, channels, height, width)
        queries = encoded.hs[-1].reshape(frames, 1, channels)  # (B, T, C) -> [B*T, 1, C]: each frame's query
        bbox_mask = self.bbox_attention(queries, memory, mask=level_mask)  # [B*T, 1, heads, h, w]
        fpns = [encoded.features[2].tensors, encoded.features[1].tensors, encoded.features[0].tensors]
        frame_masks = self._run(self.mask_head, memory, bbox_mask, fpns)  # [B*T, C/16, H/4, W/4]
        _, mask_channels, mask_h, mask_w = frame_masks.shape
        # -> [B, C/16, T, H/4, W/4]: one 3-D volume per clip
        volumes = frame_masks.reshape(batch, num_frames, mask_channels, mask_h, mask_w)
        volumes = volumes.permute(0, 2, 1, 3, 4).reshape(batch, mask_channels, num_frames, mask_h, mask_w)
        logits = self._run(self.insmask_head, volumes)  # [B, 1, T, H/4, W/4]
        out["pred_masks"] = logits.reshape(batch, num_frames, mask_h, mask_w)
        return out


def build_wnet_segm(args) -> WnetSegm:
    wnet = build_wnet(args)
    level_channels = wnet.backbone.level_channels
    return WnetSegm(wnet, fpn_dims=[level_channels[2], level_channels[1], level_channels[0]],
                    checkpoint_activations=args.checkpoint_activations)
