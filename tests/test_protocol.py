"""The official protocol by default: training on ann/instances_train_sub.json's videos, testing on
ann/instances_test_sub.json's, and a guard when a model is evaluated on videos it was trained on."""
import contextlib
import io
import json
from pathlib import Path

import pytest

import inference_rvos
from data_factory import make_ytvos
from datasets.ytvos import RVOSDataset, official_split_file, resolve_split_file
from scripts.evaluate_rvos import main as evaluate_main
from test_training import TINY_MODEL, load, run_main, train_argv

FRAMES_PER_VIDEO = 2
EXPRESSIONS_PER_VIDEO = 2  # the factory's videos have two expressions each
SAMPLES_PER_VIDEO = FRAMES_PER_VIDEO * EXPRESSIONS_PER_VIDEO  # one per (frame, expression)


@pytest.fixture(scope="module")
def split_tree(tmp_path_factory) -> dict:
    """Three videos: vid000 and vid001 in ann/instances_train_sub.json, vid002 in ann/instances_test_sub.json."""
    return make_ytvos(tmp_path_factory.mktemp("rvos"), num_videos=3, num_frames=FRAMES_PER_VIDEO, vis_file=True,
                      test_videos=[2])


@pytest.fixture(scope="module")
def trained(split_tree, tmp_path_factory) -> dict:
    """One epoch with no --ytvos_ann_file: the start log line and the checkpoint."""
    output_dir = tmp_path_factory.mktemp("out")
    argv = train_argv(split_tree, output_dir)
    assert "--ytvos_ann_file" not in argv
    stdout = io.StringIO()  # the start line goes to stdout (capsys is not available to a module fixture)
    with contextlib.redirect_stdout(stdout):
        run_main(argv)
    start = next(json.loads(line) for line in stdout.getvalue().splitlines() if '"event": "start"' in line)
    return {"start": start, "checkpoint": output_dir / "checkpoint.pth"}


def test_split_file_resolution(split_tree, tmp_path):
    root = split_tree["root"]
    assert official_split_file(root, "train") == Path(root) / "ann" / "instances_train_sub.json"
    assert resolve_split_file("", root, "train") == Path(split_tree["ann_file"])  # default: the official file
    assert resolve_split_file("", root, "test") == Path(split_tree["test_ann_file"])
    assert resolve_split_file("none", root, "train") is None and resolve_split_file("None", root, "test") is None
    assert resolve_split_file("x.json", root, "train") == Path("x.json")
    assert resolve_split_file("", tmp_path, "train") is None  # a release without the split files


def test_training_uses_the_official_train_split_by_default(trained, split_tree):
    start = trained["start"]
    assert start["train_samples"] == 2 * SAMPLES_PER_VIDEO  # vid000 and vid001, not the test video vid002
    assert start["videos_from"] == {"ytvos": split_tree["ann_file"]}
    assert start["train_videos"] == {"ytvos": 2}
    assert load(trained["checkpoint"])["train_videos"] == {"ytvos": ["vid000", "vid001"]}


def test_ann_file_none_trains_on_every_video(split_tree, tmp_path, capsys):
    run_main(train_argv(split_tree, tmp_path / "out", "--ytvos_ann_file", "none", "--epochs", "1"))
    start = next(json.loads(line) for line in capsys.readouterr().out.splitlines() if '"event": "start"' in line)
    assert start["train_samples"] == 3 * SAMPLES_PER_VIDEO
    assert "meta_expressions.json (every video of the split)" in start["videos_from"]["ytvos"]


def test_validation_set_is_the_official_test_split(split_tree):
    from datasets import build_dataset
    from data_factory import dataset_args

    args = dataset_args(ytvos_path=split_tree["root"], rvos_audio_path=split_tree["audio_root"], num_frames=2,
                        data_scale=0.1, dataset_file="ytvos")
    assert [v.name for v in build_dataset("val", args).videos] == ["vid002"]
    assert [v.name for v in build_dataset("train", args).videos] == ["vid000", "vid001"]
    plain = RVOSDataset(split_tree["root"], split_tree["audio_root"], 2)
    assert plain.ann_file is None and len(plain.videos) == 3  # the class itself takes only what it is given


def inference_argv(split_tree, checkpoint: Path, save_path: Path, *extra: str) -> list:
    return TINY_MODEL + ["--model_path", str(checkpoint), "--ytvos_path", split_tree["root"], "--rvos_audio_path",
                         split_tree["audio_root"], "--device", "cpu", "--data_scale", "0.1", "--save_path",
                         str(save_path), *extra]


def summary(out: str) -> dict:
    return next(json.loads(line) for line in out.splitlines() if '"trained_on_evaluated_videos"' in line)


def test_inference_on_the_test_split_by_default_does_not_warn(trained, split_tree, tmp_path, capsys):
    results = tmp_path / "results.json"
    inference_rvos.main(inference_argv(split_tree, trained["checkpoint"], results))
    captured = capsys.readouterr()
    assert {entry["file_name"] for entry in json.loads(results.read_text())} == {"vid002"}
    assert summary(captured.out)["trained_on_evaluated_videos"] == 0
    assert "warning" not in captured.err

    metrics = evaluate_main([str(results), "--ytvos_path", split_tree["root"], "--model_path",
                             str(trained["checkpoint"]), "--out", str(tmp_path / "m.json")])
    assert metrics["num_expressions"] == EXPRESSIONS_PER_VIDEO  # the test split's video only
    assert metrics["trained_on_evaluated_videos"] == 0


def test_inference_and_evaluation_on_training_videos_warn(trained, split_tree, tmp_path, capsys):
    results = tmp_path / "results.json"
    inference_rvos.main(inference_argv(split_tree, trained["checkpoint"], results, "--split_file", "none"))
    captured = capsys.readouterr()
    assert summary(captured.out)["trained_on_evaluated_videos"] == 2
    assert "warning: 2 of the 3 evaluated Ref-YouTube-VOS videos were in the training set" in captured.err
    assert "vid000, vid001" in captured.err

    metrics_path = tmp_path / "m.json"
    evaluate_main([str(results), "--ytvos_path", split_tree["root"], "--split_file", "none", "--model_path",
                   str(trained["checkpoint"]), "--out", str(metrics_path)])
    assert json.loads(metrics_path.read_text())["trained_on_evaluated_videos"] == 2
    assert "warning: 2 of the 3 evaluated" in capsys.readouterr().err


def test_a_checkpoint_without_the_record_is_noted(split_tree, trained, tmp_path, capsys):
    import torch

    bare = tmp_path / "released.pth"
    torch.save({"model": load(trained["checkpoint"])["model"]}, bare)
    inference_rvos.main(inference_argv(split_tree, bare, tmp_path / "r.json"))
    captured = capsys.readouterr()
    assert summary(captured.out)["trained_on_evaluated_videos"] is None
    assert "does not record the videos it was trained on" in captured.err
