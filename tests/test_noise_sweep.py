"""scripts/noise_sweep.py on a tiny checkpoint: every pass, sweep.json, sweep.png, the derangement of scripts/demo.py,
and the comparison picture of several sweeps."""
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from data_factory import make_ytvos
from model_helpers import save_untrained_checkpoint
from scripts import demo, noise_sweep, speak_expressions

MODEL_ARGV = ["--backbone", "resnet18", "--hidden_dim", "48", "--nheads", "4", "--dim_feedforward", "64",
              "--enc_layers", "1", "--dec_layers", "1", "--num_frames", "2", "--num_queries", "2", "--masks",
              "--device", "cpu", "--seed", "0", "--data_scale", "0.2"]
SNRS = ("10", "-10")


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    data = make_ytvos(root / "ytvos", num_videos=2, num_frames=3)
    assert speak_expressions.main(["--format", "ytvos", "--annotations",
                                   str(Path(data["root"]) / "meta_expressions" / "train" / "meta_expressions.json"),
                                   "--wav_dir", str(root / "wav"), "--feature_dir", str(root / "features"),
                                   "--workers", "1"]) == 0
    checkpoint = save_untrained_checkpoint(root, MODEL_ARGV)
    split_file = root / "test_videos.txt"
    split_file.write_text("vid001\nvid000\n")
    argv = MODEL_ARGV + ["--model_path", str(checkpoint), "--ytvos_path", data["root"],
                         "--rvos_wav_path", str(root / "wav"), "--split_file", str(split_file)]
    result = noise_sweep.main(["--out", str(root / "out"), "--snrs", *SNRS] + argv)
    return root, data, argv, result


def test_sweep_writes_every_pass_json_and_picture(swept):
    root, _, _, result = swept
    out = root / "out"
    written = json.loads((out / noise_sweep.SWEEP_NAME).read_text())
    assert written == json.loads(json.dumps(result))
    assert written["num_videos"] == 2 and written["num_expressions"] == 4
    assert written["snrs_db"] == [10.0, -10.0] and written["wavelet_threshold"] == 0.008
    levels = [written["clean"], written["deranged"]]
    for noise in ("white", "babble"):
        assert [point["snr_db"] for point in written["noise"][noise]] == [10.0, -10.0]
        levels += written["noise"][noise] + [written["noise_only"][noise]]
    for metrics in levels:
        assert 0.0 <= metrics["J&F"] <= 1.0
        assert metrics["J&F"] == pytest.approx((metrics["J"] + metrics["F"]) / 2)
    passes = sorted(p.stem for p in (out / noise_sweep.RESULTS_DIR).glob("*.json"))
    assert passes == sorted(["clean", "deranged", "white_only", "white_+10dB", "white_-10dB", "babble_only",
                             "babble_+10dB", "babble_-10dB"])
    with Image.open(out / noise_sweep.PLOT_NAME) as picture:
        assert picture.format == "PNG"
        assert picture.size == tuple(round(side * noise_sweep.FIGURE_DPI) for side in noise_sweep.FIGURE_SIZE)


def test_deranged_pass_is_the_demo_derangement(swept, tmp_path: Path):
    root, data, _, result = swept
    mapping = demo.write_shuffled_audio(Path(data["root"]), ["vid001", "vid000"], root / "features", tmp_path, seed=0)
    assert result["deranged_from"] == mapping
    assert all(source != exp_id for sources in mapping.values() for exp_id, source in sources.items())
    assert result["deranged_kept_own"] == []


def test_combined_picture_and_bad_arguments(swept, tmp_path: Path):
    root, _, argv, _ = swept
    sweep_json = root / "out" / noise_sweep.SWEEP_NAME
    combined = noise_sweep.main(["--out", str(tmp_path), "--combine", f"wavelet on={sweep_json}",
                                 f"wavelet off={sweep_json}", "--title", "on / off"])
    assert list(combined) == ["wavelet on", "wavelet off"]
    with Image.open(tmp_path / noise_sweep.COMPARISON_NAME) as picture:
        assert picture.format == "PNG"
    with pytest.raises(SystemExit, match="LABEL=SWEEP_JSON"):
        noise_sweep.main(["--out", str(tmp_path), "--combine", str(sweep_json)])
    with pytest.raises(SystemExit, match="not a sweep.json"):
        (tmp_path / "other.json").write_text("{}")
        noise_sweep.main(["--out", str(tmp_path), "--combine", f"x={tmp_path / 'other.json'}"])
    without_recordings = [a for a in argv if a != "--rvos_wav_path" and not a.endswith("/wav")]
    with pytest.raises(SystemExit, match="--rvos_wav_path"):
        noise_sweep.main(["--out", str(tmp_path / "none")] + without_recordings)


def test_the_threshold_the_checkpoint_was_trained_with_is_read_back(tmp_path: Path):
    torch.save({"model": {}, "args": {"wavelet_threshold": 0.0}}, tmp_path / "trained.pth")
    assert noise_sweep.trained_wavelet_threshold(str(tmp_path / "trained.pth")) == 0.0
    torch.save({"model": {}}, tmp_path / "bare.pth")
    assert noise_sweep.trained_wavelet_threshold(str(tmp_path / "bare.pth")) is None
