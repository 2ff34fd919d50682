"""datasets/audio/features.py and io.py: the official MFCC-39 (parity, framing, every storage format), the librosa features,
the loader's errors, and the speed of one minute of speech."""
import json
import time

import numpy as np
import pytest
import soundfile

from audio_helpers import OFFICIAL_FRAMING, load_script, official_frame_count, tone_signal, write_audio
from datasets import audio

PARITY_TOLERANCE = 1e-6  # relative, float64 (tests/fixtures/README.md)
SECONDS = 0.37  # short test signals: not a whole number of steps at any rate


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


@pytest.fixture(scope="module")
def benchmark_script():
    return load_script("benchmark_mfcc")


def test_frame_geometry_rounds_halves_to_even():
    for sample_rate, expected in OFFICIAL_FRAMING.items():
        assert audio.frame_geometry(sample_rate) == expected


def test_mfcc39_matches_official_features(reference_dir):
    samples, sample_rate = soundfile.read(str(reference_dir / "speech_22050.wav"), dtype="int16")
    expected = np.load(reference_dir / "speech_22050_mfcc39.npy")
    features = audio.mfcc39(samples, sample_rate)
    assert features.shape == expected.shape
    assert relative_error(features, expected) <= PARITY_TOLERANCE
    # The loader gives the same samples (int16 units, mono) as reading the int16 file directly.
    assert relative_error(audio.extract_features(reference_dir / "speech_22050.wav"), expected) <= PARITY_TOLERANCE


@pytest.mark.parametrize("sample_rate", [8000, 16000, 44100])
def test_mfcc39_matches_loop_version_at_other_rates(sample_rate, benchmark_script):
    # The vectorised framing against the loops at other rates. Both read the module's constants, so this is no
    # oracle for them: the official features above pin those (a pre-emphasis of 0.96 fails there).
    # 44.1 kHz frames (1102 samples) are longer than the 512-point FFT: rfft truncates them, as the official.
    signal = tone_signal(sample_rate, SECONDS).astype(np.float64)
    features = audio.mfcc39(signal, sample_rate)
    loops = benchmark_script.official_loop_mfcc39(signal, sample_rate)
    assert features.shape == (official_frame_count(signal.size, sample_rate), audio.FEATURE_DIM)
    assert relative_error(features, loops) <= 1e-12


def test_deltas_run_across_coefficients_not_time():
    # One frame with a single non-zero coefficient k: its delta is +-theta/10 at k -+ theta, zero elsewhere and
    # in every other frame (deltas over time would leak into the neighbouring frames).
    cepstra = np.zeros((3, audio.NUM_CEPSTRA))
    cepstra[1, 5] = 1.0
    deltas = audio.features._deltas_across_coefficients(cepstra)
    expected = np.zeros_like(cepstra)
    expected[1, [3, 4, 6, 7]] = [0.2, 0.1, -0.1, -0.2]
    np.testing.assert_allclose(deltas, expected, atol=1e-15)


def test_signal_no_longer_than_a_frame_gives_one_frame():
    frame_len, _ = OFFICIAL_FRAMING[16000]
    for length in (1, frame_len):
        assert audio.mfcc39(np.ones(length), 16000).shape == (1, audio.FEATURE_DIM)
    assert audio.mfcc39(np.ones(frame_len + 1), 16000).shape == (2, audio.FEATURE_DIM)
    # Digital silence: zero energies become eps instead of -inf.
    assert np.all(np.isfinite(audio.mfcc39(np.zeros(3000), 16000)))


@pytest.mark.parametrize("sample_rate", [8000, 16000, 44100])
def test_every_storage_format_gives_the_same_features(tmp_path, sample_rate):
    samples = tone_signal(sample_rate, SECONDS, seed=sample_rate)
    expected = audio.mfcc39(samples, sample_rate)
    assert expected.shape == (official_frame_count(samples.size, sample_rate), audio.FEATURE_DIM)
    files = {
        "int16 wav": write_audio(tmp_path / "int16.wav", samples, sample_rate),
        "float wav": write_audio(tmp_path / "float.wav", samples, sample_rate, subtype="FLOAT"),
        "flac": write_audio(tmp_path / "audio.flac", samples, sample_rate),
        "stereo wav": write_audio(tmp_path / "stereo.wav", samples, sample_rate, channels=2),
        "stereo float wav": write_audio(tmp_path / "stereo_float.wav", samples, sample_rate, subtype="FLOAT",
                                        channels=2),
    }
    for name, path in files.items():
        loaded, loaded_rate = audio.load_audio(path)
        assert loaded_rate == sample_rate, name
        np.testing.assert_array_equal(loaded, samples, err_msg=name)  # int16 units, channels averaged
        features = audio.extract_features(path)
        assert features.dtype == np.float64
        np.testing.assert_array_equal(features, expected, err_msg=name)


def test_ogg_vorbis_is_read(tmp_path):
    samples = tone_signal(16000, SECONDS)
    path = write_audio(tmp_path / "speech.ogg", samples, 16000, subtype="VORBIS")
    loaded, sample_rate = audio.load_audio(path)
    assert sample_rate == 16000 and loaded.size == samples.size
    # Lossy, so close rather than equal: the waveform is kept to within a few percent of its energy.
    assert relative_error(loaded, samples.astype(np.float64)) < 0.1
    assert audio.extract_features(path).shape == (official_frame_count(samples.size, 16000), audio.FEATURE_DIM)


def test_librosa_features_run_over_time(tmp_path):
    samples = tone_signal(16000, SECONDS)
    path = write_audio(tmp_path / "speech.wav", samples, 16000)
    features = audio.extract_features(path, feature="librosa")
    _, step = OFFICIAL_FRAMING[16000]
    assert features.shape == (1 + samples.size // step, audio.FEATURE_DIM)  # centred frames
    assert np.all(np.isfinite(features))
    # Deltas over time: zero for a constant signal's middle frames, unlike the official per-frame deltas.
    constant = audio.librosa_mfcc39(np.full(8000, 1000.0), 16000)
    middle = constant[len(constant) // 2]
    assert np.abs(middle[audio.NUM_CEPSTRA:]).max() < 1e-6
    assert np.abs(audio.mfcc39(np.full(8000, 1000.0), 16000)[5, audio.NUM_CEPSTRA:]).max() > 1e-3
    with pytest.raises(ValueError, match="unknown feature type"):
        audio.extract_features(path, feature="mel")


def test_unreadable_files_name_the_file_and_the_reason(tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(200)))
    empty = tmp_path / "empty.flac"
    empty.touch()
    zero_length = write_audio(tmp_path / "zero.wav", np.zeros(0, np.int16), 16000)
    truncated_flac = tmp_path / "truncated.flac"
    write_audio(truncated_flac, tone_signal(16000, SECONDS), 16000)
    truncated_flac.write_bytes(truncated_flac.read_bytes()[:30])
    unsupported = tmp_path / "garbage.m4a"
    unsupported.write_bytes(b"not an mp4 container at all" * 10)
    cases = {corrupt: "corrupt", empty: "empty file", zero_length: "zero-length", truncated_flac: "corrupt",
             unsupported: "unsupported", tmp_path / "missing.wav": "not found"}
    for path, reason in cases.items():
        with pytest.raises(audio.AudioDecodeError, match=reason) as caught:
            audio.load_audio(path)
        assert str(path) in str(caught.value)
        assert caught.value.path == str(path)


def test_mfcc39_rejects_bad_signals():
    with pytest.raises(ValueError, match="mono"):
        audio.mfcc39(np.zeros((100, 2)), 16000)
    with pytest.raises(ValueError, match="no samples"):
        audio.mfcc39(np.zeros(0), 16000)
    with pytest.raises(ValueError, match="NaN"):
        audio.mfcc39(np.array([0.0, np.nan, 1.0]), 16000)
    with pytest.raises(ValueError, match="sample rate"):
        audio.mfcc39(np.zeros(100), 0)


def test_one_minute_of_speech_takes_under_a_second(tmp_path, benchmark_script):
    # The benchmark itself (60 s of synthetic speech, timed against the loop version, agreement checked).
    result_path = tmp_path / "benchmark.json"
    started = time.perf_counter()
    assert benchmark_script.main(["--seconds", "60", "--repeats", "3", "--json", str(result_path)]) == 0
    results = json.loads(result_path.read_text())
    assert results["frames"] == official_frame_count(60 * results["sample_rate"], results["sample_rate"])
    assert results["ours_best_s"] < 1.0
    assert results["relative_error"] <= 1e-9
    assert time.perf_counter() - started < 30  # the loop version too stays small enough for the test suite
