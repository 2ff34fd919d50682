"""`AudioLoader`: a path -> the `[39, L]` features the model reads. The one place where audio is read, resampled,
changed, featurised, cached and checked, for training, evaluation and inference alike.

    path ──► .npy: read and checked (extracted features: nothing else can be done to them)
         └─► recording: decoded (any format `io.load_audio` reads; cached) ─► resampled to `resample_to`
             ─► the fixed evaluation condition (`perturb.AudioCondition`)
             ─► the sample's random training augmentation (`perturb.AudioAugment`, seeded by sample and epoch)
             ─► features (`features.FEATURE_TYPES`) ─► float32 `[39, L]` (cached when nothing was changed)

`build_audio_loader(args, recordings, train)` reads the options; the datasets and the inference scripts only call
the loader. A recording at another rate than the model's training features is warned about once per file.
"""
import copy
import functools
import math
import os
import warnings
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import soundfile
import torch
from torch import Tensor

from datasets.audio.features import FEATURE_TYPES, compute_features
from datasets.audio.io import (AudioDecodeError, AudioWarning, FEATURE_SUFFIX, check_feature_file,
                               check_recording, check_recording_file, feature_sample_rate, is_recording, load_audio,
                               read_feature_file, resample)
from datasets.audio.noise import AudioNoise
from datasets.audio.perturb import AudioAugment, AudioCondition, AugmentRanges, parse_band
from datasets.formats import DataFormatError
from util.errors import OptionError

PathLike = Union[str, Path]

OFFICIAL_FEATURE = "wnet"  # `--audio_feature` of the official MFCC-39
RECORDING_SUFFIX = ".wav"  # recordings (--rvos_wav_path / --a2d_wav_path): features computed on the fly
# Decoded recordings and clean features one process keeps (a 3 s recording: about 0.5 MB decoded, 30 KB of
# features): every clip of an expression hears the same recording, so an epoch decodes each one once.
DECODED_CACHE_SIZE = 2048
FEATURE_CACHE_SIZE = 8192


def audio_source(feature_root: PathLike, wav_root: PathLike, stem: str) -> Path:
    """Where the audio of `stem` comes from: `<wav_root>/<stem>.wav` when recordings are given (features computed
    on the fly), else the extracted features `<feature_root>/<stem>.npy`."""
    if wav_root:
        return Path(wav_root) / f"{stem}{RECORDING_SUFFIX}"
    return Path(feature_root) / f"{stem}{FEATURE_SUFFIX}"


def check_audio_file(path: PathLike) -> None:
    """Cheap check of one audio file (its header only): a `.npy` of shape (frames, 39), or a readable recording."""
    if is_recording(path):
        check_recording_file(path)
    else:
        check_feature_file(path)


def _file_version(path: PathLike) -> Tuple[str, int, int]:
    """(path, mtime, size): the cache key, so that a rewritten file is read again."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"recording not found: {path}") from None
    return str(path), stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=DECODED_CACHE_SIZE)
def _decoded(path: str, mtime_ns: int, size: int) -> Tuple[np.ndarray, int]:
    samples, sample_rate = load_audio(path)
    samples.flags.writeable = False  # shared by every caller
    return samples, sample_rate


def decode(path: PathLike) -> Tuple[np.ndarray, int]:
    """`io.load_audio` of a recording, once per process and file version (read-only samples)."""
    return _decoded(*_file_version(path))


@functools.lru_cache(maxsize=FEATURE_CACHE_SIZE)
def _clean_features(path: str, mtime_ns: int, size: int, feature: str, resample_to: int) -> np.ndarray:
    samples, sample_rate = _decoded(path, mtime_ns, size)
    check_recording(samples, sample_rate, path)  # short or silent: warned once, when first computed
    if resample_to:
        samples, sample_rate = resample(samples, sample_rate, resample_to), resample_to
    features = _features(samples, sample_rate, feature, path)
    features.flags.writeable = False
    return features


def _features(samples: np.ndarray, sample_rate: int, feature: str, path: PathLike) -> np.ndarray:
    """float32 `[39, frames]` of samples, errors naming the recording."""
    try:
        features = compute_features(samples, sample_rate, feature)
    except ValueError as error:  # a decoded signal the features reject
        raise DataFormatError(f"recording {path}: {error}") from None
    return np.ascontiguousarray(features.T, dtype=np.float32)


def sample_rate_of(path: PathLike) -> int:
    """The sample rate of a recording: from its header when libsndfile reads it, else by decoding it (the
    containers only FFmpeg reads; a broken file raises `load_audio`'s error naming it)."""
    try:
        return int(soundfile.info(str(path)).samplerate)
    except soundfile.SoundFileError:
        return decode(path)[1]


class AudioLoader:
    """path -> float32 `[39, L]` features.

    `feature`: one of `FEATURE_TYPES` ("wnet", the official MFCC-39); `resample_to`: Hz, 0 keeps each recording's
    rate; `model_rate`: the rate of the model's training features, when known (a recording at another rate, not
    resampled, is warned about); `condition`: a fixed change to every recording (evaluation); `augment`: random
    training changes, drawn per (epoch, sample) passed to `__call__`; `seed`: the condition's random parts.
    A `.npy` of extracted features is read as it is, so `condition` and `augment` need recordings.
    """

    def __init__(self, feature: str = OFFICIAL_FEATURE, resample_to: int = 0, model_rate: int = 0,
                 condition: AudioCondition = AudioCondition(), augment: Optional[AudioAugment] = None,
                 seed: int = 0) -> None:
        if feature not in FEATURE_TYPES:
            raise ValueError(f"unknown feature type {feature!r}; expected one of {FEATURE_TYPES}")
        self.feature, self.resample_to, self.model_rate = feature, int(resample_to), int(model_rate)
        self.condition, self.augment, self.seed = condition, augment, int(seed)
        self._rate_checked: set = set()

    @property
    def changes_audio(self) -> bool:
        """Whether recordings are changed (condition or augmentation) before their features."""
        return not self.condition.is_clean() or self.augment is not None

    def __call__(self, path: PathLike, epoch: Optional[int] = None, sample: Optional[int] = None) -> Tensor:
        """The features of `path`; `epoch` and `sample` seed the training augmentation (none without them)."""
        path = Path(path)
        if not is_recording(path):
            if self.changes_audio:
                raise OptionError(f"{path}: extracted features cannot be changed (augmentation, noise, rooms, "
                                  f"speed or band); pass the recordings (--rvos_wav_path / --a2d_wav_path)")
            return torch.from_numpy(np.ascontiguousarray(read_feature_file(path).T, dtype=np.float32))
        try:
            return torch.from_numpy(self._recording(path, epoch, sample))
        except AudioDecodeError as error:
            raise DataFormatError(str(error)) from None

    def without_augment(self) -> "AudioLoader":
        """A copy that leaves out the training augmentation (the condition stays)."""
        clean = copy.copy(self)
        clean.augment = None
        return clean

    def _recording(self, path: Path, epoch: Optional[int], sample: Optional[int]) -> np.ndarray:
        self._check_rate(path)
        augment = self.augment is not None and epoch is not None and sample is not None
        if self.condition.is_clean() and not augment:
            return _clean_features(*_file_version(path), self.feature, self.resample_to).copy()
        samples, sample_rate = decode(path)
        if self.resample_to:
            samples, sample_rate = resample(samples, sample_rate, self.resample_to), self.resample_to
        if not self.condition.is_clean():
            try:
                samples = self.condition.apply(samples, sample_rate, path, self.seed)
            except ValueError as error:
                raise DataFormatError(f"recording {path}: {error}") from None
        if augment:
            samples = self.augment(samples, sample_rate, path, epoch, sample)
        return _features(samples, sample_rate, self.feature, path)

    def _check_rate(self, path: Path) -> None:
        if self.resample_to or not self.model_rate or path in self._rate_checked:
            return
        self._rate_checked.add(path)
        rate = sample_rate_of(path)
        if rate != self.model_rate:
            warnings.warn(f"{path}: recorded at {rate} Hz, but the model's training features were extracted "
                          f"at {self.model_rate} Hz; pass --audio_sample_rate {self.model_rate} to resample it",
                          AudioWarning)

    def describe(self) -> Dict[str, object]:
        """What a log or results file records of how the audio was changed (empty when it was not)."""
        record = dict(self.condition.describe())
        if self.augment is not None:
            record["audio_augment"] = True
        return record

    def warn_feature_rate(self, folder: PathLike) -> None:
        """Warn when `scripts/extract_mfcc.py` recorded another rate for the features in `folder` than the one
        the model was trained on (both known)."""
        rate = feature_sample_rate(folder)
        if self.model_rate and rate and rate != self.model_rate:
            warnings.warn(f"the features in {folder} were extracted at {rate} Hz, the model's training features at "
                          f"{self.model_rate} Hz: extract them again with --audio_sample_rate {self.model_rate}",
                          AudioWarning)


def build_condition(args, recordings: Sequence[PathLike]) -> AudioCondition:
    """The fixed condition of `--audio_speed`, `--audio_rt60`, `--audio_noise`/`--audio_snr_db` and `--audio_band`
    (seeded by `--seed`); `recordings` are the split's (babble talkers)."""
    kind, level = args.audio_noise, args.audio_snr_db
    if not kind and level is not None:
        raise OptionError("--audio_snr_db needs --audio_noise (white, pink or babble)")
    if kind and level is None:
        raise OptionError(f"--audio_noise {kind} needs --audio_snr_db (the signal-to-noise ratio in dB)")
    if kind and (math.isnan(level) or level == math.inf):
        raise OptionError(f"--audio_snr_db must be a number of dB or -inf (noise alone), got {level}")
    noise = None
    if kind:
        try:
            noise = AudioNoise(kind, level, args.seed, recordings, load=decode)
        except ValueError as error:
            raise OptionError(f"--audio_noise {kind}: {error}") from None
    try:
        band = parse_band(args.audio_band) if args.audio_band else None
    except ValueError as error:
        raise OptionError(f"--audio_band: {error}") from None
    for name, value in (("--audio_speed", args.audio_speed), ("--audio_rt60", args.audio_rt60)):
        if value is not None and not value > 0:
            raise OptionError(f"{name} must be > 0, got {value}")
    return AudioCondition(speed=args.audio_speed, rt60=args.audio_rt60, noise=noise, band=band)


def build_audio_loader(args, recordings: Sequence[PathLike] = (), train: bool = False,
                       model_rate: int = 0) -> AudioLoader:
    """The loader of the options: `--audio_feature`, `--audio_sample_rate`, the evaluation condition
    (`build_condition`) and, for training (`train`), `--audio_augment`. `recordings` are the split's audio files
    (babble talkers); `model_rate` the rate of the model's training features (inference)."""
    condition = build_condition(args, recordings)
    augment = None
    if train and args.audio_augment:
        augment = AudioAugment(args.seed, [p for p in recordings if is_recording(p)], decode,
                               AugmentRanges(p_augment=args.audio_augment_prob), args.audio_augment_from)
    loader = AudioLoader(args.audio_feature, args.audio_sample_rate, model_rate, condition, augment, args.seed)
    if loader.changes_audio:
        features = [Path(p) for p in recordings if not is_recording(p)]
        if features:
            raise OptionError(f"--audio_augment / --audio_noise / --audio_rt60 / --audio_speed / --audio_band change "
                              f"recordings, but the audio is extracted features (e.g. {features[0]}): pass the "
                              f"recordings with --rvos_wav_path / --a2d_wav_path")
    return loader
