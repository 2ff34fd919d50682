"""Noisy speech: white, pink or babble noise added to a recording at a given signal-to-noise ratio.

The SNR is over the whole recording: the noise is scaled so that `10 log10(P_signal / P_noise) = snr_db`, P being
the mean square of the samples (int16 units). The mix stays float, neither clipped nor rounded, so its SNR is exact.
White noise is Gaussian; pink noise has a 1/f power spectrum (-3 dB per octave, the colour of much room and machine
noise); babble is a mix of `BABBLE_TALKERS` other recordings of the same split, each looped to the recording's
length from a random offset and brought to the same power first, so that no talker dominates. Every draw comes from
a random stream seeded by the seed and the recording's file name: a recording gets the same noise in every run and
at every SNR (only its scale changes), whatever the order of the work.
"""
import hashlib
import math
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from datasets.audio.io import load_audio, resample

PathLike = Union[str, Path]

NOISE_TYPES = ("white", "pink", "babble")
BABBLE_TALKERS = 4  # other recordings mixed into the babble (all the others when the split has fewer)


def mean_power(samples: np.ndarray) -> float:
    return float(np.mean(np.square(np.asarray(samples, dtype=np.float64))))


def snr_db(signal: np.ndarray, noise: np.ndarray) -> float:
    """10 log10(P_signal / P_noise) in dB."""
    return 10.0 * math.log10(mean_power(signal) / mean_power(noise))


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, target_db: float) -> np.ndarray:
    """`signal + g * noise` with the gain `g` that makes the SNR of the mix `target_db` (float64). At
    `target_db = -inf` the speech is gone: the noise alone, at the power of the signal."""
    signal = np.asarray(signal, dtype=np.float64)
    noise = np.asarray(noise, dtype=np.float64)
    if noise.shape != signal.shape:
        raise ValueError(f"noise of shape {noise.shape} for a signal of shape {signal.shape}")
    signal_power, noise_power = mean_power(signal), mean_power(noise)
    if signal_power == 0:
        raise ValueError("the recording is silent: its signal-to-noise ratio is undefined")
    if noise_power == 0:
        raise ValueError("the noise is silent")
    if target_db == -math.inf:
        return math.sqrt(signal_power / noise_power) * noise
    gain = math.sqrt(signal_power / (noise_power * 10.0 ** (target_db / 10.0)))
    return signal + gain * noise


def white_noise(length: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(length)


def pink_noise(length: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise shaped to a 1/f power spectrum (amplitude 1/sqrt(f)) in the frequency domain; DC removed."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    frequency = np.arange(spectrum.size, dtype=np.float64)
    frequency[0] = 1.0  # the DC bin is zeroed below; 1 only avoids dividing by 0
    spectrum = spectrum / np.sqrt(frequency)
    spectrum[0] = 0.0
    return np.fft.irfft(spectrum, n=length)


def babble_noise(length: int, talkers: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """The sum of `talkers`, each looped to `length` samples from a random offset and scaled to unit power."""
    if not talkers:
        raise ValueError("babble needs at least one other recording")
    mix = np.zeros(length)
    for talker in talkers:
        power = mean_power(talker)
        if power == 0:
            continue  # a silent recording adds nothing
        offset = int(rng.integers(len(talker)))
        mix += np.resize(np.roll(talker, -offset), length) / math.sqrt(power)
    if not mix.any():
        raise ValueError("every babble recording is silent")
    return mix


def recording_rng(seed: int, name: str) -> np.random.Generator:
    """The random stream of one recording: seeded by `seed` and a digest of its file name (not Python's salted hash)."""
    digest = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([seed, digest])


class AudioNoise:
    """Adds `kind` noise at `snr_db` to recordings; `pool` is the split's recordings (the babble's talkers)."""

    def __init__(self, kind: str, snr_db: float, seed: int, pool: Sequence[PathLike] = (),
                 load: Callable[[PathLike], Tuple[np.ndarray, int]] = load_audio):
        if kind not in NOISE_TYPES:
            raise ValueError(f"unknown noise {kind!r}; expected one of {NOISE_TYPES}")
        if math.isnan(snr_db) or snr_db == math.inf:
            raise ValueError(f"the signal-to-noise ratio must be a number of dB or -inf (noise alone), got {snr_db}")
        if seed < 0:
            raise ValueError(f"the noise seed must be >= 0, got {seed}")
        self.kind, self.snr_db, self.seed = kind, float(snr_db), int(seed)
        # Sorted and unique: the babble of a recording must not depend on the order of the split.
        self.pool: List[Path] = sorted({Path(p) for p in pool})
        self.load = load  # decodes a babble talker (the loader passes its cached decoder)
        if kind == "babble" and len(self.pool) < 2:
            raise ValueError(f"babble noise mixes other recordings of the split; it has {len(self.pool)}")

    def noise_for(self, path: PathLike, length: int, sample_rate: int,
                  rng: Optional[np.random.Generator] = None) -> np.ndarray:
        """The (unscaled) noise of the recording `path`: `length` samples at `sample_rate`, drawn from `rng`
        (default: the recording's own stream, the same in every run)."""
        path = Path(path)
        rng = rng if rng is not None else recording_rng(self.seed, path.name)
        if self.kind == "white":
            return white_noise(length, rng)
        if self.kind == "pink":
            return pink_noise(length, rng)
        others = [p for p in self.pool if p != path]
        if not others:
            raise ValueError(f"{path}: no other recording in the split to make babble of")
        chosen = rng.choice(len(others), size=min(BABBLE_TALKERS, len(others)), replace=False)
        talkers = []
        for index in sorted(int(i) for i in chosen):
            samples, rate = self.load(others[index])
            talkers.append(resample(samples, rate, sample_rate))
        return babble_noise(length, talkers, rng)

    def apply(self, samples: np.ndarray, sample_rate: int, path: PathLike,
              rng: Optional[np.random.Generator] = None) -> np.ndarray:
        """The recording `path` (its `samples`) with its noise at `snr_db`, float64."""
        noise = self.noise_for(path, len(samples), sample_rate, rng)
        try:
            return mix_at_snr(samples, noise, self.snr_db)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None

    def describe(self) -> dict:
        return {"noise": self.kind, "snr_db": self.snr_db, "seed": self.seed, "pool": len(self.pool)}
