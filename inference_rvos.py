"""Ref-YouTube-VOS inference: every frame of every video of a split -> results.json.

    python inference_rvos.py --masks --model_path output/checkpoint.pth --save_path results.json
    python inference_rvos.py --masks --model_path CKPT --audio phrase.wav --video_dir frames/ --visualize out/
    python inference_rvos.py --masks --model_path CKPT ... --rvos_wav_path recordings/ \
        [--audio_noise {white,babble} --audio_snr_db 5]

`--rvos_wav_path` reads the recordings `<video>_<exp_id>.wav` and computes their MFCC-39 on the fly (equal to
the extracted `.npy`); `--audio_noise` adds white or babble noise (other recordings of the split) at
`--audio_snr_db` to each recording before its MFCC, seeded by `--seed` (datasets/noise.py).

The videos are those of `--split_file`; by default, as the official, those of
`<ytvos_path>/ann/instances_test_sub.json` when it exists (`--split_file none`: every video of the split).
A checkpoint written by main.py records its training videos: evaluating one of them warns on stderr, and
the summary JSON line says how many (`trained_on_evaluated_videos`).

Unlike the official script (first `--num_frames` frames only), long videos are covered by
consecutive clips; the last clip is filled by repeating its frames, as the official does for short
videos. Entries follow the official format and also carry `exp_id`. Optional outputs: the
Ref-YouTube-VOS submission PNGs (`--png_dir`) and overlay images, a contact sheet and a GIF per
video (`--visualize`).
"""
import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from util.config import HelpFormatter, get_args_parser, parse_args
from util.inference import (binarize, cyclic_clips, list_frames, load_audio_array, load_frame,
                            load_model_and_train_videos, log_json, predict_mask_logits)
from util.misc import atomic_write

if TYPE_CHECKING:
    from datasets.noise import AudioNoise

PNG_FOREGROUND = 255  # the submission PNGs hold 0 / 255
GIF_FPS = 6
CONTACT_SHEET_COLUMNS = 6


@dataclass
class Expression:
    exp_id: str
    obj_id: int
    audio_path: Path
    text: str = ""  # the words of the expression, for the pictures


@dataclass
class VideoJob:
    name: str
    video_id: int
    frame_paths: List[Path]
    expressions: List[Expression] = field(default_factory=list)


def get_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser("Wnet Ref-YouTube-VOS inference", parents=[get_args_parser()],
                                   formatter_class=HelpFormatter)


# ----------------------------------------------------------------------------- what to run
def split_jobs(args) -> List[VideoJob]:
    """The videos of `--ytvos_split` (or those of `--split_file`) with their expressions and recordings.

    `--split_file` is the official VIS-style json (`ann/instances_test_sub.json`, the default when it
    exists) or a text file of video names, one per line; with 'none' (or no official file) every video
    of `meta_expressions.json`.
    """
    from datasets.common import audio_source
    from datasets.ytvos import TEST_PART, audio_stem, read_ytvos_videos, resolve_split_file, video_frame_paths

    resolved = resolve_split_file(args.split_file, args.ytvos_path, TEST_PART)
    split_file = str(resolved) if resolved is not None else ""
    log_json({"event": "videos", "videos_from": split_file or "every video of the split"})
    if split_file and not Path(split_file).is_file():
        raise FileNotFoundError(f"split file not found: {split_file}")
    videos = read_ytvos_videos(args.ytvos_path, args.ytvos_split, split_file if split_file.endswith(".json") else "")
    if split_file and not split_file.endswith(".json"):
        by_name = {video.name: video for video in videos}
        names = [line.strip() for line in Path(split_file).read_text().splitlines() if line.strip()]
        unknown = [name for name in names if name not in by_name]
        if unknown:
            raise ValueError(f"split file {split_file}: videos not in the {args.ytvos_split} split: {unknown[:5]}")
        videos = [by_name[name] for name in names]
    jobs = []
    for position, video in enumerate(videos, start=1):
        video_id = video.vis_id if video.vis_id is not None else position  # the VIS file's id, else the position
        job = VideoJob(video.name, int(video_id), video_frame_paths(args.ytvos_path, args.ytvos_split, video))
        for expression in video.expressions:
            # the recording when --rvos_wav_path is given (features on the fly), else the extracted features
            audio_path = audio_source(args.rvos_audio_path, args.rvos_wav_path, audio_stem(video.name, expression.exp_id))
            if not audio_path.is_file():
                raise FileNotFoundError(f"audio of video {video.name!r} expression "
                                        f"{expression.exp_id!r} not found: {audio_path}")
            obj_id = expression.obj_id if expression.obj_id is not None else 0  # absent in the test split's file
            job.expressions.append(Expression(expression.exp_id, obj_id, audio_path, expression.text))
        jobs.append(job)
    return jobs


def single_job(args) -> VideoJob:
    """`--audio FILE --video_dir DIR`: one recording on one folder of frames."""
    if not (args.audio and args.video_dir):
        raise SystemExit("--audio and --video_dir go together: one recording and one folder of frames")
    audio = Path(args.audio)
    if not audio.is_file():
        raise FileNotFoundError(f"recording not found: {audio}")
    frames = list_frames(args.video_dir)
    return VideoJob(Path(args.video_dir).resolve().name, 0, frames, [Expression(audio.stem, 0, audio)])


# ----------------------------------------------------------------------------- outputs
def save_png(path: Path, mask: np.ndarray) -> None:
    image = Image.fromarray(mask.astype(np.uint8) * PNG_FOREGROUND, mode="L")
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def write_visualisation(out_dir: Path, job: VideoJob, masks: Dict[str, np.ndarray]) -> None:
    """Per video: an overlay per frame (each expression in its colour), a contact sheet, a GIF, and one row of
    frames per expression with only its mask, captioned with its words (`<video>_expressions.jpg`)."""
    from util.visualize import PALETTE, contact_sheet, labelled_rows, overlay, save_gif
    from datasets.formats import read_rgb

    video_dir = out_dir / job.name
    overlays = []
    rows: List[List[np.ndarray]] = [[] for _ in masks]
    for index, frame_path in enumerate(job.frame_paths):
        frame = np.asarray(read_rgb(frame_path))
        image = frame
        for number, exp_id in enumerate(masks):
            color = PALETTE[number % len(PALETTE)]
            image = overlay(image, masks[exp_id][index], color=color)
            rows[number].append(overlay(frame, masks[exp_id][index], color=color))
        overlays.append(image)
        picture = Image.fromarray(image)
        atomic_write(video_dir / f"{frame_path.stem}.jpg", lambda tmp: picture.save(tmp, format="JPEG", quality=90))
    sheet = Image.fromarray(contact_sheet(overlays, columns=CONTACT_SHEET_COLUMNS))
    atomic_write(out_dir / f"{job.name}_sheet.jpg", lambda tmp: sheet.save(tmp, format="JPEG", quality=90))
    save_gif(overlays, out_dir / f"{job.name}.gif", fps=GIF_FPS)
    texts = {e.exp_id: e.text or e.exp_id for e in job.expressions}
    labels = [f'"{texts.get(exp_id, exp_id)}"' for exp_id in masks]
    rows_picture = Image.fromarray(labelled_rows(rows, labels))
    atomic_write(out_dir / f"{job.name}_expressions.jpg",
                 lambda tmp: rows_picture.save(tmp, format="JPEG", quality=90))


# ----------------------------------------------------------------------------- inference
def infer_video(model: torch.nn.Module, job: VideoJob, num_frames: int, scale: float = 1.0,
                noise: Optional["AudioNoise"] = None) -> Dict[str, np.ndarray]:
    """Masks `[n, H, W]` (bool) of every expression of one video, every frame covered; frames at short
    side 300 x `scale`; `noise` added to each recording before its MFCC (`--audio_noise`)."""
    loaded = [load_frame(path, scale) for path in job.frame_paths]
    sizes = {image.size for _, image in loaded}
    if len(sizes) != 1:
        raise ValueError(f"video {job.name}: frames have different sizes {sorted(sizes)}")
    width, height = sizes.pop()
    frames = torch.stack([tensor for tensor, _ in loaded])  # [n, 3, h, w]
    clips = cyclic_clips(len(frames), num_frames)
    masks = {}
    for expression in job.expressions:
        audio = load_audio_array(expression.audio_path, noise)  # [39, L]
        parts = []
        for indices, count in clips:
            logits = predict_mask_logits(model, frames[indices], audio, (height, width))  # [T, H, W]
            parts.append(binarize(logits[:count]))
        masks[expression.exp_id] = np.concatenate(parts)  # [n, H, W]
    return masks


def run(args, jobs: Sequence[VideoJob], model: Optional[torch.nn.Module] = None) -> List[dict]:
    """Infer every job and write `--save_path`. With no `model`, `--model_path` is loaded and its record of
    training videos checked against the jobs' videos (a warning on stderr when any was trained on)."""
    from datasets.noise import build_noise
    from util.results import make_entry, write_results
    from util.weights import count_trained_on

    noise = build_noise(args, [e.audio_path for job in jobs for e in job.expressions])  # before the model: fail early
    trained_on = None
    if model is None:
        model, train_videos = load_model_and_train_videos(args)
        trained_on = count_trained_on([job.name for job in jobs], None if train_videos is None
                                      else train_videos.get("ytvos", []), args.model_path)
    entries, start, num_frames = [], time.time(), 0
    for job in tqdm(jobs, desc="videos", dynamic_ncols=True):
        masks = infer_video(model, job, args.num_frames, args.data_scale, noise)
        for expression in job.expressions:
            entries.append(make_entry(job.video_id, expression.obj_id, job.name, expression.exp_id,
                                      masks[expression.exp_id]))
            if args.png_dir:
                for frame_path, mask in zip(job.frame_paths, masks[expression.exp_id]):
                    save_png(Path(args.png_dir) / job.name / expression.exp_id / f"{frame_path.stem}.png", mask)
        if args.visualize:
            write_visualisation(Path(args.visualize), job, masks)
        num_frames += len(job.frame_paths)
        log_json({"video": job.name, "frames": len(job.frame_paths), "expressions": len(job.expressions)})
    write_results(args.save_path, entries)
    log_json({"videos": len(jobs), "expressions": len(entries), "frames": num_frames,
              "seconds": round(time.time() - start, 2), "results": str(args.save_path),
              "trained_on_evaluated_videos": trained_on})
    return entries


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(get_parser(), argv)
    jobs = [single_job(args)] if (args.audio or args.video_dir) else split_jobs(args)
    if not jobs:
        raise SystemExit("no videos to infer")
    run(args, jobs)
    print(f"results written to {args.save_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
