"""Test helpers shared by the audio tests: real audio files on disk and the official framing, restated."""
import importlib.util
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parents[1]

# (frame length, step) in samples per docs/protocol.md §5, written out rather than computed: round() halves to even.
OFFICIAL_FRAMING = {8000: (200, 80), 16000: (400, 160), 22050: (551, 220), 44100: (1102, 441)}


def official_frame_count(num_samples: int, sample_rate: int) -> int:
    frame_len, step = OFFICIAL_FRAMING[sample_rate]
    return 1 if num_samples <= frame_len else 1 + math.ceil((num_samples - frame_len) / step)


def tone_signal(sample_rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """A deterministic int16 signal: two tones that glide plus a little noise, like voiced speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    signal = 6000 * np.sin(2 * np.pi * (220 + 80 * t) * t) + 3000 * np.sin(2 * np.pi * 1300 * t)
    signal += rng.normal(0, 300, t.size)
    return np.round(signal).astype(np.int16)


def write_audio(path: Path, samples_int16: np.ndarray, sample_rate: int, subtype: str = "PCM_16",
                channels: int = 1) -> Path:
    """Write int16 samples in a real format; float subtypes get samples / 32768 (exact in float32).

    Stereo (`channels=2`) writes two different signals whose average is exactly `samples_int16`: left and
    right differ by +-a side signal, so a reader that keeps one channel instead of averaging reads another
    signal."""
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, not {channels}")
    data = samples_int16.astype(np.int64)
    if channels == 2:
        side = side_signal(data, sample_rate)
        data = np.stack([data + side, data - side], axis=1)  # [n, 2], mean = samples_int16
    if subtype in ("FLOAT", "DOUBLE"):
        data = data / 32768.0
    else:
        data = data.astype(np.int16)
    soundfile.write(str(path), data, sample_rate, subtype=subtype)
    return path


SIDE_FREQUENCY_HZ = 700.0  # a tone unlike tone_signal's, so one channel alone gives other features
SIDE_AMPLITUDE = 4000  # int16 units, cut to what keeps both channels in the int16 range


def side_signal(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """The integer tone that stereo adds to one channel and subtracts from the other."""
    headroom = np.iinfo(np.int16).max - int(np.abs(samples).max(initial=0))
    amplitude = max(0, min(SIDE_AMPLITUDE, headroom))
    t = np.arange(samples.size) / sample_rate
    return np.round(amplitude * np.sin(2 * np.pi * SIDE_FREQUENCY_HZ * t)).astype(np.int64)


def load_script(name: str) -> ModuleType:
    """Import scripts/<name>.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
