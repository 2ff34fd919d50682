"""Changes to a recording before its features: speed, pitch, vocal-tract length, gain, a room, noise, a telephone
band and silence around the words.

Two users, one chain:
- `AudioCondition` is ONE fixed condition for evaluation (`--audio_speed`, `--audio_rt60`, `--audio_noise` /
  `--audio_snr_db`, `--audio_band`): every recording gets it, with its random parts (the room's tail, the
  noise) drawn from the recording's own stream, so a recording sounds the same in every run.
- `AudioAugment` draws a NEW condition for every training sample and epoch (`--audio_augment`), from the ranges
  of `AugmentRanges`, with a random stream seeded by (seed, epoch, sample): the same run gives the same
  waveforms, and `--resume` continues exactly.

Both apply the steps in the order a recording meets them: the talker (speed, pitch, vocal tract, silence), the
room, the noise in the room, then the channel (band limit, gain). Samples are float64 in int16 units; nothing is
clipped or rounded.
"""
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import scipy.signal

from datasets.audio.noise import NOISE_TYPES, AudioNoise, mix_at_snr, pink_noise, recording_rng, white_noise
from datasets.audio.room import reverberate, room_impulse_response

PathLike = Union[str, Path]
Decoder = Callable[[PathLike], Tuple[np.ndarray, int]]

TELEPHONE_BAND_HZ = (300.0, 3400.0)  # the narrow-band telephone channel (ITU-T G.712)
BANDS: Dict[str, Tuple[float, float]] = {"telephone": TELEPHONE_BAND_HZ}
BAND_FILTER_ORDER = 4  # Butterworth, run forwards and backwards: 8th-order magnitude, zero phase
SPEED_MAX_DENOMINATOR = 100  # a speed factor is resampled as a ratio of integers up to this
STFT_SAMPLES = 512  # vocal-tract warping: frames of 23 ms at 22.05 kHz, 3/4 overlap
STFT_OVERLAP = 384
VTLP_BOUNDARY_HZ = 4800.0  # the warp is linear below this and maps Nyquist onto itself above (Jaitly and Hinton)
DITHER = 1.0  # the level (int16 units) of the "silence" padded around the words: a quiet recorder's floor
# Pitch shifting without changing the duration: librosa's phase vocoder then a resampler
PITCH_RESAMPLER = "soxr_hq"


# ----------------------------------------------------------------------------- single steps
def change_speed(samples: np.ndarray, factor: float) -> np.ndarray:
    """Play `factor` times faster: the duration divided by `factor`, pitch and formants moved with it (the speed
    perturbation of Kaldi recipes), by polyphase resampling."""
    if not factor > 0:
        raise ValueError(f"the speed factor must be > 0, got {factor}")
    ratio = Fraction(factor).limit_denominator(SPEED_MAX_DENOMINATOR)  # = down / up
    return scipy.signal.resample_poly(np.asarray(samples, dtype=np.float64), ratio.denominator, ratio.numerator)


def shift_pitch(samples: np.ndarray, sample_rate: int, semitones: float) -> np.ndarray:
    """The pitch (and the spectrum with it) moved by `semitones`, the duration kept."""
    if semitones == 0:
        return np.asarray(samples, dtype=np.float64)
    import librosa  # imported here: slow to import and only needed for this step

    shifted = librosa.effects.pitch_shift(np.asarray(samples, dtype=np.float64), sr=sample_rate, n_steps=semitones,
                                          res_type=PITCH_RESAMPLER)
    return shifted.astype(np.float64)


def warp_vocal_tract(samples: np.ndarray, sample_rate: int, alpha: float) -> np.ndarray:
    """Vocal-tract length perturbation: the spectral envelope stretched by `alpha` (> 1: a shorter tract, higher
    formants), the pitch kept, by warping each STFT frame's frequency axis."""
    samples = np.asarray(samples, dtype=np.float64)
    if alpha == 1 or samples.size < STFT_SAMPLES:
        return samples
    _, _, spectrum = scipy.signal.stft(samples, nperseg=STFT_SAMPLES, noverlap=STFT_OVERLAP)  # [F, frames]
    nyquist = sample_rate / 2
    frequencies = np.linspace(0, nyquist, spectrum.shape[0])
    boundary = VTLP_BOUNDARY_HZ * min(alpha, 1.0) / alpha
    # the source frequency each output frequency reads: the inverse of f -> alpha f (low) / the line to Nyquist
    knee_out = alpha * boundary
    source = np.where(frequencies <= knee_out, frequencies / alpha,
                      boundary + (frequencies - knee_out) * (nyquist - boundary) / max(nyquist - knee_out, 1e-9))
    bins = source / nyquist * (spectrum.shape[0] - 1)
    low = np.clip(np.floor(bins).astype(int), 0, spectrum.shape[0] - 1)
    high = np.clip(low + 1, 0, spectrum.shape[0] - 1)
    weight = (bins - low)[:, None]
    magnitude = (1 - weight) * np.abs(spectrum[low]) + weight * np.abs(spectrum[high])
    warped = magnitude * np.exp(1j * np.angle(spectrum[np.clip(np.rint(bins).astype(int), 0, spectrum.shape[0] - 1)]))
    _, restored = scipy.signal.istft(warped, nperseg=STFT_SAMPLES, noverlap=STFT_OVERLAP)
    out = np.zeros_like(samples)
    out[:min(out.size, restored.size)] = restored[:out.size]
    return out


def apply_gain(samples: np.ndarray, gain_db: float) -> np.ndarray:
    return np.asarray(samples, dtype=np.float64) * 10.0 ** (gain_db / 20.0)


def limit_band(samples: np.ndarray, sample_rate: int, band: Tuple[float, float]) -> np.ndarray:
    """A zero-phase Butterworth band-pass `band` (Hz); an upper edge at or above Nyquist makes it a high-pass."""
    low, high = band
    nyquist = sample_rate / 2
    if not 0 < low < nyquist:
        raise ValueError(f"the band's lower edge must lie in (0, {nyquist}) Hz, got {low}")
    if high >= nyquist:
        sos = scipy.signal.butter(BAND_FILTER_ORDER, low, btype="highpass", fs=sample_rate, output="sos")
    else:
        sos = scipy.signal.butter(BAND_FILTER_ORDER, [low, high], btype="bandpass", fs=sample_rate, output="sos")
    samples = np.asarray(samples, dtype=np.float64)
    padlen = min(3 * (2 * len(sos) + 1), samples.size - 1)  # sosfiltfilt's default, for short recordings too
    return scipy.signal.sosfiltfilt(sos, samples, padlen=max(padlen, 0))


def pad_silence(samples: np.ndarray, sample_rate: int, before: float, after: float,
                rng: np.random.Generator) -> np.ndarray:
    """`before` and `after` seconds of near-silence (a dither of `DITHER` int16 units) around the recording."""
    head = rng.standard_normal(int(round(before * sample_rate))) * DITHER
    tail = rng.standard_normal(int(round(after * sample_rate))) * DITHER
    return np.concatenate([head, np.asarray(samples, dtype=np.float64), tail])


# ----------------------------------------------------------------------------- one fixed condition
@dataclass(frozen=True)
class AudioCondition:
    """A fixed change to every recording; `None` leaves that step out. `noise` needs `snr_db`."""

    speed: Optional[float] = None
    rt60: Optional[float] = None
    noise: Optional[AudioNoise] = None
    band: Optional[Tuple[float, float]] = None

    def is_clean(self) -> bool:
        return self.speed is None and self.rt60 is None and self.noise is None and self.band is None

    def apply(self, samples: np.ndarray, sample_rate: int, path: PathLike, seed: int) -> np.ndarray:
        """The recording `path` in this condition; its room is drawn from the recording's own stream."""
        samples = np.asarray(samples, dtype=np.float64)
        if self.speed is not None:
            samples = change_speed(samples, self.speed)
        if self.rt60 is not None:
            room_rng = recording_rng(seed, f"room:{Path(path).name}")
            samples = reverberate(samples, room_impulse_response(self.rt60, sample_rate, room_rng))
        if self.noise is not None:
            samples = self.noise.apply(samples, sample_rate, path)
        if self.band is not None:
            samples = limit_band(samples, sample_rate, self.band)
        return samples

    def describe(self) -> Dict[str, object]:
        """What a results file or log records of the condition (only the steps in use)."""
        record: Dict[str, object] = {}
        if self.speed is not None:
            record["audio_speed"] = self.speed
        if self.rt60 is not None:
            record["audio_rt60"] = self.rt60
        if self.noise is not None:
            record.update(audio_noise=self.noise.kind, audio_snr_db=self.noise.snr_db)
        if self.band is not None:
            record["audio_band"] = list(self.band)
        return record


# ----------------------------------------------------------------------------- random training conditions
@dataclass(frozen=True)
class AugmentRanges:
    """How often each step is applied to a training recording (p_*) and the range its parameter is drawn from
    (uniformly). The defaults cover the evaluation conditions of `scripts/listening_report.py` with margin:
    speed 0.8-1.2, rooms up to RT60 1.0 s, 0 dB SNR and the telephone band."""

    p_augment: float = 1.0  # a sample is changed at all (else heard as recorded), drawn after the steps' draws
    p_speed: float = 0.5
    speed: Tuple[float, float] = (0.8, 1.25)
    p_pitch: float = 0.4
    pitch_semitones: Tuple[float, float] = (-4.0, 4.0)
    p_vocal_tract: float = 0.4
    vocal_tract_alpha: Tuple[float, float] = (0.88, 1.12)
    p_silence: float = 0.3
    silence_seconds: Tuple[float, float] = (0.0, 0.3)  # before and after, each
    p_room: float = 0.4
    rt60_seconds: Tuple[float, float] = (0.2, 1.2)
    p_noise: float = 0.5
    snr_db: Tuple[float, float] = (-5.0, 20.0)
    noise_types: Tuple[str, ...] = NOISE_TYPES  # drawn with equal chance
    p_band: float = 0.2
    band: Tuple[float, float] = TELEPHONE_BAND_HZ
    p_gain: float = 0.5
    gain_db: Tuple[float, float] = (-12.0, 12.0)

    def check(self) -> None:
        for name, value in asdict(self).items():
            if name.startswith("p_") and not 0.0 <= value <= 1.0:
                raise ValueError(f"augmentation probability {name} must be in [0, 1], got {value}")
        unknown = set(self.noise_types) - set(NOISE_TYPES)
        if unknown:
            raise ValueError(f"unknown augmentation noise {sorted(unknown)}; known: {NOISE_TYPES}")


class AudioAugment:
    """Draws and applies a random condition per training sample (`AugmentRanges`); `pool` are the training
    recordings (babble talkers), decoded by `decode`."""

    def __init__(self, seed: int, pool: Sequence[PathLike], decode: Decoder, ranges: AugmentRanges = AugmentRanges(),
                 first_epoch: int = 0):
        ranges.check()
        if first_epoch < 0:
            raise ValueError(f"the first augmented epoch must be >= 0, got {first_epoch}")
        self.seed, self.ranges, self.decode = int(seed), ranges, decode
        self.first_epoch = int(first_epoch)  # earlier epochs hear the recordings as they are
        self.pool = sorted({Path(p) for p in pool})
        self.babble = (AudioNoise("babble", 0.0, self.seed, self.pool, load=decode)
                       if "babble" in ranges.noise_types and len(self.pool) >= 2 else None)

    def rng(self, epoch: int, sample: int) -> np.random.Generator:
        """The stream of one sample in one epoch (independent of the order samples are loaded in)."""
        return np.random.default_rng([self.seed, epoch, sample])

    def __call__(self, samples: np.ndarray, sample_rate: int, path: PathLike, epoch: int, sample: int
                 ) -> np.ndarray:
        if epoch < self.first_epoch:
            return samples
        r, rng = self.ranges, self.rng(epoch, sample)
        samples = np.asarray(samples, dtype=np.float64)
        # Every draw happens whether or not its step applies, so one step's probability does not shift the
        # others' parameters.
        steps = rng.random(8)
        speed, semitones = rng.uniform(*r.speed), rng.uniform(*r.pitch_semitones)
        alpha, silence = rng.uniform(*r.vocal_tract_alpha), rng.uniform(*r.silence_seconds, size=2)
        rt60, snr = rng.uniform(*r.rt60_seconds), rng.uniform(*r.snr_db)
        noise_type, gain = r.noise_types[int(rng.integers(len(r.noise_types)))], rng.uniform(*r.gain_db)
        step_rng = np.random.default_rng(rng.integers(2 ** 63))
        if rng.random() >= r.p_augment:
            return samples
        if steps[0] < r.p_speed:
            samples = change_speed(samples, speed)
        if steps[1] < r.p_pitch:
            samples = shift_pitch(samples, sample_rate, semitones)
        if steps[2] < r.p_vocal_tract:
            samples = warp_vocal_tract(samples, sample_rate, alpha)
        if steps[3] < r.p_silence:
            samples = pad_silence(samples, sample_rate, silence[0], silence[1], step_rng)
        if steps[4] < r.p_room:
            samples = reverberate(samples, room_impulse_response(rt60, sample_rate, step_rng))
        if steps[5] < r.p_noise and np.any(samples):
            samples = self._add_noise(samples, sample_rate, path, noise_type, snr, step_rng)
        if steps[6] < r.p_band:
            samples = limit_band(samples, sample_rate, r.band)
        if steps[7] < r.p_gain:
            samples = apply_gain(samples, gain)
        return samples

    def _add_noise(self, samples: np.ndarray, sample_rate: int, path: PathLike, kind: str, snr: float,
                   rng: np.random.Generator) -> np.ndarray:
        if kind == "babble" and self.babble is not None:
            noise = self.babble.noise_for(path, samples.size, sample_rate, rng)
        elif kind == "pink":
            noise = pink_noise(samples.size, rng)
        else:
            noise = white_noise(samples.size, rng)
        return mix_at_snr(samples, noise, snr)


def parse_band(text: str) -> Tuple[float, float]:
    """`telephone` or `LOW-HIGH` in Hz -> (low, high)."""
    if text in BANDS:
        return BANDS[text]
    try:
        low, high = (float(v) for v in text.split("-"))
    except ValueError:
        raise ValueError(f"expected a band name ({', '.join(BANDS)}) or LOW-HIGH in Hz such as 300-3400, "
                         f"got {text!r}") from None
    if not 0 < low < high:
        raise ValueError(f"the band {text!r} needs 0 < LOW < HIGH")
    return low, high

