"""Fourier decoder (`transformer.decoder.*`): DETR's decoder with self-attention replaced by an FFT.

Each layer mixes the queries with the real part of a 2-D FFT over (query, channel), then attends to
the encoder memory and applies a feed-forward block. Post-norm by default, pre-norm with
`normalize_before`. Every layer's output goes through the shared final `norm`.
"""
import copy
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def fourier_mix(tgt: Tensor) -> Tensor:
    """Real part of the 2-D FFT of each sample's `(Q, C)` slice of `tgt` `(Q, B, C)`.

    The official `fftn` also transforms the batch axis, mixing samples when B > 1; a length-1 FFT
    is the identity, so at B = 1 the two are the same.
    """
    return torch.fft.fft2(tgt, dim=(0, 2)).real


def with_pos(tensor: Tensor, pos: Optional[Tensor]) -> Tensor:
    return tensor if pos is None else tensor + pos


class FourierDecoderLayer(nn.Module):
    """Fourier mixing, cross-attention to the memory, feed-forward; each with a residual and LN."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 normalize_before: bool = False) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.normalize_before = normalize_before

    def _attend(self, query: Tensor, memory: Tensor, pos: Optional[Tensor],
                memory_key_padding_mask: Optional[Tensor]) -> Tensor:
        return self.multihead_attn(query=query, key=with_pos(memory, pos), value=memory,
                                   key_padding_mask=memory_key_padding_mask, need_weights=False)[0]

    def _feed_forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(x))))

    def forward_post(self, tgt: Tensor, memory: Tensor, memory_key_padding_mask: Optional[Tensor],
                     pos: Optional[Tensor], query_pos: Optional[Tensor]) -> Tensor:
        tgt = with_pos(tgt, query_pos)  # the official adds the query embedding to the state itself
        tgt = self.norm1(tgt + self.dropout1(fourier_mix(tgt)))
        attn = self._attend(with_pos(tgt, query_pos), memory, pos, memory_key_padding_mask)
        tgt = self.norm2(tgt + self.dropout2(attn))
        return self.norm3(tgt + self.dropout3(self._feed_forward(tgt)))

    def forward_pre(self, tgt: Tensor, memory: Tensor, memory_key_padding_mask: Optional[Tensor],
                    pos: Optional[Tensor], query_pos: Optional[Tensor]) -> Tensor:
        tgt = tgt + self.dropout1(fourier_mix(with_pos(self.norm1(tgt), query_pos)))
        attn = self._attend(with_pos(self.norm2(tgt), query_pos), memory, pos, memory_key_padding_mask)
        tgt = tgt + self.dropout2(attn)
        return tgt + self.dropout3(self._feed_forward(self.norm3(tgt)))

    def forward(self, tgt: Tensor, memory: Tensor, memory_key_padding_mask: Optional[Tensor] = None,
                pos: Optional[Tensor] = None, query_pos: Optional[Tensor] = None) -> Tensor:
        """tgt `(Q, B, C)`, memory/pos `(L_v, B, C)`, mask `[B, L_v]` True on padding -> `(Q, B, C)`."""
        if self.normalize_before:
            return self.forward_pre(tgt, memory, memory_key_padding_mask, pos, query_pos)
        return self.forward_post(tgt, memory, memory_key_padding_mask, pos, query_pos)


class FourierDecoder(nn.Module):
    """`num_layers` copies of a layer; returns every layer's normed output."""

    def __init__(self, decoder_layer: FourierDecoderLayer, num_layers: int, norm: nn.LayerNorm,
                 checkpoint_activations: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList([copy.deepcopy(decoder_layer) for _ in range(num_layers)])
        self.norm = norm
        self.checkpoint_activations = checkpoint_activations

    def forward(self, tgt: Tensor, memory: Tensor, memory_key_padding_mask: Optional[Tensor] = None,
                pos: Optional[Tensor] = None, query_pos: Optional[Tensor] = None) -> Tensor:
        """Returns `hs` `(L_dec, Q, B, C)`: `norm` of each layer's output."""
        output = tgt
        intermediate = []
        for layer in self.layers:
            if self.checkpoint_activations and self.training and torch.is_grad_enabled():
                output = checkpoint(layer, output, memory, memory_key_padding_mask, pos, query_pos,
                                    use_reentrant=False)
            else:
                output = layer(output, memory, memory_key_padding_mask, pos, query_pos)
            intermediate.append(self.norm(output))
        return torch.stack(intermediate)
