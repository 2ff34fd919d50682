"""scripts/demo.py: the whole `make demo` path on a tiny dataset (a few training steps), and the audio shuffle."""
import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from scripts import demo
from scripts.demo_args import SPLIT
from scripts.evaluate_rvos import evaluate_rvos


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    data, out = root / "data", root / "out"
    summary = demo.main(["--quick", "--data", str(data), "--out", str(out), "--new_seed_data", str(root / "seed1")])
    return data, out, summary


def test_quick_demo_runs_every_stage(quick_run):
    data, out, summary = quick_run
    metrics = json.loads((out / demo.METRICS_NAME).read_text())
    assert metrics == json.loads(json.dumps(summary))
    for key in ("J", "F", "J&F", "J&F_audio_shuffled", "J_audio_shuffled", "F_audio_shuffled"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["J&F"] == pytest.approx((metrics["J"] + metrics["F"]) / 2)
    assert metrics["quick"] is True
    assert set(metrics["stage_seconds"]) == {"data", "warmup", "train", "evaluate", "new_seed", "probe", "listening",
                                             "total"}
    assert 0.0 < metrics["stage_seconds"]["warmup"] < metrics["stage_seconds"]["train"]
    for key in ("J&F", "J&F_audio_shuffled"):
        assert 0.0 <= metrics["new_seed"][key] <= 1.0, key
    assert set(metrics["probe"]) == {"fusion", "memory", "queries", "bbox_attention", "mask_iou", "mask_logits"}
    assert (out / demo.NEW_SEED_RESULTS_NAME).is_file()
    assert (out / "checkpoint.pth").is_file()
    assert not list(out.glob(".audio_shuffled.*")), "the shuffled-audio folder must be removed"

    videos = demo.test_videos(data)
    assert metrics["num_videos"] == len(videos) > 0
    frames = sorted((data / "train" / "JPEGImages" / videos[0]).glob("*.jpg"))
    for video in videos:
        vis = out / demo.VIS_DIR
        assert (vis / f"{video}.gif").is_file() and (vis / f"{video}_sheet.jpg").is_file()
        assert len(list((vis / video).glob("*.jpg"))) == len(frames)
        with av.open(str(out / demo.VIDEOS_DIR / f"{video}.mp4")) as container:  # with its recordings' sound
            assert len(container.streams.audio) == 1
            assert sum(1 for _ in container.decode(video=0)) == len(frames)
    with Image.open(out / demo.CURVES_NAME) as curves:
        assert curves.format == "PNG"

    # both results files cover every held-out expression
    for name in (demo.RESULTS_NAME, demo.SHUFFLED_RESULTS_NAME):
        entries = json.loads((out / name).read_text())
        assert len(entries) == metrics["num_expressions"]


def test_metrics_are_the_scores_of_the_results_files_written(quick_run):
    # metrics.json against the results files beside it, scored again: each pass reports its own file.
    data, out, _ = quick_run
    metrics = json.loads((out / demo.METRICS_NAME).read_text())
    new_seed_data = data.parent / "seed1"  # quick_run's --new_seed_data
    new_seed_shuffled = Path(demo.NEW_SEED_RESULTS_NAME).stem + "_audio_shuffled.json"
    passes = [(demo.RESULTS_NAME, data, {key: metrics[key] for key in ("J", "F", "J&F")}),
              (demo.SHUFFLED_RESULTS_NAME, data, {key: metrics[f"{key}_audio_shuffled"] for key in ("J", "F", "J&F")}),
              (demo.NEW_SEED_RESULTS_NAME, new_seed_data, {"J&F": metrics["new_seed"]["J&F"]}),
              (new_seed_shuffled, new_seed_data, {"J&F": metrics["new_seed"]["J&F_audio_shuffled"]})]
    for name, root, reported in passes:
        scores = evaluate_rvos(out / name, root, SPLIT, str(root / "test_videos.txt"))
        assert reported == pytest.approx({key: scores[key] for key in reported}), name


def test_shuffled_audio_is_a_derangement_within_each_video(quick_run, tmp_path):
    data, out, summary = quick_run
    videos = demo.test_videos(data)
    mapping = demo.write_shuffled_audio(data, videos, data / "audio_feature", tmp_path, seed=0)
    assert mapping == summary["audio_shuffled_from"]
    for video, sources in mapping.items():
        assert len(sources) >= 2
        assert sorted(sources.values()) == sorted(sources)  # a permutation of the video's expressions
        for exp_id, source in sources.items():
            assert source != exp_id
            copied = np.load(tmp_path / f"{video}_{exp_id}.npy")
            np.testing.assert_array_equal(copied, np.load(data / "audio_feature" / f"{video}_{source}.npy"))


def test_derangement_has_no_fixed_point_and_rejects_single_recordings():
    rng = np.random.default_rng(0)
    for count in (2, 3, 5):
        for _ in range(20):
            order = demo.derangement(count, rng)
            assert sorted(order) == list(range(count))
            assert all(i != j for i, j in enumerate(order))
    with pytest.raises(ValueError, match="at least 2"):
        demo.derangement(1, rng)


def test_a_bad_option_fails_before_any_work(tmp_path):
    with pytest.raises(SystemExit):
        demo.main(["--quick", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
                   "--backbone", "vgg"])
    assert not (tmp_path / "data").exists()


def test_augmentation_switches_leave_out_flip_and_photometric_distortion():
    from datasets.transforms import PhotometricDistort, RandomHorizontalFlip, video_transforms_from_args
    from main import get_args_parser
    from util.config import parse_args

    def step_types(argv):
        return [type(t) for t in video_transforms_from_args("train", parse_args(get_args_parser(), argv)).transforms]

    official = step_types([])
    assert RandomHorizontalFlip in official and PhotometricDistort in official
    assert RandomHorizontalFlip not in step_types(["--no_hflip"])
    assert PhotometricDistort not in step_types(["--no_photometric"])
    assert step_types(["--no_hflip", "--no_photometric"]) == [t for t in official
                                                              if t not in (RandomHorizontalFlip, PhotometricDistort)]
