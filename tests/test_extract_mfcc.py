"""scripts/extract_mfcc.py: a folder of real audio files -> <stem>.npy, bad files reported, atomic outputs."""
import shutil
import subprocess
import sys

import numpy as np
import pytest

from audio_helpers import ROOT, load_script, official_frame_count, tone_signal, write_audio
from datasets import audio

SCRIPT = ROOT / "scripts" / "extract_mfcc.py"
SECONDS = 0.41


@pytest.fixture(scope="module")
def extract_mfcc():
    return load_script("extract_mfcc")


def write_good_inputs(folder):
    """Recordings in several rates and formats; returns {stem: expected frame count}."""
    cases = {"rate_8k": (8000, "PCM_16", 1, ".wav"), "rate_16k": (16000, "PCM_16", 1, ".wav"),
             "rate_44k": (44100, "PCM_16", 1, ".wav"), "stereo": (16000, "PCM_16", 2, ".wav"),
             "float": (22050, "FLOAT", 1, ".wav"), "lossless": (44100, "PCM_16", 2, ".flac")}
    frames = {}
    for index, (stem, (sample_rate, subtype, channels, suffix)) in enumerate(cases.items()):
        samples = tone_signal(sample_rate, SECONDS, seed=index)
        write_audio(folder / f"{stem}{suffix}", samples, sample_rate, subtype=subtype, channels=channels)
        frames[stem] = official_frame_count(samples.size, sample_rate)
    return frames


def write_bad_inputs(folder):
    """A corrupt WAV, an empty (0-byte) file and a WAV with a header but no samples; returns {stem: reason}."""
    (folder / "corrupt.wav").write_bytes(b"this is not a RIFF file" * 20)
    (folder / "empty.wav").touch()
    write_audio(folder / "zero_length.wav", np.zeros(0, np.int16), 16000)
    return {"corrupt": "corrupt", "empty": "empty file", "zero_length": "zero-length"}


def test_reproduces_the_official_features(tmp_path, reference_dir, extract_mfcc):
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    shutil.copy(reference_dir / "speech_22050.wav", in_dir)
    assert extract_mfcc.main([str(in_dir), str(out_dir), "--workers", "1"]) == 0
    expected = np.load(reference_dir / "speech_22050_mfcc39.npy")
    features = np.load(out_dir / "speech_22050.npy")
    assert features.shape == expected.shape and features.dtype == np.float64
    assert np.linalg.norm(features - expected) / np.linalg.norm(expected) <= 1e-6


def test_folder_with_bad_files_in_parallel(tmp_path):
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    frames = write_good_inputs(in_dir)
    reasons = write_bad_inputs(in_dir)
    (in_dir / "notes.txt").write_text("not audio: ignored")
    # The real command line, two worker processes.
    done = subprocess.run([sys.executable, str(SCRIPT), str(in_dir), str(out_dir), "--workers", "2"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    for stem, reason in reasons.items():
        line = next((line for line in done.stderr.splitlines() if f"{stem}.wav" in line and "error" in line), None)
        assert line is not None, done.stderr
        assert str(in_dir / f"{stem}.wav") in line and reason in line
    assert f"{len(frames)} converted" in done.stderr and f"{len(reasons)} failed" in done.stderr
    # Exactly the good inputs have outputs (and the record of their rates), nothing half-written is left behind.
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([f"{stem}.npy" for stem in frames] +
                                                               [audio.FEATURE_INFO_NAME])
    for stem, count in frames.items():
        features = np.load(out_dir / f"{stem}.npy")
        assert features.shape == (count, audio.FEATURE_DIM), stem
        source = next(in_dir.glob(f"{stem}.*"))
        np.testing.assert_array_equal(features, audio.extract_features(source))  # workers give the same result


def test_existing_outputs_are_skipped_unless_overwrite(tmp_path, extract_mfcc, capsys):
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    write_audio(in_dir / "a.wav", tone_signal(16000, SECONDS), 16000)
    write_audio(in_dir / "b.flac", tone_signal(8000, SECONDS, seed=1), 8000)
    assert extract_mfcc.main([str(in_dir), str(out_dir), "--workers", "1"]) == 0
    original = np.load(out_dir / "a.npy")
    marker = np.zeros((1, audio.FEATURE_DIM))
    np.save(out_dir / "a.npy", marker)

    capsys.readouterr()
    assert extract_mfcc.main([str(in_dir), str(out_dir), "--workers", "1"]) == 0
    assert "0 converted, 2 skipped" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(out_dir / "a.npy"), marker)

    assert extract_mfcc.main([str(in_dir), str(out_dir), "--workers", "1", "--overwrite"]) == 0
    assert "2 converted, 0 skipped" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(out_dir / "a.npy"), original)


def test_overwrite_removes_the_output_of_an_input_that_now_fails(tmp_path, extract_mfcc, capsys):
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    out_dir.mkdir()
    (in_dir / "broken.wav").write_bytes(b"RIFF garbage")
    np.save(out_dir / "broken.npy", np.zeros((3, audio.FEATURE_DIM)))
    assert extract_mfcc.main([str(in_dir), str(out_dir), "--workers", "1", "--overwrite"]) == 1
    assert str(in_dir / "broken.wav") in capsys.readouterr().err
    assert not (out_dir / "broken.npy").exists()


def test_librosa_feature_option(tmp_path, extract_mfcc):
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    samples = tone_signal(16000, SECONDS)
    write_audio(in_dir / "speech.wav", samples, 16000)
    assert extract_mfcc.main([str(in_dir), str(out_dir), "--workers", "1", "--feature", "librosa"]) == 0
    features = np.load(out_dir / "speech.npy")
    np.testing.assert_array_equal(features, audio.librosa_mfcc39(samples, 16000))


def test_bad_arguments_and_empty_folder(tmp_path, extract_mfcc, capsys):
    assert extract_mfcc.main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        extract_mfcc.main([str(tmp_path), str(tmp_path / "out"), "--workers", "0"])
    assert exit_info.value.code == 2 and "--workers" in capsys.readouterr().err
    assert extract_mfcc.main([str(tmp_path), str(tmp_path / "out")]) == 1
    assert "no audio files" in capsys.readouterr().err


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def failing_save(file, array):
        file.write(b"\x93NUMPY partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        audio.save_features(tmp_path / "features.npy", np.zeros((2, audio.FEATURE_DIM)))
    assert list(tmp_path.iterdir()) == []
