"""Position encodings of Wnet.

`PositionEmbeddingSine3D` is VisTR's 3-D sine encoding of (frame, row, column), used by the decoder's
cross-attention keys. `SinusoidalPositionalEmbedding` is the fairseq 1-D table that the cross-modal
encoder adds to its visual and audio tokens. Both are computed in float32 whatever the model's dtype
(as the official does) and cast afterwards.
"""
import math

import torch
from torch import Tensor, nn

TWO_PI = 2 * math.pi
NORMALIZE_EPS = 1e-6
SINE_TEMPERATURE = 10000
NUM_AXES = 3  # frame, row, column


class PositionEmbeddingSine3D(nn.Module):
    """3-D sine encoding: `[z, y, x]` features, each `num_pos_feats` wide with sin/cos interleaved."""

    def __init__(self, num_pos_feats: int = 128, num_frames: int = 36, temperature: int = SINE_TEMPERATURE,
                 normalize: bool = True) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.num_frames = num_frames
        self.temperature = temperature
        self.normalize = normalize

    def forward(self, padding_mask: Tensor) -> Tensor:
        """padding_mask: `[B*T, h, w]` True on padding. Returns float32 `[B, T, 3*num_pos_feats, h, w]`."""
        frames, height, width = padding_mask.shape
        not_mask = ~padding_mask.reshape(frames // self.num_frames, self.num_frames, height, width)  # [B,T,h,w]
        z_embed = not_mask.cumsum(1, dtype=torch.float32)
        y_embed = not_mask.cumsum(2, dtype=torch.float32)
        x_embed = not_mask.cumsum(3, dtype=torch.float32)
        if self.normalize:
            z_embed = z_embed / (z_embed[:, -1:, :, :] + NORMALIZE_EPS) * TWO_PI
            y_embed = y_embed / (y_embed[:, :, -1:, :] + NORMALIZE_EPS) * TWO_PI
            x_embed = x_embed / (x_embed[:, :, :, -1:] + NORMALIZE_EPS) * TWO_PI
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=padding_mask.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
        encodings = []
        for embed in (z_embed, y_embed, x_embed):
            angles = embed[..., None] / dim_t  # [B, T, h, w, F]
            # sin on even, cos on odd features, interleaved: [..., F/2, 2] -> [..., F]
            encodings.append(torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=5).flatten(4))
        return torch.cat(encodings, dim=4).permute(0, 1, 4, 2, 3)  # [B, T, 3F, h, w]


def sinusoidal_table(num_positions: int, embedding_dim: int) -> Tensor:
    """fairseq table `[num_positions, embedding_dim]` in float32: sin half then cos half; row 0 is zero."""
    half_dim = embedding_dim // 2
    step = math.log(SINE_TEMPERATURE) / (half_dim - 1)
    freqs = torch.exp(torch.arange(half_dim, dtype=torch.float32) * -step)
    angles = torch.arange(num_positions, dtype=torch.float32).unsqueeze(1) * freqs.unsqueeze(0)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if embedding_dim % 2 == 1:
        table = torch.cat([table, torch.zeros(num_positions, 1)], dim=1)
    table[0] = 0  # row 0 is the padding position
    return table


class SinusoidalPositionalEmbedding(nn.Module):
    """fairseq sinusoidal positions of a token sequence.

    A token at index i uses row i, except tokens whose channel 0 is exactly 0.0, which the official
    treats as padding and gives row 0 (all zeros). `_float_tensor` is kept only so that official
    checkpoints load; the table is rebuilt (and cached) per length and device.
    """

    def __init__(self, embedding_dim: int) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.register_buffer("_float_tensor", torch.zeros(1))
        self._table = torch.zeros(0, embedding_dim)

    def _table_for(self, num_positions: int, device: torch.device) -> Tensor:
        if self._table.shape[0] < num_positions or self._table.device != device:
            self._table = sinusoidal_table(max(num_positions, self._table.shape[0]), self.embedding_dim).to(device)
        return self._table

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens: `(L, B, C)`. Returns the encoding `(L, B, embedding_dim)` in the tokens' dtype."""
        length = tokens.shape[0]
        table = self._table_for(length, tokens.device)
        positions = torch.arange(length, device=tokens.device).unsqueeze(1)  # [L, 1]
        positions = positions.masked_fill(tokens[..., 0] == 0, 0)  # [L, B]: zero tokens count as padding
        return table[positions].to(tokens.dtype)  # [L, B, C]
