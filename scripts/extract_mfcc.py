"""MFCC-39 features of every audio file in a folder: IN_DIR/<stem>.<ext> -> OUT_DIR/<stem>.npy, float64 (frames, 39).

    python scripts/extract_mfcc.py IN_DIR OUT_DIR [--feature wnet|librosa] [--workers N] [--overwrite]

`wnet` (default) is the official recipe the released checkpoint was trained on (SPEC §5); `librosa` is a
conventional MFCC-39 that is NOT compatible with it. Files are picked by extension (see
`datasets.audio.AUDIO_EXTENSIONS`), not recursively. A file that cannot be decoded is reported on stderr with
its path and the reason, gets no .npy, and makes the exit code 1 once the others are converted.
"""
import argparse
import os
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.audio import (AUDIO_EXTENSIONS, FEATURE_TYPES, AudioDecodeError, extract_features,  # noqa: E402
                            save_features)

MAX_JOBS_PER_CHUNK = 8  # files handed to a worker at a time: amortises the inter-process round trip
CHUNKS_PER_WORKER = 4  # small folders still spread over every worker, and a slow file does not stall a big chunk


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def get_parser() -> argparse.ArgumentParser:
    # A utility with positional folders, so it has its own small parser rather than the model's.
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("in_dir", type=Path, help="folder of recordings (wav, flac, ogg, mp3, m4a, ...)")
    parser.add_argument("out_dir", type=Path, help="where <stem>.npy files go (created if missing)")
    parser.add_argument("--feature", default="wnet", choices=FEATURE_TYPES,
                        help="'wnet': the official features (default); 'librosa': not checkpoint-compatible")
    parser.add_argument("--workers", default=available_cpus(), type=int,
                        help="worker processes (default: the CPUs available); 1 runs in this process")
    parser.add_argument("--overwrite", action="store_true",
                        help="recompute existing outputs (and remove the output of an input that now fails)")
    return parser


def convert(job: Tuple[Path, Path, str]) -> Tuple[Path, Optional[str]]:
    """Extract and save one file; returns (input, None) or (input, why it failed)."""
    in_path, out_path, feature = job
    try:
        features = extract_features(in_path, feature)
    except AudioDecodeError as error:
        return in_path, error.reason
    except ValueError as error:  # a decoded signal the features reject
        return in_path, str(error)
    try:
        save_features(out_path, features)
    except OSError as error:
        return in_path, f"cannot write {out_path}: {error}"
    return in_path, None


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
    if args.workers < 1:
        print(f"error: --workers must be at least 1, got {args.workers}", file=sys.stderr)
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
            jobs.append((in_path, out_path, args.feature))
    for in_path, reason in failures:
        print(f"error: {in_path}: {reason}", file=sys.stderr)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    converted = 0
    with tqdm(total=len(jobs), desc=f"MFCC-39 ({args.feature})", unit="file", file=sys.stderr) as bar:
        workers = min(args.workers, len(jobs))
        pool = ProcessPoolExecutor(workers) if workers > 1 else None
        if pool:
            chunksize = max(1, min(MAX_JOBS_PER_CHUNK, len(jobs) // (workers * CHUNKS_PER_WORKER)))
            results = pool.map(convert, jobs, chunksize=chunksize)
        else:
            results = map(convert, jobs)
        try:
            for (in_path, reason), (_, out_path, _) in zip(results, jobs):
                bar.update()
                if reason is None:
                    converted += 1
                    continue
                failures.append((in_path, reason))
                bar.write(f"error: {in_path}: {reason}", file=sys.stderr)
                if args.overwrite and out_path.exists():
                    out_path.unlink()  # an output must not outlive the input it came from
        finally:
            if pool:
                pool.shutdown()

    print(f"{converted} converted, {skipped} skipped (output exists; --overwrite recomputes), "
          f"{len(failures)} failed", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
