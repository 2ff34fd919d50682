"""Wavelet cross-modal denoising encoder (`transformer.encoder.*`).

Visual tokens attend to audio tokens; the result is denoised by soft-thresholding the detail bands
of a one-level 2-D db2 wavelet transform of the `(L_v, C)` token image of each sample; then a
feed-forward block. All sub-blocks are pre-norm. Returns the final `memory` and `fusion` (the state
after layer 0's attention), which the KL loss compares.
"""
import contextlib
import math
from typing import Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from pytorch_wavelets import DWTForward, DWTInverse
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .position_encoding import SinusoidalPositionalEmbedding

EMBED_DROPOUT = 0.25
FFN_EXPANSION = 4
WAVELET = "db2"
THRESHOLD_RATIO = 0.008  # tau = ratio * max |detail band| per sample (--wavelet_threshold; 0: no denoising)
ENCODER_VERSION = 2.0  # a fairseq buffer, kept so that official checkpoints load


def cross_modal_attention_mask(num_visual: int, audio_lengths: Tensor, num_audio: int) -> Tensor:
    """Boolean `[B, 1, L_v, L_a]`, True where visual token i may attend to audio token j.

    The official adds a `triu` mask of -inf at diagonal offset `1 + |L_a - L_v|` (blocking
    `j - i >= 1 + |L_a - L_v|`) with `L_a` the padded audio length, and no padding mask. We use each
    sample's own audio length for both, so a padded sample sees what it would see alone.
    """
    rows = torch.arange(num_visual, device=audio_lengths.device)[:, None]  # [L_v, 1]
    cols = torch.arange(num_audio, device=audio_lengths.device)[None, :]  # [1, L_a]
    lengths = audio_lengths[:, None, None]  # [B, 1, 1]
    offset = 1 + (lengths - num_visual).abs()
    allowed = ((cols - rows)[None] < offset) & (cols[None] < lengths)  # [B, L_v, L_a]
    return allowed[:, None]


class CrossModalAttention(nn.Module):
    """fairseq-style multi-head attention with a packed `in_proj_weight` (q rows, then k, then v)."""

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"hidden dim {embed_dim} must be divisible by the number of heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: Tensor, part: int) -> Tensor:
        """Project `(L, B, C)` with the `part`-th slice of the packed weights -> `(B, heads, L, d)`."""
        rows = slice(part * self.embed_dim, (part + 1) * self.embed_dim)
        x = F.linear(x, self.in_proj_weight[rows], self.in_proj_bias[rows])
        length, batch, _ = x.shape
        return x.reshape(length, batch, self.num_heads, self.head_dim).permute(1, 2, 0, 3)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, allowed: Tensor) -> Tensor:
        """query `(L_v, B, C)`, key/value `(L_a, B, C)`, allowed `[B, 1, L_v, L_a]` -> `(L_v, B, C)`."""
        q, k, v = self._heads(query, 0), self._heads(key, 1), self._heads(value, 2)
        # Attention dropout is 0 in Wnet; softmax scale head_dim ** -0.5 as the official.
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # [B, heads, L_v, d]
        attn = attn.permute(2, 0, 1, 3).flatten(2)  # (L_v, B, C)
        return self.out_proj(attn)


def soft_threshold_per_sample(bands: Tensor, ratio: float = THRESHOLD_RATIO) -> Tensor:
    """Shrink each sample's detail band towards 0 by `tau = ratio * max|band|` of that sample (0.008).

    bands: `[B, 1, 3, h, w]` (the three detail orientations). The official takes the max over the
    whole batch (samples share tau); per sample is identical at batch size 1. tau gets no gradient.
    `ratio` 0 returns `bands` itself: no thresholding.
    """
    if ratio == 0:
        return bands
    magnitude = bands.abs()
    tau = ratio * magnitude.detach().flatten(3).amax(dim=3)  # [B, 1, 3]
    return bands.sign() * (magnitude - tau[..., None, None]).clamp(min=0)


@contextlib.contextmanager
def native_cpu_convolutions(device: torch.device) -> Iterator[None]:
    """On the CPU, PyTorch's own convolutions instead of oneDNN's, for the forward wavelet transform: its filters
    convolve the one channel of the `(L_v, C)` token image, where oneDNN's kernels are slow (6x at the official
    size, 6120x384); the inverse's transposed convolutions are the other way round (oneDNN 3.5x faster), so they
    keep oneDNN. The same sums up to float rounding. Elsewhere nothing changes."""
    if device.type != "cpu":
        yield
        return
    saved = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = saved


class WaveletDenoisingLayer(nn.Module):
    """One encoder layer: cross-modal attention, wavelet denoising, feed-forward (all pre-norm)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.1,
                 threshold_ratio: float = THRESHOLD_RATIO) -> None:
        super().__init__()
        if not 0 <= threshold_ratio < 1:
            raise ValueError(f"--wavelet_threshold must be in [0, 1) (a fraction of the largest detail coefficient; "
                             f"official {THRESHOLD_RATIO}, 0 = off), got {threshold_ratio}")
        self.threshold_ratio = threshold_ratio
        self.self_attn = CrossModalAttention(embed_dim, num_heads)
        self.xfm = DWTForward(J=1, wave=WAVELET, mode="zero")
        self.ifm = DWTInverse(wave=WAVELET, mode="zero")
        self.fc1 = nn.Linear(embed_dim, FFN_EXPANSION * embed_dim)
        self.fc2 = nn.Linear(FFN_EXPANSION * embed_dim, embed_dim)
        self.layer_norms = nn.ModuleList([nn.LayerNorm(embed_dim) for _ in range(3)])
        self.dropout = dropout
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)

    def denoise(self, x: Tensor) -> Tensor:
        """Wavelet soft-thresholding of the `(L_v, B, C)` tokens, each sample as one image."""
        length, _, channels = x.shape
        # pytorch_wavelets' autograd functions bypass autocast: run in the filters' dtype.
        with torch.autocast(device_type=x.device.type, enabled=False):
            image = x.permute(1, 0, 2).unsqueeze(1).to(self.xfm.h0_col.dtype)  # [B, 1, L_v, C]
            with native_cpu_convolutions(x.device):
                low, (high,) = self.xfm(image)  # high: [B, 1, 3, h, w]
            image = self.ifm((low, [soft_threshold_per_sample(high, self.threshold_ratio)]))
        # The inverse transform has even sides; crop back (the official crashes on an odd L_v).
        image = image[:, :, :length, :channels].to(x.dtype)
        return image.squeeze(1).permute(1, 0, 2)  # (L_v, B, C)

    def forward(self, x: Tensor, audio_k: Tensor, audio_v: Tensor, allowed: Tensor) -> Tuple[Tensor, Tensor]:
        """x `(L_v, B, C)`, audio_k/audio_v `(L_a, B, C)`. Returns (output, fusion), both `(L_v, B, C)`."""
        norm = self.layer_norms[0]
        attn = self.self_attn(norm(x), norm(audio_k), norm(audio_v), allowed)
        x = x + F.dropout(attn, p=self.dropout, training=self.training)
        fusion = x

        denoised = self.denoise(self.layer_norms[1](x))
        x = x + F.dropout(denoised, p=self.dropout, training=self.training)

        hidden = F.dropout(F.relu(self.fc1(self.layer_norms[2](x))), p=self.dropout, training=self.training)
        x = x + F.dropout(self.fc2(hidden), p=self.dropout, training=self.training)
        return x, fusion


class WaveletCrossModalEncoder(nn.Module):
    """Stack of `WaveletDenoisingLayer`s over scaled, position-encoded visual and audio tokens."""

    def __init__(self, embed_dim: int = 384, num_heads: int = 8, num_layers: int = 4, dropout: float = 0.1,
                 embed_dropout: float = EMBED_DROPOUT, checkpoint_activations: bool = False,
                 threshold_ratio: float = THRESHOLD_RATIO) -> None:
        super().__init__()
        self.register_buffer("version", torch.tensor([ENCODER_VERSION]))
        self.embed_scale = math.sqrt(embed_dim)
        self.embed_dropout = embed_dropout
        self.embed_positions = SinusoidalPositionalEmbedding(embed_dim)
        self.layers = nn.ModuleList([WaveletDenoisingLayer(embed_dim, num_heads, dropout, threshold_ratio)
                                     for _ in range(num_layers)])
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.checkpoint_activations = checkpoint_activations

    def _embed(self, tokens: Tensor) -> Tensor:
        """`sqrt(C) * tokens + positions`, `(L, B, C)`."""
        return self.embed_scale * tokens + self.embed_positions(tokens)

    def forward(self, visual: Tensor, audio: Tensor, audio_lengths: Optional[Tensor] = None
                ) -> Tuple[Tensor, Tensor]:
        """visual `(L_v, B, C)`, audio `(L_a, B, C)`, audio_lengths `[B]` (default: all `L_a`).

        Returns `memory` `(L_v, B, C)` (after the final LayerNorm) and `fusion` `(L_v, B, C)`.
        """
        num_visual, batch, _ = visual.shape
        num_audio = audio.shape[0]
        if audio_lengths is None:
            audio_lengths = torch.full((batch,), num_audio, dtype=torch.long, device=audio.device)
        allowed = cross_modal_attention_mask(num_visual, audio_lengths, num_audio)
        x = F.dropout(self._embed(visual), p=self.embed_dropout, training=self.training)
        # Keys and values are the same embedding with independent dropout masks (as the official).
        audio_embedded = self._embed(audio)
        audio_k = F.dropout(audio_embedded, p=self.embed_dropout, training=self.training)
        audio_v = F.dropout(audio_embedded, p=self.embed_dropout, training=self.training)
        fusions: List[Tensor] = []
        for layer in self.layers:
            if self.checkpoint_activations and self.training and torch.is_grad_enabled():
                x, fusion = checkpoint(layer, x, audio_k, audio_v, allowed, use_reentrant=False)
            else:
                x, fusion = layer(x, audio_k, audio_v, allowed)
            fusions.append(fusion)
        return self.layer_norm(x), fusions[0]
