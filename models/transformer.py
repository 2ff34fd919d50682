"""Wnet transformer: the wavelet cross-modal encoder followed by the Fourier decoder."""
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from util.errors import OptionError

from .decoder import FourierDecoder, FourierDecoderLayer
from .encoder import THRESHOLD_RATIO, WaveletCrossModalEncoder


class Transformer(nn.Module):
    def __init__(self, d_model: int = 384, nhead: int = 8, num_encoder_layers: int = 4,
                 num_decoder_layers: int = 4, dim_feedforward: int = 2048, dropout: float = 0.1,
                 normalize_before: bool = False, checkpoint_activations: bool = False,
                 wavelet_threshold: float = THRESHOLD_RATIO) -> None:
        super().__init__()
        if d_model % nhead != 0:
            raise OptionError(f"--hidden_dim {d_model} must be divisible by --nheads {nhead}")
        self.encoder = WaveletCrossModalEncoder(embed_dim=d_model, num_heads=nhead, num_layers=num_encoder_layers,
                                                dropout=dropout, checkpoint_activations=checkpoint_activations,
                                                threshold_ratio=wavelet_threshold)
        decoder_layer = FourierDecoderLayer(d_model, nhead, dim_feedforward, dropout, normalize_before)
        self.decoder = FourierDecoder(decoder_layer, num_decoder_layers, nn.LayerNorm(d_model),
                                      checkpoint_activations=checkpoint_activations)
        self.d_model = d_model
        self.nhead = nhead
        for param in self.parameters():
            if param.dim() > 1:
                nn.init.xavier_uniform_(param)

    def forward(self, visual: Tensor, padding_mask: Tensor, audio: Tensor, audio_lengths: Optional[Tensor],
                query_embed: Tensor, pos: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """visual/pos `(L_v, B, C)`, padding_mask `[B, L_v]`, audio `(L_a, B, C)`, query_embed `[Q, C]`.

        Returns `hs` `(L_dec, B, Q, C)`, `memory` `(L_v, B, C)`, `fusion` `(L_v, B, C)`.
        """
        batch = visual.shape[1]
        query_pos = query_embed.unsqueeze(1).expand(-1, batch, -1)  # (Q, B, C)
        memory, fusion = self.encoder(visual, audio, audio_lengths)
        hs = self.decoder(torch.zeros_like(query_pos), memory, memory_key_padding_mask=padding_mask,
                          pos=pos, query_pos=query_pos)
        return hs.transpose(1, 2), memory, fusion


def build_transformer(args) -> Transformer:
    return Transformer(d_model=args.hidden_dim, nhead=args.nheads, num_encoder_layers=args.enc_layers,
                       num_decoder_layers=args.dec_layers, dim_feedforward=args.dim_feedforward,
                       dropout=args.dropout, normalize_before=args.pre_norm,
                       checkpoint_activations=args.checkpoint_activations,
                       wavelet_threshold=args.wavelet_threshold)
