"""`--amp` (bfloat16 autocast) and `--compile` at inference on the CPU: finite outputs close to float32 with both
deformable-convolution backends, masks that mostly agree with float32, and a log line saying that the run departs
from the official float32 protocol."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import inference_rvos
from data_factory import make_ytvos
from engine.inference import AutocastInference, load_model_for_inference
from model_helpers import save_untrained_checkpoint
from models.dcn import BACKEND_ENV, extension_available
from util.results import decode_masks, read_results

NUM_FRAMES = 3
MODEL_ARGV = ["--backbone", "resnet18", "--hidden_dim", "96", "--nheads", "8", "--dim_feedforward", "128",
              "--enc_layers", "1", "--dec_layers", "1", "--num_frames", str(NUM_FRAMES),
              "--num_queries", str(NUM_FRAMES), "--masks", "--device", "cpu", "--seed", "0"]
# bfloat16 keeps 8 bits of mantissa: logits a few percent off float32, so only those near 0 change sign. A wrong
# cast (a layer's output read as another dtype, a dropped bias) moves far more of them.
MIN_SIGN_AGREEMENT = 0.97
MIN_MASK_AGREEMENT = 0.97
MAX_RELATIVE_LOGIT_ERROR = 0.05


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_untrained_checkpoint(tmp_path_factory.mktemp("ckpt"), MODEL_ARGV)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    return make_ytvos(tmp_path_factory.mktemp("ytvos"), num_videos=2, num_frames=[5, 2])


def data_argv(data: dict, checkpoint: Path) -> list:
    return MODEL_ARGV + ["--model_path", str(checkpoint), "--ytvos_path", data["root"],
                         "--rvos_audio_path", data["audio_root"]]


@pytest.mark.parametrize("backend", ["extension", "torchvision"])
def test_amp_logits_close_to_float32(backend: str, checkpoint: Path, data: dict,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    if backend == "extension" and not extension_available():
        pytest.fail("models/dcn/_C is not built: run `make build-ext`")
    monkeypatch.setenv(BACKEND_ENV, backend)
    argv = data_argv(data, checkpoint)
    model, _, _, _ = load_model_for_inference(inference_rvos.parse(argv))
    amp_model, _, _, _ = load_model_for_inference(inference_rvos.parse(argv + ["--amp"]))
    assert isinstance(amp_model, AutocastInference) and amp_model.dtype == torch.bfloat16
    generator = torch.Generator().manual_seed(0)
    clip, audio = torch.randn(NUM_FRAMES, 3, 64, 96, generator=generator), torch.randn(1, 39, 40, generator=generator)
    with torch.no_grad():
        expected, actual = model(clip, audio)["pred_masks"], amp_model(clip, audio)["pred_masks"]
    assert actual.dtype == torch.float32 and actual.shape == expected.shape and torch.isfinite(actual).all()
    assert ((actual > 0) == (expected > 0)).float().mean().item() >= MIN_SIGN_AGREEMENT
    assert ((actual - expected).norm() / expected.norm()).item() <= MAX_RELATIVE_LOGIT_ERROR


def test_amp_inference_agrees_and_says_so(tmp_path: Path, checkpoint: Path, data: dict,
                                          capsys: pytest.CaptureFixture) -> None:
    masks = {}
    for name, extra in (("float32", []), ("amp", ["--amp"])):
        path = tmp_path / f"{name}.json"
        inference_rvos.main(data_argv(data, checkpoint) + ["--save_path", str(path)] + extra)
        masks[name] = {(e["file_name"], e["exp_id"]): decode_masks(e["segmentations"]) for e in read_results(path)}
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
        notes = [line for line in lines if line.get("event") == "amp"]
        if name == "amp":
            assert len(notes) == 1 and "departs from the official float32 protocol" in notes[0]["note"]
        else:
            assert notes == []
    assert masks["amp"].keys() == masks["float32"].keys()
    agree = [np.mean(masks["amp"][key] == masks["float32"][key]) for key in masks["float32"]]
    assert min(agree) >= MIN_MASK_AGREEMENT


def test_amp_is_a_setting_of_the_results(tmp_path: Path, checkpoint: Path, data: dict) -> None:
    """A float32 run's unfinished results are not resumed under --amp (its masks differ)."""
    from util.journal import journal_settings
    argv = data_argv(data, checkpoint)
    assert journal_settings(inference_rvos.parse(argv)) != journal_settings(inference_rvos.parse(argv + ["--amp"]))
