"""datasets/speech.py and scripts/synthesize_speech.py: eSpeak NG speech -> a real WAV -> features; the speaker
pools and the per-recording prosody."""
import multiprocessing
import subprocess
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import espeakng_loader
import numpy as np
import pytest
import soundfile

from audio_helpers import ROOT, load_script, official_frame_count
from datasets import audio
from datasets import speech
from datasets.speech import (ENGLISH_ACCENTS, HELD_OUT_ACCENTS, HELD_OUT_VARIANTS, PITCH_RANGE, PITCH_RANGE_RANGE,
                             SPEECH_RATE_WPM, TRAINING_ACCENTS, TRAINING_VARIANTS, TRAINING_VOICES, UNSEEN_VOICES,
                             VOICE_VARIANTS, WORD_GAP, SpeechStyle, draw_speech, draw_style, speaker_pool,
                             synthesize, synthesize_style, write_wav)

ESPEAK_RATE = 22050
PHRASE = "the red car on the left side of the road"  # 9 words: about 2 s at 175 words per minute
MIN_SECONDS, MAX_SECONDS = 1.0, 5.0
MIN_RMS = 300.0  # int16 units; speech from eSpeak NG is far louder, silence is 0
VARIANT_DIR = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
WHISPERS = ("whisper", "whisperf")  # no voiced frames: no F0 to measure
# Measured medians: male variants 76-115 Hz, female 172-253 Hz, the child 356 Hz (datasets/speech.py).
MALE_MAX_F0, FEMALE_MIN_F0, CHILD_MIN_F0 = 135.0, 150.0, 300.0


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def median_f0(samples: np.ndarray, sample_rate: int, low_hz: float = 60.0, high_hz: float = 450.0) -> float:
    """The median F0 of the voiced frames: 40 ms frames every 10 ms, louder than 0.3 of the recording's RMS, whose
    normalised autocorrelation peaks above 0.5 at a lag of `low_hz`-`high_hz`."""
    x = samples.astype(np.float64)
    length, hop = int(0.04 * sample_rate), int(0.01 * sample_rate)
    starts = np.arange(0, x.size - length, hop)
    frames = x[starts[:, None] + np.arange(length)]
    frames -= frames.mean(axis=1, keepdims=True)
    frames = frames[np.sqrt(np.mean(frames ** 2, axis=1)) > 0.3 * rms(samples)]
    autocorrelation = np.fft.irfft(np.abs(np.fft.rfft(frames, 2 * length)) ** 2)[:, :length]
    autocorrelation /= autocorrelation[:, :1] + 1e-9
    low, high = int(sample_rate / high_hz), int(sample_rate / low_hz)
    lags = low + np.argmax(autocorrelation[:, low:high], axis=1)
    voiced = autocorrelation[np.arange(len(lags)), lags] > 0.5
    assert voiced.sum() >= 10, "too few voiced frames to measure F0"
    return float(np.median(sample_rate / lags[voiced]))


def variant_and_accent(voice: str) -> tuple:
    accent, _, variant = voice.partition("+")
    return accent, variant


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
    with pytest.raises(ValueError, match="pitch must be 0-100"):
        synthesize("hello", pitch=101)
    with pytest.raises(ValueError, match="pitch_range must be 0-100"):
        synthesize("hello", pitch_range=-1)
    with pytest.raises(ValueError, match="word_gap must be >= 0"):
        synthesize("hello", word_gap=-1)
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


# ----------------------------------------------------------------------------- speakers and prosody
def test_speaker_pools_share_no_accent_nor_variant_and_hold_both_sexes():
    gmw = {path.name.lower() for path in (Path(espeakng_loader.get_data_path()) / "lang" / "gmw").iterdir()}
    assert set(ENGLISH_ACCENTS) == {name for name in gmw if name.startswith("en")} - {"en-shaw"}
    assert set(TRAINING_ACCENTS) | set(HELD_OUT_ACCENTS) == set(ENGLISH_ACCENTS)
    assert set(TRAINING_VARIANTS) | set(HELD_OUT_VARIANTS) == set(VOICE_VARIANTS) and "" in TRAINING_VARIANTS
    assert TRAINING_VOICES == speaker_pool(TRAINING_ACCENTS, TRAINING_VARIANTS)
    assert UNSEEN_VOICES == speaker_pool(HELD_OUT_ACCENTS, HELD_OUT_VARIANTS)
    assert speaker_pool(("en", "en-us"), ("", "f3")) == ("en", "en+f3", "en-us", "en-us+f3")
    training = [variant_and_accent(voice) for voice in TRAINING_VOICES]
    unseen = [variant_and_accent(voice) for voice in UNSEEN_VOICES]
    assert not {a for a, _ in training} & {a for a, _ in unseen}
    assert not {v for _, v in training} & {v for _, v in unseen}
    assert len(set(TRAINING_VOICES)) == len(TRAINING_VOICES) and len(set(UNSEEN_VOICES)) == len(UNSEEN_VOICES)
    for pool in (training, unseen):
        sexes = [VOICE_VARIANTS[variant] for _, variant in pool]
        assert sexes.count("male") >= 2 and sexes.count("female") >= 2
    held_out_sexes = [VOICE_VARIANTS[variant] for variant in HELD_OUT_VARIANTS]
    assert held_out_sexes.count("male") >= 2 and held_out_sexes.count("female") >= 2


def test_variant_sexes_follow_the_files_and_the_measured_pitch():
    """Each variant is a file of eSpeak NG's voices/!v whose "gender" line, if any, is its label, and its median
    F0 falls on the side of its label."""
    for variant, sex in VOICE_VARIANTS.items():
        if not variant:
            continue
        lines = (VARIANT_DIR / variant).read_text(encoding="utf-8", errors="replace").splitlines()
        gender = [line.split()[1].lower() for line in lines
                  if line.lower().startswith("gender") and len(line.split()) > 1]
        assert not gender or gender[0] == sex, variant
        if variant in WHISPERS:
            continue
        f0 = median_f0(*synthesize(PHRASE, f"en+{variant}", seed=0))
        if sex == "male":
            assert f0 < MALE_MAX_F0, (variant, f0)
        elif sex == "female":
            assert FEMALE_MIN_F0 < f0 < CHILD_MIN_F0, (variant, f0)
        else:
            assert f0 > CHILD_MIN_F0, (variant, f0)


def test_every_pool_voice_speaks():
    for voice in TRAINING_VOICES + UNSEEN_VOICES:
        samples, _ = synthesize("the red square", voice, seed=0)
        assert samples.size > 0 and rms(samples) > MIN_RMS, voice


def test_pitch_moves_the_f0():
    for voice in ("en", "en+f3"):
        low, default, high = (median_f0(*synthesize(PHRASE, voice, seed=0, pitch=pitch)) for pitch in (30, None, 70))
        assert low < default < high and high > 1.2 * low, (voice, low, default, high)


def test_prosody_does_not_leak_into_the_next_call():
    """Every call sets every parameter: a call that asks for none speaks at the defaults, whatever the call before
    asked for. (eSpeak NG carries a little waveform state from call to call, so the samples are not equal.)"""
    alone, rate = synthesize(PHRASE, "en+f3", seed=1)
    synthesize("the big red circle", "en+f3", seed=1, speed=300, pitch=80, pitch_range=90, word_gap=6)
    after, _ = synthesize(PHRASE, "en+f3", seed=1)
    assert abs(after.size - alone.size) < 0.005 * alone.size
    assert median_f0(after, rate) == pytest.approx(median_f0(alone, rate), rel=0.02)
    # What a leak would do: pitch 80 alone moves the F0 by far more.
    assert median_f0(synthesize(PHRASE, "en+f3", seed=1, pitch=80)[0], rate) > 1.15 * median_f0(alone, rate)


def _in_a_fork(function, *args):
    """`function(*args)` in a child forked from this process: the same eSpeak NG state, left unchanged here."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        return pool.submit(function, *args).result()


def _without_prosody(text: str, voice: str, rate: int, seed: int) -> bytes:
    """The synthesis as it was before the prosody parameters: voice, rate and seed set, nothing else."""
    encoded = text.encode("utf-8")
    with speech._lock:
        engine = speech._get_engine()
        assert engine.library.espeak_SetVoiceByName(voice.encode("utf-8")) == speech._EE_OK
        engine.library.espeak_SetParameter(speech._ESPEAK_RATE, rate, speech._ABSOLUTE)
        speech.seed_speech(seed)
        engine.chunks = []
        engine.library.espeak_Synth(encoded, len(encoded) + 1, 0, speech._POS_CHARACTER, 0,
                                    speech._ESPEAK_CHARS_UTF8, None, None)
        return b"".join(engine.chunks)


def _plain_style(text: str, key: str) -> bytes:
    return synthesize_style(text, draw_style(key, 3, ("en", "en+f3"), vary_prosody=False))[0].tobytes()


def test_the_plain_style_speaks_as_before_the_prosody_parameters():
    style = draw_style("video_0", 3, ("en", "en+f3"), vary_prosody=False)
    assert (style.pitch, style.pitch_range, style.word_gap) == (50, 50, 0)
    assert (style.voice, style.rate_wpm, style.seed) == draw_speech("video_0", 3, ("en", "en+f3"))
    synthesize("reset", seed=0)  # the parameters at their defaults here, as in a process that never set them
    before = _in_a_fork(_without_prosody, PHRASE, style.voice, style.rate_wpm, style.seed)
    assert _in_a_fork(_plain_style, PHRASE, "video_0") == before


def test_styles_are_drawn_per_recording_whatever_the_order():
    keys = [f"v{i}_{j}" for i in range(20) for j in range(2)]
    styles = {key: draw_style(key, 5, TRAINING_VOICES) for key in keys}
    assert {key: draw_style(key, 5, TRAINING_VOICES) for key in reversed(keys)} == styles
    assert draw_style("v0_0", 6, TRAINING_VOICES) != styles["v0_0"]
    for style in styles.values():
        assert style.voice in TRAINING_VOICES
        assert SPEECH_RATE_WPM[0] <= style.rate_wpm <= SPEECH_RATE_WPM[1]
        assert PITCH_RANGE[0] <= style.pitch <= PITCH_RANGE[1]
        assert PITCH_RANGE_RANGE[0] <= style.pitch_range <= PITCH_RANGE_RANGE[1]
        assert WORD_GAP[0] <= style.word_gap <= WORD_GAP[1]
    for field in ("voice", "pitch", "pitch_range", "word_gap"):
        assert len({getattr(style, field) for style in styles.values()}) > 2, field
    record = styles["v0_0"].as_record()
    assert list(record) == ["voice", "rate_wpm", "pitch", "pitch_range", "word_gap", "seed"]
    assert SpeechStyle(**record) == styles["v0_0"]
    with pytest.raises(ValueError, match="no voices"):
        draw_style("v0_0", 5, ())
