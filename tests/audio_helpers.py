"""Test helpers shared by the audio tests: real audio files on disk and the official framing, restated."""
import importlib.util
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parents[1]

# (frame length, step) in samples per SPEC §5, written out rather than computed: round() halves to even.
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
    """Write int16 samples in a real format; float subtypes get samples / 32768 (exact in float32)."""
    data = samples_int16.astype(np.float64) / 32768.0 if subtype in ("FLOAT", "DOUBLE") else samples_int16
    if channels > 1:
        data = np.repeat(data[:, None], channels, axis=1)  # [n, channels], the same signal on every channel
    soundfile.write(str(path), data, sample_rate, subtype=subtype)
    return path


def load_script(name: str) -> ModuleType:
    """Import scripts/<name>.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
