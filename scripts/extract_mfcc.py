"""MFCC-39 features of every audio file in a folder: IN_DIR/<stem>.<ext> -> OUT_DIR/<stem>.npy, float64 (frames, 39).

    python scripts/extract_mfcc.py IN_DIR OUT_DIR [--feature wnet|librosa] [--audio_sample_rate HZ]
        [--workers N] [--overwrite]

`wnet` (default) is the official recipe the released checkpoint was trained on (docs/protocol.md §5); `librosa` is a
conventional MFCC-39 that is NOT compatible with it. Files are picked by extension (see
`datasets.audio.AUDIO_EXTENSIONS`), not recursively. The MFCC frame is `round(0.025 sr)` samples, so
recordings of several rates give different features for the same words: `--audio_sample_rate` resamples
every file to one rate first. `OUT_DIR/mfcc_info.json` records the feature type and each file's rate (training
copies the rate into its checkpoints, and inference warns about recordings of another rate). A file that
cannot be decoded is reported on stderr with its path and the reason, gets no .npy, and makes the exit code 1
once the others are converted; short or silent recordings are converted with a warning.
"""
import os
import sys
import threading
import time
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from tqdm import tqdm

from datasets.audio import (AUDIO_EXTENSIONS, FEATURE_TYPES, AudioDecodeError, features_from_samples,
                            load_audio, read_feature_info, save_features, write_feature_info)
from util.config import ArgumentParser, non_negative_int, positive_int
from util.errors import run_main

MAX_JOBS_PER_CHUNK = 8  # files handed to a worker at a time: amortises the inter-process round trip
CHUNKS_PER_WORKER = 4  # small folders still spread over every worker, and a slow file does not stall a big chunk
PARENT_POLL_SECONDS = 0.5  # how often a worker checks that the process that started it is still alive


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def get_parser() -> ArgumentParser:
    # A utility with positional folders, so it has its own small parser rather than the model's.
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("in_dir", type=Path, help="folder of recordings (wav, flac, ogg, mp3, m4a, ...)")
    parser.add_argument("out_dir", type=Path, help="where <stem>.npy files go (created if missing)")
    parser.add_argument("--feature", default="wnet", choices=FEATURE_TYPES,
                        help="'wnet': the official features (default); 'librosa': not checkpoint-compatible")
    parser.add_argument("--audio_sample_rate", default=0, type=non_negative_int,
                        help="resample every recording to this rate (Hz) first; 0 keeps each file's rate")
    parser.add_argument("--workers", default=available_cpus(), type=positive_int,
                        help="worker processes (default: the CPUs available); 1 runs in this process")
    parser.add_argument("--overwrite", action="store_true",
                        help="recompute existing outputs (and remove the output of an input that now fails)")
    return parser


@dataclass
class Converted:
    """What converting one file gave: the failure reason (None when it worked), warnings, rates."""

    in_path: Path
    reason: Optional[str] = None
    warnings: List[str] = field(default_factory=list)
    rates: Dict[str, int] = field(default_factory=dict)


def convert(job: Tuple[Path, Path, str, int]) -> Converted:
    """Extract and save one file (its warnings are returned, so that the main process prints them)."""
    in_path, out_path, feature, sample_rate = job
    result = Converted(in_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            samples, source_rate = load_audio(in_path)
            features, used_rate = features_from_samples(samples, source_rate, feature, sample_rate, in_path)
            save_features(out_path, features)
            result.rates = {"sample_rate": used_rate, "source_sample_rate": source_rate}
        except AudioDecodeError as error:
            result.reason = error.reason
        except (ValueError, OSError) as error:  # a decoded signal the features reject; an output that cannot be written
            result.reason = str(error)
    result.warnings = [str(w.message) for w in caught]
    return result


def exit_with_parent(parent: int) -> None:
    """Worker initializer: end this worker when the process that started it dies (even by SIGKILL, which
    leaves it no chance to shut its pool down), instead of holding its memory forever."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def list_audio(in_dir: Path) -> Tuple[List[Path], int]:
    """The audio files directly in `in_dir`, sorted, and how many other files were ignored."""
    files = sorted(p for p in in_dir.iterdir() if p.is_file() or p.is_symlink())
    audio = [p for p in files if p.suffix.lower() in AUDIO_EXTENSIONS]
    return audio, len(files) - len(audio)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    if not args.in_dir.is_dir():
        print(f"error: input folder {args.in_dir} does not exist or is not a folder", file=sys.stderr)
        return 2
    inputs, ignored = list_audio(args.in_dir)
    if ignored:
        print(f"ignoring {ignored} file(s) in {args.in_dir} without an audio extension", file=sys.stderr)
    if not inputs:
        print(f"error: no audio files in {args.in_dir} (extensions: {' '.join(AUDIO_EXTENSIONS)})", file=sys.stderr)
        return 1

    failures: List[Tuple[Path, str]] = []
    stem_counts = Counter(p.stem for p in inputs)
    jobs, skipped = [], 0
    for in_path in inputs:
        out_path = args.out_dir / f"{in_path.stem}.npy"
        if stem_counts[in_path.stem] > 1:
            failures.append((in_path, f"another input also maps to {out_path}; rename one of them"))
        elif out_path.exists() and not args.overwrite:
            skipped += 1
        else:
            jobs.append((in_path, out_path, args.feature, args.audio_sample_rate))
    for in_path, reason in failures:
        print(f"error: {in_path}: {reason}", file=sys.stderr)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    info = read_feature_info(args.out_dir)
    files = info.get("files", {}) if info.get("feature", args.feature) == args.feature else {}
    converted = 0
    with tqdm(total=len(jobs), desc=f"MFCC-39 ({args.feature})", unit="file", file=sys.stderr) as bar:
        workers = min(args.workers, len(jobs))
        pool = ProcessPoolExecutor(workers, initializer=exit_with_parent, initargs=(os.getpid(),)) if workers > 1 else None
        if pool:
            chunksize = max(1, min(MAX_JOBS_PER_CHUNK, len(jobs) // (workers * CHUNKS_PER_WORKER)))
            results = pool.map(convert, jobs, chunksize=chunksize)
        else:
            results = map(convert, jobs)
        try:
            for result, (_, out_path, _, _) in zip(results, jobs):
                bar.update()
                for message in result.warnings:
                    bar.write(f"warning: {message}", file=sys.stderr)
                if result.reason is None:
                    converted += 1
                    files[out_path.stem] = result.rates
                    continue
                failures.append((result.in_path, result.reason))
                bar.write(f"error: {result.in_path}: {result.reason}", file=sys.stderr)
                files.pop(out_path.stem, None)
                if args.overwrite and out_path.exists():
                    out_path.unlink()  # an output must not outlive the input it came from
        finally:
            if pool:
                pool.shutdown()
            if jobs:
                write_feature_info(args.out_dir, {"feature": args.feature,
                                                  "audio_sample_rate": args.audio_sample_rate, "files": files})

    rates = sorted({entry["sample_rate"] for entry in files.values()})
    if len(rates) > 1:
        print(f"warning: the features in {args.out_dir} come from recordings of {len(rates)} sample rates {rates}; "
              f"the same words give different features at different rates: pass --audio_sample_rate "
              f"(with --overwrite) to resample them all to one", file=sys.stderr)
    print(f"{converted} converted, {skipped} skipped (output exists; --overwrite recomputes), "
          f"{len(failures)} failed", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(run_main(main))
