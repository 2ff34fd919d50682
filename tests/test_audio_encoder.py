"""The audio front end is one swappable part (`--audio_encoder`), and one query per frame is enforced at build."""
import argparse

import pytest
import torch
from torch import nn

from main import get_args_parser
from models import build_model
from models.audio_encoder import AUDIO_ENCODERS, MFCC39Projection, as_audio_batch, build_audio_encoder
from test_model import audio, clip, tiny_args
from util.audio_features import AUDIO_FEATURE_DIM
from util.config import parse_args
from util.errors import OptionError

HIDDEN_DIM = 96  # tiny_args' --hidden_dim


def test_the_official_encoder_keeps_the_checkpoint_key():
    model, _, _ = build_model(tiny_args())
    assert isinstance(model.wnet.proj_a, MFCC39Projection)
    weights = {key: value for key, value in model.state_dict().items() if "proj_a" in key}
    assert {key: tuple(value.shape) for key, value in weights.items()} == {
        "wnet.proj_a.weight": (HIDDEN_DIM, AUDIO_FEATURE_DIM, 1)}


def test_the_official_encoder_is_the_projection_of_each_feature_frame():
    encoder = MFCC39Projection(hidden_dim=8)
    features = [audio(1, 5), audio(2, 3)]
    tokens, lengths = encoder(features)
    assert tokens.shape == (5, 2, 8) and lengths.tolist() == [5, 3]
    torch.testing.assert_close(tokens[:3, 1], features[1].T @ encoder.weight[:, :, 0].T)
    padded, _ = as_audio_batch(features)
    assert padded.shape == (2, AUDIO_FEATURE_DIM, 5) and not padded[1, :, 3:].any()


def test_the_parser_offers_the_registry_and_refuses_other_names():
    parser = get_args_parser()
    choices = next(action.choices for action in parser._actions if action.dest == "audio_encoder")
    assert sorted(choices) == sorted(AUDIO_ENCODERS)
    assert parse_args(get_args_parser(), []).audio_encoder == "mfcc39"
    with pytest.raises(SystemExit):
        parse_args(get_args_parser(), ["--audio_encoder", "wav2vec"])
    with pytest.raises(OptionError, match="--audio_encoder 'wav2vec'"):
        build_audio_encoder(argparse.Namespace(audio_encoder="wav2vec", hidden_dim=HIDDEN_DIM))


class HalfRateEncoder(nn.Module):
    """Another front end: one token per two feature frames."""

    def __init__(self, hidden_dim: int, cmvn: bool = False):
        super().__init__()
        self.conv = nn.Conv1d(AUDIO_FEATURE_DIM, hidden_dim, kernel_size=2, stride=2)

    def forward(self, audio):
        features, lengths = as_audio_batch(audio)
        return self.conv(features).permute(2, 0, 1), torch.div(lengths, 2, rounding_mode="floor").clamp(min=1)


def test_a_registered_encoder_replaces_the_official_one(monkeypatch):
    monkeypatch.setitem(AUDIO_ENCODERS, "half_rate", HalfRateEncoder)
    args = tiny_args()
    args.audio_encoder = "half_rate"  # the parser's choices are fixed at import; a plug-in sets the name itself
    model, _, _ = build_model(args)
    assert isinstance(model.wnet.proj_a, HalfRateEncoder) and "wnet.proj_a.conv.weight" in model.state_dict()
    with torch.no_grad():
        out = model.eval()(clip(1), audio(2, 8)[None])
    assert out["pred_masks"].shape[:2] == (1, 2) and torch.isfinite(out["pred_masks"]).all()


def test_several_queries_per_frame_are_refused_at_build():
    with pytest.raises(OptionError, match="--num_queries 4 must equal --num_frames 2"):
        build_model(tiny_args("--num_queries", "4"))
    with pytest.raises(OptionError, match="--num_queries 3 must equal --num_frames 2"):
        build_model(tiny_args("--num_queries", "3"))
