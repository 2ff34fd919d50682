"""scripts/make_demo_data.py: the layout in the real formats, occlusion-consistent masks, unique spoken
expressions, MFCC-39 features of the recordings, determinism across runs, skipping and atomic output."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datasets.audio import AudioLoader, load_audio, mfcc39
from datasets.speech import TRAINING_VOICES, UNSEEN_VOICES, draw_style
from datasets.formats import read_palette_png, read_rgb
from datasets.ytvos_format import decode_segmentation, read_meta_expressions, read_vis_instances, vis_annotations_by_video

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_demo_data.py"
TINY_ARGS = ["--num_train_videos", "1", "--num_test_videos", "1", "--frames", "4", "--size", "48x80"]
TINY_SIZE = (48, 80)


def _load_script():
    spec = importlib.util.spec_from_file_location("make_demo_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = _load_script()


def _run_script(out: Path, *extra: str) -> subprocess.CompletedProcess:
    """The script in a fresh process, as `make demo` runs it."""
    return subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--seed", "3", *TINY_ARGS, *extra],
                          cwd=ROOT, capture_output=True, text=True, check=True)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    _run_script(out)
    return out


def _files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_in_the_real_formats(tiny_dataset):
    root = tiny_dataset
    videos = read_meta_expressions(root / "meta_expressions" / "train" / "meta_expressions.json")
    train_ids = (root / "train_videos.txt").read_text().split()
    test_ids = (root / "test_videos.txt").read_text().split()
    assert len(train_ids) == 1 and len(test_ids) == 1 and not set(train_ids) & set(test_ids)
    assert sorted(videos) == sorted(train_ids + test_ids)
    for vid, video in videos.items():
        assert video["frames"] == [f"{i:05d}" for i in range(4)]
        assert sorted((root / "train" / "JPEGImages" / vid).iterdir()) == \
            [root / "train" / "JPEGImages" / vid / f"{name}.jpg" for name in video["frames"]]
        obj_ids = {int(e["obj_id"]) for e in video["expressions"].values()}
        assert 2 <= len(obj_ids) == len(video["expressions"]) <= 3  # one expression per object
        seen = set()
        for name in video["frames"]:
            assert read_rgb(root / "train" / "JPEGImages" / vid / f"{name}.jpg").size == TINY_SIZE[::-1]
            labels = read_palette_png(root / "train" / "Annotations" / vid / f"{name}.png")
            assert labels.shape == TINY_SIZE
            seen |= set(np.unique(labels).tolist())
        assert seen == {0} | obj_ids  # every object appears, nothing else does


def test_vis_split_files_match_the_pngs(tiny_dataset):
    root = tiny_dataset
    for split, ids_file in (("train", "train_videos.txt"), ("test", "test_videos.txt")):
        instances = read_vis_instances(root / "ann" / f"instances_{split}_sub.json")
        by_video = vis_annotations_by_video(instances)
        ids = (root / ids_file).read_text().split()
        assert [v["file_names"][0].split("/")[0] for v in instances["videos"]] == ids
        for video in instances["videos"]:
            vid = video["file_names"][0].split("/")[0]
            for position, annotation in enumerate(by_video[video["id"]]):
                obj_id = position + 1  # the official picks an expression's annotation by position
                for file_name, segmentation in zip(video["file_names"], annotation["segmentations"]):
                    labels = read_palette_png(root / "train" / "Annotations" / file_name.replace(".jpg", ".png"))
                    mask = decode_segmentation(segmentation, video["height"], video["width"])
                    np.testing.assert_array_equal(mask, labels == obj_id, err_msg=f"{vid} {file_name}")


def test_expressions_are_unique_and_name_colour_and_shape(tiny_dataset):
    videos = read_meta_expressions(tiny_dataset / "meta_expressions" / "train" / "meta_expressions.json")
    for vid, video in videos.items():
        texts = [e["exp"] for e in video["expressions"].values()]
        assert len(set(texts)) == len(texts), vid
        colours = [next(c for c in demo.COLOURS if c in text.split()) for text in texts]
        shapes = [next(s for s in demo.SHAPES if s in text.split()) for text in texts]
        assert len(set(colours)) == len(texts) and len(set(shapes)) == len(texts), vid  # colour AND shape differ


def test_audio_features_are_the_mfcc39_of_the_recordings(tiny_dataset):
    root = tiny_dataset
    videos = read_meta_expressions(root / "meta_expressions" / "train" / "meta_expressions.json")
    stems = sorted(f"{vid}_{exp_id}" for vid, video in videos.items() for exp_id in video["expressions"])
    assert sorted(p.stem for p in (root / "audio_feature").glob("*.npy")) == stems
    assert sorted(p.stem for p in (root / "audio_wav").glob("*.wav")) == stems
    speech = json.loads((root / "audio_wav" / "speech.json").read_text())
    assert {stem: speech[stem]["text"] for stem in stems} == \
        {f"{vid}_{exp_id}": e["exp"] for vid, video in videos.items() for exp_id, e in video["expressions"].items()}
    for stem in stems:
        features = np.load(root / "audio_feature" / f"{stem}.npy")
        samples, sample_rate = load_audio(root / "audio_wav" / f"{stem}.wav")
        assert features.ndim == 2 and features.shape[1] == 39 and features.shape[0] > 50  # > 0.5 s of speech
        np.testing.assert_array_equal(features, mfcc39(samples, sample_rate))


def test_same_bytes_for_the_same_seed(tiny_dataset, tmp_path):
    speech = json.loads((tiny_dataset / "audio_wav" / "speech.json").read_text())
    # A breathy variant draws on eSpeak NG's clock-seeded random generator: the case that needs re-seeding.
    assert any("+f" in recording["voice"] for recording in speech.values())
    again = tmp_path / "again"
    _run_script(again)
    assert _files(again) == _files(tiny_dataset)
    other_seed = tmp_path / "other"
    demo.main(["--out", str(other_seed), "--seed", "4", *TINY_ARGS])
    assert _files(other_seed) != _files(tiny_dataset)


def test_labels_follow_the_depth_order():
    config = demo.DemoConfig(seed=0, num_frames=3, height=60, width=100, min_objects=3, max_objects=3)
    overlapping = 0
    for video_index in range(6):
        video = demo.make_video(f"v{video_index}", demo._video_rng(0, 0, video_index), config)
        for frame in range(config.num_frames):
            expected = np.zeros((config.height, config.width), dtype=np.uint8)
            covered = np.zeros((config.height, config.width), dtype=int)
            for obj in sorted(video.objects, key=lambda o: o.depth):
                cx, cy = obj.centres[frame]
                mask = demo.shape_mask(obj.shape, cx, cy, obj.radius, config.height, config.width)
                expected[mask] = obj.obj_id
                covered += mask
            np.testing.assert_array_equal(video.labels[frame], expected)
            overlapping += int(np.sum(covered > 1))
            # Each labelled pixel shows its object's colour (up to the frame noise).
            for obj in video.objects:
                pixels = video.frames[frame][video.labels[frame] == obj.obj_id].astype(float)
                if len(pixels):
                    assert np.abs(pixels.mean(axis=0) - np.array(obj.rgb)).max() < 3, obj
    assert overlapping > 0  # the paths do cross, so occlusion is exercised


def test_skips_a_complete_dataset_and_refuses_a_different_one(tiny_dataset, tmp_path, capsys):
    before = {p: p.stat().st_mtime_ns for p in tiny_dataset.rglob("*")}
    demo.main(["--out", str(tiny_dataset), "--seed", "3", *TINY_ARGS])
    assert "skipped" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in tiny_dataset.rglob("*")} == before
    config = demo.DemoConfig(seed=3, num_train_videos=1, num_test_videos=1, num_frames=4, height=48, width=80)
    assert demo.is_complete(tiny_dataset, config)
    other = demo.DemoConfig(seed=5, num_train_videos=1, num_test_videos=0, num_frames=2, height=48, width=80)
    with pytest.raises(FileExistsError, match="other parameters"):
        demo.generate(tiny_dataset, other)
    half_made = tmp_path / "half"
    half_made.mkdir()
    with pytest.raises(FileExistsError, match="not a complete demo dataset"):
        demo.generate(half_made, other)
    assert demo.generate(half_made, other, force=True)
    assert demo.is_complete(half_made, other)


def test_a_failed_run_leaves_nothing(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("killed")
    monkeypatch.setattr(demo, "mfcc39", fail)
    config = demo.DemoConfig(num_train_videos=1, num_test_videos=0, num_frames=2, height=48, width=80)
    with pytest.raises(RuntimeError, match="killed"):
        demo.generate(tmp_path / "demo", config)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="max_objects"):
        demo.generate(tmp_path / "x", demo.DemoConfig(min_objects=3, max_objects=2))
    with pytest.raises(SystemExit):
        demo.get_parser().parse_args(["--size", "120by216"])
    assert demo.parse_size("120x216") == (120, 216)


def test_a_smaller_vocabulary_fewer_voices_and_plain_expressions(tmp_path):
    out = tmp_path / "small"
    _run_script(out, "--num_colours", "2", "--num_shapes", "3", "--num_voices", "1", "--min_objects", "2",
                "--max_objects", "2", "--p_say_size", "0", "--p_say_motion", "0", "--speed_scale", "3")
    colours, shapes = list(demo.COLOURS)[:2], demo.SHAPES[:3]
    videos = read_meta_expressions(out / "meta_expressions" / "train" / "meta_expressions.json")
    for vid, video in videos.items():
        for expression in video["expressions"].values():
            words = expression["exp"].split()
            assert sum(c in words for c in colours) == 1 and not any(c in words for c in list(demo.COLOURS)[2:])
            assert sum(s in words for s in shapes) == 1 and not any(s in words for s in demo.SHAPES[3:])
            assert len(words) == 3, "neither size nor motion with --p_say_size 0 --p_say_motion 0"
    speech = json.loads((out / "audio_wav" / "speech.json").read_text())
    assert {r["voice"] for r in speech.values()} == {demo.VOICES[0]}
    assert json.loads((out / demo.COMPLETE_MARKER).read_text())["num_colours"] == 2


def test_vocabulary_options_are_checked():
    with pytest.raises(ValueError, match="--num_colours"):
        demo.DemoConfig(num_colours=0).check()
    with pytest.raises(ValueError, match="--num_voices"):
        demo.DemoConfig(num_voices=len(demo.VOICES) + 1).check()
    with pytest.raises(ValueError, match="--p_say_motion"):
        demo.DemoConfig(p_say_motion=1.5).check()
    with pytest.raises(ValueError, match="--speed_scale"):
        demo.DemoConfig(speed_scale=0).check()
    with pytest.raises(ValueError, match="differ in colour and shape"):
        demo.DemoConfig(num_shapes=2, min_objects=2, max_objects=3).check()


def test_speed_scale_multiplies_the_motion():
    slow, fast = (demo.DemoConfig(num_frames=8, height=72, width=128, speed_scale=scale) for scale in (1.0, 4.0))
    travel = []
    for config in (slow, fast):
        video = demo.make_video("v", np.random.default_rng(7), config)
        travel.append(np.mean([np.hypot(o.centres[-1][0] - o.centres[0][0], o.centres[-1][1] - o.centres[0][1])
                               for o in video.objects]))
    assert travel[1] > 2.5 * travel[0]


def test_test_voices_are_heard_only_in_the_held_out_videos(tmp_path):
    """--test_voices: the held-out videos speak only those voices, the training videos only the others, and the
    training split is byte for byte the one made without the option (a model trained on it never heard them)."""
    plain, unseen = tmp_path / "plain", tmp_path / "unseen"
    _run_script(plain, "--num_voices", "2")
    _run_script(unseen, "--num_voices", "2", "--test_voices", "en-gb-x-rp,en+f3")
    speech = json.loads((unseen / "audio_wav" / "speech.json").read_text())
    train_voices = {r["voice"] for stem, r in speech.items() if stem.startswith("train")}
    test_voices = {r["voice"] for stem, r in speech.items() if stem.startswith("test")}
    assert train_voices <= {"en", "en-us"} and train_voices
    assert test_voices <= {"en-gb-x-rp", "en+f3"} and test_voices

    plain_files, unseen_files = _files(plain), _files(unseen)
    assert plain_files.keys() == unseen_files.keys()
    differing = {name for name in plain_files if plain_files[name] != unseen_files[name]}
    assert differing, "the held-out recordings must change"
    assert all(name.startswith(("audio_wav/test", "audio_feature/test")) or name in ("audio_wav/speech.json", ".complete")
               for name in differing), differing
    assert "test_voices" not in json.loads((plain / demo.COMPLETE_MARKER).read_text())
    assert json.loads((unseen / demo.COMPLETE_MARKER).read_text())["test_voices"] == ["en-gb-x-rp", "en+f3"]


def test_test_voices_are_checked():
    with pytest.raises(ValueError, match="no training voice"):
        demo.DemoConfig(num_voices=1, test_voices=("en",)).check()
    with pytest.raises(ValueError, match="no voice 'no-such-voice'"):
        demo.DemoConfig(test_voices=("no-such-voice",)).check()
    assert demo.parse_voices(" en+f3, en-gb-x-rp,en+f3 ") == ("en+f3", "en-gb-x-rp")
    with pytest.raises(SystemExit):
        demo.get_parser().parse_args(["--test_voices", " , "])
    config = demo.DemoConfig(num_voices=3, test_voices=("en-us", "en+f3"))
    assert config.train_voices() == ("en", "en-gb-scotland") and config.held_out_voices() == ("en-us", "en+f3")
    assert demo.DemoConfig(num_voices=2).held_out_voices() == ("en", "en-us")


def test_varied_speakers_and_the_unseen_copy_of_the_held_out_videos(tmp_path):
    """--speakers varied: every recording draws its own style from the training pool; --held_out_speakers unseen
    changes only the held-out recordings (from the unseen pool), and with no training video it gives the same
    held-out videos spoken by the unseen pool."""
    seen, unseen, copy = tmp_path / "seen", tmp_path / "unseen", tmp_path / "copy"
    _run_script(seen, "--speakers", "varied")  # fresh processes: eSpeak NG carries state between syntheses
    _run_script(unseen, "--speakers", "varied", "--held_out_speakers", "unseen")
    demo.main(["--out", str(copy), "--seed", "3", *TINY_ARGS, "--num_train_videos", "0", "--speakers", "varied",
               "--held_out_speakers", "unseen"])
    seen_files, unseen_files = _files(seen), _files(unseen)
    assert seen_files.keys() == unseen_files.keys()
    differing = {name for name in seen_files if seen_files[name] != unseen_files[name]}
    assert any(name.startswith("audio_wav/test") for name in differing)
    assert all(name.startswith(("audio_wav/test", "audio_feature/test")) or name in ("audio_wav/speech.json", ".complete")
               for name in differing), differing

    speech = {name: json.loads((root / "audio_wav" / "speech.json").read_text()) for name, root in
              (("seen", seen), ("unseen", unseen), ("copy", copy))}
    for stem, entry in speech["seen"].items():
        assert entry == {"text": entry["text"], **draw_style(stem, 3, TRAINING_VOICES).as_record()}
    unseen_voices = {entry["voice"] for stem, entry in speech["unseen"].items() if stem.startswith("test")}
    training_voices = {entry["voice"] for stem, entry in speech["unseen"].items() if stem.startswith("train")}
    assert unseen_voices <= set(UNSEEN_VOICES) and training_voices <= set(TRAINING_VOICES)
    assert unseen_voices and training_voices and not unseen_voices & training_voices
    assert {stem: entry for stem, entry in speech["unseen"].items() if stem.startswith("test")} == speech["copy"]

    copy_files = _files(copy)
    for name, data in copy_files.items():
        if name.startswith(("train/JPEGImages/", "train/Annotations/")):
            assert data == seen_files[name], name
    copy_meta = read_meta_expressions(copy / "meta_expressions" / "train" / "meta_expressions.json")
    seen_meta = read_meta_expressions(seen / "meta_expressions" / "train" / "meta_expressions.json")
    assert copy_meta == {vid: video for vid, video in seen_meta.items() if vid.startswith("test")}

    marker = json.loads((unseen / demo.COMPLETE_MARKER).read_text())
    assert (marker["speakers"], marker["held_out_speakers"]) == ("varied", "unseen")
    assert "held_out_speakers" not in json.loads((seen / demo.COMPLETE_MARKER).read_text())


def test_speaker_options_are_checked():
    with pytest.raises(ValueError, match="--speakers must be one of"):
        demo.DemoConfig(speakers="many").check()
    with pytest.raises(ValueError, match="--held_out_speakers must be one of"):
        demo.DemoConfig(held_out_speakers="new").check()
    with pytest.raises(ValueError, match="--held_out_speakers unseen needs --speakers varied"):
        demo.DemoConfig(held_out_speakers="unseen").check()
    for fixed_voices in ({"num_voices": 2}, {"test_voices": ("en",)}):
        with pytest.raises(ValueError, match="--num_voices and --test_voices choose the voices of --speakers fixed"):
            demo.DemoConfig(speakers="varied", **fixed_voices).check()
    config = demo.DemoConfig(speakers="varied", held_out_speakers="unseen")
    config.check()
    assert (config.train_voices(), config.held_out_voices()) == (TRAINING_VOICES, UNSEEN_VOICES)
    assert demo.DemoConfig(speakers="varied").held_out_voices() == TRAINING_VOICES
    args = demo.get_parser().parse_args(["--speakers", "varied", "--held_out_speakers", "unseen"])
    assert (args.speakers, args.held_out_speakers) == ("varied", "unseen")
    with pytest.raises(SystemExit):
        demo.get_parser().parse_args(["--speakers", "many"])
    assert "speakers" not in demo.DemoConfig().record() and "held_out_speakers" not in demo.DemoConfig().record()


def test_the_audio_loader_on_the_recordings_equals_the_extracted_features(tiny_dataset):
    """What training reads with --rvos_wav_path (features on the fly) is what it reads from the .npy files."""
    loader = AudioLoader()
    for wav in sorted((tiny_dataset / "audio_wav").glob("*.wav")):
        from_npy = loader(tiny_dataset / "audio_feature" / f"{wav.stem}.npy")
        from_wav = loader(wav)
        assert from_wav.shape == from_npy.shape and from_wav.shape[0] == 39
        assert float((from_wav - from_npy).abs().max()) <= 1e-6 * max(1.0, float(from_npy.abs().max()))
