"""Audio front end: the official MFCC-39 features (SPEC §5), a librosa alternative, and an audio file loader.

Wnet hears a referring expression as a `(frames, 39)` matrix: 13 MFCCs, their deltas and delta-deltas. The
released checkpoint was trained on features from the authors' feature script; `mfcc39` reproduces that recipe
exactly (quirks included) and vectorised. `librosa_mfcc39` is a conventional alternative (deltas over time);
it is NOT compatible with the released checkpoint, only with models trained on it.

Samples are float64 in 16-bit integer units, mono. Two choices of ours, not the official's (SPEC §5), so that
every storage format of the same recording gives the same features: float files are scaled by 32768 (the
official passes them unscaled), and multi-channel files are averaged (the official flattens them by accident).
"""
import json
import math
import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Dict, Tuple, Union

import numpy as np
import scipy.fft
import scipy.signal
import soundfile

from datasets.formats import DataFormatError
from util.audio_features import AUDIO_FEATURE_DIM as FEATURE_DIM
from util.errors import DataWarning, UserError
from util.misc import atomic_write

PathLike = Union[str, Path]

INT16_SCALE = 32768.0  # a float sample in [-1, 1] times this is in int16 units
FEATURE_TYPES = ("wnet", "librosa")
# Extensions `scripts/extract_mfcc.py` treats as audio; soundfile reads most, PyAV the compressed containers.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".aif", ".aiff", ".au",
                    ".caf", ".w64", ".wma", ".webm")

# The official recipe (SPEC §5).
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

# Recordings worth a warning: shorter than a short spoken word, or no louder than the noise floor of 16 bits.
MIN_RECORDING_SECONDS = 0.25
SILENCE_DBFS = -60
SILENCE_PEAK = INT16_SCALE * 10 ** (SILENCE_DBFS / 20)
FEATURE_INFO_NAME = "mfcc_info.json"  # written by scripts/extract_mfcc.py beside the features


class AudioWarning(DataWarning):
    """A recording that decodes but is unlikely to hold a spoken expression (too short, silent), or one
    recorded at another rate than the model's features."""


class AudioDecodeError(UserError, ValueError):
    """A file that cannot be turned into samples; the message names the file and the reason."""

    def __init__(self, path: PathLike, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


# ----------------------------------------------------------------------------- the official MFCC-39
def frame_geometry(sample_rate: int) -> Tuple[int, int]:
    """(frame length, frame step) in samples, rounded with Python's `round` (halves to even) like the official."""
    return round(FRAME_SECONDS * sample_rate), round(STEP_SECONDS * sample_rate)


def num_frames(num_samples: int, sample_rate: int) -> int:
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
    """The official MFCC-39 features of a mono signal in int16 units (SPEC §5).

    Returns float64 `[frames, 39]` = [13 MFCCs (c0 = log frame energy), 13 deltas, 13 delta-deltas], the
    deltas taken across the coefficient index within each frame (the official quirk).
    """
    signal = _check_signal(signal, sample_rate)
    sample_rate = int(sample_rate)
    emphasised = np.empty_like(signal)
    emphasised[0] = signal[0]
    emphasised[1:] = signal[1:] - PRE_EMPHASIS * signal[:-1]

    frame_len, step = frame_geometry(sample_rate)
    count = num_frames(signal.size, sample_rate)
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


# ----------------------------------------------------------------------------- loading files
def _soundfile_extensions() -> frozenset:
    """Extensions whose container libsndfile knows: when it fails on one of these the file itself is broken."""
    known = {f".{name.lower()}" for name in soundfile.available_formats()}
    return frozenset(known | {".aif", ".oga", ".opus"})


def _decode_with_pyav(path: Path) -> Tuple[np.ndarray, int]:
    """Samples `[n, channels]` as float in [-1, 1] and the rate, through FFmpeg (PyAV) for containers libsndfile
    lacks (m4a, aac, webm, wma, ...)."""
    import av  # imported here: only needed for the formats soundfile cannot read

    with av.open(str(path)) as container:
        stream = next((s for s in container.streams if s.type == "audio"), None)
        if stream is None:
            raise AudioDecodeError(path, "the file holds no audio stream")
        chunks, sample_rate, resampler = [], None, None
        for frame in container.decode(stream):
            if resampler is None:
                sample_rate = frame.sample_rate
                # Same rate and layout, planar float64: only the sample format changes.
                resampler = av.AudioResampler(format="dblp", layout=frame.layout, rate=sample_rate)
            chunks.extend(converted.to_ndarray() for converted in resampler.resample(frame))  # each [channels, n]
        if resampler is not None:
            chunks.extend(converted.to_ndarray() for converted in resampler.resample(None))
    if not chunks:
        return np.zeros((0, 1)), sample_rate or 0
    return np.concatenate(chunks, axis=1).T, sample_rate  # [n, channels]


def load_audio(path: PathLike) -> Tuple[np.ndarray, int]:
    """Read an audio file as (float64 mono samples in int16 units, sample rate).

    soundfile (libsndfile) reads WAV (int and float), FLAC, OGG/Vorbis/Opus, MP3, AIFF, ...; other containers
    (m4a, aac, webm, ...) go through FFmpeg via PyAV. Float samples are scaled by 32768 (an int16 file and a
    float file of the same signal give the same samples) and channels are averaged. Raises `AudioDecodeError`
    naming the file and the reason: missing, empty (0 bytes), corrupt, unsupported, or no samples.
    """
    path = Path(path)
    if not path.exists():
        raise AudioDecodeError(path, "file not found")
    if not path.is_file():
        raise AudioDecodeError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise AudioDecodeError(path, "empty file (0 bytes)")
    try:
        samples, sample_rate = soundfile.read(str(path), dtype="float64", always_2d=True)  # [n, channels]
    except soundfile.SoundFileError as error:
        sf_error = getattr(error, "error_string", str(error))  # libsndfile's reason without the path
        if path.suffix.lower() in _soundfile_extensions():
            raise AudioDecodeError(path, f"corrupt or truncated {path.suffix.lower()[1:]} file "
                                         f"(libsndfile: {sf_error})") from None
        import av
        try:
            samples, sample_rate = _decode_with_pyav(path)
        except av.FFmpegError as av_error:
            ffmpeg_error = av_error.strerror or str(av_error)
            raise AudioDecodeError(path, f"unsupported format or corrupt file (libsndfile: {sf_error}; "
                                         f"FFmpeg: {ffmpeg_error})") from None
    if samples.shape[0] == 0:
        raise AudioDecodeError(path, "zero-length recording (the file holds no audio samples)")
    if not np.all(np.isfinite(samples)):
        raise AudioDecodeError(path, "corrupt samples (NaN or infinite values)")
    return samples.mean(axis=1) * INT16_SCALE, int(sample_rate)


def default_file_mode() -> int:
    """The permissions `open()` gives a new file under the current umask (temp files are created private)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def save_features(path: PathLike, features: np.ndarray) -> None:
    """Save `[frames, 39]` features as `.npy` through a temporary file renamed onto `path`."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object, so np.save does not append ".npy" to the temp name
            np.save(f, features)
        os.chmod(tmp, default_file_mode())
    atomic_write(path, write)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling (scipy's Kaiser-windowed FIR) of a mono signal from `from_rate` to `to_rate` Hz."""
    if from_rate == to_rate:
        return samples
    common = math.gcd(int(from_rate), int(to_rate))
    return scipy.signal.resample_poly(samples, int(to_rate) // common, int(from_rate) // common)


def check_recording(samples: np.ndarray, sample_rate: int, source: PathLike) -> None:
    """Warn (`AudioWarning`) about a recording too short to hold a spoken expression, or silent."""
    seconds = samples.size / sample_rate
    if seconds < MIN_RECORDING_SECONDS:
        warnings.warn(f"{source}: the recording lasts {seconds:.3f} s ({samples.size} sample(s) at {sample_rate} Hz); "
                      f"a spoken expression takes at least {MIN_RECORDING_SECONDS} s", AudioWarning, stacklevel=3)
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak < SILENCE_PEAK:
        level = f"peak {20 * math.log10(peak / INT16_SCALE):.0f} dBFS" if peak > 0 else "every sample is 0"
        warnings.warn(f"{source}: the recording is silent ({level}, below {SILENCE_DBFS} dBFS)", AudioWarning,
                      stacklevel=3)


def features_from_samples(samples: np.ndarray, sample_rate: int, feature: str = "wnet", resample_to: int = 0,
                          source: PathLike = "signal") -> Tuple[np.ndarray, int]:
    """Features of a decoded recording (`load_audio`'s samples), resampled to `resample_to` Hz first when it is
    not 0; warns about short or silent recordings. Returns (float64 `[frames, 39]`, the rate they were computed at).

    The frame length is `round(0.025 sr)` samples and the FFT 512 points (SPEC section 5), so the same words
    recorded at two rates give different features: a fixed `resample_to` makes them comparable.
    """
    if feature not in FEATURE_TYPES:
        raise ValueError(f"unknown feature type {feature!r}; expected one of {FEATURE_TYPES}")
    check_recording(samples, sample_rate, source)
    if resample_to:
        samples, sample_rate = resample(samples, sample_rate, resample_to), resample_to
    compute = mfcc39 if feature == "wnet" else librosa_mfcc39
    return compute(samples, sample_rate), sample_rate


def extract_features(path: PathLike, feature: str = "wnet", resample_to: int = 0) -> np.ndarray:
    """Features of one audio file: float64 `[frames, 39]` (the dtype of the official `.npy` files).

    `feature='wnet'` is the official recipe (`mfcc39`), `'librosa'` the conventional one (`librosa_mfcc39`,
    not compatible with the released checkpoint); `resample_to` Hz (0: the file's own rate) as in
    `features_from_samples`.
    """
    samples, sample_rate = load_audio(path)
    return features_from_samples(samples, sample_rate, feature, resample_to, path)[0]


# ----------------------------------------------------------------------------- the rate features were made at
def write_feature_info(folder: PathLike, info: Dict[str, object]) -> None:
    """Record beside the features how they were made: `{"feature", "audio_sample_rate" (the resampling asked
    for, 0 = none), "files": {stem: {"sample_rate": rate used, "source_sample_rate": the file's rate}}}`."""
    path = Path(folder) / FEATURE_INFO_NAME

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(info, f, indent=1, sort_keys=True)
    atomic_write(path, write)


def read_feature_info(folder: PathLike) -> Dict[str, object]:
    """What `write_feature_info` recorded in `folder` ({} when nothing was: e.g. the released features)."""
    path = Path(folder) / FEATURE_INFO_NAME
    if not path.is_file():
        return {}
    try:
        with open(path) as f:
            info = json.load(f)
    except json.JSONDecodeError as error:
        raise DataFormatError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(info, dict) or not isinstance(info.get("files", {}), dict):
        raise DataFormatError(f"{path}: expected an object with a 'files' mapping")
    return info


def feature_sample_rate(folder: PathLike) -> int:
    """The one sample rate the features in `folder` were computed at, 0 when unknown or mixed."""
    files = read_feature_info(folder).get("files", {})
    rates = {entry.get("sample_rate") for entry in files.values() if isinstance(entry, dict)}
    return int(rates.pop()) if len(rates) == 1 and None not in rates else 0
