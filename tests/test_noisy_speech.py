"""Features straight from recordings (equal to the extracted .npy, cached per process) and noisy speech (white,
pink and babble noise at a requested SNR) in the loaders and the inference scripts."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import datasets.audio.loader as loader
import datasets.common as common
import inference_a2d
import inference_rvos
from audio_helpers import load_script, tone_signal, write_audio
from data_factory import make_a2d, make_ytvos
from datasets.audio import AudioLoader, audio_source, build_audio_loader, features_from_samples, load_audio
from datasets.audio.loader import check_audio_file
from datasets.audio.noise import BABBLE_TALKERS, AudioNoise, mean_power, mix_at_snr, snr_db
from datasets.audio.perturb import AudioCondition
from datasets.ytvos import RVOSDataset
from util.errors import OptionError
from main import get_args_parser
from model_helpers import save_untrained_checkpoint
from models import build_model
from util.config import parse_args
from util.results import decode_masks, read_results

SAMPLE_RATE = 16000
SNR_TOLERANCE_DB = 0.5
SNRS_DB = (20.0, 5.0, 0.0, -10.0)
MODEL_ARGV = ["--backbone", "resnet18", "--hidden_dim", "48", "--nheads", "4", "--dim_feedforward", "64",
              "--enc_layers", "1", "--dec_layers", "1", "--num_frames", "2", "--num_queries", "2", "--masks",
              "--device", "cpu", "--seed", "0", "--data_scale", "0.2"]


def write_recordings(folder: Path, stems, seconds: float = 0.6) -> list:
    """One 16-bit WAV per stem, each a different tone signal (so a mix of them is not one of them)."""
    folder.mkdir(parents=True, exist_ok=True)
    return [write_audio(folder / f"{stem}.wav", tone_signal(SAMPLE_RATE, seconds + 0.1 * i, seed=i), SAMPLE_RATE)
            for i, stem in enumerate(stems)]


def extract_to(wav_dir: Path, feature_dir: Path) -> None:
    assert load_script("extract_mfcc").main([str(wav_dir), str(feature_dir), "--workers", "1"]) == 0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A freshly built small model (random weights), saved as a Wnet checkpoint."""
    return save_untrained_checkpoint(tmp_path_factory.mktemp("ckpt"), MODEL_ARGV)


# ----------------------------------------------------------------------------- features from recordings
def test_features_from_recordings_equal_the_extracted_ones(tmp_path: Path):
    paths = write_recordings(tmp_path / "wav", ["vid_0", "vid_1"])
    extract_to(tmp_path / "wav", tmp_path / "npy")
    for path in paths:
        from_npy = AudioLoader()(tmp_path / "npy" / f"{path.stem}.npy")
        from_wav = AudioLoader()(path)
        assert from_wav.dtype == torch.float32 and from_wav.shape == from_npy.shape and from_wav.shape[0] == 39
        relative = (from_wav.double() - from_npy.double()).norm() / from_npy.double().norm()
        assert relative <= 1e-6
        check_audio_file(path)
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        check_audio_file(tmp_path / "wav" / "missing.wav")
    (tmp_path / "broken.wav").write_bytes(b"RIFF but not really")
    with pytest.raises(common.DataFormatError, match="broken.wav"):
        check_audio_file(tmp_path / "broken.wav")
    assert audio_source("feats", "", "v_0") == Path("feats/v_0.npy")
    assert audio_source("feats", "wavs", "v_0") == Path("wavs/v_0.wav")


def test_recordings_are_decoded_once_per_file_version(tmp_path: Path, monkeypatch):
    (path,) = write_recordings(tmp_path, ["rec"])
    calls = []
    monkeypatch.setattr(loader, "load_audio", lambda p: calls.append(p) or load_audio(p))
    loader._decoded.cache_clear()
    loader._clean_features.cache_clear()
    first = AudioLoader()(path)
    first.zero_()  # a caller that changes its tensor must not change the cache
    second = AudioLoader()(path)
    assert len(calls) == 1 and second.abs().sum() > 0
    write_audio(path, tone_signal(SAMPLE_RATE, 0.3, seed=9), SAMPLE_RATE)  # rewritten: a new size and mtime
    third = AudioLoader()(path)
    assert len(calls) == 2 and third.shape != second.shape


def test_clean_features_come_from_the_cache_and_changed_ones_anew(tmp_path: Path, monkeypatch):
    (path,) = write_recordings(tmp_path, ["rec"])
    samples, rate = load_audio(path)
    uncached = torch.from_numpy(np.ascontiguousarray(features_from_samples(samples, rate)[0].T)).float()
    calls = []
    real = loader.compute_features
    monkeypatch.setattr(loader, "compute_features", lambda *a: calls.append(a) or real(*a))
    loader._clean_features.cache_clear()
    first, second = AudioLoader()(path), AudioLoader(model_rate=SAMPLE_RATE)(path)
    assert len(calls) == 1 and torch.equal(first, uncached) and torch.equal(second, uncached)
    noisy_loader = AudioLoader(condition=AudioCondition(noise=AudioNoise("white", 5.0, seed=1, pool=[path])))
    noisy = [noisy_loader(path) for _ in range(2)]
    assert len(calls) == 3 and torch.equal(noisy[0], noisy[1]) and not torch.equal(noisy[0], uncached)
    resampled = AudioLoader(resample_to=SAMPLE_RATE // 2)(path)  # other settings than the cache's
    assert len(calls) == 4 and not torch.equal(resampled, uncached)


def test_rvos_dataset_reads_recordings_as_the_features(tmp_path: Path):
    data = make_ytvos(tmp_path / "ytvos", num_videos=1, num_frames=2)
    write_recordings(tmp_path / "wav", ["vid000_0", "vid000_1"])
    extract_to(tmp_path / "wav", tmp_path / "npy")
    from_npy = RVOSDataset(data["root"], tmp_path / "npy", num_frames=2)
    from_wav = RVOSDataset(data["root"], tmp_path / "npy_unused", num_frames=2, wav_root=tmp_path / "wav")
    assert len(from_npy) == len(from_wav) > 0
    for index in range(len(from_npy)):
        assert torch.equal(from_npy[index][1], from_wav[index][1])
    (tmp_path / "wav" / "vid000_1.wav").unlink()
    with pytest.raises(common.SampleError, match="vid000_1.wav"):
        RVOSDataset(data["root"], tmp_path / "npy", num_frames=2, wav_root=tmp_path / "wav")


# ----------------------------------------------------------------------------- noise
def test_mixed_signal_has_the_requested_snr(tmp_path: Path):
    paths = write_recordings(tmp_path, [f"rec{i}" for i in range(6)])
    for kind in ("white", "pink", "babble"):
        for target in SNRS_DB:
            noise = AudioNoise(kind, target, seed=1, pool=paths)
            for path in paths[:2]:
                signal, rate = load_audio(path)
                mixed = noise.apply(signal, rate, path)
                assert mixed.shape == signal.shape
                assert abs(snr_db(signal, mixed - signal) - target) < SNR_TOLERANCE_DB, (kind, target, path)
    signal = tone_signal(SAMPLE_RATE, 0.5).astype(np.float64)
    mixed = mix_at_snr(signal, np.random.default_rng(0).uniform(-1, 1, signal.size), 3.0)
    assert snr_db(signal, mixed - signal) == pytest.approx(3.0, abs=1e-9)
    with pytest.raises(ValueError, match="silent"):
        mix_at_snr(np.zeros(100), np.ones(100), 0.0)


def test_minus_infinite_snr_is_the_noise_alone_at_the_recording_power(tmp_path: Path):
    """`--audio_snr_db -inf`: no speech left, the noise scaled to the recording's power (the sweep's floor)."""
    signal = tone_signal(SAMPLE_RATE, 0.5).astype(np.float64)
    noise = np.random.default_rng(0).uniform(-1, 1, signal.size)
    alone = mix_at_snr(signal, noise, -math.inf)
    assert np.corrcoef(alone, noise)[0, 1] == pytest.approx(1.0)  # nothing of the tone is left
    assert mean_power(alone) == pytest.approx(mean_power(signal))
    paths = write_recordings(tmp_path, [f"rec{i}" for i in range(3)])
    recording, rate = load_audio(paths[0])
    assert mean_power(AudioNoise("babble", -math.inf, seed=1, pool=paths).apply(recording, rate, paths[0])) == \
        pytest.approx(mean_power(recording))
    for level in (math.inf, math.nan):
        with pytest.raises(ValueError, match="-inf"):
            AudioNoise("white", level, seed=1)


def test_noise_is_seeded_per_recording_and_babble_mixes_other_recordings(tmp_path: Path):
    paths = write_recordings(tmp_path, [f"rec{i}" for i in range(6)])
    signal, rate = load_audio(paths[0])
    for kind in ("white", "pink", "babble"):
        noise = AudioNoise(kind, 5.0, seed=1, pool=paths)
        same = AudioNoise(kind, 5.0, seed=1, pool=list(reversed(paths)))  # the order of the split does not matter
        np.testing.assert_array_equal(noise.apply(signal, rate, paths[0]), same.apply(signal, rate, paths[0]))
        other_seed = AudioNoise(kind, 5.0, seed=2, pool=paths).apply(signal, rate, paths[0])
        assert not np.allclose(other_seed, noise.apply(signal, rate, paths[0]))
        # at another SNR the same noise, scaled
        louder = AudioNoise(kind, -5.0, seed=1, pool=paths).apply(signal, rate, paths[0]) - signal
        quieter = noise.apply(signal, rate, paths[0]) - signal
        np.testing.assert_allclose(louder, quieter * 10 ** (10 / 20), rtol=1e-9, atol=1e-9)

    loaded = []
    babble = AudioNoise("babble", 0.0, seed=1, pool=paths, load=lambda p: loaded.append(Path(p)) or load_audio(p)
                        ).noise_for(paths[0], signal.size, rate)
    assert len(loaded) == BABBLE_TALKERS and paths[0] not in loaded
    assert len(set(loaded)) == len(loaded)
    assert np.abs(np.corrcoef(babble, signal)[0, 1]) < 0.5  # not the recording itself

    with pytest.raises(ValueError, match="other recordings"):
        AudioNoise("babble", 0.0, seed=1, pool=paths[:1])
    with pytest.raises(ValueError, match="unknown noise"):
        AudioNoise("brown", 0.0, seed=1)


def test_noise_options_are_checked_before_the_model_loads(tmp_path: Path):
    args = parse_args(get_args_parser(), ["--audio_noise", "white"])
    with pytest.raises(OptionError, match="--audio_snr_db"):
        build_audio_loader(args, [Path("a.wav")])
    args = parse_args(get_args_parser(), ["--audio_snr_db", "5"])
    with pytest.raises(OptionError, match="--audio_noise"):
        build_audio_loader(args, [Path("a.wav")])
    for option in (["--audio_noise", "white", "--audio_snr_db", "5"], ["--audio_rt60", "0.6"],
                   ["--audio_band", "telephone"], ["--audio_speed", "1.2"]):
        with pytest.raises(OptionError, match="--rvos_wav_path"):
            build_audio_loader(parse_args(get_args_parser(), option), [Path("a.npy")])
    with pytest.raises(OptionError, match="--audio_band"):
        build_audio_loader(parse_args(get_args_parser(), ["--audio_band", "3400-300"]), [Path("a.wav")])
    with pytest.raises(OptionError, match="--audio_rt60"):
        build_audio_loader(parse_args(get_args_parser(), ["--audio_rt60", "0"]), [Path("a.wav")])
    assert not build_audio_loader(parse_args(get_args_parser(), []), [Path("a.npy")]).changes_audio

    data = make_ytvos(tmp_path / "ytvos", num_videos=1, num_frames=2)
    with pytest.raises(OptionError, match="--rvos_wav_path"):  # no --model_path: it fails before the model
        inference_rvos.main(MODEL_ARGV + ["--ytvos_path", data["root"], "--rvos_audio_path", data["audio_root"],
                                          "--audio_noise", "babble", "--audio_snr_db", "0",
                                          "--save_path", str(tmp_path / "r.json")])


def test_rvos_inference_from_recordings_and_with_noise(tmp_path: Path, checkpoint: Path):
    data = make_ytvos(tmp_path / "ytvos", num_videos=2, num_frames=3)
    write_recordings(tmp_path / "wav", [f"vid00{v}_{e}" for v in range(2) for e in range(2)])
    extract_to(tmp_path / "wav", tmp_path / "npy")
    base = MODEL_ARGV + ["--model_path", str(checkpoint), "--ytvos_path", data["root"]]

    def masks(*extra: str) -> dict:
        path = tmp_path / f"results{len(list(tmp_path.glob('results*')))}.json"
        inference_rvos.main(base + ["--save_path", str(path), *extra])
        return {(e["file_name"], e["exp_id"]): decode_masks(e["segmentations"]) for e in read_results(path)}

    from_npy = masks("--rvos_audio_path", str(tmp_path / "npy"))
    from_wav = masks("--rvos_wav_path", str(tmp_path / "wav"))
    assert from_npy.keys() == from_wav.keys() and len(from_npy) == 4
    for key in from_npy:
        np.testing.assert_array_equal(from_npy[key], from_wav[key])
    noisy = masks("--rvos_wav_path", str(tmp_path / "wav"), "--audio_noise", "babble", "--audio_snr_db", "-10")
    assert noisy.keys() == from_npy.keys()


def test_a2d_inference_with_recordings_and_white_noise(tmp_path: Path, checkpoint: Path):
    a2d = make_a2d(tmp_path / "a2d", num_frames=9)
    write_recordings(tmp_path / "wav", [f"a2dvid{v}_{k}" for v in range(2) for k in (1, 2)])
    metrics_path = tmp_path / "a2d.json"
    metrics = inference_a2d.main(MODEL_ARGV + ["--model_path", str(checkpoint), "--a2d_path", a2d["root"],
                                               "--a2d_wav_path", str(tmp_path / "wav"), "--audio_noise", "white",
                                               "--audio_snr_db", "0", "--metrics_path", str(metrics_path)])
    assert metrics["audio_noise"] == "white" and metrics["audio_snr_db"] == 0.0
    assert json.loads(metrics_path.read_text())["metrics"]["num_samples"] == metrics["num_samples"] > 0
