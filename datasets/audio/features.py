"""The audio features: the official MFCC-39 (exactly as the authors' feature script, quirks included, vectorised)
and a conventional librosa alternative.

Wnet hears a referring expression as a `(frames, 39)` matrix: 13 MFCCs, their deltas and delta-deltas. The
released checkpoint was trained on features from the authors' feature script; `mfcc39` reproduces that recipe.
`librosa_mfcc39` is a conventional alternative (deltas over time); it is NOT compatible with the released
checkpoint, only with models trained on it.

Samples are float64 in 16-bit integer units, mono (`datasets.audio.io.load_audio` gives them so).
"""
from functools import lru_cache
from typing import Callable, Dict, Tuple

import numpy as np
import scipy.fft

from util.audio_features import AUDIO_FEATURE_DIM as FEATURE_DIM  # noqa: F401 (the width of every feature type)

INT16_SCALE = 32768.0  # a float sample in [-1, 1] times this is in int16 units

# The official recipe (docs/protocol.md §5).
PRE_EMPHASIS = 0.97
FRAME_SECONDS = 0.025
STEP_SECONDS = 0.01
NFFT = 512
NUM_FILTERS = 26
NUM_CEPSTRA = 13
CEPSTRAL_LIFTER = 22
DELTA_THETA = 2  # deltas use neighbours at distance 1..DELTA_THETA
MEL_SCALE_HZ = 700.0
MEL_SCALE_FACTOR = 2595.0
EPS = np.finfo(np.float64).eps  # replaces zero energies before the logarithm


# ----------------------------------------------------------------------------- the official MFCC-39
def frame_geometry(sample_rate: int) -> Tuple[int, int]:
    """(frame length, frame step) in samples, rounded with Python's `round` (halves to even) like the official."""
    return round(FRAME_SECONDS * sample_rate), round(STEP_SECONDS * sample_rate)


def num_feature_frames(num_samples: int, sample_rate: int) -> int:
    """Frames the official framing makes of `num_samples`: 1 up to one frame, else 1 + ceil((len - frame) / step)."""
    frame_len, step = frame_geometry(sample_rate)
    if num_samples <= frame_len:
        return 1
    return 1 + -(-(num_samples - frame_len) // step)  # integer ceil division


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return MEL_SCALE_FACTOR * np.log10(1 + hz / MEL_SCALE_HZ)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return MEL_SCALE_HZ * (10 ** (mel / MEL_SCALE_FACTOR) - 1)


@lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int) -> np.ndarray:
    """The official `[26, 257]` triangular filterbank from 0 Hz to `sample_rate / 2`.

    The official fills it with integer loops: filter j rises on `range(bin[j], bin[j+1])` and falls on
    `range(bin[j+1], bin[j+2])`. Masks on the bin index reproduce that exactly, including degenerate filters
    where two edges share a bin (that loop is empty, so its entries stay 0 and its zero denominator is never used).
    """
    mel_points = np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), NUM_FILTERS + 2)
    edges = np.floor((NFFT + 1) * mel_to_hz(mel_points) / sample_rate)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # each [26, 1]
    index = np.arange(NFFT // 2 + 1, dtype=np.float64)[None, :]  # [1, 257]
    rising = (index >= left) & (index < centre)
    falling = (index >= centre) & (index < right)
    # Where a loop is empty its mask is all False; a denominator of 1 there only avoids a division warning.
    rise = (index - left) / np.where(centre > left, centre - left, 1.0)
    fall = (right - index) / np.where(right > centre, right - centre, 1.0)
    filters = np.where(rising, rise, np.where(falling, fall, 0.0))  # [26, 257]
    filters.flags.writeable = False  # cached and shared between calls
    return filters


def _deltas_across_coefficients(coefficients: np.ndarray) -> np.ndarray:
    """The official delta quirk: a regression over the coefficient index within each frame, zeros outside.

    `d_k = sum_{theta=1..2} theta (c_{k+theta} - c_{k-theta}) / (2 sum theta^2)` for each row of `[frames, 13]`.
    """
    width = coefficients.shape[1]
    padded = np.pad(coefficients, ((0, 0), (DELTA_THETA, DELTA_THETA)))  # [frames, 13 + 4]
    numerator = np.zeros_like(coefficients)
    for theta in range(1, DELTA_THETA + 1):
        ahead = padded[:, DELTA_THETA + theta: DELTA_THETA + theta + width]
        behind = padded[:, DELTA_THETA - theta: DELTA_THETA - theta + width]
        numerator += theta * (ahead - behind)
    return numerator / (2 * sum(theta * theta for theta in range(1, DELTA_THETA + 1)))


def _check_signal(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    signal = np.asarray(signal, dtype=np.float64)
    if signal.ndim != 1:
        raise ValueError(f"expected a mono 1-D signal, got shape {signal.shape} (average the channels first)")
    if signal.size == 0:
        raise ValueError("the signal has no samples")
    if not np.all(np.isfinite(signal)):
        raise ValueError("the signal contains NaN or infinite samples")
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"the sample rate must be a positive integer, got {sample_rate}")
    return signal


def mfcc39(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    """The official MFCC-39 features of a mono signal in int16 units (docs/protocol.md §5).

    Returns float64 `[frames, 39]` = [13 MFCCs (c0 = log frame energy), 13 deltas, 13 delta-deltas], the
    deltas taken across the coefficient index within each frame (the official quirk).
    """
    signal = _check_signal(signal, sample_rate)
    sample_rate = int(sample_rate)
    emphasised = np.empty_like(signal)
    emphasised[0] = signal[0]
    emphasised[1:] = signal[1:] - PRE_EMPHASIS * signal[:-1]

    frame_len, step = frame_geometry(sample_rate)
    count = num_feature_frames(signal.size, sample_rate)
    padded = np.zeros((count - 1) * step + frame_len)
    padded[:signal.size] = emphasised
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_len)[::step]  # [frames, frame_len]

    # rfft(n=512) truncates longer frames and zero-pads shorter ones, as the official numpy call does.
    power = np.square(np.abs(np.fft.rfft(frames, NFFT))) / NFFT  # [frames, 257]
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, EPS, energy)
    filter_energies = power @ mel_filterbank(sample_rate).T  # [frames, 26]
    filter_energies = np.where(filter_energies == 0, EPS, filter_energies)

    cepstra = scipy.fft.dct(np.log(filter_energies), type=2, axis=1, norm="ortho")[:, :NUM_CEPSTRA]
    lifter = 1 + (CEPSTRAL_LIFTER / 2) * np.sin(np.pi * np.arange(NUM_CEPSTRA) / CEPSTRAL_LIFTER)
    cepstra = cepstra * lifter
    cepstra[:, 0] = np.log(energy)

    deltas = _deltas_across_coefficients(cepstra)
    delta_deltas = _deltas_across_coefficients(deltas)
    return np.concatenate([cepstra, deltas, delta_deltas], axis=1)  # [frames, 39]


# ----------------------------------------------------------------------------- the librosa alternative
LIBROSA_NUM_MELS = 40
LIBROSA_DELTA_WIDTH = 9  # frames in the delta regression window (librosa's default)


def librosa_mfcc39(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    """Conventional MFCC-39 with librosa: 13 MFCCs, deltas and delta-deltas over TIME, float64 `[frames, 39]`.

    NOT compatible with the released Wnet checkpoint (different filterbank, DCT input, c0 and deltas); use it
    only with models trained on it. 25 ms Hann windows every 10 ms, centred (frames = 1 + len // step),
    40 mel bands, FFT size the next power of two >= the window (at least 512), edge frames repeated for deltas.
    """
    import librosa  # imported here: slow to import and only needed for this feature type

    signal = _check_signal(signal, sample_rate)
    sample_rate = int(sample_rate)
    frame_len, step = frame_geometry(sample_rate)
    n_fft = max(NFFT, 1 << (frame_len - 1).bit_length())
    cepstra = librosa.feature.mfcc(y=signal / INT16_SCALE, sr=sample_rate, n_mfcc=NUM_CEPSTRA, n_fft=n_fft,
                                   hop_length=step, win_length=frame_len, n_mels=LIBROSA_NUM_MELS)  # [13, frames]
    # mode='nearest' (not librosa's default 'interp') also works for recordings shorter than the window.
    deltas = librosa.feature.delta(cepstra, width=LIBROSA_DELTA_WIDTH, order=1, mode="nearest")
    delta_deltas = librosa.feature.delta(cepstra, width=LIBROSA_DELTA_WIDTH, order=2, mode="nearest")
    return np.concatenate([cepstra, deltas, delta_deltas], axis=0).T.astype(np.float64)  # [frames, 39]


FEATURE_FUNCTIONS: Dict[str, Callable[[np.ndarray, int], np.ndarray]] = {"wnet": mfcc39, "librosa": librosa_mfcc39}
FEATURE_TYPES = tuple(FEATURE_FUNCTIONS)  # `--audio_feature`: "wnet" is the official


def compute_features(signal: np.ndarray, sample_rate: int, feature: str = "wnet") -> np.ndarray:
    """float64 `[frames, 39]` features of type `feature` (one of `FEATURE_TYPES`) of a mono int16-unit signal."""
    if feature not in FEATURE_FUNCTIONS:
        raise ValueError(f"unknown feature type {feature!r}; expected one of {FEATURE_TYPES}")
    return FEATURE_FUNCTIONS[feature](signal, sample_rate)
