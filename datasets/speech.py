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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import espeakng_loader
import numpy as np
import soundfile

from datasets.audio import default_file_mode, mfcc39, save_features
from util.misc import atomic_write

PathLike = Union[str, Path]

DEFAULT_VOICE = "en"
DEFAULT_RATE_WPM = 175  # eSpeak NG's default speaking rate, words per minute
MIN_RATE_WPM, MAX_RATE_WPM = 80, 450  # the range eSpeak NG accepts for espeakRATE
# eSpeak NG's defaults for the other prosody parameters: pitch and pitch range on its 0-100 scale (50 keeps the
# voice's own base pitch and range), and the pause added between words in units of 10 ms at the normal rate.
DEFAULT_PITCH = 50
DEFAULT_PITCH_RANGE = 50
DEFAULT_WORD_GAP = 0
MAX_PROSODY = 100  # the top of the 0-100 scale of pitch and pitch range

# The English voices of the demo data and of scripts/speak_expressions.py, and the range their rates are drawn from.
ENGLISH_VOICES = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en+f3", "en-us+m3", "en+f2")
SPEECH_RATE_WPM = (130, 200)
SPEECH_SEED_RANGE = 2 ** 31  # eSpeak NG's seed is a C long; stay within 32 bits

# Many speakers: every English accent eSpeak NG ships (lang/gmw; en-Shaw, the Shavian script, left out) ...
ENGLISH_ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp", "en-029",
                   "en-us-nyc")
# ... times the voice variants of voices/!v that sound like a person, with their sex: the variant file's
# "gender" line where it has one, else the pitch its file sets and the measured F0. The F0 in the comments is
# the median over the voiced 10 ms frames (autocorrelation peak above 0.5, 60-450 Hz) of three demo
# expressions spoken by "en+<variant>" at the default prosody; the whispers have no voiced frames.
# Left out: robots and effects (Demonic, UniRobot, anikaRobot, robosoft*, Tweaky, announcer, RicishayMax: a
# long echo), the test voice "fast", "Mr serious" (a space in its name), variants that reach int16 full scale
# (|sample| >= 32000) on more than 0.05% of the samples (AnxiousAndy, Gene, Gene2, Jacky, Marco, antonio, ed,
# iven, iven2, john, mike2, paul, pedro, steph3), variants whose uniform syllable lengths make every expression
# about a fifth shorter (Andrea, anika, RicishayMax2, RicishayMax3), near copies (adam, benjamin: klatt6 with
# other consonants), Lee (its third formant removed), caleb (a second whisper) and the other named variants
# (Alex, Andy, boris, Diogo, gustave, Henrique, Hugo, ian, iven3, iven4, kaukovalta, marcelo, Mario, max,
# Michael, miguel, Mike, norbert, Nguyen, pablo, quincy, Reed, rob, robert, sandro, Storm, travis): mostly small
# changes of the plain male voice (86-154 Hz), left out to keep the list to clearly different speakers.
VOICE_VARIANTS: Dict[str, str] = {
    "": "male",  # no variant: the accent's plain voice, 104 Hz
    "m1": "male", "m2": "male", "m3": "male", "m4": "male",  # 98, 102, 107, 97 Hz
    "m5": "male", "m6": "male", "m7": "male", "m8": "male",  # 105, 103, 109, 87 Hz
    # The plain voice through eSpeak NG's Klatt synthesiser, no gender line: 105, 105, 104, 103, 103, 103 Hz.
    "klatt": "male", "klatt2": "male", "klatt3": "male", "klatt4": "male", "klatt5": "male", "klatt6": "male",
    "edward": "male", "edward2": "male", "david": "male",  # Klatt-based, no gender line: 103, 103, 76 Hz
    "grandpa": "male",  # no gender line, pitch 80-120 Hz: 112 Hz, rough
    "croak": "male", "whisper": "male",  # 115 Hz, creaky; whispered
    "victor": "male", "Denis": "male", "michel": "male",  # 98, 101, 107 Hz
    "f1": "female", "f2": "female", "f3": "female", "f4": "female", "f5": "female",  # 181, 199, 214, 181, 206 Hz
    "whisperf": "female",  # whispered
    "Annie": "female", "Alicia": "female", "aunty": "female", "grandma": "female",  # 242, 253, 172, 202 Hz
    "belinda": "female", "linda": "female", "steph": "female", "steph2": "female",  # 230, 230, 185, 185 Hz
    "shelby": "female",  # no gender line, pitch 100-210 Hz: 185 Hz
    "zac": "child",  # no gender line, pitch 240-390 Hz: 356 Hz
}
# Unseen speakers: accents and variants kept out of the training pool, so that no unseen voice shares its
# accent or its variant with a training voice. Accents en-gb-x-rp and en-029 (RP is near the plain British
# "en", which stays in training; the Caribbean accent has no neighbour there). Three male and three
# female variants, each from a family of its own: the variants derived from one another (f2, f5, whisperf;
# f4, aunty, linda, belinda; steph, steph2; klatt5, edward; klatt6, edward2, david; victor, Denis) stay
# together in training.
HELD_OUT_ACCENTS = ("en-gb-x-rp", "en-029")
HELD_OUT_VARIANTS = ("m3", "m6", "michel", "f3", "Annie", "Alicia")
TRAINING_ACCENTS = tuple(a for a in ENGLISH_ACCENTS if a not in HELD_OUT_ACCENTS)
TRAINING_VARIANTS = tuple(v for v in VOICE_VARIANTS if v not in HELD_OUT_VARIANTS)  # "" included


def voice_sex(voice: str) -> str:
    """The sex of an eSpeak NG voice name ('en-us+f3' -> 'female'): its variant's in VOICE_VARIANTS ("" is the
    plain male voice); 'unknown' for a variant not listed."""
    variant = voice.split("+", 1)[1] if "+" in voice else ""
    return VOICE_VARIANTS.get(variant, "unknown")


def speaker_pool(accents: Sequence[str], variants: Sequence[str]) -> Tuple[str, ...]:
    """Every accent with every variant, as eSpeak NG voice names: 'en-us' (variant ""), 'en-us+f3', ..."""
    return tuple(f"{accent}+{variant}" if variant else accent for accent in accents for variant in variants)


TRAINING_VOICES = speaker_pool(TRAINING_ACCENTS, TRAINING_VARIANTS)
UNSEEN_VOICES = speaker_pool(HELD_OUT_ACCENTS, HELD_OUT_VARIANTS)  # no accent nor variant of TRAINING_VOICES

# Per-recording prosody, drawn uniformly (bounds included), the rate from SPEECH_RATE_WPM. Measured on "en",
# "en-us+m3", "en+f3", "en+Annie" and "en-gb-scotland+klatt4": pitch 30 and 70 put the median F0 about
# 3 semitones below and above that of pitch 50 (en: 90, 105, 126 Hz; en+f3: 184, 214, 256 Hz). The low end is
# 35: below it the pitch tracks of the rough male variants break into octave jumps (m4 below 35, m1 below 40,
# en below 30). A pitch range of 20 narrows the F0 spread (10th to 90th percentile of the voiced frames) to
# 2-3 semitones from 4-6 at 50, 80 widens it to 5-8; 0 is a monotone. A word gap of 4 adds a pause of about
# 75 ms between words at 175 words per minute (an expression about 0.3 s longer); eSpeak NG scales it with the
# rate.
PITCH_RANGE = (35, 70)
PITCH_RANGE_RANGE = (20, 80)
WORD_GAP = (0, 4)

# Constants of the eSpeak NG C API (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_Synth returns when all audio has gone through the callback
_BUFFER_MS = 0  # 0: the library's default callback buffer length
_INIT_OPTIONS = 0
_EE_OK = 0
_ESPEAK_RATE = 1  # espeak_PARAMETER espeakRATE
_ESPEAK_PITCH = 3  # ... espeakPITCH
_ESPEAK_RANGE = 4  # ... espeakRANGE
_ESPEAK_WORDGAP = 7  # ... espeakWORDGAP
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


def synthesize(text: str, voice: str = DEFAULT_VOICE, speed: Optional[int] = None, seed: Optional[int] = None,
               pitch: Optional[int] = None, pitch_range: Optional[int] = None,
               word_gap: Optional[int] = None) -> Tuple[np.ndarray, int]:
    """Speak `text` with eSpeak NG: (int16 mono samples, sample rate), the rate being 22050 Hz.

    `voice` is an eSpeak NG voice name such as 'en', 'en-us', 'en-gb-scotland', with an optional variant
    ('en+f3', 'en-us+m2'); `speed` is the rate in words per minute (80-450, default 175); `pitch` and
    `pitch_range` are 0-100 (default 50: the voice's own); `word_gap` is the pause added between words in
    units of 10 ms (default 0); `seed`, when given, seeds eSpeak NG's random generator under the same lock
    as the synthesis.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"nothing to say: text is {text!r}")
    rate = DEFAULT_RATE_WPM if speed is None else int(speed)
    if not MIN_RATE_WPM <= rate <= MAX_RATE_WPM:
        raise ValueError(f"speed must be {MIN_RATE_WPM}-{MAX_RATE_WPM} words per minute, got {speed}")
    pitch = DEFAULT_PITCH if pitch is None else int(pitch)
    pitch_range = DEFAULT_PITCH_RANGE if pitch_range is None else int(pitch_range)
    word_gap = DEFAULT_WORD_GAP if word_gap is None else int(word_gap)
    for name, value in (("pitch", pitch), ("pitch_range", pitch_range)):
        if not 0 <= value <= MAX_PROSODY:
            raise ValueError(f"{name} must be 0-{MAX_PROSODY} on eSpeak NG's scale, got {value}")
    if word_gap < 0:
        raise ValueError(f"word_gap must be >= 0 (units of 10 ms), got {word_gap}")
    # Every parameter is set on every call, None as eSpeak NG's default: the library keeps them in global
    # state, so a value set for one recording would otherwise carry over to the next.
    parameters = ((_ESPEAK_RATE, rate), (_ESPEAK_PITCH, pitch), (_ESPEAK_RANGE, pitch_range),
                  (_ESPEAK_WORDGAP, word_gap))
    encoded = text.encode("utf-8")
    with _lock:
        engine = _get_engine()
        if engine.library.espeak_SetVoiceByName(voice.encode("utf-8")) != _EE_OK:
            raise ValueError(f"eSpeak NG has no voice {voice!r} (try 'en', 'en-us' or 'en+f3')")
        for parameter, value in parameters:
            engine.library.espeak_SetParameter(parameter, value, _ABSOLUTE)
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


@dataclass(frozen=True)
class SpeechStyle:
    """Who speaks a recording and how: the eSpeak NG voice, rate (words per minute), pitch and pitch range
    (0-100), word gap (10 ms units) and the seed of eSpeak NG's random generator."""

    voice: str
    rate_wpm: int
    pitch: int
    pitch_range: int
    word_gap: int
    seed: int

    def as_record(self) -> dict:
        """The fields as the speech logs store them (speech.json of the demo data, manifest.json)."""
        return asdict(self)


def draw_style(key: str, seed: int, voices: Sequence[str], vary_prosody: bool = True) -> SpeechStyle:
    """The speech style of the recording named `key`: a voice of `voices`, a rate of SPEECH_RATE_WPM and an
    eSpeak NG seed, then (`vary_prosody`) a pitch, pitch range and word gap of PITCH_RANGE, PITCH_RANGE_RANGE and
    WORD_GAP; without it eSpeak NG's defaults, which speak as `synthesize` does without them.

    Drawn from a random stream of its own, seeded by `seed` and a digest of `key` (not Python's salted
    `hash`), so a recording's draw depends neither on the order of the work nor on the other recordings.
    """
    if not voices:
        raise ValueError("no voices to draw from")
    digest = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")
    rng = np.random.default_rng([seed, digest])
    if vary_prosody:  # male and other voices equally often (the pools hold more male variants)
        by_sex = [[v for v in voices if voice_sex(v) == "male"], [v for v in voices if voice_sex(v) != "male"]]
        group = [g for g in by_sex if g][int(rng.integers(sum(1 for g in by_sex if g)))]
        voice = group[int(rng.integers(len(group)))]
    else:
        voice = voices[int(rng.integers(len(voices)))]
    rate = int(rng.integers(SPEECH_RATE_WPM[0], SPEECH_RATE_WPM[1] + 1))
    espeak_seed = int(rng.integers(SPEECH_SEED_RANGE))
    if not vary_prosody:
        return SpeechStyle(voice, rate, DEFAULT_PITCH, DEFAULT_PITCH_RANGE, DEFAULT_WORD_GAP, espeak_seed)
    pitch, pitch_range, word_gap = (int(rng.integers(low, high + 1))
                                    for low, high in (PITCH_RANGE, PITCH_RANGE_RANGE, WORD_GAP))
    return SpeechStyle(voice, rate, pitch, pitch_range, word_gap, espeak_seed)


def draw_speech(key: str, seed: int, voices: Sequence[str]) -> Tuple[str, int, int]:
    """(voice, rate in words per minute, eSpeak NG seed) of the recording named `key`: `draw_style` at
    eSpeak NG's default prosody."""
    style = draw_style(key, seed, voices, vary_prosody=False)
    return style.voice, style.rate_wpm, style.seed


def synthesize_style(text: str, style: SpeechStyle) -> Tuple[np.ndarray, int]:
    """`synthesize` with every parameter of `style`."""
    return synthesize(text, style.voice, style.rate_wpm, seed=style.seed, pitch=style.pitch,
                      pitch_range=style.pitch_range, word_gap=style.word_gap)


@dataclass(frozen=True)
class SpeechJob:
    """One expression to speak: its text, how, and where the recording and its MFCC-39 features go."""

    key: str
    text: str
    style: SpeechStyle
    wav_path: Path
    feature_path: Path


def speak_to_files(job: SpeechJob) -> Tuple[str, Optional[float], Optional[str]]:
    """Speak `job.text`, write the WAV, then the features (each atomically) -> (key, seconds, None) or
    (key, None, why it failed). The features are those `datasets.audio.extract_features` gives the WAV."""
    try:
        samples, sample_rate = synthesize_style(job.text, job.style)
    except (ValueError, RuntimeError) as error:
        return job.key, None, str(error)
    try:
        write_wav(job.wav_path, samples, sample_rate)
        # Features last: a recording without features counts as unfinished and is spoken again.
        save_features(job.feature_path, mfcc39(samples, sample_rate))
    except OSError as error:
        return job.key, None, f"cannot write {job.wav_path} / {job.feature_path}: {error}"
    return job.key, samples.size / sample_rate, None
