"""End to end: a model saved by the test -> inference scripts -> results.json / metrics (tiny data, CPU)."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F
from PIL import Image

import inference_a2d
import inference_jhmdb
import inference_rvos
import main
from data_factory import make_a2d, make_jhmdb, make_ytvos
import datasets.a2d
import datasets.jhmdb
from datasets import build_dataset
from datasets.a2d_format import A2D_TEST_SPLIT, A2D_TRAIN_SPLIT
from datasets.common import MiddleFrameDataset
from datasets.formats import read_palette_png
from engine.inference import load_frame
from engine.middle_frame import evaluate_middle_frame
from model_helpers import save_untrained_checkpoint
from models import build_inference_model
from models.postprocess import PostProcessSegm
from util.clips import cyclic_clips
from util.config import inference_scale
from util.errors import OptionError
from util.results import decode_masks, read_results

NUM_FRAMES = 3
MODEL_ARGV = ["--backbone", "resnet18", "--hidden_dim", "96", "--nheads", "8", "--dim_feedforward", "128",
              "--enc_layers", "1", "--dec_layers", "1", "--num_frames", str(NUM_FRAMES),
              "--num_queries", str(NUM_FRAMES), "--masks", "--device", "cpu", "--seed", "0"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A freshly built small model (random weights), saved as a Wnet checkpoint."""
    return save_untrained_checkpoint(tmp_path_factory.mktemp("ckpt"), MODEL_ARGV)


def test_cyclic_clips_cover_every_frame_once():
    for num_video_frames in range(1, 12):
        clips = cyclic_clips(num_video_frames, NUM_FRAMES)
        kept = [index for indices, count in clips for index in indices[:count]]
        assert kept == list(range(num_video_frames))
        assert all(len(indices) == NUM_FRAMES for indices, _ in clips)
    assert cyclic_clips(5, 3) == [([0, 1, 2], 3), ([3, 4, 3], 2)]
    assert cyclic_clips(2, 3) == [([0, 1, 0], 2)]  # the official short-video filling


def test_rvos_inference_and_evaluation(tmp_path: Path, checkpoint: Path):
    data = make_ytvos(tmp_path / "ytvos", num_videos=2, num_frames=[5, 2])
    results_path, png_dir, vis_dir = tmp_path / "results.json", tmp_path / "pngs", tmp_path / "vis"
    argv = MODEL_ARGV + ["--model_path", str(checkpoint), "--ytvos_path", data["root"],
                         "--rvos_audio_path", data["audio_root"], "--save_path", str(results_path),
                         "--png_dir", str(png_dir), "--visualize", str(vis_dir)]
    inference_rvos.main(argv)

    entries = read_results(results_path)
    assert sorted((e["file_name"], e["exp_id"]) for e in entries) == [
        (video, exp_id) for video in sorted(data["videos"]) for exp_id in ("0", "1")]
    args = inference_rvos.parse(argv)
    model, _ = build_inference_model(args)
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["model"])
    model.eval()
    for entry in entries:
        video = data["videos"][entry["file_name"]]
        masks = decode_masks(entry["segmentations"])
        assert masks.shape == (len(video["frames"]), 24, 32)  # every frame, at the original size
        # every frame is predicted by the clip that covers it: check the last frame of each video directly
        frame_paths = [Path(data["root"]) / "train" / "JPEGImages" / entry["file_name"] / f"{f}.jpg"
                       for f in video["frames"]]
        indices, count = cyclic_clips(len(frame_paths), NUM_FRAMES)[-1]
        clip = torch.stack([load_frame(frame_paths[i])[0] for i in indices])
        audio = torch.from_numpy(np.load(Path(data["audio_root"]) / f"{entry['file_name']}_{entry['exp_id']}.npy").T).float()
        with torch.no_grad():  # the official recipe by hand: bilinear to the frame size
            logits = F.interpolate(model(clip, audio[None])["pred_masks"], size=(24, 32), mode="bilinear")[0]
        np.testing.assert_array_equal(masks[-1], (logits[count - 1] > 0).numpy())
        # the submission PNGs, file by file
        for frame, mask in zip(video["frames"], masks):
            png = np.asarray(Image.open(png_dir / entry["file_name"] / entry["exp_id"] / f"{frame}.png"))
            assert png.dtype == np.uint8 and set(np.unique(png)) <= {0, 255}
            np.testing.assert_array_equal(png == 255, mask)
    for video in data["videos"]:
        assert (vis_dir / f"{video}.gif").is_file() and (vis_dir / f"{video}_sheet.jpg").is_file()
        assert len(list((vis_dir / video).glob("*.jpg"))) == len(data["videos"][video]["frames"])
        with Image.open(vis_dir / f"{video}_expressions.jpg") as rows:  # one captioned row per expression
            assert rows.height > 2 * 24 and rows.width > len(data["videos"][video]["frames"]) * 32

    from scripts.evaluate_rvos import main as evaluate_main
    metrics_path = tmp_path / "metrics.json"
    metrics = evaluate_main([str(results_path), "--ytvos_path", data["root"], "--out", str(metrics_path)])
    assert json.loads(metrics_path.read_text()) == pytest.approx(metrics)
    assert metrics["num_expressions"] == 4 and metrics["num_frames"] == 2 * (5 + 2)
    # J recomputed here from the PNG ground truth
    ious = []
    for entry in entries:
        for frame, mask in zip(data["videos"][entry["file_name"]]["frames"], decode_masks(entry["segmentations"])):
            gt = read_palette_png(Path(data["root"]) / "train" / "Annotations" / entry["file_name"] / f"{frame}.png")
            gt = gt == int(entry["obj_id"])
            union = (gt | mask).sum()
            ious.append(1.0 if union == 0 else (gt & mask).sum() / union)
    assert metrics["J"] == pytest.approx(np.mean(ious))
    assert metrics["J&F"] == pytest.approx((metrics["J"] + metrics["F"]) / 2)


def test_rvos_split_file_selects_videos(tmp_path: Path, checkpoint: Path):
    data = make_ytvos(tmp_path / "ytvos", num_videos=3, num_frames=2)
    split_file = tmp_path / "test_videos.txt"
    split_file.write_text("vid002\nvid000\n")
    results_path = tmp_path / "results.json"
    inference_rvos.main(MODEL_ARGV + ["--model_path", str(checkpoint), "--ytvos_path", data["root"],
                                      "--rvos_audio_path", data["audio_root"], "--save_path", str(results_path),
                                      "--split_file", str(split_file)])
    entries = read_results(results_path)
    assert [(e["file_name"], e["video_id"]) for e in entries] == [("vid002", 1), ("vid002", 1), ("vid000", 2), ("vid000", 2)]

    split_file.write_text("vid009\n")
    with pytest.raises(ValueError, match="vid009"):
        inference_rvos.main(MODEL_ARGV + ["--model_path", str(checkpoint), "--ytvos_path", data["root"],
                                          "--rvos_audio_path", data["audio_root"], "--split_file", str(split_file),
                                          "--save_path", str(tmp_path / "other.json")])
    assert not (tmp_path / "other.json").exists()


def test_rvos_missing_audio_names_the_file(tmp_path: Path, checkpoint: Path):
    data = make_ytvos(tmp_path / "ytvos", num_videos=1, num_frames=2)
    (Path(data["audio_root"]) / "vid000_1.npy").unlink()
    with pytest.raises(FileNotFoundError, match="vid000_1.npy"):
        inference_rvos.main(MODEL_ARGV + ["--model_path", str(checkpoint), "--ytvos_path", data["root"],
                                          "--rvos_audio_path", data["audio_root"],
                                          "--save_path", str(tmp_path / "r.json")])


def test_one_recording_on_one_folder(tmp_path: Path, checkpoint: Path):
    data = make_ytvos(tmp_path / "ytvos", num_videos=1, num_frames=4)
    recording = tmp_path / "phrase.wav"
    rng = np.random.default_rng(0)
    soundfile.write(recording, (rng.standard_normal(16000) * 3000).astype(np.int16), 16000)
    results_path = tmp_path / "results.json"
    frames_dir = Path(data["root"]) / "train" / "JPEGImages" / "vid000"
    inference_rvos.main(MODEL_ARGV + ["--model_path", str(checkpoint), "--audio", str(recording),
                                      "--video_dir", str(frames_dir), "--save_path", str(results_path),
                                      "--png_dir", str(tmp_path / "pngs")])
    (entry,) = read_results(results_path)
    assert entry["file_name"] == "vid000" and entry["exp_id"] == "phrase"
    assert decode_masks(entry["segmentations"]).shape == (4, 24, 32)
    assert len(list((tmp_path / "pngs" / "vid000" / "phrase").glob("*.png"))) == 4


def test_a2d_and_jhmdb_protocols(tmp_path: Path, checkpoint: Path):
    a2d = make_a2d(tmp_path / "a2d", num_frames=9)
    metrics_path = tmp_path / "a2d.json"
    metrics = inference_a2d.main(MODEL_ARGV + ["--model_path", str(checkpoint), "--a2d_path", a2d["root"],
                                               "--a2d_audio_path", a2d["audio_root"],
                                               "--metrics_path", str(metrics_path)])
    test_samples = [s for s in a2d["samples"] if a2d["videos"][s.video_id]["split"] == 1]
    assert metrics["num_samples"] == len(test_samples) > 0
    written = json.loads(metrics_path.read_text())
    assert len(written["samples"]) == len(test_samples)
    for key in ("J", "F", "overall_iou", "mean_iou", "precision@0.5", "precision@0.9", "mAP", "AP50", "AP75"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["J"] == pytest.approx(np.mean([s["J"] for s in written["samples"]]))

    jhmdb = make_jhmdb(tmp_path / "jhmdb", num_videos=2, num_frames=12)
    metrics = inference_jhmdb.main(MODEL_ARGV + ["--model_path", str(checkpoint), "--jhmdb_path", jhmdb["root"],
                                                 "--a2d_audio_path", jhmdb["audio_root"]])
    assert metrics["num_samples"] == 2 * 3  # three frames per annotation row


class MiddleFrameProbe(torch.nn.Module):
    """Stands in for Wnet: records the video frames of every clip it is given (the factory's frames encode
    their index in the background) and predicts foreground everywhere on clip position `position` only."""

    def __init__(self, position: int):
        super().__init__()
        self.position = position
        self.weight = torch.nn.Parameter(torch.zeros(1))  # predict_clip_masks asks for the model's device
        self.clips = []

    def forward(self, clip, audio):
        from tests.test_datasets import background_frame_indices
        self.clips.append(background_frame_indices(clip))
        frames, _, height, width = clip.shape
        masks = torch.full((1, frames, height // 4, width // 4), -10.0)
        masks[0, self.position] = 10.0
        return {"pred_masks": masks}


def mask_box(mask: np.ndarray) -> tuple:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


# The factory's object k in frame f of a 24x32 video: an 8x8 square at x0 = 1 + f % 4 + 16 (k - 1),
# y0 = 2 + 8 (k - 1) (tests/data_factory.py object_box), computed here by hand.
A2D_CASES = [  # (instance, annotated frame, the clip of 8 frames centred on it, ground-truth box)
    ("1", 1, [0, 0, 0, 1, 2, 3, 4, 5], (2, 2, 10, 10)),   # 1 - 3 = -2: clamped to the first frame
    ("1", 6, [3, 4, 5, 6, 7, 8, 8, 8], (3, 2, 11, 10)),   # 6 + 4 = 10 > 8: clamped to the last frame
    ("2", 1, [0, 0, 0, 1, 2, 3, 4, 5], (18, 10, 26, 18)),
    ("2", 6, [3, 4, 5, 6, 7, 8, 8, 8], (19, 10, 27, 18)),
]


def test_a2d_middle_frame_and_ground_truth_frame_hand_computed(tmp_path: Path):
    data = make_a2d(tmp_path / "a2d", num_frames=9, annotated=(1, 6), splits=(1,))  # one test video
    h5_files = sorted(p.name for p in (Path(data["root"]) / "a2d_annotation_with_instances" / "a2dvid0").iterdir())
    assert h5_files == ["00002.h5", "00007.h5"]  # 0-based frames 1 and 6, files named 1-based
    args = inference_a2d.parse(["--a2d_path", data["root"], "--a2d_audio_path", data["audio_root"],
                                                   "--num_frames", "8", "--num_queries", "8", "--device", "cpu"])
    dataset = datasets.a2d.build_test_set(args)
    assert [(dataset.describe(i).split()[3], s.frame_idx) for i, s in enumerate(dataset.samples)] == \
        [(i, f) for i, f, _, _ in A2D_CASES]
    for index, (_, _, _, box) in enumerate(A2D_CASES):
        assert mask_box(dataset.ground_truth(index)) == box and dataset.ground_truth(index).sum() == 64
    probe = MiddleFrameProbe(position=3)  # (8 - 1) // 2
    metrics, records, _ = evaluate_middle_frame(probe, PostProcessSegm(), dataset)
    assert probe.clips == [clip for _, _, clip, _ in A2D_CASES]
    # foreground everywhere on the middle frame and nowhere else: J = 64 / (24 * 32) when position 3 is scored
    assert [r["J"] for r in records] == pytest.approx([64 / (24 * 32)] * 4)


def test_jhmdb_middle_frame_and_ground_truth_frame_hand_computed(tmp_path: Path):
    data = make_jhmdb(tmp_path / "jhmdb", num_videos=1, num_frames=12, mask_frames=6)
    args = inference_jhmdb.parse(["--jhmdb_path", data["root"], "--a2d_audio_path",
                                                     data["audio_root"], "--num_frames", "8", "--num_queries", "8",
                                                     "--device", "cpu"])
    dataset = datasets.jhmdb.build_test_set(args)
    # linspace(4, 12 - 5, 3) = [4, 5.5, 7], truncated
    assert [s.frame_idx for s in dataset.samples] == [4, 5, 7]
    # frame 7 is past the 6 frames of the .mat: scored against its last frame (5), as the official
    assert [mask_box(dataset.ground_truth(i)) for i in range(len(dataset))] == \
        [(1, 2, 9, 10), (2, 2, 10, 10), (2, 2, 10, 10)]
    probe = MiddleFrameProbe(position=3)
    metrics, records, _ = evaluate_middle_frame(probe, PostProcessSegm(), dataset)
    assert probe.clips == [[1, 2, 3, 4, 5, 6, 7, 8], [2, 3, 4, 5, 6, 7, 8, 9], [4, 5, 6, 7, 8, 9, 10, 11]]
    assert [r["J"] for r in records] == pytest.approx([64 / (24 * 32)] * 3)


def every_other_frame(self, index: int) -> list:
    """A clip choice other than the official one (`MiddleFrameDataset.clip_indices`): every second frame around
    the annotated one, clamped to the video."""
    sample = self.samples[index]
    last = len(self.frame_paths(sample.video_id)) - 1
    middle = (self.num_frames - 1) // 2
    return [min(max(sample.frame_idx + 2 * (j - middle), 0), last) for j in range(self.num_frames)]


def test_evaluation_reads_the_frames_that_training_reads(tmp_path: Path, monkeypatch):
    """Evaluation and training select the same frames for a middle-frame sample: both go through the dataset's
    own clip selection, so a change to it reaches both (here: a different rule patched into the dataset)."""
    # the same A2D video twice on disk, in the training split and in the test split
    train_data = make_a2d(tmp_path / "train", num_frames=9, annotated=(1, 6), splits=(A2D_TRAIN_SPLIT,))
    test_data = make_a2d(tmp_path / "test", num_frames=9, annotated=(1, 6), splits=(A2D_TEST_SPLIT,))
    clip_options = ["--num_frames", "8", "--num_queries", "8", "--device", "cpu"]
    official = [clip for _, _, clip, _ in A2D_CASES]
    monkeypatch.setattr(MiddleFrameDataset, "clip_indices", every_other_frame)

    train_args = main.parse(clip_options + ["--dataset_file", "a2d", "--a2d_path", train_data["root"],
                                            "--a2d_audio_path", train_data["audio_root"]])
    training = build_dataset("train", train_args)
    trained = [training[i][2] for i in range(len(training))]
    probe = MiddleFrameProbe(position=3)  # (8 - 1) // 2, the annotated frame's position in the training target
    test_args = inference_a2d.parse(clip_options + ["--a2d_path", test_data["root"], "--a2d_audio_path",
                                                    test_data["audio_root"]])
    _, records, _ = evaluate_middle_frame(probe, PostProcessSegm(), datasets.a2d.build_test_set(test_args))

    assert [t["frame_id"] for t in trained] == [r["frame_idx"] for r in records] == [1, 6, 1, 6]
    assert [t["frame_idx"] for t in trained] == [probe.position] * 4
    assert probe.clips == [t["clip_frames"] for t in trained] != official
    # the scored frame is the training target's: foreground there only, J = 64 / (24 * 32)
    assert [r["J"] for r in records] == pytest.approx([64 / (24 * 32)] * 4)


def test_model_path_is_required(tmp_path: Path):
    data = make_ytvos(tmp_path / "ytvos", num_videos=1, num_frames=2)
    with pytest.raises(OptionError, match="--model_path"):
        inference_rvos.main(MODEL_ARGV + ["--ytvos_path", data["root"], "--rvos_audio_path", data["audio_root"],
                                          "--save_path", str(tmp_path / "r.json")])


def test_inference_data_scale_sets_the_inference_size_alone(tmp_path: Path, checkpoint: Path, capsys):
    """`--inference_data_scale` resizes the frames the model sees at inference; masks stay at the frames' size."""
    args = inference_rvos.parse(MODEL_ARGV + ["--data_scale", "0.5"])
    assert inference_scale(args) == 0.5
    args = inference_rvos.parse(MODEL_ARGV + ["--data_scale", "0.5", "--inference_data_scale", "0.25"])
    assert inference_scale(args) == 0.25

    data = make_ytvos(tmp_path / "ytvos", num_videos=1, num_frames=2)
    frames = {}
    for scale in ("0.5", "0.25"):
        results_path = tmp_path / f"results_{scale}.json"
        inference_rvos.main(MODEL_ARGV + ["--model_path", str(checkpoint), "--ytvos_path", data["root"],
                                          "--rvos_audio_path", data["audio_root"], "--save_path", str(results_path),
                                          "--data_scale", "0.5", "--inference_data_scale", scale])
        entries = read_results(results_path)
        frames[scale] = np.stack([decode_masks(e["segmentations"]) for e in entries])
        notes = [line for line in capsys.readouterr().out.splitlines() if '"event": "inference_size"' in line]
        assert len(notes) == (0 if scale == "0.5" else 1)  # a run off the training size says so
    height, width = np.asarray(Image.open(next(Path(data["root"]).rglob("*.jpg")))).shape[:2]
    assert frames["0.5"].shape[-2:] == frames["0.25"].shape[-2:] == (height, width)
    assert not np.array_equal(frames["0.5"], frames["0.25"])  # the model saw other pixels
