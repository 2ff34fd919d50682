"""Time MFCC-39 extraction of one minute of speech: our vectorised `mfcc39` against the official loop version.

    python scripts/benchmark_mfcc.py [--audio FILE] [--seconds 60] [--repeats 5] [--json OUT.json]

The speech is eSpeak NG phrases concatenated to `--seconds` (or a real recording given with `--audio`, tiled
to that length). Both versions get the same int16-unit samples; the times cover the features only, not file
reading. The script also checks that the two agree (relative error <= 1e-9) and exits with 1 when ours takes
`--limit` seconds or more (the target: under 1 s per minute of speech).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.fft

from datasets import audio
from datasets.speech import synthesize
from util.config import ArgumentParser
from util.errors import run_main
from util.misc import atomic_json_dump

DEMO_PHRASES = (
    "a man in a black jacket is riding a brown horse along the beach",
    "the small white dog on the left jumps over the red ball",
    "a woman holding an umbrella walks across the street",
    "the second car from the right turns into the parking lot",
    "a child in a yellow shirt throws a frisbee to his friend",
)
AGREEMENT_TOLERANCE = 1e-9  # relative error between the two versions (both float64)


# ----------------------------------------------------------------------------- the official loop version
# Mirrors the official feature script's structure, for timing only: framing with an index matrix, the
# filterbank filled bin by bin, and the deltas computed with Python loops over frames, coefficient indices
# and theta (across coefficients within each frame, zeros outside 1..13), as docs/protocol.md §5 describes.
def official_loop_filterbank(sample_rate: int) -> np.ndarray:
    mel_points = np.linspace(0, audio.hz_to_mel(sample_rate / 2), audio.NUM_FILTERS + 2)
    bins = np.floor((audio.NFFT + 1) * audio.mel_to_hz(mel_points) / sample_rate)
    filters = np.zeros((audio.NUM_FILTERS, audio.NFFT // 2 + 1))
    for j in range(audio.NUM_FILTERS):
        for i in range(int(bins[j]), int(bins[j + 1])):
            filters[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(int(bins[j + 1]), int(bins[j + 2])):
            filters[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    return filters


def official_loop_deltas(features: np.ndarray, big_theta: int = audio.DELTA_THETA,
                         num_cepstra: int = audio.NUM_CEPSTRA) -> np.ndarray:
    result = np.zeros(features.shape)
    denominator = 2 * sum(theta ** 2 for theta in range(1, big_theta + 1))
    for row in range(features.shape[0]):
        numerator = np.zeros(num_cepstra)
        for t in range(1, num_cepstra + 1):  # 1-based coefficient index, as in the official
            total = 0.0
            for theta in range(1, big_theta + 1):
                ahead = features[row][t + theta - 1] if t + theta <= num_cepstra else 0
                behind = features[row][t - theta - 1] if t - theta >= 1 else 0
                total += theta * (ahead - behind)
            numerator[t - 1] = total
        result[row] = numerator / denominator
    return result


def official_loop_mfcc39(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    emphasised = np.append(signal[0], signal[1:] - audio.PRE_EMPHASIS * signal[:-1])
    frame_len, step = audio.frame_geometry(sample_rate)
    count = audio.num_feature_frames(len(emphasised), sample_rate)
    padded = np.concatenate((emphasised, np.zeros((count - 1) * step + frame_len - len(emphasised))))
    indices = (np.tile(np.arange(frame_len), (count, 1))
               + np.tile(np.arange(0, count * step, step), (frame_len, 1)).T)  # [frames, frame_len]
    frames = padded[indices.astype(np.int32)]
    power = 1.0 / audio.NFFT * np.square(np.abs(np.fft.rfft(frames, audio.NFFT)))
    energy = np.sum(power, 1)
    energy = np.where(energy == 0, audio.EPS, energy)
    filter_energies = np.dot(power, official_loop_filterbank(sample_rate).T)
    filter_energies = np.where(filter_energies == 0, audio.EPS, filter_energies)
    cepstra = scipy.fft.dct(np.log(filter_energies), type=2, axis=1, norm="ortho")[:, :audio.NUM_CEPSTRA]
    lifter = 1 + (audio.CEPSTRAL_LIFTER / 2) * np.sin(np.pi * np.arange(audio.NUM_CEPSTRA) / audio.CEPSTRAL_LIFTER)
    cepstra = cepstra * lifter
    cepstra[:, 0] = np.log(energy)
    deltas = official_loop_deltas(cepstra)
    delta_deltas = official_loop_deltas(deltas)
    return np.concatenate((cepstra, deltas, delta_deltas), axis=1)


# ----------------------------------------------------------------------------- the benchmark
def speech_signal(seconds: float, audio_path: Optional[Path]) -> Tuple[np.ndarray, int]:
    """`seconds` of speech in int16 units: the given recording or synthetic phrases, tiled and cut to length."""
    if audio_path is not None:
        samples, sample_rate = audio.load_audio(audio_path)
        pieces = [samples]
    else:
        pieces = []
        for phrase in DEMO_PHRASES:
            speech, sample_rate = synthesize(phrase)
            pieces.append(speech.astype(np.float64))
        samples = np.concatenate(pieces)
    target = int(round(seconds * sample_rate))
    repeats = -(-target // samples.size)  # integer ceil division
    return np.tile(samples, repeats)[:target], sample_rate


def time_calls(compute: Callable[[np.ndarray, int], np.ndarray], signal: np.ndarray, sample_rate: int,
               repeats: int) -> Tuple[List[float], np.ndarray]:
    times, features = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        features = compute(signal, sample_rate)
        times.append(time.perf_counter() - start)
    return times, features


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio", type=Path, default=None, help="a recording to tile (default: synthetic speech)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the speech to extract")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of our version (best and median shown)")
    parser.add_argument("--loop-repeats", type=int, default=1, help="timed runs of the official loop version")
    parser.add_argument("--limit", type=float, default=1.0, help="exit 1 when our best time is not below this")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    if args.seconds <= 0 or args.repeats < 1 or args.loop_repeats < 1:
        print("error: --seconds must be positive and --repeats/--loop-repeats at least 1", file=sys.stderr)
        return 2
    try:
        signal, sample_rate = speech_signal(args.seconds, args.audio)
    except audio.AudioDecodeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    audio.mfcc39(signal[:sample_rate], sample_rate)  # warm-up: caches the filterbank, loads the FFT plans
    ours, features = time_calls(audio.mfcc39, signal, sample_rate, args.repeats)
    loops, loop_features = time_calls(official_loop_mfcc39, signal, sample_rate, args.loop_repeats)
    error = float(np.linalg.norm(features - loop_features) / np.linalg.norm(loop_features))
    results: Dict[str, object] = {
        "seconds_of_speech": args.seconds, "sample_rate": sample_rate, "frames": int(features.shape[0]),
        "ours_best_s": min(ours), "ours_median_s": statistics.median(ours),
        "official_loop_best_s": min(loops), "speedup": min(loops) / min(ours), "relative_error": error,
    }
    print(f"{args.seconds:g} s of speech at {sample_rate} Hz -> {features.shape[0]} frames")
    print(f"ours (vectorised):     best {min(ours) * 1000:8.1f} ms, median {statistics.median(ours) * 1000:8.1f} ms "
          f"over {args.repeats} run(s)")
    print(f"official (loops):      best {min(loops) * 1000:8.1f} ms over {args.loop_repeats} run(s)")
    print(f"speed-up {min(loops) / min(ours):.0f}x, relative difference {error:.1e}")
    if args.json is not None:
        atomic_json_dump(results, args.json, indent=2)
    if error > AGREEMENT_TOLERANCE:
        print(f"FAIL: the versions disagree (relative error {error:.1e} > {AGREEMENT_TOLERANCE:g})", file=sys.stderr)
        return 1
    if min(ours) >= args.limit:
        print(f"FAIL: ours took {min(ours):.3f} s, not under {args.limit:g} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
