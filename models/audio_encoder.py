"""The audio front end (`wnet.proj_a`): a recording's features -> the audio tokens the cross-modal encoder attends to.

The single place to plug in another front end: write a module with the interface of `MFCC39Projection`
(`forward(audio) -> (tokens (L_a, B, C), lengths [B])`, built from `hidden_dim`) and add it to
`AUDIO_ENCODERS` under the name `--audio_encoder` selects. The loaders give every recording as MFCC-39
features `[39, L]` (`util.audio_features`); a front end on other features needs loaders that produce them.
"""
from typing import Callable, Dict, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from util.audio_features import AUDIO_FEATURE_DIM
from util.errors import OptionError
from util.misc import NestedTensor, nested_tensor_from_audio_list

Audio = Union[Tensor, Sequence[Tensor], NestedTensor]


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


class MFCC39Projection(nn.Conv1d):
    """The official audio encoder: each MFCC-39 frame projected to the model width by a 1x1 convolution without
    bias, one token per feature frame. A `Conv1d` itself, so that its weight keeps the released checkpoints'
    key `proj_a.weight` in `Wnet`."""

    def __init__(self, hidden_dim: int) -> None:
        super().__init__(AUDIO_FEATURE_DIM, hidden_dim, kernel_size=1, bias=False)

    def forward(self, audio: Audio) -> Tuple[Tensor, Tensor]:
        """audio: `[B,39,L]`, `[39,L]`, a list of `[39,L_i]` or a NestedTensor with mask `[B,L]` (see `as_audio_batch`).

        Returns the tokens `(L, B, C)` (padding tokens included) and the number of real ones per recording `[B]`.
        """
        features, lengths = as_audio_batch(audio, self.in_channels)
        return super().forward(features).permute(2, 0, 1), lengths


AudioEncoderFactory = Callable[[int], nn.Module]  # hidden_dim -> the encoder
AUDIO_ENCODERS: Dict[str, AudioEncoderFactory] = {"mfcc39": MFCC39Projection}


def build_audio_encoder(args) -> nn.Module:
    """The `--audio_encoder` front end at the model width `--hidden_dim`."""
    if args.audio_encoder not in AUDIO_ENCODERS:
        raise OptionError(f"--audio_encoder {args.audio_encoder!r}: unknown; one of {sorted(AUDIO_ENCODERS)}")
    return AUDIO_ENCODERS[args.audio_encoder](args.hidden_dim)
