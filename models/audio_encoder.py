"""The audio front end (`wnet.proj_a`): a recording's features -> the audio tokens the cross-modal encoder attends to.

The single place to plug in another front end: write a module with the interface of `MFCC39Projection`
(`forward(audio) -> (tokens (L_a, B, C), lengths [B])`, built from `hidden_dim` and `cmvn`) and add it to
`AUDIO_ENCODERS` under the name `--audio_encoder` selects. The loaders give every recording as MFCC-39
features `[39, L]` (`util.audio_features`); a front end on other features needs loaders that produce them.

Front ends:
- `mfcc39` (official): each feature frame projected to the model width, one token per frame. Its weight is the
  released checkpoints' `proj_a.weight`.
- `conv` (ours, off by default): a small temporal convolution stack over the frames, so that each token sees
  about a syllable (a receptive field of 35 frames, 0.35 s) instead of one 25 ms frame; listening then depends
  less on the exact spectrum of one speaker. Not in the paper; no released checkpoint holds it.

`--audio_cmvn` (ours, off by default, either front end): per-utterance cepstral mean and variance normalisation
over the recording's real frames, which removes the recording's gain (c0 and, through the official delta quirk,
the first deltas) and a fixed channel colouring before the encoder.
"""
from typing import Callable, Dict, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from util.audio_features import AUDIO_FEATURE_DIM
from util.errors import OptionError
from util.misc import NestedTensor, nested_tensor_from_audio_list

Audio = Union[Tensor, Sequence[Tensor], NestedTensor]

CMVN_EPS = 1e-5  # floor of the per-coefficient variance (a constant coefficient is only centred)
CONV_STEM_KERNEL = 5
CONV_BLOCK_KERNEL = 3
CONV_DILATIONS = (1, 2, 4, 8)  # receptive field 5 + 2 * (1 + 2 + 4 + 8) = 35 frames
CONV_EXPANSION = 2  # hidden channels of a block, times the model width


def as_audio_batch(audio: Audio, feature_dim: int = AUDIO_FEATURE_DIM) -> Tuple[Tensor, Tensor]:
    """Audio `[B,D,L]`, `[D,L]`, a list of `[D,L_i]` or a NestedTensor -> (`[B,D,L]`, lengths `[B]`), where `D` is
    `feature_dim` (39 for MFCC-39) and shorter recordings are zero-padded at the end."""
    expected = f"[B, {feature_dim}, L] (MFCC-{feature_dim} features, padding at the end)"
    if isinstance(audio, NestedTensor):
        features, mask = audio.decompose()
    elif isinstance(audio, Tensor):
        features, mask = (audio.unsqueeze(0) if audio.dim() == 2 else audio), None
    else:
        for item in audio:
            if item.dim() != 2 or item.shape[0] != feature_dim:
                raise ValueError(f"audio: expected features [{feature_dim}, L] per clip, got {tuple(item.shape)}")
        features, mask = nested_tensor_from_audio_list(list(audio)).decompose()
    if features.dim() != 3 or features.shape[1] != feature_dim or features.shape[2] == 0:
        raise ValueError(f"audio: expected features {expected}, got {tuple(features.shape)}")
    if mask is None:
        lengths = torch.full((features.shape[0],), features.shape[2], dtype=torch.long, device=features.device)
    else:
        lengths = (~mask).sum(dim=1)
        if bool((lengths == 0).any()):
            raise ValueError("audio: a clip has no audio frames (its padding mask is all True)")
    return features, lengths


def frame_mask(lengths: Tensor, length: int, dtype: torch.dtype) -> Tensor:
    """`[B, 1, L]`: 1 on each recording's real frames, 0 on its padding."""
    positions = torch.arange(length, device=lengths.device)
    return (positions[None, :] < lengths[:, None]).to(dtype)[:, None, :]


def utterance_cmvn(features: Tensor, lengths: Tensor) -> Tensor:
    """Per-utterance mean and variance normalisation of `[B, D, L]` over each recording's real frames; the
    padding stays 0, so a padded recording is normalised as it would be alone."""
    real = frame_mask(lengths, features.shape[2], features.dtype)  # [B, 1, L]
    count = lengths.to(features.dtype)[:, None, None]  # [B, 1, 1]
    mean = (features * real).sum(dim=2, keepdim=True) / count  # [B, D, 1]
    variance = (((features - mean) * real) ** 2).sum(dim=2, keepdim=True) / count
    return (features - mean) * torch.rsqrt(variance + CMVN_EPS) * real


class MFCC39Projection(nn.Conv1d):
    """The official audio encoder: each MFCC-39 frame projected to the model width by a 1x1 convolution without
    bias, one token per feature frame. A `Conv1d` itself, so that its weight keeps the released checkpoints'
    key `proj_a.weight` in `Wnet`. `cmvn` (not official) normalises each recording first."""

    def __init__(self, hidden_dim: int, cmvn: bool = False) -> None:
        super().__init__(AUDIO_FEATURE_DIM, hidden_dim, kernel_size=1, bias=False)
        self.cmvn = cmvn

    def forward(self, audio: Audio) -> Tuple[Tensor, Tensor]:
        """audio: `[B,39,L]`, `[39,L]`, a list of `[39,L_i]` or a NestedTensor with mask `[B,L]` (see `as_audio_batch`).

        Returns the tokens `(L, B, C)` (padding tokens included) and the number of real ones per recording `[B]`.
        """
        features, lengths = as_audio_batch(audio, self.in_channels)
        if self.cmvn:
            features = utterance_cmvn(features, lengths)
        return super().forward(features).permute(2, 0, 1), lengths


class ConvBlock(nn.Module):
    """Pre-norm residual block: LayerNorm over channels, dilated conv, GELU, 1x1 conv."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.conv = nn.Conv1d(channels, CONV_EXPANSION * channels, CONV_BLOCK_KERNEL, dilation=dilation,
                              padding=dilation * (CONV_BLOCK_KERNEL // 2))
        self.out = nn.Conv1d(CONV_EXPANSION * channels, channels, kernel_size=1)

    def forward(self, x: Tensor, real: Tensor) -> Tensor:
        """x `[B, C, L]`, real `[B, 1, L]` (1 on real frames) -> `[B, C, L]`, padding kept at 0."""
        hidden = self.norm(x.transpose(1, 2)).transpose(1, 2) * real  # padding stays 0 as the conv's own
        return (x + self.out(F.gelu(self.conv(hidden)))) * real


class TemporalConvEncoder(nn.Module):
    """A stem convolution over MFCC-39 frames and `len(CONV_DILATIONS)` dilated residual blocks: one token per
    feature frame, each seeing 35 frames around it. Padding frames are zeroed after every layer, so a recording's
    tokens do not depend on what it is batched with."""

    def __init__(self, hidden_dim: int, cmvn: bool = False) -> None:
        super().__init__()
        self.cmvn = cmvn
        self.stem = nn.Conv1d(AUDIO_FEATURE_DIM, hidden_dim, CONV_STEM_KERNEL, padding=CONV_STEM_KERNEL // 2)
        self.blocks = nn.ModuleList(ConvBlock(hidden_dim, d) for d in CONV_DILATIONS)
        self.norm = nn.LayerNorm(hidden_dim)

    def forward(self, audio: Audio) -> Tuple[Tensor, Tensor]:
        """audio as `MFCC39Projection.forward`; returns the tokens `(L, B, C)` and the real lengths `[B]`."""
        features, lengths = as_audio_batch(audio, AUDIO_FEATURE_DIM)
        if self.cmvn:
            features = utterance_cmvn(features, lengths)
        real = frame_mask(lengths, features.shape[2], features.dtype)  # [B, 1, L]
        x = self.stem(features * real) * real  # [B, C, L]
        for block in self.blocks:
            x = block(x, real)
        return self.norm(x.permute(2, 0, 1)), lengths  # [B, C, L] -> (L, B, C)


AudioEncoderFactory = Callable[..., nn.Module]  # (hidden_dim, cmvn=...) -> the encoder
AUDIO_ENCODERS: Dict[str, AudioEncoderFactory] = {"mfcc39": MFCC39Projection, "conv": TemporalConvEncoder}
DEFAULT_AUDIO_ENCODER = "mfcc39"  # the official front end


def build_audio_encoder(args) -> nn.Module:
    """The `--audio_encoder` front end at the model width `--hidden_dim`, normalising with `--audio_cmvn`."""
    if args.audio_encoder not in AUDIO_ENCODERS:
        raise OptionError(f"--audio_encoder {args.audio_encoder!r}: unknown; one of {sorted(AUDIO_ENCODERS)}")
    return AUDIO_ENCODERS[args.audio_encoder](args.hidden_dim, cmvn=args.audio_cmvn)
