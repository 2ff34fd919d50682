"""How time and memory grow: the points `benchmark.py --scaling` measures, the fits, the table and the picture.

Each point runs in a fresh process (`benchmark.py` measures it); this module says which points there are, fits
polynomials by least squares to the figures (linear for the memory model), finds the largest clip that fits a memory size by the fit, and
draws `docs/benchmark_scaling.png`.
"""
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

CLIP_LENGTHS = (4, 8, 16, 36, 72)  # frames of one inference clip
FRAME_SCALES = (0.5, 1.0, 1.5)  # of the official inference size
VIDEO_LENGTHS_MEASURED = (36, 72, 144)  # frames of a whole video, in clips of OFFICIAL_CLIP
VIDEO_LENGTHS_FITTED = (36, 72, 144, 360, 720)
OFFICIAL_CLIP = 36
TRAIN_LENGTHS = (2, 4, 8, 16)
TRAIN_OPTIONS = ("default", "checkpoint_activations")
MEMORY_SIZES_GIB = (16, 32, 80)
MIB_PER_GIB = 1024
MAX_FRAMES_SEARCHED = 4096


@dataclass(frozen=True)
class Point:
    """One measurement: `kind` "inference" (one clip of `frames`), "video" (a video of `video_frames` in clips of
    `frames`) or "train" (a training step of `frames` with `option`), at `height` x `width`."""
    kind: str
    frames: int
    height: int
    width: int
    video_frames: int = 0
    option: str = "default"

    def as_dict(self) -> Dict[str, object]:
        return asdict(self)


def scaling_points(height: int, width: int, clip_lengths: Sequence[int] = CLIP_LENGTHS,
                   frame_scales: Sequence[float] = FRAME_SCALES, video_lengths: Sequence[int] = VIDEO_LENGTHS_MEASURED,
                   clip: int = OFFICIAL_CLIP, train_lengths: Sequence[int] = TRAIN_LENGTHS) -> Dict[str, List[Point]]:
    """The sweeps: clip length, frame size (at `clip` frames), video length (in clips of `clip`), training step."""
    return {
        "clip_length": [Point("inference", t, height, width) for t in clip_lengths],
        "frame_size": [Point("inference", clip, round(height * s), round(width * s)) for s in frame_scales],
        "video_length": [Point("video", clip, height, width, video_frames=n) for n in video_lengths],
        "training": [Point("train", t, height, width, option=o) for o in TRAIN_OPTIONS for t in train_lengths],
    }


def fit(xs: Sequence[float], ys: Sequence[float], degree: int = 1) -> List[float]:
    """Least-squares polynomial coefficients, constant first (degree lowered to what the points allow)."""
    degree = min(degree, len(xs) - 1)
    return [float(c) for c in np.polynomial.polynomial.polyfit(np.asarray(xs, float), np.asarray(ys, float), degree)]


def evaluate(coefficients: Sequence[float], x: float) -> float:
    return float(sum(c * x ** i for i, c in enumerate(coefficients)))


def largest_fitting(coefficients: Sequence[float], limit_mib: float, search_limit: int = MAX_FRAMES_SEARCHED) -> int:
    """The largest frame count whose fitted memory stays under `limit_mib` (0 if none; `search_limit` at most)."""
    fitting = [t for t in range(1, search_limit + 1) if evaluate(coefficients, t) <= limit_mib]
    return max(fitting) if fitting else 0


def growth_exponent(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The slope of log y against log x between the smallest and the largest point (1: linear)."""
    return float(np.log(ys[-1] / ys[0]) / np.log(xs[-1] / xs[0]))


PLOT_HEADROOM = 1.15


def plot(results: Dict[str, object], path: Path) -> None:
    """Time and peak memory against clip length, frame size, video length and (training) clip length."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    panels = (("clip_length", "frames per clip", "frames"), ("frame_size", "pixels per frame (millions)", "pixels"),
              ("video_length", "video frames", "video_frames"), ("training", "training clip frames", "frames"))
    for axis, (sweep, label, key) in zip(axes, panels):
        rows = results["sweeps"].get(sweep, [])
        memory_axis = axis.twinx()
        groups = {}
        for row in rows:
            groups.setdefault(row["option"] if sweep == "training" else "", []).append(row)
        for style, (option, group) in zip(("-", "--"), groups.items()):
            xs = [row[key] if key != "pixels" else row["height"] * row["width"] / 1e6 for row in group]
            axis.plot(xs, [row["time_s"] for row in group], "o" + style, color="tab:blue",
                      label=f"time {option}".strip())
            memory_axis.plot(xs, [row["peak_mib"] / MIB_PER_GIB for row in group], "s" + style, color="tab:red",
                             label=f"peak {option}".strip())
        if sweep == "video_length" and "video_fit" in results:
            fitted = results["video_fit"]
            axis.plot(fitted["frames"], fitted["time_s"], ":", color="tab:blue", label="time (fit)")
        # from zero with headroom, so that a flat curve looks flat and no point sits on the frame
        for drawn in (axis, memory_axis):
            drawn.set_ylim(0, max([line.get_ydata().max() for line in drawn.get_lines()], default=1) * PLOT_HEADROOM)
        axis.set_xlabel(label)
        axis.set_ylabel("seconds", color="tab:blue")
        memory_axis.set_ylabel("peak GiB above start", color="tab:red")
        axis.set_title(sweep.replace("_", " "))
        lines = axis.get_legend_handles_labels()
        memory_lines = memory_axis.get_legend_handles_labels()
        # the inference curves rise to the right, the training ones fill the right: each legend where none runs
        axis.legend(lines[0] + memory_lines[0], lines[1] + memory_lines[1], fontsize=7,
                    loc="upper left" if sweep == "training" else "lower right")
    figure.suptitle(results.get("title", "Wnet: how the cost grows"), fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def summarise(results: Dict[str, object]) -> Dict[str, object]:
    """Fits and exponents from the measured sweeps: video length extrapolated from its clips, the training
    step's memory against the clip length (the largest `--num_frames` under each of `MEMORY_SIZES_GIB`)."""
    sweeps = results["sweeps"]
    summary: Dict[str, object] = {}
    clips = sweeps.get("clip_length", [])
    if len(clips) >= 2:
        frames = [row["frames"] for row in clips]
        summary["clip_length_exponent"] = {
            "time": growth_exponent(frames, [row["time_s"] for row in clips]),
            "peak_memory": growth_exponent(frames, [row["peak_mib"] for row in clips])}
        summary["encoder_attention_share"] = [
            {"frames": row["frames"], "tokens": row["tokens"], "encoder_share": row["encoder_s"] / row["time_s"],
             "encoder_attention_share": row["encoder_attention_s"] / row["time_s"],
             "decoder_share": row["decoder_s"] / row["time_s"]} for row in clips]
    videos = sweeps.get("video_length", [])
    if len(videos) >= 2:
        clip_counts = [row["clips"] for row in videos]
        time_fit = fit(clip_counts, [row["time_s"] for row in videos])
        memory_fit = fit([row["video_frames"] for row in videos], [row["process_peak_mib"] for row in videos])
        clip = videos[0]["frames"]
        summary["video_fit"] = {
            "frames": list(VIDEO_LENGTHS_FITTED),
            "time_s": [evaluate(time_fit, -(-n // clip)) for n in VIDEO_LENGTHS_FITTED],
            "process_peak_mib": [evaluate(memory_fit, n) for n in VIDEO_LENGTHS_FITTED],
            "time_per_clip_s": time_fit[1], "memory_mib_per_frame": memory_fit[1]}
    training = sweeps.get("training", [])
    fits: Dict[str, object] = {}
    for option in TRAIN_OPTIONS:
        rows = [row for row in training if row["option"] == option]
        if len(rows) < 2:
            continue
        frames = [row["frames"] for row in rows]
        total = [row["process_peak_mib"] for row in rows]
        # linear: the measured clips (up to 16 frames) show no curvature to fit; the one quadratic term, the
        # decoder's T queries over T*h*w memory tokens, is too small there to be measured (docs/benchmark.md)
        coefficients = fit(frames, total)
        fits[option] = {"process_peak_mib_fit": coefficients,
                        "time_exponent": growth_exponent(frames, [row["time_s"] for row in rows]),
                        "largest_num_frames": {str(g): largest_fitting(coefficients, g * MIB_PER_GIB)
                                               for g in MEMORY_SIZES_GIB}}
    if fits:
        summary["training_fit"] = fits
    return summary


def format_scaling_table(results: Dict[str, object]) -> str:
    lines = []
    for sweep, rows in results["sweeps"].items():
        lines.append(f"\n{sweep.replace('_', ' ')} ({results['models'].get(sweep, '')})")
        lines.append(f"{'kind':<10}{'option':<24}{'frames':>7}{'video':>7}{'HxW':>10}{'time s':>9}"
                     f"{'step peak MiB':>15}{'RSS peak MiB':>14}")
        for row in rows:
            lines.append(f"{row['kind']:<10}{row['option']:<24}{row['frames']:>7}{row['video_frames'] or '-':>7}"
                         f"{str(row['height']) + 'x' + str(row['width']):>10}{row['time_s']:9.2f}"
                         f"{row['peak_mib']:15.0f}{row['process_peak_mib']:14.0f}")
    summary = results.get("summary", {})
    for row in summary.get("encoder_attention_share", []):
        lines.append(f"{row['frames']:>4} frames, {row['tokens']:>6} tokens: encoder {100 * row['encoder_share']:.1f}% "
                     f"(its attention {100 * row['encoder_attention_share']:.1f}%), decoder "
                     f"{100 * row['decoder_share']:.1f}%")
    for option, found in summary.get("training_fit", {}).items():
        sizes = ", ".join(f"{g} GiB: {n}" for g, n in found["largest_num_frames"].items())
        lines.append(f"training {option}: largest --num_frames by the fitted CPU memory model: {sizes}")
    return "\n".join(lines)
