"""scripts/speak_expressions.py: official names per format, features equal to the extracted ones, the datasets load
them, deterministic voices, resumption, bad rows, and no partial file from an interrupted or killed run."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from data_factory import make_a2d, make_jhmdb, make_ytvos
from datasets.a2d import A2DDataset
from datasets.audio import extract_features
from datasets.jhmdb_format import JHMDBQuery, write_jhmdb_annotations
from datasets.jhmdb import JHMDBDataset
from datasets.speech import TRAINING_VOICES, UNSEEN_VOICES, draw_speech, draw_style
from datasets.ytvos import RVOSDataset
from scripts import speak_expressions

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "speak_expressions.py"
VOICES = "en,en-us"
KILL_TIMEOUT_S = 120


def speak(annotation_format: str, annotations: Path, out: Path, *extra: str) -> int:
    return speak_expressions.main(["--format", annotation_format, "--annotations", str(annotations),
                                   "--wav_dir", str(out / "wav"), "--feature_dir", str(out / "features"),
                                   "--voices", VOICES, "--workers", "1", "--seed", "3", *extra])


def names(folder: Path, suffix: str) -> set:
    return {p.stem for p in folder.glob(f"*{suffix}")}


def assert_complete(out: Path) -> None:
    """Every file under an official name is whole: the WAV decodes, the features are the WAV's MFCC-39."""
    assert not list(out.rglob("*.tmp")), "a temporary file was left behind"
    for feature_path in (out / "features").glob("*.npy"):
        wav_path = out / "wav" / f"{feature_path.stem}.wav"
        assert wav_path.is_file(), f"features without their recording: {feature_path}"
        np.testing.assert_array_equal(np.load(feature_path), extract_features(wav_path))
    for wav_path in (out / "wav").glob("*.wav"):
        assert soundfile.info(str(wav_path)).frames > 0


def test_ytvos_names_features_manifest_and_loading(tmp_path: Path):
    data = make_ytvos(tmp_path / "ytvos", num_videos=2, num_frames=3)
    annotations = Path(data["root"]) / "meta_expressions" / "train" / "meta_expressions.json"
    assert speak("ytvos", annotations, tmp_path) == 0
    expected = {f"vid00{v}_{e}" for v in range(2) for e in range(2)}
    assert names(tmp_path / "wav", ".wav") == names(tmp_path / "features", ".npy") == expected
    assert_complete(tmp_path)

    manifest = json.loads((tmp_path / "wav" / speak_expressions.MANIFEST_NAME).read_text())
    assert set(manifest) == expected
    for name, entry in manifest.items():
        assert entry["text"] == ("the red square" if name.endswith("_0") else "the green square")
        assert (entry["voice"], entry["rate_wpm"]) == draw_speech(name, 3, VOICES.split(","))[:2]
        features = np.load(tmp_path / "features" / f"{name}.npy")
        assert features.dtype == np.float64 and features.ndim == 2 and features.shape[1] == 39
        assert entry["seconds"] == pytest.approx(soundfile.info(str(tmp_path / "wav" / f"{name}.wav")).duration,
                                                 abs=1e-3)

    # The loader reads the features, and the recordings give the same audio (features on the fly).
    from_features = RVOSDataset(data["root"], tmp_path / "features", num_frames=2)
    from_recordings = RVOSDataset(data["root"], tmp_path / "unused", num_frames=2, wav_root=tmp_path / "wav")
    for index in range(len(from_features)):
        _, audio, target = from_features[index]
        _, audio_wav, _ = from_recordings[index]
        expected_audio = np.load(tmp_path / "features" / f"{target['video']}_{target['exp_id']}.npy").T
        np.testing.assert_array_equal(audio.numpy(), expected_audio.astype(np.float32))
        assert torch.equal(audio, audio_wav)


def test_a2d_and_jhmdb_names_and_loading(tmp_path: Path):
    a2d = make_a2d(tmp_path / "a2d", num_frames=9)
    out = tmp_path / "a2d_speech"
    assert speak("a2d", Path(a2d["root"]) / "a2d_annotation.txt", out, "--workers", "2") == 0
    assert names(out / "features", ".npy") == {f"a2dvid{v}_{k}" for v in range(2) for k in (1, 2)}
    assert_complete(out)
    for wav_root in ("", out / "wav"):
        dataset = A2DDataset(a2d["root"], out / "features", num_frames=3, split="test", wav_root=wav_root)
        _, audio, target = dataset[0]
        expected = np.load(out / "features" / f"{target['video']}_{target['instance_id']}.npy").T
        np.testing.assert_array_equal(audio.numpy(), expected.astype(np.float32))

    jhmdb = make_jhmdb(tmp_path / "jhmdb", num_videos=2)
    out = tmp_path / "jhmdb_speech"
    assert speak("jhmdb", Path(jhmdb["root"]) / "jhmdb_annotation.txt", out) == 0
    assert names(out / "wav", ".wav") == names(out / "features", ".npy") == {"jvid0", "jvid1"}
    assert_complete(out)
    for wav_root in ("", out / "wav"):
        dataset = JHMDBDataset(jhmdb["root"], out / "features", num_frames=3, wav_root=wav_root)
        _, audio, target = dataset[0]
        np.testing.assert_array_equal(audio.numpy(), np.load(out / "features" / f"{target['video']}.npy").T
                                      .astype(np.float32))


def test_voices_are_drawn_per_expression_whatever_the_order():
    voices = ["en", "en-us", "en+f3"]
    draws = {name: draw_speech(name, 7, voices) for name in ("a_0", "a_1", "b_0")}
    assert {name: draw_speech(name, 7, voices) for name in ("b_0", "a_1", "a_0")} == draws
    assert all(voice in voices and 130 <= rate <= 200 for voice, rate, _ in draws.values())
    assert draw_speech("a_0", 8, voices) != draws["a_0"]
    assert len({draw_speech(f"v_{i}", 7, voices)[0] for i in range(30)}) == len(voices)


def test_speaker_pools_with_prosody(tmp_path: Path, capsys):
    """--speakers varied / unseen: each expression draws its whole style from the pool, and the manifest records it."""
    annotations = tmp_path / "jhmdb_annotation.txt"
    write_jhmdb_annotations(annotations, [JHMDBQuery(f"video{i}", f"the person number {i}") for i in range(3)])
    voices = {}
    for speakers, pool in (("varied", TRAINING_VOICES), ("unseen", UNSEEN_VOICES)):
        out = tmp_path / speakers
        assert speak_expressions.main(["--format", "jhmdb", "--annotations", str(annotations),
                                       "--wav_dir", str(out / "wav"), "--feature_dir", str(out / "features"),
                                       "--speakers", speakers, "--workers", "1", "--seed", "3"]) == 0
        assert_complete(out)
        manifest = json.loads((out / "wav" / speak_expressions.MANIFEST_NAME).read_text())
        assert set(manifest) == {"video0", "video1", "video2"}
        for name, entry in manifest.items():
            assert entry == {"text": entry["text"], **draw_style(name, 3, pool).as_record(),
                             "seconds": entry["seconds"]}
        voices[speakers] = {entry["voice"] for entry in manifest.values()}
    assert voices["varied"] <= set(TRAINING_VOICES) and voices["unseen"] <= set(UNSEEN_VOICES)

    capsys.readouterr()
    assert speak("jhmdb", annotations, tmp_path / "both", "--speakers", "varied") == 2
    assert "--voices chooses the voices of --speakers voices" in capsys.readouterr().err


def test_rerun_skips_everything_and_redoes_what_is_missing_or_changed(tmp_path: Path, capsys):
    queries = [JHMDBQuery(f"video{i}", f"the person number {i}") for i in range(3)]
    annotations = tmp_path / "jhmdb_annotation.txt"
    write_jhmdb_annotations(annotations, queries)
    assert speak("jhmdb", annotations, tmp_path) == 0
    files = sorted((tmp_path / "wav").glob("*.wav")) + sorted((tmp_path / "features").glob("*.npy"))
    stamps = {p: p.stat().st_mtime_ns for p in files}
    capsys.readouterr()

    assert speak("jhmdb", annotations, tmp_path) == 0
    assert "0 spoken, 3 skipped" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in files} == stamps

    (tmp_path / "features" / "video1.npy").unlink()  # a run killed between the WAV and its features
    queries[2] = JHMDBQuery("video2", "someone else")  # the annotation changed since
    write_jhmdb_annotations(annotations, queries)
    assert speak("jhmdb", annotations, tmp_path) == 0
    assert "2 spoken, 1 skipped" in capsys.readouterr().err
    assert (tmp_path / "wav" / "video0.wav").stat().st_mtime_ns == stamps[tmp_path / "wav" / "video0.wav"]
    manifest = json.loads((tmp_path / "wav" / speak_expressions.MANIFEST_NAME).read_text())
    assert manifest["video2"]["text"] == "someone else" and set(manifest) == {"video0", "video1", "video2"}
    assert_complete(tmp_path)


def test_bad_rows_are_reported_with_their_line_and_skipped(tmp_path: Path, capsys):
    annotations = tmp_path / "a2d_annotation.txt"
    annotations.write_text("video_id,instance_id,query\n"
                           "v1,1,the man on the left\n"        # line 2: good
                           "v1,2\n"                            # line 3: a field short
                           "v2,1,\n"                           # line 4: no text
                           "v1,1,the man again\n"              # line 5: the name of line 2 again
                           "v/3,1,a path in the name\n"        # line 6: not a file name
                           "v4,1 (copy),a woman, in red\n")    # line 7: good; the comma belongs to the text
    assert speak("a2d", annotations, tmp_path) == 1
    err = capsys.readouterr().err
    for line, words in ((3, "expected 3 fields"), (4, "no query text"), (5, "already named at line 2"),
                        (6, "not a file name")):
        assert f"{annotations}:{line}: " in err and words in err, (line, err)
    assert "2 spoken" in err and "4 bad row(s)" in err
    assert names(tmp_path / "wav", ".wav") == {"v1_1", "v4_1 (copy)"}
    manifest = json.loads((tmp_path / "wav" / speak_expressions.MANIFEST_NAME).read_text())
    assert manifest["v4_1 (copy)"]["text"] == "a woman, in red"

    meta = tmp_path / "meta_expressions.json"
    meta.write_text(json.dumps({"videos": {"vidA": {"expressions": {"0": {"exp": "a cat", "obj_id": "1"},
                                                                    "1": {"exp": " ", "obj_id": "2"}},
                                                    "frames": ["00000"]}}}, indent=4))
    out = tmp_path / "ytvos"
    assert speak("ytvos", meta, out) == 1
    err = capsys.readouterr().err
    assert f"{meta}:9: video 'vidA' expression '1' has no 'exp' text" in err
    assert names(out / "wav", ".wav") == {"vidA_0"}

    assert speak("ytvos", tmp_path / "missing.json", out) == 2
    assert "not found" in capsys.readouterr().err
    assert speak_expressions.main(["--format", "jhmdb", "--annotations", str(annotations), "--wav_dir",
                                   str(out), "--feature_dir", str(out), "--voices", "no-such-voice"]) == 2
    assert "no voice" in capsys.readouterr().err


def test_an_interrupted_run_leaves_only_complete_files(tmp_path: Path, monkeypatch, capsys):
    import datasets.speech as speech

    annotations = tmp_path / "jhmdb_annotation.txt"
    write_jhmdb_annotations(annotations, [JHMDBQuery(f"video{i}", f"the person number {i}") for i in range(5)])
    calls = []
    real_save = speech.save_features

    def interrupted_save(path, features):
        calls.append(path)
        if len(calls) == 3:  # Ctrl-C while the third feature file is being written
            def write(tmp):
                Path(tmp).write_bytes(b"half a file")
                raise KeyboardInterrupt
            speech.atomic_write(path, write)
        real_save(path, features)

    monkeypatch.setattr(speech, "save_features", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        speak("jhmdb", annotations, tmp_path)
    assert_complete(tmp_path)
    assert names(tmp_path / "features", ".npy") == {"video0", "video1"}
    manifest = json.loads((tmp_path / "wav" / speak_expressions.MANIFEST_NAME).read_text())
    assert set(manifest) == {"video0", "video1"}, "the manifest records what finished"

    monkeypatch.setattr(speech, "save_features", real_save)
    capsys.readouterr()
    assert speak("jhmdb", annotations, tmp_path) == 0
    assert "3 spoken, 2 skipped" in capsys.readouterr().err
    assert_complete(tmp_path)


def test_a_killed_process_leaves_only_complete_files(tmp_path: Path):
    """SIGTERM in the middle of a real run: only whole files; a SIGKILL's leftover temporary is removed next time."""
    annotations = tmp_path / "jhmdb_annotation.txt"
    count = 40
    write_jhmdb_annotations(annotations, [JHMDBQuery(f"video{i:03d}", f"the person in video number {i}")
                                          for i in range(count)])
    command = [sys.executable, str(SCRIPT), "--format", "jhmdb", "--annotations", str(annotations),
               "--wav_dir", str(tmp_path / "wav"), "--feature_dir", str(tmp_path / "features"), "--workers", "1"]
    log_path = tmp_path / "stderr.txt"  # a file, not a pipe: a full pipe would block the progress bar
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.time() + KILL_TIMEOUT_S
        while (len(list((tmp_path / "features").glob("*.npy"))) < 3 and process.poll() is None
               and time.time() < deadline):
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=KILL_TIMEOUT_S)
    err = log_path.read_text()
    done = len(list((tmp_path / "features").glob("*.npy")))
    if process.returncode == 0:
        pytest.skip(f"the run finished before the signal ({err[-300:]})")
    assert process.returncode == speak_expressions.SIGTERM_EXIT, err
    assert 3 <= done < count
    assert_complete(tmp_path)
    manifest = json.loads((tmp_path / "wav" / speak_expressions.MANIFEST_NAME).read_text())
    assert set(manifest) <= names(tmp_path / "wav", ".wav")

    stale = tmp_path / "wav" / ".video039.wav.abc123.tmp"  # what a SIGKILL during a write leaves
    stale.write_bytes(b"half")
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=KILL_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    assert f"{count - done} spoken, {done} skipped" in result.stderr
    assert not stale.exists()
    assert names(tmp_path / "features", ".npy") == {f"video{i:03d}" for i in range(count)}
