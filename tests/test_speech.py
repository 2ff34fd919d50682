"""datasets/speech.py and scripts/synthesize_speech.py: eSpeak NG speech -> a real WAV -> features."""
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile

from audio_helpers import ROOT, load_script, official_frame_count
from datasets import audio
from datasets.speech import synthesize, write_wav

ESPEAK_RATE = 22050
PHRASE = "the red car on the left side of the road"  # 9 words: about 2 s at 175 words per minute
MIN_SECONDS, MAX_SECONDS = 1.0, 5.0
MIN_RMS = 300.0  # int16 units; speech from eSpeak NG is far louder, silence is 0


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def test_round_trip_phrase_to_wav_to_features(tmp_path):
    samples, sample_rate = synthesize(PHRASE)
    assert samples.dtype == np.int16 and samples.ndim == 1
    assert sample_rate == ESPEAK_RATE
    path = tmp_path / "phrase.wav"
    write_wav(path, samples, sample_rate)

    info = soundfile.info(str(path))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (ESPEAK_RATE, 1, "PCM_16", "WAV")
    assert MIN_SECONDS <= info.duration <= MAX_SECONDS
    read_back, _ = soundfile.read(str(path), dtype="int16")
    np.testing.assert_array_equal(read_back, samples)
    assert rms(read_back) > MIN_RMS

    features = audio.extract_features(path)
    assert features.shape == (official_frame_count(samples.size, ESPEAK_RATE), audio.FEATURE_DIM)
    assert np.all(np.isfinite(features))
    # Speech, not a constant: the log energy (c0) varies between words and pauses.
    assert np.ptp(features[:, 0]) > 3


def test_speed_and_voice_change_the_speech():
    slow, _ = synthesize(PHRASE, speed=120)
    fast, _ = synthesize(PHRASE, speed=350)
    assert fast.size < 0.6 * slow.size
    female, _ = synthesize(PHRASE, voice="en+f3")
    assert rms(female) > MIN_RMS


def test_concurrent_calls_do_not_mix_their_audio():
    phrases = ["yes", PHRASE, "a dog"]
    serial = {phrase: synthesize(phrase)[0].size for phrase in phrases}
    results, errors = {}, []

    def speak(phrase):
        try:
            results[phrase] = synthesize(phrase)[0].size
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=speak, args=(phrase,)) for phrase in phrases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for phrase in phrases:
        # eSpeak NG varies a few samples between calls; mixed-up chunks would change the length by far more.
        assert abs(results[phrase] - serial[phrase]) < 0.05 * serial[phrase], phrase


def test_bad_requests_raise_clear_errors():
    with pytest.raises(ValueError, match="nothing to say"):
        synthesize("   ")
    with pytest.raises(ValueError, match="no voice"):
        synthesize("hello", voice="no-such-voice")
    with pytest.raises(ValueError, match="words per minute"):
        synthesize("hello", speed=10)
    with pytest.raises(ValueError, match="int16"):
        write_wav("unused.wav", np.zeros(10, np.float32), ESPEAK_RATE)


def test_synthesize_speech_script(tmp_path, capsys):
    script = load_script("synthesize_speech")
    phrase_file = tmp_path / "phrases.txt"
    phrase_file.write_text("# a comment\nthe dog jumping\n\na woman in a red shirt\n", encoding="utf-8")
    out_dir = tmp_path / "speech"
    assert script.main([str(out_dir), "The man, on the LEFT!", "--phrases", str(phrase_file),
                        "--voice", "en-us", "--speed", "200"]) == 0
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == ["0000_the_man_on_the_left.wav", "0001_the_dog_jumping.wav", "0002_a_woman_in_a_red_shirt.wav"]
    for name in names:
        samples, sample_rate = soundfile.read(str(out_dir / name), dtype="int16")
        assert sample_rate == ESPEAK_RATE and rms(samples) > MIN_RMS

    assert script.main([str(out_dir)]) == 2
    assert "no phrases" in capsys.readouterr().err
    assert script.main([str(out_dir), "hello", "--voice", "no-such-voice"]) == 2
    assert "no voice" in capsys.readouterr().err


def test_training_and_inference_do_not_load_speech_synthesis():
    """Only the data tools use datasets/speech.py: the entry points run without eSpeak NG."""
    entry_points = ("main", "engine", "inference_rvos", "inference_a2d", "inference_jhmdb")
    probe = (f"import sys; import {', '.join(entry_points)}; "
             f"print(sorted(m for m in sys.modules if m == 'datasets.speech' or m.startswith('espeakng')))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
