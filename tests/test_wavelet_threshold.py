"""--wavelet_threshold: the official 0.008 by default, passed down to every encoder layer, 0 = no thresholding."""
import pytest
import torch

from models import build_model
from models.encoder import THRESHOLD_RATIO, WaveletDenoisingLayer, soft_threshold_per_sample
from main import get_args_parser
from util.config import parse_args

TINY_ARGV = ["--backbone", "resnet18", "--hidden_dim", "48", "--nheads", "4", "--dim_feedforward", "64",
             "--enc_layers", "2", "--dec_layers", "1", "--num_frames", "2", "--num_queries", "2", "--masks",
             "--device", "cpu"]
RECONSTRUCTION_TOL = 1e-5  # a db2 wavelet transform and its inverse, in float32
OFFICIAL_RATIO = 0.008  # the official encoder's tau = 0.008 * max|detail band|, restated here as a fact to check


def encoder_layers(*extra: str):
    torch.manual_seed(0)
    model, _, _ = build_model(parse_args(get_args_parser(), TINY_ARGV + list(extra)))
    return model, list(model.wnet.transformer.encoder.layers)


def test_default_is_the_official_ratio_and_reaches_every_layer():
    assert get_args_parser().parse_args([]).wavelet_threshold == THRESHOLD_RATIO == 0.008
    _, layers = encoder_layers()
    assert [layer.threshold_ratio for layer in layers] == [THRESHOLD_RATIO] * 2
    _, layers = encoder_layers("--wavelet_threshold", "0.05")
    assert [layer.threshold_ratio for layer in layers] == [0.05] * 2


def test_soft_threshold_restated_with_the_official_ratio():
    # An independent restatement, one band at a time: each orientation of each sample shrinks towards 0 by
    # the official fraction of its own largest magnitude (what the parity fixtures check on a whole model).
    bands = torch.randn(2, 1, 3, 5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    bands[1] *= 10  # samples of different scales: a tau shared across the batch would be wrong for the first
    expected = torch.empty_like(bands)
    for sample in range(bands.shape[0]):
        for orientation in range(bands.shape[2]):
            band = bands[sample, 0, orientation]
            tau = OFFICIAL_RATIO * band.abs().max()
            expected[sample, 0, orientation] = band.sign() * torch.clamp(band.abs() - tau, min=0)
    torch.testing.assert_close(soft_threshold_per_sample(bands), expected)
    _, layers = encoder_layers()
    assert all(layer.threshold_ratio == OFFICIAL_RATIO for layer in layers)  # what the default model uses


def test_zero_turns_the_soft_thresholding_into_the_identity():
    bands = torch.randn(2, 1, 3, 5, 7)
    assert soft_threshold_per_sample(bands, 0.0) is bands
    shrunk = soft_threshold_per_sample(bands)
    assert (shrunk.abs() < bands.abs()).any() and torch.equal(shrunk.sign() * bands.sign() >= 0,
                                                              torch.ones_like(bands, dtype=torch.bool))
    # the whole denoising step: with 0 it is the wavelet transform and its inverse, i.e. the tokens back
    tokens = torch.randn(24, 2, 48)  # (L_v, B, C)
    off, official = (WaveletDenoisingLayer(48, 4, threshold_ratio=ratio) for ratio in (0.0, THRESHOLD_RATIO))
    torch.testing.assert_close(off.denoise(tokens), tokens, rtol=RECONSTRUCTION_TOL, atol=RECONSTRUCTION_TOL)
    assert (official.denoise(tokens) - tokens).abs().max() > 10 * RECONSTRUCTION_TOL


def test_the_threshold_changes_the_outputs_and_not_the_parameters():
    official, _ = encoder_layers()
    off, _ = encoder_layers("--wavelet_threshold", "0")
    assert official.state_dict().keys() == off.state_dict().keys()
    off.load_state_dict(official.state_dict())
    official.eval(), off.eval()
    clip = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    audio = 5 * torch.randn(1, 39, 9, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = official(clip, audio), off(clip, audio)
    assert not torch.allclose(a["memory"], b["memory"])


def test_a_bad_threshold_is_an_error():
    with pytest.raises(ValueError, match="--wavelet_threshold"):
        WaveletDenoisingLayer(48, 4, threshold_ratio=-0.1)
    with pytest.raises(ValueError, match="--wavelet_threshold"):
        encoder_layers("--wavelet_threshold", "1.5")


def test_wavelet_step_runs_native_cpu_convolutions_and_restores_onednn():
    layer = WaveletDenoisingLayer(12, 2).eval()
    seen = []
    for transform in (layer.xfm, layer.ifm):
        transform.register_forward_pre_hook(lambda module, inputs: seen.append(torch.backends.mkldnn.enabled))
    before = torch.backends.mkldnn.enabled
    layer.denoise(torch.randn(10, 1, 12))
    # the forward transform on PyTorch's convolutions, the inverse's transposed ones on oneDNN (each the faster)
    assert seen == [False, before] and torch.backends.mkldnn.enabled == before
