"""The CPU demo, end to end: spoken-shapes data -> training -> inference -> J&F, with and without the right audio.

    python scripts/demo.py                      # what `make demo` runs (about 12-13 minutes on 2 cores, README "Demo")
    python scripts/demo.py --quick --data /tmp/demo_data --out /tmp/demo_out     # the seconds-long CI version
    python scripts/demo.py --epochs 2 --lr 1e-3  # any option of the training parser overrides configs/demo.yaml

Stages (each reported as one JSON line with its wall time):
1. data: `scripts/make_demo_data.py` writes the dataset to `--data`, and held-out videos drawn with another seed
   to `--new_seed_data` (each skipped when already complete);
2. warmup and train: `main.main` with `--config` (configs/demo.yaml), checkpoints in `--out`. The config's
   `--warmup_epochs` stage first memorises a few training videos (recordings included), then the whole
   training set is trained on from those weights (why: see the README's demo section);
   The training curves go to `--out/training_curves.png` (`scripts/plot_logs.py`);
3. evaluate: `inference_rvos.main` on the held-out videos (overlays, contact sheets and GIFs in `--out/vis`, an
   overlay video per video with its recordings as the sound in `--out/videos`, about 9 s for the 40 videos),
   J, F and J&F (`scripts/evaluate_rvos.py`), then the same with each video's recordings deranged (every
   expression gets the recording of another object of the same video). A model that listens segments the
   object the wrong recording names, so J&F drops; one that ignores the audio scores the same;
4. new_seed: both passes on the videos of the other seed;
5. probe: `scripts/probe_audio.py` on the held-out videos (how much each stage's output changes when another
   expression's recording is played);
6. listening: `scripts/listening_report.py` on the held-out videos spoken by voices never heard in training
   (`--unseen_data`: the same videos and words, accents and voice variants of the unseen pool), with their
   deranged control, and the training voices in babble and white noise at 0 dB, in a room of RT60 0.6 s and
   through a telephone band (`--out/listening/report.{json,md,png}`).

`--out/metrics.json` (written atomically) holds J, F, J&F, J&F_audio_shuffled (and its J and F), the counts
of evaluated videos and expressions, the other seed's figures, the probe, the listening conditions
(`listening`: J&F and, for the unseen voices, the deranged J&F) and the stage times.
"""
import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from dataclasses import replace
from typing import Dict, List, Optional, Sequence

import numpy as np

import inference_rvos
import engine.run as train
from datasets.ytvos import audio_feature_path, split_paths
from datasets.ytvos_format import read_meta_expressions
from engine.checkpoint import LATEST_CHECKPOINT, LOG_NAME
from engine.inference import load_model_for_inference
from inference_rvos import split_jobs
from scripts.demo_args import SPLIT, derangement, model_args
from scripts.evaluate_rvos import evaluate_rvos
from scripts.extract_mfcc import available_cpus
from scripts.make_demo_data import DemoConfig, generate
from scripts.listening_report import REPORT_NAME
from scripts.listening_report import main as listening_report
from scripts.plot_logs import plot_logs
from scripts.probe_audio import probe
from util.config import inference_scale, own_argv
from util.errors import run_main
from util.misc import atomic_json_dump, set_cpu_threads

REPO_ROOT = Path(__file__).resolve().parents[1]

DEFAULT_CONFIG = REPO_ROOT / "configs" / "demo.yaml"
RESULTS_NAME = "results.json"  # the held-out videos with their own recordings ...
SHUFFLED_RESULTS_NAME = "results_audio_shuffled.json"  # ... and with each video's recordings deranged
NEW_SEED_RESULTS_NAME = "results_new_seed.json"  # videos drawn with another seed (and its deranged pass)
METRICS_NAME = "metrics.json"
NEW_SEED_SUFFIX = "_new_seed"
NEW_SEED_OFFSET = 1
UNSEEN_SUFFIX = "_unseen_voices"
LISTENING_DIR = "listening"
# The listening conditions of metrics.json (scripts/listening_report.py has the whole table): the voices never
# heard, then the training voices in noise at 0 dB, in a room and through a telephone.
LISTENING_ARGS = ["--conditions", "unseen,white,babble,room,band", "--snrs", "0", "--rt60s", "0.6",
                  "--bands", "telephone", "--deranged", "clean"]
SCORE_KEYS = ("J", "F", "J&F", "J&F_audio_shuffled")
VIS_DIR = "vis"
VIDEOS_DIR = "videos"  # <video>.mp4: the held-out videos with their masks, words and recordings
CURVES_NAME = "training_curves.png"
PROBE_VIDEOS = 10  # the listening probe runs on the first 10 held-out videos (20 expressions): all 40 took 20 s
DEFAULT_THREADS = 1  # measured on the 2-core machine: 0.19 s per training step with one thread, 0.25 s with two

# The demo dataset: many short videos of two shapes (many different recordings rather than few long videos),
# a small vocabulary (red/green/blue, circle/square/triangle), "the <colour> <shape>" only, every recording in a
# voice drawn from eSpeak NG's training speaker pool with its own pitch, pitch range, rate and word gap
# (datasets/speech.py; the unseen-voice copy of the held-out videos uses the disjoint unseen pool),
# shapes fast enough to be apart except when their paths cross (the coarsest feature map is 3x4), and drawn
# 1.4x larger than make_demo_data's default so that the edges of the 18x32 mask logits weigh less (held-out
# J&F 0.684 -> 0.702 with the same recipe, two voices). 40 held-out videos (80 expressions) keep the figures
# stable; 100 training videos instead of 160 keep the demo near 12 minutes (two voices: held-out J&F 0.846
# against 0.870 with 120).
DEMO_VOCABULARY = dict(min_objects=2, max_objects=2, num_colours=3, num_shapes=3, speakers="varied", p_say_size=0.0,
                       p_say_motion=0.0, speed_scale=4.0, size_scale=1.4)
DEMO_DATA = DemoConfig(seed=0, num_train_videos=100, num_test_videos=40, num_frames=8, height=72, width=128,
                       **DEMO_VOCABULARY)
# --quick: just enough for every stage to run (a handful of training steps).
QUICK_DATA = DemoConfig(seed=0, num_train_videos=2, num_test_videos=1, num_frames=4, height=72, width=128,
                        **DEMO_VOCABULARY)
QUICK_OVERRIDES = ["--epochs", "1", "--warmup_epochs", "1"]


def new_seed_config(config: DemoConfig) -> DemoConfig:
    """The same kind of held-out videos drawn with another seed (no training videos): does the listening carry
    over to videos the run never saw, even through its choice of the held-out split?"""
    return replace(config, seed=config.seed + NEW_SEED_OFFSET, num_train_videos=0)


def unseen_voices_config(config: DemoConfig) -> DemoConfig:
    """The held-out videos of `config` (the same frames and words) spoken by the unseen speaker pool."""
    return replace(config, num_train_videos=0, held_out_speakers="unseen")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Any other option is passed to the training and inference parsers (main.py, inference_rvos.py; each "
               "takes its own) and overrides the --config file, e.g. --epochs 1 --batch_size 2.")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training/inference configuration")
    parser.add_argument("--data", type=Path, default=Path("data/demo"), help="demo dataset folder (made if absent)")
    parser.add_argument("--new_seed_data", type=Path, default=None,
                        help=f"held-out videos drawn with another seed (made if absent; default: --data + "
                             f"'{NEW_SEED_SUFFIX}')")
    parser.add_argument("--unseen_data", type=Path, default=None,
                        help=f"the held-out videos spoken by unseen voices (made if absent; default: --data + "
                             f"'{UNSEEN_SUFFIX}')")
    parser.add_argument("--out", type=Path, default=Path("output/demo"),
                        help="checkpoints, results, overlays and metrics.json")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help="CPU threads of torch, BLAS and OpenMP (the demo's small steps gain nothing from a second "
                             "thread on the 2-core machine)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny dataset and one short epoch: checks that every stage runs (for the tests)")
    return parser


def report(stage: str, seconds: float, **values) -> None:
    print(json.dumps({"stage": stage, "seconds": round(seconds, 2), **values}), flush=True)


def training_args(config: Path, data: Path, out: Path, overrides: Sequence[str]) -> List[str]:
    """`model_args` reading the recordings (`--rvos_wav_path`: MFCC-39 on the fly, equal to the extracted
    features, and what `--audio_augment` changes)."""
    return model_args(config, data, out, ["--rvos_wav_path", str(data / "audio_wav"), *overrides])


def write_shuffled_audio(data: Path, videos: Sequence[str], audio_dir: Path, out_dir: Path,
                         seed: int) -> Dict[str, Dict[str, str]]:
    """Copy each video's features so that every expression gets another expression's recording.

    Returns `{video: {exp_id: exp_id whose recording it now has}}`.
    """
    meta = read_meta_expressions(split_paths(data, SPLIT)["meta_expressions"])
    rng = np.random.default_rng(seed)
    mapping = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    for video in videos:
        exp_ids = sorted(meta[video]["expressions"], key=str)
        try:
            order = derangement(len(exp_ids), rng)
        except ValueError as e:
            raise ValueError(f"video {video}: {e}") from None
        mapping[video] = {exp_id: exp_ids[source] for exp_id, source in zip(exp_ids, order)}
        for exp_id, source in mapping[video].items():
            shutil.copyfile(audio_feature_path(audio_dir, video, source), audio_feature_path(out_dir, video, exp_id))
    return mapping


def test_videos(data: Path) -> List[str]:
    return [line.strip() for line in (data / "test_videos.txt").read_text().splitlines() if line.strip()]


def infer_and_evaluate(infer_argv: List[str], data: Path, out: Path, name: str, seed: int,
                       visualize: str = "", videos: str = "") -> Dict[str, object]:
    """Infer the held-out videos of `data` with their own recordings and with each video's recordings deranged;
    returns J, F, J&F of both passes and the derangement. `visualize`: the first pass's pictures; `videos`: its
    overlay videos, from the recordings (`audio_wav/`, whose features equal the extracted ones) to play them."""
    split_file = str(data / "test_videos.txt")
    data_argv = ["--ytvos_path", str(data), "--rvos_audio_path", str(data / "audio_feature"), "--split_file", split_file]
    results = out / f"{name}.json"  # name: a results file's stem
    inference_rvos.main(infer_argv + data_argv + ["--save_path", str(results)]
                        + (["--visualize", visualize] if visualize else [])
                        + (["--rvos_wav_path", str(data / "audio_wav"), "--save_video", videos] if videos else []))
    metrics = evaluate_rvos(results, data, SPLIT, split_file)
    shuffled_results = out / f"{name}_audio_shuffled.json"
    with tempfile.TemporaryDirectory(prefix=".audio_shuffled.", dir=out) as shuffled_dir:
        mapping = write_shuffled_audio(data, test_videos(data), data / "audio_feature", Path(shuffled_dir), seed=seed)
        inference_rvos.main(infer_argv + data_argv + ["--save_path", str(shuffled_results),
                                                      "--rvos_audio_path", shuffled_dir])
    shuffled = evaluate_rvos(shuffled_results, data, SPLIT, split_file)
    return {"J": metrics["J"], "F": metrics["F"], "J&F": metrics["J&F"], "J&F_audio_shuffled": shuffled["J&F"],
            "J_audio_shuffled": shuffled["J"], "F_audio_shuffled": shuffled["F"],
            "num_videos": len(mapping), "num_expressions": sum(len(m) for m in mapping.values()),
            "audio_shuffled_from": mapping}


def listening_conditions(infer_argv: List[str], data: Path, unseen_data: Path, out: Path,
                         threads: int) -> Dict[str, Dict[str, object]]:
    """The demo's listening conditions (`LISTENING_ARGS`) by `scripts/listening_report.py` into `out`:
    `{condition: {"label", "J&F", "deranged_J&F" (None where not measured)}}`."""
    listening_report(["--out", str(out), "--unseen_data", str(unseen_data), "--threads", str(threads),
                      "--title", "make demo", *LISTENING_ARGS, *infer_argv,
                      "--rvos_wav_path", str(data / "audio_wav")])
    report = json.loads((out / REPORT_NAME).read_text())
    return {name: {"label": entry["label"], "J&F": entry["J&F"],
                   "deranged_J&F": entry["deranged"]["J&F"] if entry.get("deranged") else None}
            for name, entry in report["conditions"].items()}


def epoch_seconds(log_path: Path) -> Dict[str, float]:
    """Seconds spent in the warm-up and the main epochs, from the training log's JSON lines."""
    totals = {"warmup": 0.0, "train": 0.0}
    for line in log_path.read_text().splitlines():
        record = json.loads(line)
        totals["warmup" if record.get("stage") == "warmup" else "train"] += record.get("epoch_seconds", 0.0)
    return totals


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, object]:
    """Run every stage; returns the metrics written to `--out/metrics.json`."""
    options, overrides = get_parser().parse_known_args(argv)
    data, out = options.data, options.out
    new_seed_data = options.new_seed_data or data.with_name(data.name + NEW_SEED_SUFFIX)
    unseen_data = options.unseen_data or data.with_name(data.name + UNSEEN_SUFFIX)
    overrides = (QUICK_OVERRIDES if options.quick else []) + list(overrides)
    # one command line for both: each stage keeps its own options
    base_argv = own_argv(model_args(options.config, data, out, overrides), inference_rvos.get_parser(),
                         train.get_parser())
    train_argv = own_argv(training_args(options.config, data, out, overrides), train.get_parser(),
                          inference_rvos.get_parser())
    train.parse(train_argv)  # a bad option fails here, before any work
    inference_rvos.parse(base_argv)
    if options.threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {options.threads}")
    set_cpu_threads(options.threads)
    out.mkdir(parents=True, exist_ok=True)
    stages: Dict[str, float] = {}
    start_all = time.time()
    data_config = QUICK_DATA if options.quick else DEMO_DATA

    start = time.time()
    made = generate(data, data_config)
    made_new = generate(new_seed_data, new_seed_config(data_config))
    made_unseen = generate(unseen_data, unseen_voices_config(data_config))
    stages["data"] = time.time() - start
    report("data", stages["data"], path=str(data), generated=made, new_seed_path=str(new_seed_data),
           new_seed_generated=made_new, unseen_path=str(unseen_data), unseen_generated=made_unseen)

    start = time.time()
    args = train.parse(train_argv)
    train.train(args)
    stages["train"] = time.time() - start
    epochs = epoch_seconds(out / LOG_NAME)
    plot_logs([out / LOG_NAME], out / CURVES_NAME, labels=["make demo"])
    report("warmup", epochs["warmup"], videos=args.warmup_subset, epochs=args.warmup_epochs)
    report("train", stages["train"], epochs=args.epochs, warmup_seconds=round(epochs["warmup"], 2),
           checkpoint=str(out / LATEST_CHECKPOINT))

    infer_argv = base_argv + ["--model_path", str(out / LATEST_CHECKPOINT)]
    start = time.time()
    held_out = infer_and_evaluate(infer_argv, data, out, Path(RESULTS_NAME).stem, args.seed,
                                  visualize=str(out / VIS_DIR), videos=str(out / VIDEOS_DIR))
    stages["evaluate"] = time.time() - start
    report("evaluate", stages["evaluate"], **{k: round(held_out[k], 4) for k in SCORE_KEYS})

    start = time.time()
    new_seed = infer_and_evaluate(infer_argv, new_seed_data, out, Path(NEW_SEED_RESULTS_NAME).stem, args.seed)
    stages["new_seed"] = time.time() - start
    report("new_seed", stages["new_seed"], **{k: round(new_seed[k], 4) for k in SCORE_KEYS})

    start = time.time()
    probe_args = inference_rvos.parse(infer_argv)
    model, postprocessors, _, _ = load_model_for_inference(probe_args)
    listening = probe(model, postprocessors["segm"], split_jobs(probe_args)[:PROBE_VIDEOS], args.num_frames,
                      inference_scale(probe_args), args.device)
    stages["probe"] = time.time() - start
    report("probe", stages["probe"], **{k: round(v, 4) for k, v in listening["summary"].items()})

    start = time.time()
    conditions = listening_conditions(infer_argv, data, unseen_data, out / LISTENING_DIR, options.threads)
    stages["listening"] = time.time() - start
    report("listening", stages["listening"], **{name: round(c["J&F"], 4) for name, c in conditions.items()})

    stages["total"] = time.time() - start_all
    summary = {
        **{k: v for k, v in held_out.items()},
        "new_seed": {k: new_seed[k] for k in (*SCORE_KEYS, "num_videos", "num_expressions")},
        "probe": listening["summary"],
        "listening": conditions,
        "quick": options.quick, "config": str(options.config), "overrides": list(overrides),
        "stage_seconds": {k: round(v, 2) for k, v in {**stages, "warmup": epochs["warmup"]}.items()},
        "machine": {"cpus": available_cpus(), "platform": platform.platform()},
    }
    atomic_json_dump(summary, out / METRICS_NAME, indent=1)
    report("total", stages["total"], metrics=str(out / METRICS_NAME),
           **{k: round(summary[k], 4) for k in SCORE_KEYS})
    return summary


if __name__ == "__main__":
    sys.exit(run_main(main))
