"""Ref-YouTube-VOS inference: every frame of every video of a split -> results.json.

    python inference_rvos.py --masks --model_path output/checkpoint.pth --save_path results.json
    python inference_rvos.py --masks --model_path CKPT --audio phrase.wav --video_dir frames/ --visualize out/
    python inference_rvos.py --masks --model_path CKPT --video clip.mp4 --audio phrase.m4a --save_video overlay.mp4
    python inference_rvos.py --masks --model_path CKPT ... --rvos_wav_path recordings/ \
        [--audio_noise {white,pink,babble} --audio_snr_db 5] [--audio_rt60 0.6] [--audio_band telephone]
        [--audio_speed 1.2]

`--rvos_wav_path` reads the recordings `<video>_<exp_id>.wav` and computes their MFCC-39 on the fly (equal to
the extracted `.npy`); the listening conditions change each recording before its MFCC, seeded by `--seed`
(datasets/audio/perturb.py): `--audio_noise` adds white, pink or babble noise (other recordings of the split) at
`--audio_snr_db`, `--audio_rt60` plays it in a simulated room, `--audio_band` through a telephone band,
`--audio_speed` faster or slower.

The videos are those of `--split_file`; by default, as the official, those of
`<ytvos_path>/ann/instances_test_sub.json` when it exists (`--split_file none`: every video of the split).
A checkpoint written by main.py records its training videos: evaluating one of them warns on stderr, and
the summary JSON line says how many (`trained_on_evaluated_videos`).

Unlike the official script (first `--num_frames` frames only), long videos are covered by
consecutive clips; the last clip is filled by repeating its frames, as the official does for short
videos. Entries follow the official format and also carry `exp_id`. Optional outputs: the
Ref-YouTube-VOS submission PNGs (`--png_dir`) and overlay images, a contact sheet and a GIF per
video (`--visualize`), an overlay video per video with its recordings as the sound (`--save_video`).
One video file (`--video`, any container FFmpeg reads, `--fps` to subsample) or one folder of frames
(`--video_dir`) runs with one recording (`--audio`, any format `datasets.audio.io.load_audio` reads, the sound
of a video file too), resampled to the rate of the model's training features when its checkpoint records one.
Finished videos are kept in `<save_path>.partial` as they are done: a run stopped by a broken file or Ctrl-C
continues with `--resume_results`.
"""
import argparse
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from datasets.audio import AudioLoader, audio_source, build_audio_loader
from datasets.common import (SKIP_HINT, BadSampleWarning, SampleError, build_for_check, check_frame_sizes,
                             decode_images, report_data_check)
from datasets.formats import DataFormatError, read_rgb
from datasets.ytvos import TEST_PART, audio_stem, read_ytvos_videos, resolve_split_file, video_frame_paths
from datasets.ytvos_format import read_video_list
from datasets.audio.io import RESAMPLER, is_recording, resample
from datasets.audio.loader import decode
from datasets.video import read_video_frames
from engine.inference import (frame_tensor, inference_parser, list_frames, load_model_for_inference, parse_inference,
                              predict_video_masks)
from engine.shard import Shard
from models.postprocess import PostProcessSegm
from util.config import inference_scale
from util.errors import USER_OS_ERRORS, OptionError, UserError, one_line, run_main
from util.journal import ResultJournal, journal_on_interrupt, journal_settings, unfinished_hint
from util.misc import atomic_write
from util.names import child_path
from util.paths import check_outputs_apart, check_writable, file_problem
from util.options import add_rvos_inference_args
from util.reporting import log_json
from util.results import make_entry, write_results
from util.visualize import PALETTE, annotate_frame, contact_sheet, labelled_rows, overlay, save_gif
from util.video_writer import H264_CODECS, container_format, write_video
from util.weights import count_trained_on

PNG_FOREGROUND = 255  # the submission PNGs hold 0 / 255
GIF_FPS = 6
CONTACT_SHEET_COLUMNS = 6
FOLDER_FPS = 6.0  # --save_video's rate for frame folders: the Ref-YouTube-VOS frames are every 5th of 30 fps
VIDEO_SUFFIX = ".mp4"  # a split's overlay videos: <save_video>/<video>.mp4
# What a run reads, which its outputs may not replace (util.paths.check_outputs_apart)
INPUT_OPTIONS = ("--ytvos_path", "--rvos_audio_path", "--rvos_wav_path", "--model_path", "--audio", "--video",
                 "--video_dir", "--split_file")


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
    frame_paths: List[Path]  # of a decoded video file: its frames' names (`images` holds the frames)
    expressions: List[Expression] = field(default_factory=list)
    images: Optional[List[Image.Image]] = None  # the frames of a video file, decoded (`--video`)
    fps: float = 0.0  # the frames' rate, when known (a video file's)

    def image(self, index: int) -> Image.Image:
        """Frame `index`, RGB: decoded already, or read from its file."""
        return self.images[index] if self.images is not None else read_rgb(self.frame_paths[index])


def get_parser(prog: str = "Wnet Ref-YouTube-VOS inference") -> argparse.ArgumentParser:
    """The options of Ref-YouTube-VOS inference: the run's, the model's, the data's and the inference groups."""
    return inference_parser(prog, "ytvos", add_rvos_inference_args)


def parse(argv: Optional[Sequence[str]] = None,
          parser: Optional[argparse.ArgumentParser] = None) -> argparse.Namespace:
    """The options of `argv` (by `parser`, default `get_parser()`), frozen (`engine.inference.parse_inference`)."""
    return parse_inference(parser or get_parser(), argv)


# ----------------------------------------------------------------------------- what to run
def split_jobs(args, dropped: Optional[List[str]] = None) -> List[VideoJob]:
    """The videos of `--ytvos_split` (or those of `--split_file`) with their expressions and recordings.

    `--split_file` is the official VIS-style json (`ann/instances_test_sub.json`, the default when it
    exists) or a text file of video names, one per line; with 'none' (or no official file) every video
    of `meta_expressions.json`. An expression without its audio stops here, before any work, or with
    `--skip_bad_samples` is named and appended to `dropped`.
    """
    dropped = [] if dropped is None else dropped
    resolved = resolve_split_file(args.split_file, args.ytvos_path, TEST_PART)
    split_file = str(resolved) if resolved is not None else ""
    log_json({"event": "videos", "videos_from": split_file or "every video of the split"})
    if split_file and file_problem(split_file):
        raise OptionError(f"--split_file {split_file}: {file_problem(split_file)}")
    videos = read_ytvos_videos(args.ytvos_path, args.ytvos_split, split_file if split_file.endswith(".json") else "")
    if split_file and not split_file.endswith(".json"):
        by_name = {video.name: video for video in videos}
        names = read_video_list(split_file)
        unknown = [name for name in names if name not in by_name]
        if unknown:
            raise OptionError(f"--split_file {split_file}: videos not in the {args.ytvos_split} split: {unknown[:5]}")
        videos = [by_name[name] for name in names]
    jobs = []
    for position, video in enumerate(videos, start=1):
        video_id = video.vis_id if video.vis_id is not None else position  # the VIS file's id, else the position
        job = VideoJob(video.name, int(video_id), video_frame_paths(args.ytvos_path, args.ytvos_split, video))
        for expression in video.expressions:
            # the recording when --rvos_wav_path is given (features on the fly), else the extracted features
            audio_path = audio_source(args.rvos_audio_path, args.rvos_wav_path, audio_stem(video.name, expression.exp_id))
            if not audio_path.is_file():
                message = (f"audio of video {video.name!r} expression {expression.exp_id!r} "
                           f"not found: {audio_path}")
                if not args.skip_bad_samples:
                    raise FileNotFoundError(message + SKIP_HINT)
                warnings.warn(message, BadSampleWarning)
                dropped.append(message)
                continue
            obj_id = expression.obj_id if expression.obj_id is not None else 0  # absent in the test split's file
            job.expressions.append(Expression(expression.exp_id, obj_id, audio_path, expression.text))
        jobs.append(job)
    return jobs


def single_job(args) -> VideoJob:
    """`--audio FILE` with `--video FILE` or `--video_dir DIR`: one recording on one video file or folder of frames."""
    if not (args.audio and bool(args.video) != bool(args.video_dir)):
        raise OptionError("--audio goes with one of --video (a video file) or --video_dir (a folder of frames)")
    audio = Path(args.audio)
    if file_problem(audio):
        raise OptionError(f"--audio {audio}: {file_problem(audio)}")
    if args.save_video:
        container_format(args.save_video)  # a wrong suffix fails before any work
    expressions = [Expression(audio.stem, 0, audio)]
    if args.video:
        decoded = read_video_frames(args.video, args.fps, args.max_frames)
        log_json({"event": "video", "path": str(args.video), "frames": len(decoded.images), "fps": decoded.fps})
        return VideoJob(Path(args.video).stem, 0, [Path(name) for name in decoded.names], expressions,
                        decoded.images, decoded.fps)
    return VideoJob(Path(args.video_dir).resolve().name, 0, list_frames(args.video_dir), expressions)


def check_jobs(jobs: Sequence[VideoJob], load_audio: Callable[[Path], torch.Tensor]) -> List[str]:
    """`--check_data`: decode every frame and recording (or feature) of `jobs` once; one message per problem."""
    problems: List[str] = []
    for job in jobs:
        describe = f"video {job.name}"
        if job.images is None:  # a video file's frames are decoded already
            check_frame_sizes(decode_images(job.frame_paths, read_rgb, describe, problems), describe, problems)
        for expression in job.expressions:
            try:
                load_audio(expression.audio_path)
            except (UserError,) + USER_OS_ERRORS as error:
                problems.append(f"{describe} expression {expression.exp_id}: {one_line(error)}")
    return problems


# ----------------------------------------------------------------------------- outputs
def save_png(path: Path, mask: np.ndarray) -> None:
    image = Image.fromarray(mask.astype(np.uint8) * PNG_FOREGROUND, mode="L")
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def write_visualisation(out_dir: Path, job: VideoJob, masks: Dict[str, np.ndarray]) -> None:
    """Per video: an overlay per frame (each expression in its colour), a contact sheet, a GIF, and one row of
    frames per expression with only its mask, captioned with its words (`<video>_expressions.jpg`)."""
    video_dir = child_path(out_dir, job.name)
    overlays = []
    rows: List[List[np.ndarray]] = [[] for _ in masks]
    for index, frame_path in enumerate(job.frame_paths):
        frame = np.asarray(job.image(index))
        image = frame
        for number, exp_id in enumerate(masks):
            color = PALETTE[number % len(PALETTE)]
            image = overlay(image, masks[exp_id][index], color=color)
            rows[number].append(overlay(frame, masks[exp_id][index], color=color))
        overlays.append(image)
        picture = Image.fromarray(image)
        atomic_write(child_path(video_dir, f"{frame_path.stem}.jpg"),
                     lambda tmp: picture.save(tmp, format="JPEG", quality=90))
    sheet = Image.fromarray(contact_sheet(overlays, columns=CONTACT_SHEET_COLUMNS))
    atomic_write(child_path(out_dir, f"{job.name}_sheet.jpg"), lambda tmp: sheet.save(tmp, format="JPEG", quality=90))
    save_gif(overlays, child_path(out_dir, f"{job.name}.gif"), fps=GIF_FPS)
    texts = {e.exp_id: e.text or e.exp_id for e in job.expressions}
    labels = [f'"{texts.get(exp_id, exp_id)}"' for exp_id in masks]
    rows_picture = Image.fromarray(labelled_rows(rows, labels))
    atomic_write(child_path(out_dir, f"{job.name}_expressions.jpg"),
                 lambda tmp: rows_picture.save(tmp, format="JPEG", quality=90))


def expression_sound(expressions: Sequence[Expression]) -> Tuple[Optional[np.ndarray], int]:
    """The recordings of `expressions` one after another (at the first one's rate) for an overlay video's sound;
    (None, 0) when they are extracted features."""
    recordings = [decode(e.audio_path) for e in expressions if is_recording(e.audio_path)]
    if not recordings:
        return None, 0
    rate = recordings[0][1]
    return np.concatenate([resample(samples, own_rate, rate) for samples, own_rate in recordings]), rate


def write_overlay_video(path: Path, job: VideoJob, masks: Dict[str, np.ndarray], fps: float) -> None:
    """The video's frames with every expression's mask, box and words (when known), its recordings as the sound."""
    expressions = [e for e in job.expressions if e.exp_id in masks]
    captions = [f'"{e.text}"' if e.text else "" for e in expressions]
    frames = [annotate_frame(np.asarray(job.image(index)), [masks[e.exp_id][index] for e in expressions], captions)
              for index in range(len(job.frame_paths))]
    sound, rate = expression_sound(expressions)
    codec = write_video(path, frames, fps, sound, rate)
    log_json({"event": "overlay_video", "path": str(path), "frames": len(frames), "fps": fps, "codec": codec,
              "audio_seconds": None if sound is None else round(len(sound) / rate, 3),
              **({} if codec in H264_CODECS else {"note": f"no H.264 encoder in this PyAV build: {codec}"}),
              **({} if sound is not None else {"note_audio": "no recordings (extracted features): no sound"})})


# ----------------------------------------------------------------------------- inference
def drop_or_raise(what: str, error: Exception, skip_bad_samples: bool) -> str:
    """A broken video or expression: a SampleError naming it, or with `skip_bad_samples` a warning; returns
    the message (what the run reports as dropped)."""
    message = f"{what}: {one_line(error)}"
    if not skip_bad_samples:
        raise SampleError(message + SKIP_HINT) from error
    warnings.warn(message, BadSampleWarning)
    return message


def infer_video(model: torch.nn.Module, postprocess: PostProcessSegm, job: VideoJob, num_frames: int,
                scale: float = 1.0, load_audio: Callable[[Path], torch.Tensor] = AudioLoader(),
                skip_bad_samples: bool = False) -> Tuple[Dict[str, np.ndarray], List[str]]:
    """Masks `[n, H, W]` (bool) of every expression of one video, every frame covered; frames at short
    side 300 x `scale`. Returns (masks by exp_id, the dropped video or expressions when `skip_bad_samples`)."""
    try:
        loaded = [(frame_tensor(image, scale), image) for image in map(job.image, range(len(job.frame_paths)))]
        sizes = {image.size for _, image in loaded}
        if len(sizes) != 1:
            raise DataFormatError(f"frames have different sizes {sorted(sizes)}")
    except (UserError,) + USER_OS_ERRORS as error:
        return {}, [drop_or_raise(f"video {job.name}", error, skip_bad_samples)]
    width, height = sizes.pop()
    frames = torch.stack([tensor for tensor, _ in loaded])  # [n, 3, h, w]
    masks, dropped = {}, []
    for expression in job.expressions:
        try:
            audio = load_audio(expression.audio_path)  # [39, L]
        except (UserError,) + USER_OS_ERRORS as error:
            dropped.append(drop_or_raise(f"video {job.name} expression {expression.exp_id}", error, skip_bad_samples))
            continue
        masks[expression.exp_id] = predict_video_masks(model, postprocess, frames, audio, num_frames, (height, width))
    return masks, dropped


def infer_job(model: torch.nn.Module, postprocess: PostProcessSegm, job: VideoJob, args,
              load_audio: Callable[[Path], torch.Tensor], journal: ResultJournal) -> dict:
    """One video: its results.json entries and dropped expressions; PNGs and overlays written as asked."""
    try:
        masks, dropped = infer_video(model, postprocess, job, args.num_frames, inference_scale(args), load_audio,
                                     args.skip_bad_samples)
    except SampleError as error:
        raise SampleError(f"{error}{unfinished_hint(journal)}") from error
    entries = []
    for expression in job.expressions:
        if expression.exp_id not in masks:
            continue
        entries.append(make_entry(job.video_id, expression.obj_id, job.name, expression.exp_id,
                                  masks[expression.exp_id], [path.stem for path in job.frame_paths]))
        if args.png_dir:
            for frame_path, mask in zip(job.frame_paths, masks[expression.exp_id]):
                save_png(child_path(args.png_dir, job.name, expression.exp_id, f"{frame_path.stem}.png"), mask)
    if args.visualize and masks:
        write_visualisation(Path(args.visualize), job, masks)
    if args.save_video and masks:  # one video: the file named; a split: a folder of <video>.mp4
        write_overlay_video(Path(args.save_video) if args.audio else
                            child_path(args.save_video, f"{job.name}{VIDEO_SUFFIX}"), job, masks,
                            job.fps or args.fps or FOLDER_FPS)
    log_json({"video": job.name, "frames": len(job.frame_paths), "expressions": len(entries), "dropped": len(dropped)})
    return {"entries": entries, "dropped": dropped}


def run(args, jobs: Sequence[VideoJob], model: Optional[torch.nn.Module] = None,
        postprocessors: Optional[Dict[str, torch.nn.Module]] = None, dropped_before: Sequence[str] = (),
        progress: str = "videos", model_rate: int = 0) -> List[dict]:
    """Infer every job and write results.json. Each finished video goes to `<save_path>.partial` at once, so
    that an interrupted or failed run keeps it (`--resume_results` continues from there). With no `model`,
    `--model_path` is loaded (with its postprocessors) and its record of training videos checked against the
    jobs' videos (a warning on stderr when any was trained on); a given `model` comes with its `postprocessors`
    (`load_model_for_inference`) and the rate of its training features, `model_rate` (0: unknown). `progress`
    names the progress bar (a caller running several passes names each)."""
    if model is not None and postprocessors is None:
        raise ValueError("run: a given model needs its postprocessors (load_model_for_inference returns both)")
    shard = Shard.of(args)  # under torchrun: this rank's share of the videos (engine/shard.py)
    shard.check_layout(args.save_path)
    journal = ResultJournal(shard.part_path(args.save_path), journal_settings(args), args.resume_results)
    # the audio options first (a bad noise or band fails before the model is loaded)
    load_audio = build_audio_loader(args, [e.audio_path for job in jobs for e in job.expressions],
                                    model_rate=model_rate)
    trained_on = None
    if model is None:
        model, postprocessors, train_videos, load_audio.model_rate = load_model_for_inference(args)
        trained_on = count_trained_on([job.name for job in jobs], None if train_videos is None
                                      else train_videos.get("ytvos", []), args.model_path)
    if not args.audio:
        load_audio.warn_feature_rate(args.rvos_audio_path)
    elif not args.audio_sample_rate and load_audio.model_rate:  # one recording: at the model's rate
        load_audio.resample_to = load_audio.model_rate
        log_json({"event": "audio_resample", "audio": str(args.audio), "to": load_audio.model_rate,
                  "resampler": RESAMPLER})
    entries, dropped, start, num_frames = [], list(dropped_before), time.time(), 0
    with journal_on_interrupt(journal), shard.named_on_failure():
        for job in tqdm(shard.take(jobs), desc=progress, dynamic_ncols=True):
            if job.name not in journal.done:
                journal.add(job.name, infer_job(model, postprocessors["segm"], job, args, load_audio, journal))
        done = shard.gather(args.save_path, journal.done)
    if done is None:  # another rank than 0: its part is written, rank 0 writes the results
        return []
    for job in jobs:
        entries += done[job.name]["entries"]
        dropped += done[job.name]["dropped"]
        num_frames += len(job.frame_paths)
    write_results(args.save_path, entries)
    journal.finish()
    shard.finish(args.save_path)
    log_json({"videos": len(jobs), "expressions": len(entries), "frames": num_frames, "dropped": len(dropped),
              "seconds": round(time.time() - start, 2), "results": str(args.save_path),
              "trained_on_evaluated_videos": trained_on})
    return entries


def main(argv: Optional[Sequence[str]] = None) -> Optional[int]:
    """Write results.json; with `--check_data` return the exit code of the data check instead."""
    args = parse(argv)
    check_outputs_apart({"--save_path": args.save_path, "--png_dir": args.png_dir, "--visualize": args.visualize,
                         "--save_video": args.save_video},
                        {option: getattr(args, option[2:]) for option in INPUT_OPTIONS}, {"--visualize": "--video_dir"})
    dropped: List[str] = []
    if args.audio or args.video or args.video_dir:
        jobs = [single_job(args)]
    else:
        jobs = build_for_check(lambda: split_jobs(args, dropped)) if args.check_data else split_jobs(args, dropped)
    if args.check_data:
        return report_data_check(dropped + check_jobs(jobs, build_audio_loader(args)), {"dataset": "ytvos",
                                                                                  "videos": len(jobs)})
    if not jobs:
        raise UserError("no videos to infer")
    for option, folder in (("--save_path", Path(args.save_path).parent), ("--png_dir", args.png_dir),
                           ("--visualize", args.visualize)):
        if folder:
            check_writable(option, folder)
    run(args, jobs, dropped_before=dropped)
    if args.rank == 0:
        print(f"results written to {args.save_path}", file=sys.stderr)
    return None


if __name__ == "__main__":
    sys.exit(run_main(main))
