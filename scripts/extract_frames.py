"""Decode A2D's videos into frames: <a2d_path>/Release/clips320H/<video>.mp4 -> Release/pngs320H/<video>/%05d.png.

    python scripts/extract_frames.py --a2d_path data/a2d [--videos ID ...] [--overwrite]

Frames are numbered from 00001 in decoding order, as the A2D loader expects. Each video is decoded into a
temporary folder beside its destination and renamed onto it when complete, so an interrupted run never
leaves a partial frame folder; videos whose folder exists are skipped (leftover temporary folders of an
interrupted run are removed). When `Release/videoset.csv` is present, a frame count that differs from
its `frames` column is reported (the loader would reject that video). A video that cannot be decoded is
reported with its path and the reason, and the exit code is 1 once the others are done.
"""
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import av
from tqdm import tqdm

from datasets.a2d_format import read_videoset_csv
from util.config import ArgumentParser
from util.errors import run_main
from util.misc import atomic_directory

VIDEO_EXTENSION = ".mp4"
FRAME_NAME = "{:05d}.png"
TEMP_PREFIX = ".extracting-"  # temporary folders: hidden, so the loader never lists them as a video


def get_parser() -> ArgumentParser:
    # A data-preparation utility, so it has its own small parser rather than the model's.
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a2d_path", default="data/a2d", type=Path, help="A2D-Sentences root (holds Release/)")
    parser.add_argument("--clips_dir", default=None, type=Path, help="default: <a2d_path>/Release/clips320H")
    parser.add_argument("--out_dir", default=None, type=Path, help="default: <a2d_path>/Release/pngs320H")
    parser.add_argument("--videos", nargs="*", default=None, help="only these video ids (default: every .mp4)")
    parser.add_argument("--overwrite", action="store_true", help="decode videos whose frame folder exists again")
    return parser


def decode_video(video_path: Path, out_dir: Path) -> int:
    """Write every frame of `video_path` as RGB PNGs `00001.png, ...` into `out_dir`; returns the count."""
    count = 0
    with av.open(str(video_path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for count, frame in enumerate(container.decode(stream), start=1):
            frame.to_image().save(out_dir / FRAME_NAME.format(count))  # to_image() gives RGB
    if count == 0:
        raise ValueError("the video has no decodable frames")
    return count


def extract_video(video_path: Path, destination: Path, overwrite: bool = False) -> Optional[int]:
    """Decode one video atomically into `destination`; None when it already exists and is kept."""
    if destination.is_dir() and not overwrite:
        return None
    # --overwrite: the old frames are replaced only once the new ones are complete
    return atomic_directory(destination, lambda temp: decode_video(video_path, temp),
                            prefix=f"{TEMP_PREFIX}{destination.name}-")


def remove_leftovers(out_dir: Path) -> None:
    """Delete the temporary folders an interrupted run left behind."""
    if out_dir.is_dir():
        for path in out_dir.glob(f"{TEMP_PREFIX}*"):
            shutil.rmtree(path, ignore_errors=True)


def extract_all(clips_dir: Path, out_dir: Path, videos: Optional[Sequence[str]] = None, overwrite: bool = False,
                expected_counts: Optional[Dict[str, int]] = None) -> List[str]:
    """Extract every video of `clips_dir` (or `videos`); returns the error messages (empty when all worked)."""
    if not clips_dir.is_dir():
        raise FileNotFoundError(f"clips folder not found: {clips_dir} (--a2d_path is the A2D root holding "
                                f"Release/clips320H, or pass --clips_dir)")
    paths = sorted(clips_dir.glob(f"*{VIDEO_EXTENSION}"))
    if videos is not None:
        wanted = set(videos)
        missing = wanted - {p.stem for p in paths}
        paths = [p for p in paths if p.stem in wanted]
        errors = [f"{clips_dir / (v + VIDEO_EXTENSION)}: not found" for v in sorted(missing)]
    else:
        errors = []
    remove_leftovers(out_dir)
    skipped = 0
    for path in tqdm(paths, desc="extract frames", unit="video"):
        try:
            count = extract_video(path, out_dir / path.stem, overwrite)
        except (av.FFmpegError, OSError, ValueError) as error:
            errors.append(f"{path}: cannot decode ({error})")
            continue
        if count is None:
            skipped += 1
        elif expected_counts and path.stem in expected_counts and count != expected_counts[path.stem]:
            errors.append(f"{path}: decoded {count} frames, videoset.csv says {expected_counts[path.stem]}")
    if skipped:
        print(f"skipped {skipped} video(s) already extracted (--overwrite to redo them)", file=sys.stderr)
    return errors


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    release = args.a2d_path / "Release"
    clips_dir = args.clips_dir or release / "clips320H"
    out_dir = args.out_dir or release / "pngs320H"
    videoset = release / "videoset.csv"
    expected = {v.video_id: v.num_frames for v in read_videoset_csv(videoset).values()} if videoset.is_file() else None
    errors = extract_all(clips_dir, out_dir, args.videos, args.overwrite, expected)
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(run_main(main))
