"""Audio files in and out: decoding any recording to mono samples, resampling, reading and writing `.npy`
features, and the record of the rate features were computed at.

Two choices of ours, not the official's, so that every storage format of the same recording gives the same
features: float files are scaled by 32768 (the official passes them unscaled), and multi-channel files are
averaged (the official flattens them by accident).
"""
import json
import math
import os
import warnings
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np
import scipy.signal
import soundfile

from datasets.audio.features import FEATURE_DIM, INT16_SCALE, compute_features
from datasets.formats import DataFormatError
from util.errors import DataWarning, UserError
from util.misc import atomic_write

PathLike = Union[str, Path]

FEATURE_SUFFIX = ".npy"  # extracted features; any other suffix is a recording
# Extensions `scripts/extract_mfcc.py` treats as audio; soundfile reads most, PyAV the compressed containers.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".aif", ".aiff", ".au",
                    ".caf", ".w64", ".wma", ".webm")
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


RESAMPLER = "scipy.signal.resample_poly (polyphase FIR, Kaiser window)"  # what `resample` uses, for the logs


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

    The frame length is `round(0.025 sr)` samples and the FFT 512 points, so the same words
    recorded at two rates give different features: a fixed `resample_to` makes them comparable.
    """
    check_recording(samples, sample_rate, source)
    if resample_to:
        samples, sample_rate = resample(samples, sample_rate, resample_to), resample_to
    return compute_features(samples, sample_rate, feature), sample_rate


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


# ----------------------------------------------------------------------------- extracted features (.npy)
NPY_MAGIC = b"\x93NUMPY"
SHOWN_BYTES = 8  # of a file that is not what it should be, in its error


def is_recording(path: PathLike) -> bool:
    """Whether `path` is a recording (features computed from it) rather than extracted `.npy` features."""
    return Path(path).suffix.lower() != FEATURE_SUFFIX


def _check_audio_shape(shape: Tuple[int, ...], path: PathLike) -> None:
    if len(shape) != 2 or shape[1] != FEATURE_DIM or shape[0] == 0:
        hint = " (stored transposed? expected (frames, 39))" if len(shape) == 2 and shape[0] == FEATURE_DIM else ""
        raise DataFormatError(f"audio feature {path}: expected shape (frames, {FEATURE_DIM}), got {tuple(shape)}{hint}")


def _unreadable_npy(path: PathLike, error: Exception) -> DataFormatError:
    """Why `np.load` refused a file, in the format's terms (numpy's own message suggests loading pickles)."""
    with open(path, "rb") as f:
        start = f.read(SHOWN_BYTES)
    if not start.startswith(NPY_MAGIC):
        return DataFormatError(f"audio feature {path}: not a .npy file (it starts with {start!r}, "
                               f"a .npy file with {NPY_MAGIC!r}); expected float features (frames, 39)")
    if "pickled" in str(error):
        return DataFormatError(f"audio feature {path}: holds Python objects, not numbers; expected a float "
                               f"array (frames, 39)")
    return DataFormatError(f"audio feature {path}: not a readable .npy array ({error})")


def _read_npy(path: PathLike, mmap_mode: Optional[str] = None) -> np.ndarray:
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"audio feature not found: {path}") from None
    except (ValueError, EOFError, OSError) as error:
        raise _unreadable_npy(path, error) from None


def check_feature_file(path: PathLike) -> None:
    """Check that a `.npy` of features exists and has shape (frames, 39), reading only its header."""
    _check_audio_shape(_read_npy(path, mmap_mode="r").shape, path)


def read_feature_file(path: PathLike) -> np.ndarray:
    """A `.npy` of features stored `(frames, 39)`, checked: shape, real numbers (not booleans or text), finite
    values."""
    features = _read_npy(path)
    _check_audio_shape(features.shape, path)
    if features.dtype == np.bool_ or not (np.issubdtype(features.dtype, np.floating)
                                          or np.issubdtype(features.dtype, np.integer)):
        raise DataFormatError(f"audio feature {path}: holds {features.dtype} values, not the real numbers of MFCC "
                              f"features (the official files hold float64)")
    if not np.all(np.isfinite(features)):
        raise DataFormatError(f"audio feature {path}: contains NaN or infinite values")
    return features


def check_recording_file(path: PathLike) -> None:
    """Check that a recording exists and that its header reads as audio with samples (cheap: no decoding)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recording not found: {path}")
    try:
        info = soundfile.info(str(path))
    except soundfile.SoundFileError as error:
        raise DataFormatError(f"recording {path}: not readable audio ({error})") from None
    if info.frames == 0:
        raise DataFormatError(f"recording {path}: holds no samples")
