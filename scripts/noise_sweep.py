"""How one checkpoint copes with noisy speech: J&F against the signal-to-noise ratio, white and babble noise.

    python scripts/noise_sweep.py --out output/sweep --config configs/demo.yaml \
        --model_path output/demo/checkpoint.pth --ytvos_path data/demo --rvos_wav_path data/demo/audio_wav \
        --split_file data/demo/test_videos.txt [--snrs 20 10 5 0 -5 -10] [--noise_types white babble]
    python scripts/noise_sweep.py --out output/sweep --combine "wavelet on=output/on/sweep.json" \
        "wavelet off=output/off/sweep.json"

Passes, each Ref-YouTube-VOS inference (`inference_rvos.run`, the same model loaded once) and its J, F and J&F
(`scripts/evaluate_rvos.py`) on the videos of `--split_file`:

- clean: the recordings as they are (MFCC-39 computed from `--rvos_wav_path` on the fly);
- deranged: each video's recordings deranged among its expressions (as `scripts/demo.py`'s shuffled audio, with
  the same seed and so the same derangement): the level of a model that hears the wrong expression;
- one per noise type and SNR: the noise added to every recording at that SNR before its MFCC
  (`--audio_noise`, `--audio_snr_db`; babble = other recordings of the split; seeded by `--seed`);
- one per noise type with the noise alone (`--audio_snr_db -inf`: the noise at each recording's power, no
  speech left): the level of a model that hears nothing about the expression. Deranged recordings score
  below it, since they name the other object; the sweep approaches this level, not the deranged one.

`--out` gets `sweep.json` (written after every pass), `sweep.png` (J&F against SNR, one line per noise type,
the clean, deranged and noise-alone levels as horizontal lines) and `results/<pass>.json`. `--combine LABEL=SWEEP_JSON ...`
draws several sweeps in one picture, `--out/sweep_comparison.png` (e.g. the same recipe trained with and
without the wavelet denoising). Every other option goes to the inference parser (util/config.py), as for
inference_rvos.py; `--wavelet_threshold` must be the value the model was trained with.
"""
import argparse
import json
import math
import sys
import time
from copy import copy
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

import inference_rvos
from datasets.audio.noise import NOISE_TYPES
from engine import load_model_for_inference
from scripts.demo import derangement
from scripts.evaluate_rvos import evaluate_rvos
from util.config import parse_args
from util.misc import atomic_json_dump, atomic_write
from util.weights import load_weights_file

DEFAULT_SNRS = (20.0, 10.0, 5.0, 0.0, -5.0, -10.0)
SWEEP_NAME, PLOT_NAME, COMPARISON_NAME, RESULTS_DIR = "sweep.json", "sweep.png", "sweep_comparison.png", "results"
CLEAN, DERANGED, NOISE_ONLY = "clean", "deranged", "noise_only"
DEFAULT_THREADS = 1  # as scripts/demo.py: on a busy 2-core machine more threads wait on each other
FIGURE_SIZE = (6.4, 4.2)  # inches
FIGURE_DPI = 150
NOISE_STYLES = {"white": "-", "babble": "--"}
MARKERS = {"white": "o", "babble": "s"}
NOISE_ALONE_STYLE = (0, (1, 3))  # sparse dots: a level, not a measured curve


def get_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: an inference option must never be taken for an abbreviation of one of these
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], allow_abbrev=False,
        epilog="Any other option goes to the inference parser (util/config.py), e.g. --config configs/demo.yaml "
               "--model_path CKPT --ytvos_path DATA --rvos_wav_path DATA/audio_wav --split_file DATA/test_videos.txt")
    parser.add_argument("--out", type=Path, required=True, help="folder for sweep.json, sweep.png and results/")
    parser.add_argument("--snrs", type=float, nargs="+", default=list(DEFAULT_SNRS),
                        help="signal-to-noise ratios in dB (default: %(default)s)")
    parser.add_argument("--noise_types", nargs="+", default=list(NOISE_TYPES), choices=NOISE_TYPES)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch CPU threads")
    parser.add_argument("--title", default="", help="title of the picture (default: the checkpoint's path)")
    parser.add_argument("--combine", nargs="+", metavar="LABEL=SWEEP_JSON", default=None,
                        help="draw these sweeps in one picture (--out/sweep_comparison.png); runs no inference")
    return parser


# ----------------------------------------------------------------------------- passes
def derange_jobs(jobs: Sequence, seed: int) -> Tuple[List, Dict[str, Dict[str, str]], List[str]]:
    """Copies of `jobs` where each video's expressions hear another expression's recording of the video.

    The draw is scripts/demo.py's `write_shuffled_audio` (one generator seeded by `seed`, videos in order,
    exp_ids sorted): with the same seed the same derangement. Returns (jobs, {video: {exp_id: exp_id whose
    recording it gets}}, videos with a single expression, which keep their own).
    """
    rng = np.random.default_rng(seed)
    deranged, mapping, kept = [], {}, []
    for job in jobs:
        by_id = {expression.exp_id: expression for expression in job.expressions}
        if len(by_id) < 2:
            kept.append(job.name)
            deranged.append(job)
            continue
        exp_ids = sorted(by_id, key=str)
        sources = {exp_id: exp_ids[source] for exp_id, source in zip(exp_ids, derangement(len(exp_ids), rng))}
        mapping[job.name] = sources
        new_job = copy(job)
        new_job.expressions = [copy(expression) for expression in job.expressions]
        for expression in new_job.expressions:
            expression.audio_path = by_id[sources[expression.exp_id]].audio_path
        deranged.append(new_job)
    return deranged, mapping, kept


def run_pass(args, jobs: Sequence, model: torch.nn.Module, postprocessors: Dict[str, torch.nn.Module], name: str,
             out: Path, noise: str = "", snr_db: Optional[float] = None) -> Dict[str, float]:
    """Infer `jobs` with `model` and its `postprocessors` (with `noise` at `snr_db`), write results/<name>.json,
    return its J, F and J&F."""
    pass_args = copy(args)
    pass_args.save_path = str(out / RESULTS_DIR / f"{name}.json")
    pass_args.audio_noise, pass_args.audio_snr_db = noise, snr_db
    pass_args.png_dir = pass_args.visualize = ""
    entries = inference_rvos.run(pass_args, jobs, model=model, postprocessors=postprocessors)
    metrics = evaluate_rvos(entries, args.ytvos_path, args.ytvos_split, args.split_file or None)
    return {key: float(metrics[key]) for key in ("J", "F", "J&F")}


def trained_wavelet_threshold(model_path: str) -> Optional[float]:
    """The `--wavelet_threshold` a training checkpoint stored in its args (None when it stores none)."""
    checkpoint = load_weights_file(model_path)
    stored = checkpoint.get("args") if isinstance(checkpoint, dict) else None
    stored = vars(stored) if isinstance(stored, argparse.Namespace) else stored
    value = stored.get("wavelet_threshold") if isinstance(stored, dict) else None
    return None if value is None else float(value)


def snr_name(noise: str, snr_db: float) -> str:
    return f"{noise}_{snr_db:+g}dB"


def sweep(options: argparse.Namespace, model_argv: Sequence[str]) -> dict:
    """Every pass; writes `sweep.json` after each and `sweep.png` at the end. Returns the sweep."""
    args = parse_args(inference_rvos.get_parser(), list(model_argv))
    if not args.rvos_wav_path:
        raise SystemExit("noise is added to recordings: pass --rvos_wav_path (the <video>_<exp_id>.wav folder)")
    if options.threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {options.threads}")
    torch.set_num_threads(options.threads)
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    jobs = inference_rvos.split_jobs(args)
    if not jobs:
        raise SystemExit("no videos to infer")
    model, postprocessors, _ = load_model_for_inference(args)
    trained = trained_wavelet_threshold(args.model_path)
    if trained is not None and trained != args.wavelet_threshold:
        print(f"warning: {args.model_path} was trained with --wavelet_threshold {trained}, this sweep uses "
              f"{args.wavelet_threshold} (the threshold is not stored in the weights)", file=sys.stderr)
    start = time.time()
    result = {
        "model_path": args.model_path, "ytvos_path": args.ytvos_path, "split_file": args.split_file,
        "rvos_wav_path": args.rvos_wav_path, "wavelet_threshold": args.wavelet_threshold,
        "trained_wavelet_threshold": trained, "seed": args.seed,
        "num_videos": len(jobs), "num_expressions": sum(len(job.expressions) for job in jobs),
        "snrs_db": [float(s) for s in options.snrs], "noise_types": list(options.noise_types),
        "title": options.title or args.model_path,
        "noise": {noise: [] for noise in options.noise_types},
        NOISE_ONLY: {},
    }

    def record(name: str, metrics: Dict[str, float], **extra) -> None:
        print(json.dumps({"pass": name, **{k: round(v, 4) for k, v in metrics.items()}, **extra}), flush=True)
        result["seconds"] = round(time.time() - start, 2)
        atomic_json_dump(result, out / SWEEP_NAME, indent=1)

    result[CLEAN] = run_pass(args, jobs, model, postprocessors, CLEAN, out)
    record(CLEAN, result[CLEAN])
    deranged_jobs, mapping, kept = derange_jobs(jobs, args.seed)
    result[DERANGED] = run_pass(args, deranged_jobs, model, postprocessors, DERANGED, out)
    result["deranged_from"], result["deranged_kept_own"] = mapping, kept
    record(DERANGED, result[DERANGED])
    for noise in options.noise_types:
        result[NOISE_ONLY][noise] = run_pass(args, jobs, model, postprocessors, f"{noise}_only", out, noise,
                                             -math.inf)
        record(f"{noise}_only", result[NOISE_ONLY][noise])
        for snr_db in options.snrs:
            metrics = run_pass(args, jobs, model, postprocessors, snr_name(noise, snr_db), out, noise, float(snr_db))
            result["noise"][noise].append({"snr_db": float(snr_db), **metrics})
            record(snr_name(noise, snr_db), metrics)
    plot_sweeps([("", result)], out / PLOT_NAME, result["title"])
    print(f"sweep written to {out / SWEEP_NAME} and {out / PLOT_NAME}", file=sys.stderr)
    return result


# ----------------------------------------------------------------------------- pictures
def plot_sweeps(sweeps: Sequence[Tuple[str, dict]], path: Path, title: str = "") -> None:
    """J&F against SNR, one line per noise type, the clean (dotted), deranged (dash-dot) and noise-alone
    (sparse dots, the noise's colour) J&F as horizontal lines. One sweep: a colour per noise type; several: a colour per sweep, a line style per noise type.
    Written atomically as a PNG."""
    import matplotlib
    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=FIGURE_SIZE)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    single = len(sweeps) == 1
    for index, (label, result) in enumerate(sweeps):
        prefix = f"{label}: " if label else ""
        for noise_index, (noise, points) in enumerate(result["noise"].items()):
            points = sorted(points, key=lambda p: p["snr_db"])
            colour = colours[(noise_index if single else index) % len(colours)]
            axes.plot([p["snr_db"] for p in points], [p["J&F"] for p in points],
                      NOISE_STYLES.get(noise, "-"), color=colour, marker=MARKERS.get(noise, "o"),
                      label=f"{prefix}{noise} noise")
            alone = result.get(NOISE_ONLY, {}).get(noise)  # absent from sweeps written before it existed
            if alone:
                axes.axhline(alone["J&F"], color=colour, linestyle=NOISE_ALONE_STYLE, linewidth=1.0,
                             label=f"{prefix}{noise} noise alone, no speech ({alone['J&F']:.3f})")
        clean_colour, deranged_colour = ("black", "grey") if single else (colours[index % len(colours)],) * 2
        axes.axhline(result[CLEAN]["J&F"], color=clean_colour, linestyle=":",
                     label=f"{prefix}clean ({result[CLEAN]['J&F']:.3f})")
        axes.axhline(result[DERANGED]["J&F"], color=deranged_colour, linestyle="-.",
                     label=f"{prefix}deranged recordings ({result[DERANGED]['J&F']:.3f})")
    axes.set_xlabel("signal-to-noise ratio (dB)")
    axes.set_ylabel("J&F")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    if title:
        axes.set_title(title, fontsize="medium")
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=FIGURE_DPI))
    plt.close(figure)


def parse_combine(items: Sequence[str]) -> List[Tuple[str, dict]]:
    sweeps = []
    for item in items:
        label, separator, path = item.partition("=")
        if not separator or not label or not path:
            raise SystemExit(f"--combine takes LABEL=SWEEP_JSON, got {item!r}")
        try:
            result = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise SystemExit(f"--combine {label}: cannot read {path}: {error}") from None
        missing = [key for key in (CLEAN, DERANGED, "noise") if key not in result]
        if missing:
            raise SystemExit(f"--combine {label}: {path} is not a sweep.json (no {', '.join(missing)})")
        sweeps.append((label, result))
    return sweeps


def main(argv: Optional[Sequence[str]] = None) -> dict:
    options, model_argv = get_parser().parse_known_args(argv)
    if options.combine is not None:
        if model_argv:
            raise SystemExit(f"--combine runs no inference; unexpected options {' '.join(model_argv)}")
        sweeps = parse_combine(options.combine)
        path = options.out / COMPARISON_NAME
        plot_sweeps(sweeps, path, options.title)
        print(f"comparison written to {path}", file=sys.stderr)
        return {label: result for label, result in sweeps}
    return sweep(options, model_argv)


if __name__ == "__main__":
    main()
