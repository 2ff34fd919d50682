"""The changes a recording can go through (datasets/audio/perturb.py, room.py), each measured for the property
it promises, and the training augmentation: seeded per sample and epoch, exact under --resume."""
import argparse
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import main as train
from audio_helpers import tone_signal, write_audio
from data_factory import make_ytvos
from datasets import build_dataset
from datasets.audio import AudioLoader, load_audio
from datasets.audio.noise import AudioNoise, mean_power, snr_db
from datasets.audio.perturb import (AudioAugment, AudioCondition, AugmentRanges, apply_gain, change_speed,
                                    limit_band, pad_silence, parse_band, shift_pitch, warp_vocal_tract)
from datasets.audio.room import measured_rt60, reverberate, room_impulse_response
from main import get_args_parser
from util.config import parse_args

RATE = 16000
RT60_TOLERANCE = 0.2  # relative
SNR_TOLERANCE_DB = 0.5


def sine(frequency: float, seconds: float = 1.0, rate: int = RATE, amplitude: float = 8000.0) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * frequency * np.arange(int(seconds * rate)) / rate)


def level_db(signal: np.ndarray) -> float:
    return 10 * math.log10(mean_power(signal))


def dominant_frequency(signal: np.ndarray, rate: int = RATE) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(signal.size)))
    return float(np.argmax(spectrum) * rate / signal.size)


def fundamental(signal: np.ndarray, rate: int = RATE, low: float = 60.0, high: float = 500.0) -> float:
    """F0 by autocorrelation within [low, high] Hz."""
    signal = signal - signal.mean()
    correlation = np.correlate(signal, signal, mode="full")[signal.size - 1:]
    lags = np.arange(int(rate / high), int(rate / low))
    return rate / lags[np.argmax(correlation[lags])]


def harmonic_tone(f0: float, seconds: float = 1.0, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return sum(4000 / k * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 8))


@pytest.mark.parametrize("factor", [0.8, 0.9, 1.2])
def test_speed_changes_the_duration_by_the_factor(factor: float):
    signal = harmonic_tone(150.0)
    faster = change_speed(signal, factor)
    assert faster.size == pytest.approx(signal.size / factor, abs=1)
    assert fundamental(faster) == pytest.approx(150.0 * factor, rel=0.03)  # pitch moves with it


@pytest.mark.parametrize("semitones", [-3.0, 4.0])
def test_pitch_shift_moves_f0_and_keeps_the_duration(semitones: float):
    signal = harmonic_tone(150.0)
    shifted = shift_pitch(signal, RATE, semitones)
    assert shifted.size == signal.size
    assert fundamental(shifted) == pytest.approx(150.0 * 2 ** (semitones / 12), rel=0.03)


def test_vocal_tract_warp_moves_the_spectrum_and_keeps_the_length():
    signal = sine(1000.0)
    for alpha in (0.9, 1.1):
        warped = warp_vocal_tract(signal, RATE, alpha)
        assert warped.size == signal.size
        assert dominant_frequency(warped) == pytest.approx(1000.0 * alpha, rel=0.03)
    np.testing.assert_array_equal(warp_vocal_tract(signal, RATE, 1.0), signal)


def test_gain_and_silence_padding():
    signal = sine(440.0)
    assert level_db(apply_gain(signal, 6.0)) - level_db(signal) == pytest.approx(6.0, abs=1e-9)
    padded = pad_silence(signal, RATE, 0.25, 0.1, np.random.default_rng(0))
    assert padded.size == signal.size + int(0.25 * RATE) + int(0.1 * RATE)
    np.testing.assert_array_equal(padded[int(0.25 * RATE): int(0.25 * RATE) + signal.size], signal)
    assert np.abs(padded[:int(0.25 * RATE)]).max() < 10  # near-silence, not zeros (a recorder's floor)


@pytest.mark.parametrize("rt60", [0.3, 0.6, 1.0])
def test_simulated_room_has_the_asked_rt60(rt60: float):
    response = room_impulse_response(rt60, RATE, np.random.default_rng(1))
    assert measured_rt60(response, RATE) == pytest.approx(rt60, rel=RT60_TOLERANCE)
    impulse = np.zeros(RATE // 10)
    impulse[0] = 1.0
    heard = reverberate(impulse, response)  # what a recording of a click in that room measures
    assert measured_rt60(heard, RATE) == pytest.approx(rt60, rel=RT60_TOLERANCE)
    speech = tone_signal(RATE, 0.5).astype(np.float64)
    wet = reverberate(speech, response)
    assert wet.size == speech.size + response.size - 1
    assert mean_power(wet[:speech.size]) == pytest.approx(mean_power(speech), rel=1e-9)


def test_telephone_band_attenuates_outside_300_to_3400_hz():
    band = parse_band("telephone")
    assert band == (300.0, 3400.0) and parse_band("100-2000") == (100.0, 2000.0)
    for frequency, least_loss, most_loss in ((1000.0, 0.0, 1.0), (100.0, 30.0, math.inf), (6000.0, 30.0, math.inf)):
        signal = sine(frequency)
        loss = level_db(signal) - level_db(limit_band(signal, RATE, band)[RATE // 10: -RATE // 10])
        assert least_loss - 0.5 <= loss <= most_loss, (frequency, loss)
    with pytest.raises(ValueError, match="LOW-HIGH"):
        parse_band("narrow")
    with pytest.raises(ValueError, match="LOW < HIGH"):
        parse_band("3400-300")


def test_noise_condition_has_the_asked_snr(tmp_path: Path):
    paths = [write_audio(tmp_path / f"r{i}.wav", tone_signal(RATE, 0.6 + 0.1 * i, seed=i), RATE) for i in range(4)]
    signal, rate = load_audio(paths[0])
    for kind in ("white", "pink", "babble"):
        for target in (10.0, 0.0, -5.0):
            condition = AudioCondition(noise=AudioNoise(kind, target, seed=3, pool=paths))
            mixed = condition.apply(signal, rate, paths[0], seed=3)
            assert abs(snr_db(signal, mixed - signal) - target) < SNR_TOLERANCE_DB, (kind, target)


def test_pink_noise_falls_by_3_db_per_octave():
    from datasets.audio.noise import pink_noise

    noise = pink_noise(2 ** 18, np.random.default_rng(0))
    power = np.abs(np.fft.rfft(noise)) ** 2
    octave = lambda lo: power[lo: 2 * lo].mean()  # noqa: E731 (one use)
    assert 10 * math.log10(octave(1000) / octave(2000)) == pytest.approx(3.0, abs=0.5)


def augmenter(tmp_path: Path, ranges: AugmentRanges = AugmentRanges()) -> tuple:
    paths = [write_audio(tmp_path / f"a{i}.wav", tone_signal(RATE, 0.7, seed=i), RATE) for i in range(3)]
    return AudioAugment(5, paths, load_audio, ranges), paths


def test_augmentation_is_seeded_by_sample_and_epoch(tmp_path: Path):
    augment, paths = augmenter(tmp_path)
    signal, rate = load_audio(paths[0])
    first = augment(signal, rate, paths[0], epoch=2, sample=7)
    np.testing.assert_array_equal(first, augment(signal, rate, paths[0], epoch=2, sample=7))
    again = AudioAugment(5, list(reversed(paths)), load_audio)  # a new object, the same seed: the same waveform
    np.testing.assert_array_equal(first, again(signal, rate, paths[0], epoch=2, sample=7))
    changed = [augment(signal, rate, paths[0], epoch=e, sample=s) for e, s in ((3, 7), (2, 8))]
    for other in changed:
        assert other.shape != first.shape or not np.allclose(other, first)


def test_every_step_is_applied_when_its_probability_is_one(tmp_path: Path):
    always = AugmentRanges(p_speed=1, speed=(1.25, 1.25), p_pitch=1, p_vocal_tract=1, p_silence=1,
                           silence_seconds=(0.1, 0.1), p_room=1, p_noise=1, snr_db=(0.0, 0.0), p_band=1, p_gain=1)
    augment, paths = augmenter(tmp_path, always)
    signal, rate = load_audio(paths[0])
    out = augment(signal, rate, paths[0], epoch=0, sample=0)
    never = AugmentRanges(**{name: 0.0 for name in vars(AugmentRanges()) if name.startswith("p_")})
    np.testing.assert_array_equal(AudioAugment(5, paths, load_audio, never)(signal, rate, paths[0], 0, 0), signal)
    # 1.25x faster, 0.1 s of silence on each side, then the room's tail
    assert out.size > signal.size / 1.25 + 0.2 * rate
    with pytest.raises(ValueError, match="p_noise"):
        AugmentRanges(p_noise=1.5).check()


def test_augment_prob_leaves_that_share_of_samples_as_recorded(tmp_path: Path):
    always = AugmentRanges(p_gain=1.0, gain_db=(6.0, 6.0))  # every changed sample is at least 6 dB louder
    augment, paths = augmenter(tmp_path, always)
    signal, rate = load_audio(paths[0])
    full = [augment(signal, rate, paths[0], 0, s) for s in range(200)]
    half_augment = AudioAugment(5, paths, load_audio, replace(always, p_augment=0.5))
    half = [half_augment(signal, rate, paths[0], 0, s) for s in range(200)]
    unchanged = [h.shape == signal.shape and np.array_equal(h, signal) for h in half]
    assert 0.4 < np.mean(unchanged) < 0.6
    # a changed sample is the one p_augment 1 gives: the share draw comes after the steps' draws
    for h, f, same in zip(half, full, unchanged):
        if not same:
            np.testing.assert_array_equal(h, f)
    assert not any(f.shape == signal.shape and np.array_equal(f, signal) for f in full)
    with pytest.raises(ValueError, match="p_augment"):
        AugmentRanges(p_augment=-0.1).check()


def test_augment_from_leaves_the_first_epochs_as_recorded(tmp_path: Path):
    augment, paths = augmenter(tmp_path, AugmentRanges(p_gain=1.0, gain_db=(6.0, 6.0)))
    later = AudioAugment(5, paths, load_audio, augment.ranges, first_epoch=2)
    signal, rate = load_audio(paths[0])
    for sample in range(3):
        for epoch in (0, 1):
            np.testing.assert_array_equal(later(signal, rate, paths[0], epoch, sample), signal)
        np.testing.assert_array_equal(later(signal, rate, paths[0], 2, sample), augment(signal, rate, paths[0], 2, sample))
    with pytest.raises(ValueError, match="first augmented epoch"):
        AudioAugment(5, paths, load_audio, first_epoch=-1)


def test_the_loader_augments_only_training_samples_it_is_given(tmp_path: Path):
    augment, paths = augmenter(tmp_path)
    clean = AudioLoader()(paths[0])
    loader = AudioLoader(augment=augment)
    assert torch.equal(loader(paths[0]), clean)  # no (epoch, sample): not a training sample
    assert torch.equal(loader.without_augment()(paths[0], 0, 1), clean)
    changed = [loader(paths[0], 0, s) for s in range(4)]
    assert any(c.shape != clean.shape or not torch.equal(c, clean) for c in changed)
    assert torch.equal(loader(paths[0], 0, 3), changed[3])


def wav_training(data: dict, wav_dir: Path, out: Path, *extra: str) -> argparse.Namespace:
    return parse_args(get_args_parser(), [
        "--backbone", "resnet18", "--hidden_dim", "48", "--nheads", "4", "--dim_feedforward", "64",
        "--enc_layers", "1", "--dec_layers", "1", "--num_frames", "2", "--num_queries", "2", "--masks",
        "--dataset_file", "ytvos", "--ytvos_path", data["root"], "--rvos_wav_path", str(wav_dir), "--device", "cpu",
        "--num_workers", "0", "--data_scale", "0.1", "--output_dir", str(out), "--pretrained_weights", "none",
        "--audio_augment", *extra])


def test_resume_with_augmentation_is_exact(tmp_path: Path):
    data = make_ytvos(tmp_path / "ytvos", num_videos=1, num_frames=2)
    wav_dir = tmp_path / "wav"
    wav_dir.mkdir()
    for i, stem in enumerate(("vid000_0", "vid000_1")):
        write_audio(wav_dir / f"{stem}.wav", tone_signal(RATE, 0.6, seed=i), RATE)
    dataset = build_dataset("train", wav_training(data, wav_dir, tmp_path / "unused"))
    assert dataset.audio_loader.augment is not None
    heard = [dataset[i][1] for i in range(len(dataset))]
    dataset.set_epoch(1)
    assert any(not torch.equal(a, dataset[i][1]) if a.shape == dataset[i][1].shape else True
               for i, a in enumerate(heard))
    assert build_dataset("val", wav_training(data, wav_dir, tmp_path / "unused")).audio_loader.augment is None

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train.main(wav_training(data, wav_dir, straight, "--epochs", "2"))
    train.main(wav_training(data, wav_dir, resumed, "--epochs", "1"))
    train.main(wav_training(data, wav_dir, resumed, "--epochs", "2", "--resume", str(resumed / "checkpoint.pth")))
    a = torch.load(straight / "checkpoint.pth", map_location="cpu", weights_only=True)["model"]
    b = torch.load(resumed / "checkpoint.pth", map_location="cpu", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
