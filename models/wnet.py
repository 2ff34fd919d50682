"""Wnet detector (`wnet.*`): backbone, audio encoder, transformer and the box head.

`Wnet.encode` runs everything up to the decoder and is shared with the mask model
(`models.segmentation.WnetSegm`), which adds the mask branch on top.
"""
from dataclasses import dataclass
from typing import Dict, List, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from util.errors import OptionError
from util.misc import NestedTensor, nested_tensor_from_videos_list

from .audio_encoder import Audio, build_audio_encoder
from .backbone import Joiner, build_backbone
from .transformer import Transformer, build_transformer

BOX_HEAD_LAYERS = 3

Clips = Union[Tensor, Sequence[Tensor], NestedTensor]


class MLP(nn.Module):
    """Plain multi-layer perceptron with ReLU between layers."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_dim] + dims, dims + [output_dim]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < len(self.layers) - 1 else layer(x)
        return x


def as_clip_batch(samples: Clips, num_frames: int) -> NestedTensor:
    """One clip `[T,3,H,W]`, clips `[B,T,3,H,W]`, a list of clips or a NestedTensor `[B*T,3,H,W]`."""
    expected = f"[{num_frames}, 3, H, W] (--num_frames {num_frames})"
    if isinstance(samples, NestedTensor):
        frames = samples.tensors
        if frames.dim() != 4 or frames.shape[1] != 3 or frames.shape[0] % num_frames != 0:
            raise ValueError(f"samples: expected frames [B*{num_frames}, 3, H, W] (clips of {expected}), "
                             f"got {tuple(frames.shape)}")
        if samples.mask is None:
            mask = torch.zeros((frames.shape[0],) + frames.shape[-2:], dtype=torch.bool, device=frames.device)
            samples = NestedTensor(frames, mask)
        return samples
    if isinstance(samples, Tensor):
        if samples.dim() == 5:
            samples = list(samples)
        elif samples.dim() == 4:
            samples = [samples]
        else:
            raise ValueError(f"samples: expected a clip {expected}, got a tensor of shape {tuple(samples.shape)}")
    for clip in samples:
        if clip.dim() != 4 or clip.shape[0] != num_frames or clip.shape[1] != 3:
            raise ValueError(f"samples: expected clips of shape {expected}, got {tuple(clip.shape)}")
    return nested_tensor_from_videos_list(list(samples))


@dataclass
class Encoded:
    """What the detector computes before its heads; frames of all clips on one axis (`B*T`)."""
    features: List[NestedTensor]  # layer1..layer4, `[B*T, C_l, h_l, w_l]`
    hs: Tensor  # decoder stack `(L_dec, B, Q, C)`
    memory: Tensor  # `(L_v, B, C)`, tokens frame-major (t, y, x)
    fusion: Tensor  # `(L_v, B, C)`


class Wnet(nn.Module):
    """Audio-guided video object detector: one query per frame, boxes from the decoder stack."""

    def __init__(self, backbone: Joiner, transformer: Transformer, audio_encoder: nn.Module, num_frames: int,
                 num_queries: int, aux_loss: bool = True) -> None:
        super().__init__()
        if num_queries != num_frames:
            # the criterion matches, and the postprocessors read, one query slot per frame
            raise OptionError(f"--num_queries {num_queries} must equal --num_frames {num_frames}: Wnet predicts "
                              f"one object per frame with one query each (several query slots per frame are not "
                              f"supported by its losses and postprocessors)")
        hidden_dim = transformer.d_model
        # Registration order fixes the state_dict order of the official checkpoints.
        self.transformer = transformer
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, BOX_HEAD_LAYERS)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.input_proj = nn.Conv2d(backbone.num_channels, hidden_dim, kernel_size=1)
        self.proj_a = audio_encoder  # the official name of the audio projection: its checkpoint key `proj_a.weight`
        self.backbone = backbone
        self.num_frames = num_frames
        self.num_queries = num_queries
        self.hidden_dim = hidden_dim
        self.aux_loss = aux_loss

    def encode(self, samples: Clips, audio: Audio) -> Encoded:
        clips = as_clip_batch(samples, self.num_frames)
        audio_tokens, audio_lengths = self.proj_a(audio)  # (L_a, B, C), [B]
        batch = clips.tensors.shape[0] // self.num_frames
        if audio_tokens.shape[1] != batch:
            raise ValueError(f"audio: expected one recording per clip ({batch} clips), got {audio_tokens.shape[1]}")
        features, pos = self.backbone(clips)
        src, mask = features[-1].decompose()
        src = self.input_proj(src)
        _, channels, height, width = src.shape
        # [B*T, C, h, w] -> (T*h*w, B, C): tokens frame-major (t, y, x)
        visual = src.reshape(batch, self.num_frames, channels, height * width).permute(1, 3, 0, 2)
        visual = visual.reshape(-1, batch, channels)
        pos = pos.reshape(batch, self.num_frames, channels, height * width).permute(1, 3, 0, 2)
        pos = pos.reshape(-1, batch, channels)  # (L_v, B, C)
        padding_mask = mask.reshape(batch, -1)  # [B, T*h*w]
        hs, memory, fusion = self.transformer(visual, padding_mask, audio_tokens, audio_lengths,
                                              self.query_embed.weight, pos)
        return Encoded(features=features, hs=hs, memory=memory, fusion=fusion)

    def box_outputs(self, hs: Tensor) -> Dict[str, object]:
        """`pred_boxes` `(B, Q, 4)` sigmoid (cx, cy, w, h) and, with aux loss, earlier layers' boxes."""
        coords = self.bbox_embed(hs).sigmoid()  # (L_dec, B, Q, 4)
        out: Dict[str, object] = {"pred_boxes": coords[-1]}
        if self.aux_loss:
            out["aux_outputs"] = [{"pred_boxes": c} for c in coords[:-1]]
        return out

    def forward(self, samples: Clips, audio: Audio) -> Dict[str, object]:
        """samples: clips (see `as_clip_batch`); audio: features (see `as_audio_batch`).

        Returns `pred_boxes` `(B, Q, 4)`, `aux_outputs` (list of `{'pred_boxes'}`, with aux loss),
        `memory` and `fusion` `(L_v, B, C)`.
        """
        encoded = self.encode(samples, audio)
        out = self.box_outputs(encoded.hs)
        out["memory"] = encoded.memory
        out["fusion"] = encoded.fusion
        return out


def build_wnet(args) -> Wnet:
    return Wnet(build_backbone(args), build_transformer(args), build_audio_encoder(args), num_frames=args.num_frames,
                num_queries=args.num_queries, aux_loss=args.aux_loss)
