"""Synthetic speech for tests and demos: eSpeak NG (from the `espeakng-loader` wheel) through ctypes.

A data tool, not part of training or inference: only scripts/make_demo_data.py, scripts/speak_expressions.py,
scripts/synthesize_speech.py, scripts/benchmark_mfcc.py and the tests import it (the loaders read recordings
and features from disk, whoever made them).

eSpeak NG keeps its voice, parameters and output callback in process-global state, so the library is
initialised once and every synthesis runs under one lock.
"""
import argparse
import ctypes
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import espeakng_loader
import numpy as np
import soundfile

from datasets.audio import default_file_mode, mfcc39, save_features
from util.misc import atomic_write

PathLike = Union[str, Path]

DEFAULT_VOICE = "en"
DEFAULT_RATE_WPM = 175  # eSpeak NG's default speaking rate, words per minute
MIN_RATE_WPM, MAX_RATE_WPM = 80, 450  # the range eSpeak NG accepts for espeakRATE

# The English voices of the demo data and of scripts/speak_expressions.py, and the range their rates are drawn from.
ENGLISH_VOICES = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en+f3", "en-us+m3", "en+f2")
SPEECH_RATE_WPM = (130, 200)
SPEECH_SEED_RANGE = 2 ** 31  # eSpeak NG's seed is a C long; stay within 32 bits

# Constants of the eSpeak NG C API (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_Synth returns when all audio has gone through the callback
_BUFFER_MS = 0  # 0: the library's default callback buffer length
_INIT_OPTIONS = 0
_EE_OK = 0
_ESPEAK_RATE = 1  # espeak_PARAMETER espeakRATE
_ABSOLUTE = 0  # espeak_SetParameter(relative=0)
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_CONTINUE = 0  # the callback's "keep synthesising"

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Engine:
    """The loaded library, its sample rate and the chunks the callback collects for the synthesis under way."""

    def __init__(self):
        library = ctypes.CDLL(espeakng_loader.get_library_path())
        library.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        library.espeak_Initialize.restype = ctypes.c_int
        library.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        library.espeak_SetSynthCallback.restype = None
        library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        library.espeak_SetVoiceByName.restype = ctypes.c_int
        library.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        library.espeak_SetParameter.restype = ctypes.c_int
        library.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                         ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        library.espeak_Synth.restype = ctypes.c_int

        data_path = espeakng_loader.get_data_path().encode()
        sample_rate = library.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path, _INIT_OPTIONS)
        if sample_rate <= 0:
            raise RuntimeError(f"eSpeak NG failed to initialise with data at {data_path.decode()}")
        self.library = library
        self.sample_rate = sample_rate
        self.chunks: List[bytes] = []
        self._callback = _SynthCallback(self._collect)  # kept on self: the C side holds only a raw pointer
        library.espeak_SetSynthCallback(self._callback)

    def _collect(self, samples, num_samples: int, events) -> int:
        if samples and num_samples > 0:
            self.chunks.append(ctypes.string_at(samples, num_samples * ctypes.sizeof(ctypes.c_short)))
        return _CONTINUE


_lock = threading.Lock()
_engine: Optional[_Engine] = None


def _get_engine() -> _Engine:
    """The process's engine, initialised on first use (call with `_lock` held)."""
    global _engine
    if _engine is None:
        _engine = _Engine()
    return _engine


def seed_speech(seed: int) -> None:
    """Seed eSpeak NG's random generator (process-global; breathy variants such as `en+f3` use it)."""
    library = ctypes.CDLL(espeakng_loader.get_library_path())  # the already loaded library: same handle
    library.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    library.espeak_ng_SetRandSeed.restype = None
    library.espeak_ng_SetRandSeed(seed)


def check_voices(voices: Sequence[str]) -> None:
    """Raise ValueError naming the first voice eSpeak NG does not have."""
    with _lock:
        engine = _get_engine()
        for voice in voices:
            if engine.library.espeak_SetVoiceByName(voice.encode("utf-8")) != _EE_OK:
                raise ValueError(f"eSpeak NG has no voice {voice!r} (try 'en', 'en-us' or 'en+f3')")


def synthesize(text: str, voice: str = DEFAULT_VOICE, speed: Optional[int] = None,
               seed: Optional[int] = None) -> Tuple[np.ndarray, int]:
    """Speak `text` with eSpeak NG: (int16 mono samples, sample rate), the rate being 22050 Hz.

    `voice` is an eSpeak NG voice name such as 'en', 'en-us', 'en-gb-scotland', with an optional variant
    ('en+f3', 'en-us+m2'); `speed` is the rate in words per minute (80-450, default 175); `seed`, when given,
    seeds eSpeak NG's random generator under the same lock as the synthesis.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"nothing to say: text is {text!r}")
    rate = DEFAULT_RATE_WPM if speed is None else int(speed)
    if not MIN_RATE_WPM <= rate <= MAX_RATE_WPM:
        raise ValueError(f"speed must be {MIN_RATE_WPM}-{MAX_RATE_WPM} words per minute, got {speed}")
    encoded = text.encode("utf-8")
    with _lock:
        engine = _get_engine()
        if engine.library.espeak_SetVoiceByName(voice.encode("utf-8")) != _EE_OK:
            raise ValueError(f"eSpeak NG has no voice {voice!r} (try 'en', 'en-us' or 'en+f3')")
        # Set every call: the rate is global state and another caller may have changed it.
        engine.library.espeak_SetParameter(_ESPEAK_RATE, rate, _ABSOLUTE)
        if seed is not None:
            seed_speech(seed)
        engine.chunks = []
        status = engine.library.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8,
                                             None, None)
        chunks, engine.chunks = engine.chunks, []
        sample_rate = engine.sample_rate
    if status != _EE_OK:
        raise RuntimeError(f"eSpeak NG failed to synthesise {text!r} (error {status})")
    samples = np.frombuffer(b"".join(chunks), dtype=np.int16).copy()
    if samples.size == 0:
        raise ValueError(f"eSpeak NG produced no audio for {text!r}")
    return samples, sample_rate


def write_wav(path: PathLike, samples: np.ndarray, sample_rate: int) -> None:
    """Write int16 mono samples as a 16-bit PCM WAV, through a temporary file renamed onto `path`."""
    samples = np.asarray(samples)
    if samples.dtype != np.int16:
        raise ValueError(f"expected int16 samples for {path}, got {samples.dtype}")

    def write(tmp: str) -> None:
        soundfile.write(tmp, samples, int(sample_rate), subtype="PCM_16", format="WAV")
        os.chmod(tmp, default_file_mode())
    atomic_write(path, write)


def parse_voices(text: str) -> Tuple[str, ...]:
    """'en-gb-x-rp,en+f3' -> ('en-gb-x-rp', 'en+f3'), without empty or repeated names (an argparse `type`)."""
    voices = tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    if not voices:
        raise argparse.ArgumentTypeError(f"expected comma-separated eSpeak NG voices such as en-gb-x-rp,en+f3, "
                                         f"got {text!r}")
    return voices


def draw_speech(key: str, seed: int, voices: Sequence[str]) -> Tuple[str, int, int]:
    """(voice, rate in words per minute, eSpeak NG seed) of the recording named `key`.

    Drawn from a random stream of its own, seeded by `seed` and a digest of `key` (not Python's salted
    `hash`), so a recording's draw depends neither on the order of the work nor on the other recordings.
    """
    if not voices:
        raise ValueError("no voices to draw from")
    digest = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")
    rng = np.random.default_rng([seed, digest])
    voice = voices[int(rng.integers(len(voices)))]
    rate = int(rng.integers(SPEECH_RATE_WPM[0], SPEECH_RATE_WPM[1] + 1))
    return voice, rate, int(rng.integers(SPEECH_SEED_RANGE))


@dataclass(frozen=True)
class SpeechJob:
    """One expression to speak: its text, how, and where the recording and its MFCC-39 features go."""

    key: str
    text: str
    voice: str
    rate_wpm: int
    seed: int
    wav_path: Path
    feature_path: Path


def speak_to_files(job: SpeechJob) -> Tuple[str, Optional[float], Optional[str]]:
    """Speak `job.text`, write the WAV, then the features (each atomically) -> (key, seconds, None) or
    (key, None, why it failed). The features are those `datasets.audio.extract_features` gives the WAV."""
    try:
        samples, sample_rate = synthesize(job.text, job.voice, job.rate_wpm, seed=job.seed)
    except (ValueError, RuntimeError) as error:
        return job.key, None, str(error)
    try:
        write_wav(job.wav_path, samples, sample_rate)
        # Features last: a recording without features counts as unfinished and is spoken again.
        save_features(job.feature_path, mfcc39(samples, sample_rate))
    except OSError as error:
        return job.key, None, f"cannot write {job.wav_path} / {job.feature_path}: {error}"
    return job.key, samples.size / sample_rate, None
