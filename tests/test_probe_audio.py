"""scripts/probe_audio.py: per-stage change of the outputs when another expression's recording is played."""
import json
import shutil

import pytest
import torch

import inference_rvos
import main as train
from model_helpers import save_untrained_checkpoint
from scripts import demo, probe_audio
from scripts.make_demo_data import generate
from util.config import own_argv


@pytest.fixture(scope="module")
def probe_setup(tmp_path_factory):
    """The quick demo data and a randomly initialised demo model saved as a checkpoint."""
    root = tmp_path_factory.mktemp("probe")
    data = root / "data"
    generate(data, demo.QUICK_DATA)
    argv = own_argv(demo.model_args(demo.DEFAULT_CONFIG, data, root / "out", []), inference_rvos.get_parser(),
                    train.get_parser())
    checkpoint = save_untrained_checkpoint(root, argv)
    return data, argv + ["--model_path", str(checkpoint)]


def test_probe_reports_every_stage(probe_setup, tmp_path, capsys):
    data, argv = probe_setup
    result = probe_audio.main(argv + ["--json", str(tmp_path / "probe.json")])
    videos = demo.test_videos(data)
    assert result["num_videos"] == len(videos)
    assert result["num_expressions"] == len(result["rows"]) >= 2
    summary = result["summary"]
    assert set(summary) == {*probe_audio.STAGES, "mask_iou"}
    assert summary["fusion"] > 0  # another recording changes the cross-modal tokens
    assert 0.0 <= summary["mask_iou"] <= 1.0
    written = json.loads((tmp_path / "probe.json").read_text())
    assert written["summary"] == pytest.approx(summary)
    table = capsys.readouterr().out
    assert all(stage in table for stage in probe_audio.STAGES)


def test_probe_sees_no_change_when_the_recordings_are_the_same(probe_setup, tmp_path):
    data, argv = probe_setup
    same = tmp_path / "same_audio"
    shutil.copytree(data / "audio_feature", same)
    for video in demo.test_videos(data):
        recordings = sorted(same.glob(f"{video}_*.npy"))
        for path in recordings[1:]:
            shutil.copyfile(recordings[0], path)  # every expression of the video plays the first recording
    result = probe_audio.main(argv + ["--rvos_audio_path", str(same)])
    for stage in probe_audio.STAGES:
        assert result["summary"][stage] == 0.0, stage
    assert result["summary"]["mask_iou"] == 1.0


def test_relative_change_and_mask_iou():
    a = torch.tensor([3.0, 4.0])
    assert probe_audio.relative_change(a, a) == 0.0
    assert probe_audio.relative_change(a, torch.zeros(2)) == pytest.approx(1.0)
    assert probe_audio.mask_iou(torch.tensor([True, True, False]), torch.tensor([True, False, False])) == 0.5
    assert probe_audio.mask_iou(torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool)) == 1.0
