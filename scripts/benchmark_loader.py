"""The Ref-YouTube-VOS training loader at the official frame size: clips per second with 0..N workers, and where
one item's time goes (JPEG decoding, the official transforms, masks and targets).

The data is a Ref-YouTube-VOS tree written by `scripts.make_demo_data.generate` (JPEG frames, palette PNG
annotations, the YouTube-VIS split file, MFCC-39 features) at `OFFICIAL_FRAME_SIZE` in a temporary folder; the
loader is the training one (`datasets.build_dataset("train", ...)` with the official clip transforms,
`engine.train.build_loader`, batch size 1).
"""
import statistics
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence

from datasets import build_dataset
from datasets.common import read_frames
from datasets.ytvos import frame_path
from engine.run import parse as parse_training_args
from engine.train import build_loader
from scripts.demo_args import SPLIT
from scripts.make_demo_data import DemoConfig, generate

OFFICIAL_FRAME_SIZE = (720, 1280)  # Ref-YouTube-VOS's frames (height, width)
VIDEO_EXTRA_FRAMES = 4  # videos a little longer than a clip, so that clips start at different frames


def make_loader_data(root: Path, num_frames: int, num_videos: int, size: Sequence[int] = OFFICIAL_FRAME_SIZE
                     ) -> Path:
    """A Ref-YouTube-VOS tree under `root` with `num_videos` training videos of `num_frames` + a few frames."""
    data = root / "rvos"
    generate(data, DemoConfig(num_train_videos=num_videos, num_test_videos=0,
                              num_frames=num_frames + VIDEO_EXTRA_FRAMES, height=size[0], width=size[1]))
    return data


def training_dataset_args(data: Path, num_frames: int, workers: int, extra: Sequence[str] = ()):
    """The training options reading `data` (official transforms, `--data_scale 1`)."""
    return parse_training_args([
        "--ytvos_path", str(data), "--ytvos_split", SPLIT,
        "--ytvos_ann_file", str(data / "ann" / "instances_train_sub.json"),
        "--rvos_audio_path", str(data / "audio_feature"), "--dataset_file", "ytvos",
        "--num_frames", str(num_frames), "--num_queries", str(num_frames), "--masks", "--batch_size", "1",
        "--num_workers", str(workers), "--pretrained_weights", "none", "--device", "cpu", *extra])


def loader_clips_per_s(data: Path, num_frames: int, workers: int, clips: int) -> Dict[str, object]:
    """Clips per second of the training loader over `clips` batches after the first (which starts the
    workers)."""
    args = training_dataset_args(data, num_frames, workers)
    loader = build_loader(build_dataset("train", args), args, shuffle=True)
    batches = iter(loader)
    start = time.perf_counter()
    next(batches)
    first = time.perf_counter() - start
    times: List[float] = []
    for _ in range(clips):
        start = time.perf_counter()
        next(batches)
        times.append(time.perf_counter() - start)
    del batches
    # the mean, not the median: with several workers clips arrive in bursts
    return {"workers": workers, "clips_per_s": len(times) / sum(times), "s_per_clip": sum(times) / len(times),
            "first_batch_s": first, "times_s": times}


def item_breakdown(data: Path, num_frames: int, items: int) -> Dict[str, float]:
    """Seconds per item in one process: the whole item, and its JPEG decoding alone (every frame of the
    clip read as the dataset reads it); their ratio is `decode_share`."""
    args = training_dataset_args(data, num_frames, 0)
    dataset = build_dataset("train", args)
    whole, decode = [], []
    for index in range(items):
        sample = index * (len(dataset) // items)
        start = time.perf_counter()
        dataset[sample]
        whole.append(time.perf_counter() - start)
        video_index = dataset.samples[sample][0]
        video = dataset.videos[video_index]
        paths = [frame_path(dataset.root, dataset.split, video.name, video.frames[i])
                 for i in dataset.clip_indices(sample)]
        start = time.perf_counter()
        for frame in read_frames(paths):
            frame.load()
        decode.append(time.perf_counter() - start)
    item_s, decode_s = statistics.median(whole), statistics.median(decode)
    return {"item_s": item_s, "decode_s": decode_s, "decode_share": decode_s / item_s}


def benchmark_loader(num_frames: int, workers: Sequence[int], clips: int, num_videos: int,
                     size: Sequence[int] = OFFICIAL_FRAME_SIZE) -> Dict[str, object]:
    """`loader_clips_per_s` for each worker count and `item_breakdown`, on fresh data in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="wnet_loader_") as tmp:
        start = time.perf_counter()
        data = make_loader_data(Path(tmp), num_frames, num_videos, size)
        made_s = time.perf_counter() - start
        breakdown = item_breakdown(data, num_frames, min(clips, num_videos * VIDEO_EXTRA_FRAMES))
        rows = [loader_clips_per_s(data, num_frames, count, clips) for count in workers]
    return {"frames": num_frames, "frame_size": list(size), "videos": num_videos, "data_made_s": made_s,
            "item": breakdown, "workers": rows}


def format_loader_table(figures: Dict[str, object], step_s: float) -> str:
    """One line per worker count: clips/s and how many training steps of `step_s` one clip's loading covers."""
    item = figures["item"]
    height, width = figures["frame_size"]
    lines = [f"loader: {figures['frames']} frames of {height}x{width} JPEG, official training transforms; one item "
             f"{item['item_s']:.2f} s, of which JPEG decoding {item['decode_s']:.2f} s "
             f"({100 * item['decode_share']:.0f}%)",
             f"{'workers':>8}{'clips/s':>10}{'s/clip':>9}{'first batch s':>15}{'clip / step':>13}"]
    for row in figures["workers"]:
        covered = f"{row['s_per_clip'] / step_s:13.2f}" if step_s > 0 else f"{'-':>13}"
        lines.append(f"{row['workers']:>8}{row['clips_per_s']:10.2f}{row['s_per_clip']:9.2f}"
                     f"{row['first_batch_s']:15.2f}{covered}")
    return "\n".join(lines)
