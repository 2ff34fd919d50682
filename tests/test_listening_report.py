"""scripts/listening_report.py on a tiny untrained checkpoint and tiny demo data (with its unseen-voice copy): every
condition and its deranged control, what the model heard in each, report.json / .md / .png, --compare (also of
noise_sweep's sweep.json), --deranged clean, --resume, one-line errors, and --seeds with a one-epoch training."""
import json
from dataclasses import replace
from pathlib import Path
from typing import Dict

import pytest
import torch
from PIL import Image

import inference_rvos
import main as train
from engine.checkpoint import LATEST_CHECKPOINT
from model_helpers import save_untrained_checkpoint
from scripts import demo
from scripts import listening_report as report_script
from scripts.make_demo_data import DemoConfig, generate
from util.errors import OptionError, run_main

ROOT = Path(__file__).resolve().parents[1]
MODEL_ARGV = ["--backbone", "resnet18", "--hidden_dim", "48", "--nheads", "4", "--dim_feedforward", "64",
              "--enc_layers", "1", "--dec_layers", "1", "--num_frames", "2", "--num_queries", "2", "--masks",
              "--device", "cpu", "--seed", "0", "--data_scale", "0.2", "--pretrained_weights", "none"]
# Two training and two held-out videos of four small frames, every recording a voice of the training pool; the
# unseen copy speaks the same held-out videos with the unseen pool.
VOCABULARY = {key: value for key, value in demo.DEMO_VOCABULARY.items() if key != "speakers"}
DATA = DemoConfig(seed=0, num_train_videos=2, num_test_videos=2, num_frames=4, height=48, width=80,
                  speakers="varied", **VOCABULARY)
UNSEEN_DATA = replace(DATA, num_train_videos=0, held_out_speakers="unseen")
ONE_OF_EACH = ["--snrs", "10", "--rt60s", "0.5", "--speeds", "1.2"]  # one condition per group
CONDITIONS = ["clean", "unseen", "white_+10dB", "white_alone", "babble_+10dB", "babble_alone", "room_0.5s",
              "band_telephone", "speed_x1.2"]
PERTURBED = CONDITIONS[2:]
DETERMINISTIC = ["band_telephone", "speed_x1.2"]  # no random part: a recording sounds the same under any name
# the legend of the full report: white and babble (curve, deranged, alone), clean, the bars and their markers
FULL_LEGEND_ENTRIES = 9
# seed study: one epoch of batches of two clips
TRAINING_OVERRIDES = ["--epochs", "1", "--warmup_epochs", "0", "--batch_size", "2", "--num_frames", "2",
                      "--num_queries", "2", "--data_scale", "0.2", "--inference_data_scale", "0"]


class Ears:
    """Records the features each pass fed the model: {pass (results stem): {recording file name: features}}."""

    def __init__(self) -> None:
        self.heard: Dict[str, Dict[str, torch.Tensor]] = {}
        self.original = inference_rvos.infer_job

    def __call__(self, model, postprocess, job, args, load_audio, journal):
        name = Path(args.save_path).stem

        def listen(path):
            features = load_audio(path)
            self.heard.setdefault(name, {})[Path(path).name] = features
            return features

        return self.original(model, postprocess, job, args, listen, journal)


def run_with_ears(argv) -> tuple:
    ears = Ears()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inference_rvos, "infer_job", ears)
        result = report_script.main([str(a) for a in argv])
    return result, ears.heard


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("listening_data")
    generate(root / "data", DATA)
    generate(root / "unseen", UNSEEN_DATA)
    return root


def inference_argv(data: Path, checkpoint: Path) -> list:
    return MODEL_ARGV + ["--model_path", str(checkpoint), "--ytvos_path", str(data / "data"),
                         "--rvos_wav_path", str(data / "data" / "audio_wav"),
                         "--split_file", str(data / "data" / "test_videos.txt")]


@pytest.fixture(scope="module")
def reported(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("listening_report")
    argv = inference_argv(data, save_untrained_checkpoint(folder, MODEL_ARGV))
    out = folder / "out"
    result, heard = run_with_ears(["--out", out, "--unseen_data", data / "unseen", *ONE_OF_EACH, *argv])
    return out, argv, result, heard


def test_every_condition_and_its_deranged_control_in_report_json(reported):
    out, _, result, _ = reported
    written = json.loads((out / report_script.REPORT_NAME).read_text())
    assert written == json.loads(json.dumps(result))
    assert written["num_videos"] == 2 and written["num_expressions"] == 4
    assert list(written["conditions"]) == CONDITIONS
    for name, entry in written["conditions"].items():
        for metrics in (entry, entry["deranged"]):
            assert 0.0 <= metrics["J&F"] <= 1.0, name
            assert metrics["J&F"] == pytest.approx((metrics["J"] + metrics["F"]) / 2), name
        assert entry["gap"] == pytest.approx(entry["J&F"] - entry["deranged"]["J&F"])
    assert written["conditions"]["white_alone"]["noise_alone"] and written["conditions"]["white_alone"]["snr_db"] is None
    assert written["conditions"]["unseen"]["voices"] == "unseen"
    # without speech the model segments otherwise than with it
    for noise in ("white", "babble"):
        assert written["conditions"][f"{noise}_alone"]["J&F"] != written["conditions"]["clean"]["J&F"]
    passes = sorted(p.stem for p in (out / report_script.RESULTS_DIR).glob("*.json"))
    assert passes == sorted(CONDITIONS + [name + report_script.DERANGED_SUFFIX for name in CONDITIONS])


def test_table_and_picture(reported):
    out, _, result, _ = reported
    table = (out / report_script.TABLE_NAME).read_text().splitlines()
    rows = [line for line in table if line.startswith("| ") and not line.startswith(("| condition", "| ---"))]
    assert table.count("| condition | J&F | deranged | gap |") == 1
    assert [row.split(" | ")[0][2:] for row in rows] == [e["label"] for e in result["conditions"].values()]
    clean = result["conditions"]["clean"]
    assert rows[0] == (f"| training voices | {clean['J&F']:.3f} | {clean['deranged']['J&F']:.3f} | "
                       f"{round(clean['gap'], 3) + 0.0:.3f} |")
    with Image.open(out / report_script.PLOT_NAME) as picture:
        assert picture.format == "PNG"
        width, height = report_script.figure_size(2, FULL_LEGEND_ENTRIES)
        assert picture.size == (round(width * report_script.FIGURE_DPI), round(height * report_script.FIGURE_DPI))


def test_the_deranged_passes_heard_the_other_expressions_recordings(reported, data, tmp_path):
    out, _, result, heard = reported
    videos = demo.test_videos(data / "data")
    mapping = demo.write_shuffled_audio(data / "data", videos, data / "data" / "audio_feature", tmp_path, seed=0)
    for voices in ("training", "unseen"):
        assert result["deranged_from"][voices] == mapping and result["deranged_kept_own"][voices] == []
    for name in ("clean", "unseen"):
        own, deranged = heard[name], heard[name + report_script.DERANGED_SUFFIX]
        assert sorted(own) == sorted(deranged) == sorted(f"{v}_{e}.wav" for v in mapping for e in mapping[v])
        for video, sources in mapping.items():
            for exp_id, source in sources.items():
                assert torch.equal(deranged[f"{video}_{exp_id}.wav"], own[f"{video}_{source}.wav"])
                assert not torch.equal(deranged[f"{video}_{exp_id}.wav"], own[f"{video}_{exp_id}.wav"])
    copies = out / report_script.DERANGED_DIR / "training"
    for video, sources in mapping.items():
        for exp_id, source in sources.items():
            original = data / "data" / "audio_wav" / f"{video}_{source}.wav"
            assert (copies / f"{video}_{exp_id}.wav").read_bytes() == original.read_bytes()


def test_each_condition_changes_what_the_model_hears(reported):
    _, _, _, heard = reported
    clean = heard["clean"]
    for name in ["unseen", *PERTURBED]:
        for recording, features in heard[name].items():
            assert features.shape[0] == clean[recording].shape[0]
            assert features.shape != clean[recording].shape or not torch.equal(features, clean[recording]), name
    for recording, features in clean.items():
        assert heard["room_0.5s"][recording].shape[1] > features.shape[1]  # the room rings on
        assert heard["speed_x1.2"][recording].shape[1] < features.shape[1]
        for noise in ("white", "babble"):
            assert not torch.equal(heard[f"{noise}_alone"][recording], heard[f"{noise}_+10dB"][recording])
    # the deranged control hears the same condition: where it has no random part, exactly the recording it got
    for name in DETERMINISTIC:
        deranged = heard[name + report_script.DERANGED_SUFFIX]
        clean_deranged = heard["clean" + report_script.DERANGED_SUFFIX]
        for recording, features in deranged.items():
            source = next(r for r, f in clean.items() if torch.equal(f, clean_deranged[recording]))
            assert torch.equal(features, heard[name][source]), (name, recording)


def test_compare_reports_and_an_old_sweep(reported, tmp_path, capsys):
    out, _, _, _ = reported
    report_json = out / report_script.REPORT_NAME
    sweep_json = ROOT / "docs" / "demo_noise_sweep.json"
    compared = report_script.main(["--out", str(tmp_path), "--compare", f"faithful={report_json}",
                                   f"robust={report_json}", f"noise_sweep={sweep_json}"])
    assert list(compared) == ["faithful", "robust", "noise_sweep"]
    sweep = json.loads(sweep_json.read_text())
    old = compared["noise_sweep"]["conditions"]
    assert old["clean"]["deranged"]["J&F"] == sweep["deranged"]["J&F"]
    assert old["white_-10dB"]["J&F"] == sweep["noise"]["white"][-1]["J&F"]
    assert old["babble_alone"]["J&F"] == sweep["noise_only"]["babble"]["J&F"]
    table = (tmp_path / report_script.COMPARISON_TABLE_NAME).read_text()
    assert "| condition | faithful J&F | faithful deranged | robust J&F | robust deranged |" in table
    robust_row = next(line for line in table.splitlines() if line.startswith("| training voices |"))
    assert robust_row.split(" | ")[-2] == "+0.000"  # robust - faithful: the same report
    with Image.open(tmp_path / report_script.COMPARISON_PLOT_NAME) as picture:
        assert picture.format == "PNG"
        assert picture.size[0] == round(2 * report_script.PANEL_SIZE[0] * report_script.FIGURE_DPI)
    (tmp_path / "other.json").write_text("{}")
    capsys.readouterr()
    for items, named in (([str(report_json)], "LABEL=REPORT_JSON"), ([f"x={tmp_path / 'other.json'}"], "not a report"),
                         ([f"a={report_json}", f"a={report_json}"], "repeats a label")):
        assert run_main(report_script.main, ["--out", str(tmp_path), "--compare", *items]) == 2
        errors = capsys.readouterr().err.splitlines()
        assert len(errors) == 1 and errors[0].startswith("error: ") and named in errors[0], errors


def test_bad_options_are_one_line(reported, data, tmp_path, capsys):
    _, argv, _, _ = reported
    out = ["--out", str(tmp_path / "bad")]
    without_recordings = [a for i, a in enumerate(argv) if "--rvos_wav_path" not in argv[i - 1:i + 1]]
    cases = [
        (out + ["--conditions", "clean,loud"], "argument --conditions"),
        (out + ["--snrs", "inf"] + argv, "argument --snrs"),
        (out + ["--bands", "phone"] + argv, "argument --bands"),
        (out + ["--speeds", "0"] + argv, "argument --speeds"),
        (out + ["--rt60s", "0.5", "0.5"] + argv, "--rt60s repeats"),
        (out + ["--conditions", "clean,unseen"] + argv, "--unseen_data"),
        (out + ["--unseen_data", str(tmp_path), "--conditions", "unseen"] + argv, "no recordings folder"),
        (out + argv + ["--audio_noise", "white", "--audio_snr_db", "5"], "--audio_noise, --audio_snr_db"),
        (out + without_recordings, "--rvos_wav_path"),
        (out + ["--seeds", "0"], "--train_config"),
        (out + ["--train_data", str(data)] + argv, "belong to --seeds"),
    ]
    for args, named in cases:
        capsys.readouterr()
        try:
            code = run_main(report_script.main, args)
        except SystemExit as exit_info:  # argparse's errors exit while parsing
            code = exit_info.code
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1 and "Traceback" not in err, (args[2:4], err)
        assert named in errors[0], (named, errors[0])


def test_clean_only_control_resume_and_the_threshold_warning(data, tmp_path, capsys):
    checkpoint = save_untrained_checkpoint(tmp_path, MODEL_ARGV)
    stored = torch.load(checkpoint, weights_only=False)
    torch.save({**stored, "args": {"wavelet_threshold": 0.0}}, checkpoint)
    argv = ["--out", str(tmp_path / "out"), "--conditions", "clean,speed", "--speeds", "1.2", "--deranged", "clean",
            *inference_argv(data, checkpoint)]
    first, heard = run_with_ears(argv)
    # the model is built with the options its checkpoint records: the report uses its threshold, no warning
    assert first["wavelet_threshold"] == first["trained_wavelet_threshold"] == 0.0
    assert "wavelet_threshold" not in capsys.readouterr().err
    assert sorted(heard) == ["clean", "clean_deranged", "speed_x1.2"]
    assert first["conditions"]["speed_x1.2"]["deranged"] is None and first["conditions"]["speed_x1.2"]["gap"] is None
    assert (tmp_path / "out" / report_script.TABLE_NAME).read_text().splitlines()[-1].endswith("| – | – |")
    again, heard = run_with_ears(argv + ["--resume"])
    assert heard == {} and again["conditions"] == first["conditions"]
    more, heard = run_with_ears([a if a != "1.2" else "0.9" for a in argv] + ["--resume"])
    assert sorted(heard) == ["speed_x0.9"] and list(more["conditions"]) == ["clean", "speed_x0.9"]
    # a threshold given on the command line wins, and the report says it differs from the training's
    elsewhere = [a if a != str(tmp_path / "out") else str(tmp_path / "given") for a in argv]
    given, _ = run_with_ears(elsewhere + ["--wavelet_threshold", "0.008"])
    assert given["wavelet_threshold"] == 0.008
    assert "was trained with --wavelet_threshold 0.0, this report uses 0.008" in capsys.readouterr().err
    assert run_main(report_script.main, argv + ["--resume", "--wavelet_threshold", "0.008"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_the_threshold_the_checkpoint_was_trained_with_is_read_back(tmp_path: Path):
    torch.save({"model": {}, "args": {"wavelet_threshold": 0.0}}, tmp_path / "trained.pth")
    assert report_script.trained_wavelet_threshold(str(tmp_path / "trained.pth")) == 0.0
    torch.save({"model": {}}, tmp_path / "bare.pth")
    assert report_script.trained_wavelet_threshold(str(tmp_path / "bare.pth")) is None


def test_seeds_train_one_model_each_and_spread_over_them(data, tmp_path, capsys):
    out = tmp_path / "seeds"
    argv = ["--out", str(out), "--seeds", "0", "1", "--train_config", str(ROOT / "configs" / "demo.yaml"),
            "--train_data", str(data / "data"), "--conditions", "clean,white", "--snrs", "0", "--deranged", "clean",
            *TRAINING_OVERRIDES]
    study = report_script.main(argv)
    assert json.loads((out / report_script.SEEDS_NAME).read_text()) == json.loads(json.dumps(study))
    assert list(study["conditions"]) == ["clean", "white_+0dB", "white_alone"]
    for seed in (0, 1):
        report = json.loads(Path(study["reports"][str(seed)]).read_text())
        assert report["model_path"] == str(out / f"seed{seed}" / LATEST_CHECKPOINT)
        assert report["seed"] == 42  # the config's: every model hears the same noise and derangement
        assert study["conditions"]["clean"]["J&F"]["values"][seed] == report["conditions"]["clean"]["J&F"]
    for name, summary in study["conditions"].items():
        figure = summary["J&F"]
        assert figure["min"] <= figure["mean"] <= figure["max"]
        assert figure["spread"] == pytest.approx(figure["max"] - figure["min"])
        assert (summary["deranged"] is None) == (name != "clean")
    models = [torch.load(out / f"seed{seed}" / LATEST_CHECKPOINT, weights_only=False) for seed in (0, 1)]
    assert [m["args"]["seed"] for m in models] == [0, 1] and [m["epoch"] for m in models] == [0, 0]
    assert any(not torch.equal(models[0]["model"][k], models[1]["model"][k]) for k in models[0]["model"])
    printed = capsys.readouterr().out
    assert "| condition | J&F mean | min | max | spread | deranged mean | gap mean |" in printed
    assert (out / report_script.SEEDS_TABLE_NAME).is_file()

    def no_training(args):
        raise AssertionError("--resume retrained a finished seed")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "main", no_training)
        again, heard = run_with_ears(argv + ["--resume"])
    assert heard == {} and again["conditions"] == study["conditions"]
    with pytest.raises(OptionError, match="leave --seed out"):
        report_script.main(argv + ["--seed", "3"])
