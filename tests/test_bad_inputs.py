"""The bad-input and fault matrix, tried as a new user would, on tiny data on the CPU.

One test per item of the matrix (`test_NN_...`), each failing when its fix is reverted. User errors are
checked as the user meets them: `util.errors.run_main` around the entry point's `main`, then exactly one
`error:` line on stderr naming the option or file, and the exit code (2 options, 1 data). Subprocesses
only where the process itself matters: signals, a killed parent, a full disk, each script's `__main__`.
"""
import json
import os
import re
import runpy
import shlex
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import List, Sequence

import numpy as np
import pytest
import soundfile
import torch

import inference_a2d
import inference_jhmdb
import inference_rvos
import main as train
from audio_helpers import load_script, tone_signal, write_audio
from cli_helpers import assert_user_error, user_error
from data_factory import make_a2d, make_jhmdb, make_ytvos
from datasets import audio
from datasets.audio.io import RESAMPLER
from datasets.common import BadSampleWarning
from datasets.formats import write_npy, write_palette_png
from util.config import own_argv
from util.errors import run_main
from util.results import read_results

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = ["--backbone", "resnet18", "--hidden_dim", "48", "--nheads", "4", "--dim_feedforward", "64",
              "--enc_layers", "1", "--dec_layers", "2", "--num_frames", "2", "--num_queries", "2", "--masks",
              "--device", "cpu", "--num_workers", "0", "--data_scale", "0.1", "--pretrained_weights", "none"]
FEATURE_RATE = 16000  # the rate the tiny dataset's features say they were extracted at
HEIGHT, WIDTH = 24, 32  # data_factory's frame size
SUBPROCESS_TIMEOUT = 300
SIGNAL_WAIT = 120  # seconds a signalled training run may take to finish its step and stop
LOUD_SAMPLE = 12000  # int16 units: far above the silence threshold
# Relative L2 distance of the features of one phrase recorded at two rates: without resampling, with it.
DIFFERENT_FEATURES, SAME_FEATURES = 0.5, 0.01


# ----------------------------------------------------------------------------- helpers
def train_argv(data: dict, output_dir: Path, *extra) -> List[str]:
    return TINY_MODEL + ["--dataset_file", "ytvos", "--ytvos_path", data["root"], "--rvos_audio_path",
                         data["audio_root"], "--output_dir", str(output_dir), "--epochs", "1", *map(str, extra)]


def rvos_argv(data: dict, checkpoint: Path, save_path: Path, *extra) -> List[str]:
    return TINY_MODEL + ["--model_path", str(checkpoint), "--ytvos_path", data["root"], "--rvos_audio_path",
                         data["audio_root"], "--save_path", str(save_path), *map(str, extra)]


def copy_data(info: dict, destination: Path) -> dict:
    """A private copy of a factory dataset whose audio folder lies inside it (for tests that break files)."""
    shutil.copytree(info["root"], destination)
    return {**info, "root": str(destination),
            "audio_root": str(destination / Path(info["audio_root"]).relative_to(info["root"]))}


def frame(data: dict, video: str, name: str) -> Path:
    return Path(data["root"]) / "train" / "JPEGImages" / video / f"{name}.jpg"


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def extract_mfcc(*args) -> int:
    return load_script("extract_mfcc").main([str(a) for a in args])


# One intra-op thread per subprocess: on 2 shared cores, OpenMP pools of several processes spin against each other.
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_script(args: Sequence[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, text=True, env=SUBPROCESS_ENV, **kwargs)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """One video of two frames, two expressions (4 training samples); its features say they are 16 kHz."""
    data = make_ytvos(tmp_path_factory.mktemp("data") / "ytvos", num_videos=1, num_frames=2)
    audio.write_feature_info(data["audio_root"], {"feature": "wnet", "audio_sample_rate": FEATURE_RATE, "files": {
        f"vid000_{exp_id}": {"sample_rate": FEATURE_RATE, "source_sample_rate": 48000} for exp_id in "01"}})
    return data


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory) -> Path:
    """One epoch of training into a folder where a killed save of an earlier run left its temporary file."""
    output_dir = tmp_path_factory.mktemp("trained")
    (output_dir / ".checkpoint0001.pth.x1y2z3.tmp").write_bytes(b"half a checkpoint")
    assert run_main(train.cli, train_argv(tiny, output_dir)) == 0
    return output_dir


# ----------------------------------------------------------------------------- silent wrong results, lost work
def test_01_a_run_that_trains_nothing_fails(tiny, tmp_path, capsys):
    output_dir = tmp_path / "out"
    assert_user_error(capsys, train.cli, train_argv(tiny, output_dir, "--batch_size", 8), 2,
                      "--batch_size 8", "4 train samples")
    empty_audio = tmp_path / "wrong_audio_path"
    empty_audio.mkdir()
    argv = train_argv({**tiny, "audio_root": str(empty_audio)}, output_dir, "--skip_bad_samples")
    assert_user_error(capsys, train.cli, argv, 1, "no train samples", "all 2 were dropped", "--rvos_audio_path")
    assert not list(output_dir.glob("checkpoint*")) and not (output_dir / "log.txt").exists()


def test_02_an_earlier_run_is_not_overwritten(trained, tiny, tmp_path, capsys):
    output_dir = tmp_path / "again"
    output_dir.mkdir()
    for name in ("checkpoint.pth", "checkpoint0000.pth", "log.txt"):
        shutil.copy(trained / name, output_dir / name)
    before = {p.name: p.read_bytes() for p in output_dir.iterdir()}
    assert_user_error(capsys, train.cli, train_argv(tiny, output_dir), 2,
                      f"--output_dir {output_dir}", "--resume", "--overwrite")
    assert {p.name: p.read_bytes() for p in output_dir.iterdir()} == before
    # --overwrite starts again (here without one expression's features: the log counts what was dropped)
    data = copy_data(tiny, tmp_path / "ytvos")
    (Path(data["audio_root"]) / "vid000_1.npy").unlink()
    with pytest.warns(BadSampleWarning, match="vid000_1.npy"):
        assert run_main(train.cli, train_argv(data, output_dir, "--overwrite", "--skip_bad_samples")) == 0
    records = [json.loads(line) for line in (output_dir / "log.txt").read_text().splitlines()]
    assert [(r["epoch"], r["dropped_samples"]) for r in records] == [(0, 1)]


def test_03_recordings_are_resampled_to_one_rate_and_the_rate_is_recorded(trained, tiny, tmp_path, capsys):
    from datasets.speech import synthesize

    phrase, rate = synthesize("the red square moving left")  # 22050 Hz
    stereo_48k = np.round(audio.resample(phrase.astype(np.float64), rate, 48000)).clip(-32768, 32767)
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    soundfile.write(in_dir / "low.wav", phrase, rate, subtype="PCM_16")
    soundfile.write(in_dir / "high.wav", np.stack([stereo_48k] * 2, axis=1).astype(np.int16), 48000, subtype="PCM_16")
    relative_error = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)  # noqa: E731
    as_recorded = [audio.extract_features(in_dir / name) for name in ("low.wav", "high.wav")]
    resampled = [audio.extract_features(in_dir / name, resample_to=FEATURE_RATE) for name in ("low.wav", "high.wav")]
    frames = min(len(as_recorded[0]), len(as_recorded[1]))
    assert relative_error(as_recorded[1][:frames], as_recorded[0][:frames]) > DIFFERENT_FEATURES  # about 1.35
    assert resampled[0].shape == resampled[1].shape
    assert relative_error(resampled[1], resampled[0]) < SAME_FEATURES  # about 0.002

    # extract_mfcc.py resamples and records the rate; it warns about a folder of mixed rates
    assert extract_mfcc(in_dir, tmp_path / "mixed", "--workers", 1) == 0
    assert audio.feature_sample_rate(tmp_path / "mixed") == 0
    assert extract_mfcc(in_dir, tmp_path / "out", "--workers", 1, "--audio_sample_rate", FEATURE_RATE) == 0
    info = json.loads((tmp_path / "out" / audio.FEATURE_INFO_NAME).read_text())
    assert info["files"]["high"] == {"sample_rate": FEATURE_RATE, "source_sample_rate": 48000}
    assert audio.feature_sample_rate(tmp_path / "out") == FEATURE_RATE

    # training copied the features' rate into its checkpoint; one recording of another rate (--audio) is resampled
    # to it, as with --audio_sample_rate, and the log names the resampler
    checkpoint = trained / "checkpoint.pth"
    assert load(checkpoint)["args"]["audio_sample_rate"] == FEATURE_RATE
    argv = rvos_argv(tiny, checkpoint, tmp_path / "r.json", "--audio", in_dir / "high.wav", "--video_dir",
                     frame(tiny, "vid000", "00000").parent)
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        inference_rvos.main([str(a) for a in argv])
        inference_rvos.main([str(a) for a in argv + ["--save_path", tmp_path / "r2.json", "--audio_sample_rate",
                                                     FEATURE_RATE]])
    assert not [w for w in record if "Hz" in str(w.message)]  # resampled to the model's rate: nothing to say
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(e["to"], e["resampler"]) for e in logged if e.get("event") == "audio_resample"] == [
        (FEATURE_RATE, RESAMPLER)]
    assert (tmp_path / "r.json").read_text() == (tmp_path / "r2.json").read_text()


def test_04_inference_keeps_finished_videos_and_skips_broken_ones(trained, tmp_path, capsys):
    data = make_ytvos(tmp_path / "ytvos", num_videos=2, num_frames=2)
    checkpoint, results = trained / "checkpoint.pth", tmp_path / "results.json"
    good_frame = frame(data, "vid001", "00000").read_bytes()
    frame(data, "vid001", "00000").write_bytes(b"\xff\xd8 not a whole JPEG")
    assert_user_error(capsys, inference_rvos.main, rvos_argv(data, checkpoint, results), 1,
                      "vid001", "00000.jpg", "--resume_results")
    partial = Path(f"{results}.partial")
    assert not results.exists() and '"key": "vid000"' in partial.read_text()  # the first video is kept

    frame(data, "vid001", "00000").write_bytes(good_frame)
    assert_user_error(capsys, inference_rvos.main, rvos_argv(data, checkpoint, results), 2,
                      str(partial), "--resume_results")
    assert run_main(inference_rvos.main, rvos_argv(data, checkpoint, results, "--resume_results")) == 0
    assert '"finished": 1' in capsys.readouterr().out  # vid000 came from the partial file
    assert len(read_results(results)) == 4 and not partial.exists()

    features = np.load(Path(data["audio_root"]) / "vid001_1.npy")
    features[3, 5] = np.inf
    write_npy(Path(data["audio_root"]) / "vid001_1.npy", features)
    skipped = tmp_path / "skipped.json"
    capsys.readouterr()
    with pytest.warns(BadSampleWarning, match="vid001 expression 1.*infinite") as record:
        assert run_main(inference_rvos.main, rvos_argv(data, checkpoint, skipped, "--skip_bad_samples")) == 0
    assert len([w for w in record if issubclass(w.category, BadSampleWarning)]) == 1  # named once
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["dropped"] == 1
    assert sorted((e["file_name"], e["exp_id"]) for e in read_results(skipped)) == [
        ("vid000", "0"), ("vid000", "1"), ("vid001", "0")]


def test_05_dropped_samples_are_counted_in_the_metrics_json(trained, tmp_path):
    data = make_a2d(tmp_path / "a2d")
    (Path(data["root"]) / "a2d_annotation_with_instances" / "a2dvid1" / "00005.h5").unlink()  # 2 test samples
    features = np.load(Path(data["audio_root"]) / "a2dvid1_2.npy")
    features[0, 0] = np.nan  # instance 2's remaining samples (frames 0 and 8) break while evaluating
    write_npy(Path(data["audio_root"]) / "a2dvid1_2.npy", features)
    metrics_path = tmp_path / "a2d_metrics.json"
    argv = TINY_MODEL + ["--model_path", trained / "checkpoint.pth", "--a2d_path", data["root"], "--a2d_audio_path",
                         data["audio_root"], "--metrics_path", metrics_path, "--skip_bad_samples"]
    assert run_main(inference_a2d.main, [str(a) for a in argv]) == 0
    written = json.loads(metrics_path.read_text())
    assert written["metrics"]["num_samples"] == 2 and written["metrics"]["num_dropped"] == 4
    assert len(written["dropped"]) == 4 and sum("00005.h5" in d for d in written["dropped"]) == 2


def test_06_results_without_any_prediction_are_an_error(tiny, tmp_path, capsys):
    from scripts.evaluate_rvos import main as evaluate_main

    empty = tmp_path / "results.json"
    empty.write_text("[]")
    assert_user_error(capsys, evaluate_main, [empty, "--ytvos_path", tiny["root"], "--out", tmp_path / "m.json"], 1,
                      str(empty), "no prediction for any of the 2 evaluated expressions")
    assert not (tmp_path / "m.json").exists()


# ----------------------------------------------------------------------------- crashes with the wrong message
def test_07_a_mask_of_another_size_is_named(tiny, tmp_path, capsys):
    data = copy_data(tiny, tmp_path / "ytvos")
    png = Path(data["root"]) / "train" / "Annotations" / "vid000" / "00005.png"
    write_palette_png(png, np.zeros((HEIGHT // 2, WIDTH // 2), np.uint8))
    assert_user_error(capsys, train.cli, train_argv(data, tmp_path / "out"), 1,
                      str(png), f"is {HEIGHT // 2}x{WIDTH // 2}, the frames are {HEIGHT}x{WIDTH}", "--skip_bad_samples")


def test_08_a_truncated_puppet_mask_is_named_and_can_be_skipped(trained, tmp_path, capsys):
    data = make_jhmdb(tmp_path / "jhmdb")
    mat = Path(data["root"]) / "puppet_mask" / "clap" / "jvid1" / "puppet_mask.mat"
    mat.write_bytes(mat.read_bytes()[:200])
    argv = TINY_MODEL + ["--model_path", trained / "checkpoint.pth", "--jhmdb_path", data["root"],
                         "--a2d_audio_path", data["audio_root"], "--metrics_path", tmp_path / "jhmdb.json"]
    rc, errors, _ = user_error(capsys, inference_jhmdb.main, argv + ["--check_data"])
    assert rc == 1 and len(errors) == 2 and str(mat) in errors[0] and "not a readable .mat file" in errors[0]
    assert_user_error(capsys, inference_jhmdb.main, argv, 1, str(mat), "not a readable .mat file")
    assert run_main(inference_jhmdb.main, [str(a) for a in argv] + ["--skip_bad_samples", "--resume_results"]) == 0
    assert json.loads((tmp_path / "jhmdb.json").read_text())["metrics"]["num_dropped"] == 3


@pytest.mark.parametrize("entry", ["--model_path", "--resume", "--pretrained_weights", "convert_detr_weights.py"])
def test_09_a_text_file_as_checkpoint(entry, tiny, tmp_path, capsys):
    text = tmp_path / "notes.pth"
    text.write_text("epoch 3: loss 0.41\n")
    if entry == "--model_path":
        main, argv = inference_rvos.main, rvos_argv(tiny, text, tmp_path / "r.json")
    elif entry == "convert_detr_weights.py":
        main, argv = load_script("convert_detr_weights").main, [text, tmp_path / "converted.pth"]
    else:
        main, argv = train.cli, train_argv(tiny, tmp_path / "out", entry, text)
    assert_user_error(capsys, main, argv, 1, str(text), "not a readable torch checkpoint", "it starts with b'epoch 3")


@pytest.mark.parametrize("option, value", [("--num_frames", "0"), ("--batch_size", "0"), ("--batch_size", "-1"),
                                           ("--num_workers", "-1"), ("--lr", "nan"), ("--data_scale", "0"),
                                           ("--data_scale", "-1"), ("--epochs", "0"), ("--dropout", "1.5")])
def test_10_bad_numbers_are_refused_at_parse_time(option, value, tiny, tmp_path, capsys):
    assert_user_error(capsys, train.cli, train_argv(tiny, tmp_path / "out", option, value), 2,
                      f"error: argument {option}: expected", repr(value))
    assert not (tmp_path / "out").exists()
    config = tmp_path / "bad.yaml"  # a config file's values are defaults, which argparse does not check
    config.write_text(f"{option[2:]}: {value}\n")
    assert_user_error(capsys, train.cli, train_argv(tiny, tmp_path / "out", "--config", config), 2,
                      f"config file {config}: {option[2:]}: expected")


def test_11_a_device_the_machine_lacks(trained, tiny, tmp_path, capsys):
    checkpoint = trained / "checkpoint.pth"
    argv = rvos_argv(tiny, checkpoint, tmp_path / "r.json")
    assert_user_error(capsys, inference_rvos.main, argv + ["--device", "cuda:99"], 2, "--device cuda:99")
    if not torch.cuda.is_available():
        assert_user_error(capsys, inference_rvos.main, argv + ["--device", "cuda"], 2,
                          "--device cuda", "CUDA is not available", "--device cpu")


def test_12_check_data_lists_every_problem_before_any_work(tiny, tmp_path, capsys):
    output_dir = tmp_path / "out"
    assert run_main(train.cli, train_argv(tiny, output_dir, "--check_data")) == 0
    data = copy_data(tiny, tmp_path / "ytvos")
    corrupt, png = frame(data, "vid000", "00005"), Path(data["root"]) / "train" / "Annotations" / "vid000" / "00000.png"
    corrupt.write_bytes(corrupt.read_bytes()[:40])
    write_palette_png(png, np.zeros((HEIGHT, WIDTH + 4), np.uint8))
    nan_features = np.load(Path(data["audio_root"]) / "vid000_1.npy")
    nan_features[2, 7] = np.nan
    write_npy(Path(data["audio_root"]) / "vid000_1.npy", nan_features)
    rc, errors, err = user_error(capsys, train.cli, train_argv(data, output_dir, "--check_data"))
    assert rc == 1 and "Traceback" not in err, err
    assert [("00005.jpg" in e, "00000.png" in e, "vid000_1.npy" in e and "NaN" in e) for e in errors[:3]] == [
        (True, False, False), (False, True, False), (False, False, True)], errors
    assert "3 problem(s)" in errors[-1] and len(errors) == 4
    assert not output_dir.exists()  # nothing was trained
    # the inference scripts check the same way
    assert run_main(inference_rvos.main, rvos_argv(data, tmp_path / "unused.pth", tmp_path / "r.json",
                                                   "--check_data")) == 1


def run_entry_point(capsys, monkeypatch, script: str, *args) -> tuple:
    """Run a script's `__main__` block in this process (as `python SCRIPT ARGS` would, without paying for a
    new interpreter); returns (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", [script, *map(str, args)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    return exit_info.value.code, capsys.readouterr().err


def test_13_plain_user_errors_are_one_line_from_every_script(tiny, tmp_path, capsys, monkeypatch):
    missing = tmp_path / "nowhere"
    malformed, notes = tmp_path / "malformed.yaml", tmp_path / "notes.pth"
    malformed.write_text("lr: [0.1\nepochs: 2\n")
    notes.write_text("not a checkpoint\n")
    cases = [  # script and arguments, the exit code, what the line names
        (["main.py", "--ytvos_path", missing, "--dataset_file", "ytvos", "--masks", "--device", "cpu",
          "--pretrained_weights", "none", "--output_dir", tmp_path / "o"], 1, f"{missing} does not exist (--ytvos_path)"),
        (["main.py", "--config", missing / "c.yaml"], 2, f"--config {missing / 'c.yaml'}: the file does not exist"),
        (["main.py", "--config", malformed], 2, f"config file {malformed}: not valid YAML"),
        (["main.py", "--num_frames", "0"], 2, "argument --num_frames: expected a positive integer, got '0'"),
        (["inference_rvos.py", "--ytvos_path", missing], 1, "--ytvos_path"),
        (["inference_a2d.py", "--a2d_path", missing], 1, "--a2d_path"),
        (["inference_jhmdb.py", "--jhmdb_path", missing], 1, "--jhmdb_path"),
        (["scripts/evaluate_rvos.py", missing / "results.json", "--ytvos_path", tiny["root"]], 1,
         str(missing / "results.json")),
        (["scripts/extract_mfcc.py", tmp_path, tmp_path / "out", "--workers", "-1"], 2, "argument --workers"),
        (["scripts/extract_frames.py", "--a2d_path", missing], 1, str(missing / "Release" / "clips320H")),
        (["scripts/convert_detr_weights.py", notes, tmp_path / "out.pth"], 1, str(notes)),
        (["scripts/synthesize_speech.py", tmp_path / "wavs", "--speed", "fast"], 2, "argument --speed"),
        (["scripts/listening_report.py", "--out", tmp_path / "report", "--conditions", "clean,loud"], 2,
         "argument --conditions"),
        (["scripts/listening_report.py", "--out", tmp_path / "report", "--ytvos_path", tiny["root"]], 2,
         "--rvos_wav_path"),
    ]
    for (script, *args), code, named in cases:
        rc, err = run_entry_point(capsys, monkeypatch, script, *args)
        assert rc == code and len(err.splitlines()) == 1, (script, args, err)
        assert err.startswith("error: ") and named in err, (script, args, err)
    # --debug shows the traceback instead
    monkeypatch.setattr(sys, "argv", ["scripts/extract_frames.py", "--a2d_path", str(missing), "--debug"])
    with pytest.raises(FileNotFoundError, match="clips320H"):
        runpy.run_path(str(ROOT / "scripts" / "extract_frames.py"), run_name="__main__")


def test_14_a_text_file_named_npy(tiny, tmp_path, capsys):
    data = copy_data(tiny, tmp_path / "ytvos")
    features = Path(data["audio_root"]) / "vid000_0.npy"
    features.write_text("0.1 0.2 0.3\n")
    line = assert_user_error(capsys, train.cli, train_argv(data, tmp_path / "out"), 1,
                             str(features), "not a .npy file", "it starts with b'0.1 0.2")
    assert "pickle" not in line and "unsafe" not in line


def unshare_available() -> bool:
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True) if shutil.which("unshare") else None
    return probe is not None and probe.returncode == 0


LISTING_MARKER = "--- files left on the full disk ---"


@pytest.mark.skipif(not unshare_available(), reason="needs `unshare -rm` to mount a small tmpfs as a full disk")
def test_15_a_full_disk_names_the_file(tiny, tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    # one step (a batch of all 4 samples), then the first checkpoint does not fit
    command = " ".join(shlex.quote(a) for a in [sys.executable, "main.py", *train_argv(tiny, full, "--batch_size", 4)])
    mount_point = shlex.quote(str(full))
    done = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {mount_point} && {{ {command}; "
                           f"status=$?; echo {LISTING_MARKER}; ls -A {mount_point}; exit $status; }}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, env=SUBPROCESS_ENV)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1 and len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert f"cannot write {full / 'checkpoint0000.pth'}: no space left on the device" in errors[0]
    assert done.stdout.split(LISTING_MARKER)[1].split() == []  # no temporary file is left on the full disk


# ----------------------------------------------------------------------------- documentation and leftovers
def test_16_the_readme_commands_parse():
    """Every `python scripts/X.py ...` command the README shows is accepted by that script's parser."""
    readme = (ROOT / "README.md").read_text()
    fenced = re.findall(r"^```\w*\n(.*?)^```", readme, flags=re.M | re.S)
    inline = re.findall(r"`([^`]+)`", re.sub(r"^```\w*\n.*?^```", "", readme, flags=re.M | re.S))
    lines = [line for block in fenced for line in block.replace("\\\n", " ").splitlines()] + inline
    commands = [shlex.split(" ".join(line.split()), comments=True)
                for line in lines if line.strip().startswith("python scripts/")]
    assert {command[1] for command in commands} >= {"scripts/extract_frames.py", "scripts/extract_mfcc.py"}
    for command in commands:
        script = load_script(Path(command[1]).stem)
        if hasattr(script, "get_parser"):
            # exits 2 on an unknown argument; scripts that pass the rest on (demo, listening_report) to the
            # training and inference parsers have it checked there, each taking its own options
            _, rest = script.get_parser().parse_known_args(command[2:])
            if rest:
                train.parse(own_argv(rest, train.get_parser(), inference_rvos.get_parser()))
                inference_rvos.parse(own_argv(rest, inference_rvos.get_parser(), train.get_parser()))


def test_17_a_killed_save_leaves_no_temporary_file(trained):
    assert sorted(p.name for p in trained.iterdir()) == ["checkpoint.pth", "checkpoint0000.pth", "log.txt"]


def processes_with_parent(pid: int) -> List[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker processes through /proc")
def test_17_mfcc_workers_die_with_their_parent(tmp_path):
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    for index in range(8):
        write_audio(in_dir / f"r{index}.wav", tone_signal(16000, 1.0, seed=index), 16000)
    # librosa's first import keeps each worker busy for a while
    parent = run_script(["scripts/extract_mfcc.py", in_dir, tmp_path / "out", "--workers", "2", "--feature", "librosa"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + SUBPROCESS_TIMEOUT
    while len(processes_with_parent(parent.pid)) < 2 and parent.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    workers = processes_with_parent(parent.pid)
    assert parent.poll() is None and len(workers) == 2, "the parent ended before its workers could be seen"
    parent.kill()
    parent.wait()
    deadline = time.time() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.time() < deadline:
        time.sleep(0.1)
    alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, "workers outlived their killed parent"


def test_17_sigint_stops_training_after_the_step_even_when_inherited_ignored(tiny, tmp_path):
    output_dir, log = tmp_path / "out", tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        # a job started in the background of a script inherits SIGINT ignored
        process = run_script(["main.py", *train_argv(tiny, output_dir, "--epochs", 1000)], stdout=subprocess.DEVNULL,
                             stderr=stderr, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        deadline = time.time() + SUBPROCESS_TIMEOUT
        while not (output_dir / "checkpoint.pth").exists() and process.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert process.poll() is None, log.read_text()[-3000:]
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=SIGNAL_WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail("SIGINT did not stop the training run")
    errors = [line for line in log.read_text().splitlines() if line.startswith("error:")]
    assert process.returncode == 128 + signal.SIGINT and len(errors) == 1, log.read_text()[-3000:]
    assert "stopped by SIGINT" in errors[0] and f"--resume {output_dir / 'checkpoint.pth'}" in errors[0]
    epoch = load(output_dir / "checkpoint.pth")["epoch"]  # intact and loadable
    assert f"holds epoch {epoch}" in errors[0]
    assert not list(output_dir.glob(".*.tmp"))


def test_18_short_and_silent_recordings_are_warned_about(tmp_path, capsys):
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    write_audio(in_dir / "speech.wav", tone_signal(16000, 1.0), 16000)
    write_audio(in_dir / "silent.wav", np.zeros(16000, np.int16), 16000)
    write_audio(in_dir / "short.wav", tone_signal(16000, 0.1), 16000)
    write_audio(in_dir / "one_sample.wav", np.array([LOUD_SAMPLE], np.int16), 16000)
    with pytest.warns(audio.AudioWarning, match="silent"):
        audio.extract_features(in_dir / "silent.wav")
    capsys.readouterr()
    assert extract_mfcc(in_dir, tmp_path / "out", "--workers", 1) == 0
    warnings_ = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings_) == 3 and not [w for w in warnings_ if "speech.wav" in w], warnings_
    assert [w for w in warnings_ if "silent.wav" in w and "silent" in w.partition("silent.wav")[2]]
    assert [w for w in warnings_ if "short.wav" in w and "0.100 s" in w]
    assert [w for w in warnings_ if "one_sample.wav" in w and "1 sample(s)" in w]
