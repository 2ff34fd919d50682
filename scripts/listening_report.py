"""How one checkpoint listens: J&F in each listening condition, each against its deranged-recordings control.

    python scripts/listening_report.py --out output/demo/report --config configs/demo.yaml \
        --model_path output/demo/checkpoint.pth --ytvos_path data/demo --rvos_wav_path data/demo/audio_wav \
        --split_file data/demo/test_videos.txt [--unseen_data data/demo_unseen] [--conditions clean,white,room]
    python scripts/listening_report.py --out output/comparison --compare "faithful=output/a/report/report.json" \
        "robust=output/b/report/report.json"
    python scripts/listening_report.py --out output/seeds --seeds 0 1 2 --train_config configs/demo.yaml \
        --train_data data/demo [training overrides, e.g. --epochs 2]

Conditions (`--conditions`, groups separated by commas), each one Ref-YouTube-VOS inference of the videos of
`--split_file` (`inference_rvos.run`, the model loaded once) and its J, F and J&F (`scripts/evaluate_rvos.py`):

- clean: the split's recordings (`--rvos_wav_path`) as they are, the "training voices";
- unseen: the same videos spoken by voices never heard in training, the recordings of `--unseen_data ROOT`
  (ROOT/audio_wav; made by `scripts/make_demo_data.py --num_train_videos 0 --speakers varied
  --held_out_speakers unseen` with the seed and counts of the data; its expressions must be the split's);
- white, babble (and pink, not run by default): the noise at each of `--snrs` dB, and the noise alone
  (`--audio_snr_db -inf`: no speech left, the level of a model that hears nothing of the words);
- room: a simulated room of each reverberation time of `--rt60s` seconds;
- band: each band of `--bands` (telephone: 300-3400 Hz);
- speed: each playback speed of `--speeds`.

Every condition also runs with each video's recordings deranged among its expressions (the draw of
`scripts/demo.py`'s shuffled audio, seeded by `--seed`; copies in `--out/deranged_wav/`), in the same
condition: the level of a model that hears the other object's name. `--deranged clean` runs this control for
the clean and unseen conditions only. The noise, the rooms and the derangement are seeded by `--seed`: two
checkpoints reported with the same seed hear the same recordings.

`--out` gets `report.json` (written after every condition; `--resume` reuses the conditions a report with
the same settings holds), `report.md` (condition | J&F | deranged | gap), `report.png` (J&F against the SNR;
the other conditions as bars with their deranged levels) and `results/<condition>.json`. `--compare
LABEL=REPORT_JSON ...` draws several reports side by side (`report_comparison.png`, `report_comparison.md`);
it also reads the `sweep.json` of `scripts/noise_sweep.py`, this tool's earlier version. `--seeds S ...` trains
`--train_config` on `--train_data` (the layout of `scripts/make_demo_data.py`) once per seed into
`--out/seed<S>/` (`main.main`; every other option overrides the config), reports each run there and writes
`seeds.json` and `seeds.md`: mean, min, max and spread (max - min) of every condition over the seeds.

Every other option goes to the inference parser of inference_rvos.py (training options are left out); the listening
options (`--audio_noise`, `--audio_rt60`, ...) are this report's to set. `--wavelet_threshold` must be the
value the model was trained with (a warning says when the checkpoint's training args stored another).
"""
import argparse
import json
import math
import shutil
import sys
import time
from copy import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

import inference_rvos
import engine.run as train
from datasets.audio.noise import NOISE_TYPES
from datasets.audio.perturb import BANDS, parse_band
from datasets.ytvos import TEST_PART, resolve_split_file, split_paths
from datasets.ytvos_format import read_meta_expressions
from engine.checkpoint import LATEST_CHECKPOINT
from engine.inference import load_model_for_inference
from inference_rvos import VideoJob
from scripts.demo_args import derangement, model_args
from scripts.evaluate_rvos import evaluate_rvos
from util.config import ArgumentParser, freeze, non_negative_int, own_argv, positive_float
from util.errors import OptionError, run_main
from util.misc import atomic_json_dump, atomic_write, set_cpu_threads
from util.reporting import log_json
from util.weights import load_weights_file

REPORT_NAME, TABLE_NAME, PLOT_NAME = "report.json", "report.md", "report.png"
COMPARISON_PLOT_NAME, COMPARISON_TABLE_NAME = "report_comparison.png", "report_comparison.md"
SEEDS_NAME, SEEDS_TABLE_NAME = "seeds.json", "seeds.md"
RESULTS_DIR = "results"
DERANGED_DIR = "deranged_wav"  # --out/deranged_wav/<voices>/: each video's recordings deranged
DERANGED_SUFFIX = "_deranged"  # results/<condition>_deranged.json
SEED_DIR = "seed{seed}"
RECORDINGS_DIR = "audio_wav"  # the recordings of a dataset root (scripts/make_demo_data.py)
TRAINING_VOICES, UNSEEN_VOICES = "training", "unseen"

CLEAN, UNSEEN, ROOM, BAND, SPEED = "clean", "unseen", "room", "band", "speed"
GROUPS = (CLEAN, UNSEEN, *NOISE_TYPES, ROOM, BAND, SPEED)
DEFAULT_GROUPS = (CLEAN, UNSEEN, "white", "babble", ROOM, BAND, SPEED)  # unseen only with --unseen_data
LEVEL_GROUPS = (CLEAN, UNSEEN, ROOM, BAND, SPEED)  # the bar panel; the noise groups have the SNR panel
CONTROLLED_GROUPS = (CLEAN, UNSEEN)  # what `--deranged clean` controls
DERANGED_MODES = ("all", "clean")
DEFAULT_SNRS = (20.0, 10.0, 5.0, 0.0, -5.0)
DEFAULT_RT60S = (0.3, 0.6, 1.0)
DEFAULT_BANDS = ("telephone",)
DEFAULT_SPEEDS = (0.8, 1.2)
NOISE_ALONE_DB = -math.inf
METRICS = ("J", "F", "J&F")
# The inference options each condition sets; given on the command line they would be overridden silently.
LISTENING_OPTIONS = ("audio_noise", "audio_snr_db", "audio_rt60", "audio_band", "audio_speed")
# Inference arguments that do not change what a pass measures (a resumed report may differ in them).
UNMEASURED_ARGS = ("save_path", "png_dir", "visualize", "resume_results", "debug", "config", "output_dir",
                   "overwrite")
DEFAULT_THREADS = 1  # as scripts/demo.py: on a busy 2-core machine more threads wait on each other

PANEL_SIZE = (6.4, 4.4)  # inches, one panel; the picture is one or two panels wide, the legend below them
LEGEND_COLUMNS = 3
LEGEND_ROW_INCHES = 0.2  # the height a row of the legend adds to the picture
FIGURE_DPI = 150
BAR_GROUP_WIDTH = 0.8  # of the unit between two conditions, shared by the reports compared
BAR_FILL = 0.9  # of a bar's share of the group: a gap between the reports' bars
DERANGED_MARKER_POINTS = 16.0  # width of the deranged level's marker on a single report's bar
NOISE_STYLES = {"white": "-", "pink": "-.", "babble": "--"}
NOISE_MARKERS = {"white": "o", "pink": "^", "babble": "s"}
NOISE_ALONE_STYLE = (0, (1, 3))  # sparse dots: a level, not a measured curve
DERANGED_ALPHA = 0.55


# ----------------------------------------------------------------------------- options
def finite_float(text: str) -> float:
    """An argparse type: a finite number (the noise alone, -inf, is always measured)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of dB, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number of dB (the noise alone, -inf, is always "
                                         f"measured), got {text!r}")
    return value


def group_list(text: str) -> List[str]:
    """An argparse type: condition groups separated by commas, each one of `GROUPS`."""
    groups = [group.strip() for group in text.split(",") if group.strip()]
    unknown = [group for group in groups if group not in GROUPS]
    if unknown or not groups:
        raise argparse.ArgumentTypeError(f"expected groups among {','.join(GROUPS)} separated by commas, "
                                         f"got {text!r}")
    return list(dict.fromkeys(groups))


def band_option(text: str) -> str:
    """An argparse type: a band name of `datasets.audio.perturb.BANDS` or LOW-HIGH in Hz."""
    try:
        parse_band(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def get_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: an inference option must never be taken for an abbreviation of one of these
    parser = ArgumentParser(
        description=__doc__.split("\n\n")[0], allow_abbrev=False,
        epilog="Any other option goes to the inference parser (inference_rvos.py), e.g. --config configs/demo.yaml "
               "--model_path CKPT --ytvos_path DATA --rvos_wav_path DATA/audio_wav --split_file DATA/test_videos.txt "
               "(with --seeds: to the training parser, overriding --train_config)")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for report.json, report.md, report.png and results/")
    parser.add_argument("--conditions", type=group_list, default=None, metavar="GROUP,...",
                        help=f"condition groups to run, among {','.join(GROUPS)} "
                             f"(default: {','.join(DEFAULT_GROUPS)}; unseen only with --unseen_data)")
    parser.add_argument("--unseen_data", type=Path, default=None, metavar="ROOT",
                        help="the held-out videos spoken by unseen voices: a dataset root whose ROOT/audio_wav "
                             "holds their recordings (the unseen condition)")
    parser.add_argument("--snrs", type=finite_float, nargs="+", default=list(DEFAULT_SNRS),
                        help="signal-to-noise ratios in dB of the noise conditions (default: %(default)s)")
    parser.add_argument("--rt60s", type=positive_float, nargs="+", default=list(DEFAULT_RT60S),
                        help="reverberation times in seconds of the room conditions (default: %(default)s)")
    parser.add_argument("--bands", type=band_option, nargs="+", default=list(DEFAULT_BANDS),
                        help=f"bands of the band conditions: {', '.join(BANDS)} or LOW-HIGH in Hz "
                             f"(default: %(default)s)")
    parser.add_argument("--speeds", type=positive_float, nargs="+", default=list(DEFAULT_SPEEDS),
                        help="playback speeds of the speed conditions (default: %(default)s)")
    parser.add_argument("--deranged", choices=DERANGED_MODES, default="all",
                        help="the deranged-recordings control for every condition (all) or only for the clean "
                             "and unseen ones (clean, cheaper)")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the conditions --out/report.json already holds (same checkpoint and settings); "
                             "with --seeds also a seed's finished training")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch CPU threads")
    parser.add_argument("--title", default="", help="title of the picture (default: the checkpoint's path)")
    parser.add_argument("--compare", nargs="+", metavar="LABEL=REPORT_JSON", default=None,
                        help="draw these reports side by side (--out/report_comparison.png and .md); runs no "
                             "inference")
    parser.add_argument("--seeds", type=non_negative_int, nargs="+", default=None,
                        help="train one model per seed (--train_config on --train_data) and report each")
    parser.add_argument("--train_config", type=Path, default=None, help="the training config of --seeds")
    parser.add_argument("--train_data", type=Path, default=None,
                        help="the dataset root of --seeds (the layout of scripts/make_demo_data.py)")
    return parser


def check_options(options: argparse.Namespace) -> None:
    """OptionErrors for combinations argparse cannot see."""
    if options.threads < 1:
        raise OptionError(f"--threads must be >= 1, got {options.threads}")
    if options.compare is not None and options.seeds is not None:
        raise OptionError("--compare draws existing reports and --seeds trains new ones: pass one of them")
    if options.seeds is None and (options.train_config or options.train_data):
        raise OptionError("--train_config and --train_data belong to --seeds")
    if options.seeds is not None:
        if not (options.train_config and options.train_data):
            raise OptionError("--seeds trains one model per seed: pass --train_config CONFIG and --train_data ROOT")
        if len(set(options.seeds)) != len(options.seeds):
            raise OptionError(f"--seeds repeats a seed: {' '.join(map(str, options.seeds))}")
    if options.conditions is not None and UNSEEN in options.conditions and options.unseen_data is None:
        raise OptionError("the unseen condition needs --unseen_data ROOT (the held-out videos spoken by unseen voices)")
    if options.unseen_data is not None and options.conditions is not None and UNSEEN not in options.conditions:
        raise OptionError(f"--unseen_data is heard in the unseen condition only; add it to --conditions "
                          f"{','.join(options.conditions)}")
    for name in ("snrs", "rt60s", "bands", "speeds"):
        values = getattr(options, name)
        if len(set(values)) != len(values):
            raise OptionError(f"--{name} repeats a value: {' '.join(map(str, values))}")


def chosen_groups(options: argparse.Namespace) -> List[str]:
    """`--conditions`, or the default groups (unseen only when `--unseen_data` is given)."""
    if options.conditions is not None:
        return list(options.conditions)
    return [group for group in DEFAULT_GROUPS if group != UNSEEN or options.unseen_data is not None]


# ----------------------------------------------------------------------------- conditions
@dataclass(frozen=True)
class Condition:
    """One listening condition: what every recording goes through before its features."""

    name: str  # results/<name>.json and the key in report.json
    label: str  # its row in the table and the picture
    group: str  # one of GROUPS
    voices: str = TRAINING_VOICES  # whose recordings: the split's (training voices) or --unseen_data's
    noise: str = ""
    snr_db: Optional[float] = None  # NOISE_ALONE_DB: the noise alone
    rt60: Optional[float] = None
    band: str = ""
    speed: Optional[float] = None

    def inference_args(self, args: argparse.Namespace) -> argparse.Namespace:
        """A copy of the inference arguments `args` in this condition."""
        return freeze(args, audio_noise=self.noise, audio_snr_db=self.snr_db, audio_rt60=self.rt60,
                      audio_band=self.band, audio_speed=self.speed)

    def describe(self) -> Dict[str, object]:
        """What report.json records of the condition (JSON: the noise alone is `noise_alone`, not -inf)."""
        record: Dict[str, object] = {"group": self.group, "voices": self.voices}
        if self.noise:
            alone = self.snr_db == NOISE_ALONE_DB
            record.update(noise=self.noise, snr_db=None if alone else self.snr_db, noise_alone=alone)
        for key in ("rt60", "band", "speed"):
            if getattr(self, key):
                record[key] = getattr(self, key)
        return record


def band_label(band: str) -> str:
    if band in BANDS:
        low, high = BANDS[band]
        return f"{band} band ({low:g}-{high:g} Hz)"
    return f"band {band} Hz"


def snr_name(noise: str, snr_db: float) -> str:
    return f"{noise}_alone" if snr_db == NOISE_ALONE_DB else f"{noise}_{snr_db:+g}dB"


def build_conditions(groups: Sequence[str], snrs: Sequence[float], rt60s: Sequence[float], bands: Sequence[str],
                     speeds: Sequence[float]) -> List[Condition]:
    """The conditions of `groups`, in the order of `GROUPS` (a noise's SNRs as given, then the noise alone)."""
    conditions = []
    for group in (g for g in GROUPS if g in groups):
        if group == CLEAN:
            conditions.append(Condition(CLEAN, "training voices", CLEAN))
        elif group == UNSEEN:
            conditions.append(Condition(UNSEEN, "unseen voices", UNSEEN, voices=UNSEEN_VOICES))
        elif group in NOISE_TYPES:
            for snr_db in (*snrs, NOISE_ALONE_DB):
                label = f"{group} noise alone" if snr_db == NOISE_ALONE_DB else f"{group} noise {snr_db:g} dB"
                conditions.append(Condition(snr_name(group, snr_db), label, group, noise=group, snr_db=float(snr_db)))
        elif group == ROOM:
            conditions += [Condition(f"room_{rt60:g}s", f"room RT60 {rt60:g} s", ROOM, rt60=float(rt60))
                           for rt60 in rt60s]
        elif group == BAND:
            conditions += [Condition(f"band_{band}", band_label(band), BAND, band=band) for band in bands]
        else:
            conditions += [Condition(f"speed_x{speed:g}", f"speed x{speed:g}", SPEED, speed=float(speed))
                           for speed in speeds]
    return conditions


# ----------------------------------------------------------------------------- recordings
def relocated(job: VideoJob, folder: Path) -> VideoJob:
    """`job` with every recording read from `folder` (same file names)."""
    return replace(job, expressions=[replace(e, audio_path=folder / e.audio_path.name) for e in job.expressions])


def write_deranged_recordings(jobs: Sequence[VideoJob], out_dir: Path, seed: int
                              ) -> Tuple[List[VideoJob], Dict[str, Dict[str, str]], List[str]]:
    """Copy each video's recordings into `out_dir` so that every expression gets another expression's recording.

    The draw of scripts/demo.py's `write_shuffled_audio` (one generator seeded by `seed`, videos in order,
    exp_ids sorted): with the same seed the same derangement. Returns (the jobs reading `out_dir`, {video:
    {exp_id: exp_id whose recording it gets}}, videos with a single expression, which keep their own).
    """
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    deranged, mapping, kept = [], {}, []
    for job in jobs:
        by_id = {expression.exp_id: expression for expression in job.expressions}
        exp_ids = sorted(by_id, key=str)
        if len(exp_ids) < 2:
            kept.append(job.name)
            sources = {exp_id: exp_id for exp_id in exp_ids}
        else:
            sources = {exp_id: exp_ids[source] for exp_id, source in zip(exp_ids, derangement(len(exp_ids), rng))}
            mapping[job.name] = sources
        for exp_id, source in sources.items():
            shutil.copyfile(by_id[source].audio_path, out_dir / by_id[exp_id].audio_path.name)
        deranged.append(relocated(job, out_dir))
    return deranged, mapping, kept


def unseen_jobs(jobs: Sequence[VideoJob], root: Path, args: argparse.Namespace) -> List[VideoJob]:
    """The jobs with the recordings of `--unseen_data root` (ROOT/audio_wav), whose held-out videos must have the
    split's expressions (the same texts and objects: only the voices differ)."""
    recordings = root / RECORDINGS_DIR
    if not recordings.is_dir():
        raise OptionError(f"--unseen_data {root}: no recordings folder {recordings}")
    ours = read_meta_expressions(split_paths(args.ytvos_path, args.ytvos_split)["meta_expressions"])
    theirs = read_meta_expressions(split_paths(root, args.ytvos_split)["meta_expressions"])
    for job in jobs:
        if job.name not in theirs or theirs[job.name]["expressions"] != ours[job.name]["expressions"]:
            raise OptionError(f"--unseen_data {root}: video {job.name} is not there with the expressions of "
                              f"{args.ytvos_path} (make it with the data's seed and counts, --num_train_videos 0)")
    moved = [relocated(job, recordings) for job in jobs]
    missing = [e.audio_path for job in moved for e in job.expressions if not e.audio_path.is_file()]
    if missing:
        raise FileNotFoundError(f"--unseen_data {root}: recording not found: {missing[0]}")
    return moved


def trained_wavelet_threshold(model_path: str) -> Optional[float]:
    """The `--wavelet_threshold` a training checkpoint stored in its args (None when it stores none)."""
    checkpoint = load_weights_file(model_path)
    stored = checkpoint.get("args") if isinstance(checkpoint, dict) else None
    stored = vars(stored) if isinstance(stored, argparse.Namespace) else stored
    value = stored.get("wavelet_threshold") if isinstance(stored, dict) else None
    return None if value is None else float(value)


# ----------------------------------------------------------------------------- one report
def measured_args(args: argparse.Namespace) -> Dict[str, object]:
    """The inference arguments that decide what a pass measures, as JSON (what `--resume` compares)."""
    return json.loads(json.dumps({k: v for k, v in sorted(vars(args).items()) if k not in UNMEASURED_ARGS},
                                 default=str))


def checkpoint_stamp(path: str) -> Dict[str, int]:
    """Size and modification time of the checkpoint: a retrained file is another model."""
    stat = Path(path).stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def read_previous(path: Path) -> Optional[dict]:
    """The report.json an earlier run left in --out (None when there is none)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise OptionError(f"--resume: {path} is not JSON ({error}); rerun without --resume") from None


def reusable(previous: Optional[dict], report: dict) -> Dict[str, dict]:
    """The conditions of `previous` (an earlier report.json in --out) that `--resume` may keep; an OptionError
    when it was made with another checkpoint, other inference options, other unseen recordings or another
    derangement."""
    if previous is None:
        return {}
    differs = [what for key, what in (("checkpoint", "checkpoint file"), ("inference_args", "inference options"))
               if previous.get(key) != report[key]]
    if previous.get("unseen_wav_path") and report["unseen_wav_path"] \
            and previous["unseen_wav_path"] != report["unseen_wav_path"]:
        differs.append("--unseen_data")
    previous_from = previous.get("deranged_from", {})
    if any(previous_from[voices] != report["deranged_from"][voices]
           for voices in previous_from.keys() & report["deranged_from"].keys()):
        differs.append("derangement")
    if differs:
        raise OptionError(f"--resume: {report['out']}/{REPORT_NAME} was made with another {', '.join(differs)}; "
                          f"rerun without --resume or into another --out")
    return previous.get("conditions", {})


def run_pass(args: argparse.Namespace, jobs: Sequence[VideoJob], model: torch.nn.Module,
             postprocessors: Dict[str, torch.nn.Module], name: str, out: Path,
             split_file: Optional[Path], model_rate: int) -> Dict[str, float]:
    """Infer `jobs` with `model` (in the listening condition `args` carries; `model_rate` the rate of its training
    features), write results/<name>.json, return its J, F and J&F."""
    pass_args = freeze(args, save_path=str(out / RESULTS_DIR / f"{name}.json"), png_dir="", visualize="",
                       resume_results=False)
    entries = inference_rvos.run(pass_args, jobs, model=model, postprocessors=postprocessors, progress=name,
                                 model_rate=model_rate)
    metrics = evaluate_rvos(entries, args.ytvos_path, args.ytvos_split, split_file)
    return {key: float(metrics[key]) for key in METRICS}


def measure(condition: Condition, controlled: bool, args: argparse.Namespace, jobs: Dict[str, List[VideoJob]],
            deranged_jobs: Dict[str, List[VideoJob]], model: torch.nn.Module,
            postprocessors: Dict[str, torch.nn.Module], out: Path, split_file: Optional[Path],
            model_rate: int) -> Dict[str, object]:
    """One condition's entry of report.json: its J, F, J&F and (when `controlled`) those of its deranged control
    (`model_rate`: the rate of the model's training features)."""
    start = time.time()
    condition_args = condition.inference_args(args)
    entry: Dict[str, object] = {"label": condition.label, **condition.describe()}
    entry.update(run_pass(condition_args, jobs[condition.voices], model, postprocessors, condition.name, out,
                          split_file, model_rate))
    entry["deranged"] = entry["gap"] = None
    if controlled:
        entry["deranged"] = run_pass(condition_args, deranged_jobs[condition.voices], model, postprocessors,
                                     condition.name + DERANGED_SUFFIX, out, split_file, model_rate)
        entry["gap"] = entry["J&F"] - entry["deranged"]["J&F"]
    entry["seconds"] = round(time.time() - start, 2)
    return entry


def listening_report(options: argparse.Namespace, model_argv: Sequence[str]) -> dict:
    """Every condition of one checkpoint; writes report.json after each, report.md and report.png at the end.
    Returns the report."""
    args = inference_rvos.parse(own_argv(list(model_argv), inference_rvos.get_parser(), train.get_parser()))
    given = [f"--{name}" for name in LISTENING_OPTIONS if getattr(args, name) not in (None, "")]
    if given:
        raise OptionError(f"{', '.join(given)}: the listening report sets the listening options per condition "
                          f"(--conditions, --snrs, --rt60s, --bands, --speeds); leave them out")
    if not args.rvos_wav_path:
        raise OptionError("the conditions change recordings: pass --rvos_wav_path (the <video>_<exp_id>.wav folder)")
    groups = chosen_groups(options)
    conditions = build_conditions(groups, options.snrs, options.rt60s, options.bands, options.speeds)
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    split_file = resolve_split_file(args.split_file, args.ytvos_path, TEST_PART)
    jobs = {TRAINING_VOICES: inference_rvos.split_jobs(args)}
    if not jobs[TRAINING_VOICES]:
        raise OptionError("no videos to infer")
    if UNSEEN in groups:
        jobs[UNSEEN_VOICES] = unseen_jobs(jobs[TRAINING_VOICES], options.unseen_data, args)
    model, postprocessors, _, model_rate = load_model_for_inference(args)
    trained = trained_wavelet_threshold(args.model_path)
    if trained is not None and trained != args.wavelet_threshold:
        print(f"warning: {args.model_path} was trained with --wavelet_threshold {trained}, this report uses "
              f"{args.wavelet_threshold} (the threshold is not stored in the weights)", file=sys.stderr)
    controlled = {c.name: options.deranged == "all" or c.group in CONTROLLED_GROUPS for c in conditions}
    deranged_jobs, deranged_from, kept_own = {}, {}, {}
    for voices in sorted({c.voices for c in conditions if controlled[c.name]}):
        deranged_jobs[voices], deranged_from[voices], kept_own[voices] = write_deranged_recordings(
            jobs[voices], out / DERANGED_DIR / voices, args.seed)
    start = time.time()
    report = {
        "title": options.title or args.model_path, "out": str(out),
        "model_path": args.model_path, "checkpoint": checkpoint_stamp(args.model_path),
        "ytvos_path": args.ytvos_path, "split_file": str(split_file) if split_file else "",
        "rvos_wav_path": args.rvos_wav_path,
        "unseen_wav_path": str(options.unseen_data / RECORDINGS_DIR) if UNSEEN in groups else "",
        "seed": args.seed, "wavelet_threshold": args.wavelet_threshold, "trained_wavelet_threshold": trained,
        "num_videos": len(jobs[TRAINING_VOICES]),
        "num_expressions": sum(len(job.expressions) for job in jobs[TRAINING_VOICES]),
        "groups": groups, "deranged_mode": options.deranged,
        "deranged_from": deranged_from, "deranged_kept_own": kept_own,
        "inference_args": measured_args(args), "conditions": {},
    }
    earlier = reusable(read_previous(out / REPORT_NAME) if options.resume else None, report)
    for condition in conditions:
        entry = earlier.get(condition.name)
        reused = (entry is not None and entry.get("label") == condition.label
                  and all(entry.get(k) == v for k, v in condition.describe().items())
                  and (entry.get("deranged") is not None or not controlled[condition.name]))
        if not reused:
            entry = measure(condition, controlled[condition.name], args, jobs, deranged_jobs, model, postprocessors,
                            out, split_file, model_rate)
        report["conditions"][condition.name] = entry
        report["seconds"] = round(time.time() - start, 2)
        atomic_json_dump(report, out / REPORT_NAME, indent=1)
        log_json({"condition": condition.name, "label": condition.label, "reused": reused,
                  **{key: round(entry[key], 4) for key in METRICS},
                  "deranged_J&F": None if entry["deranged"] is None else round(entry["deranged"]["J&F"], 4),
                  "seconds": entry["seconds"]})
    table = report_table(report)
    atomic_write(out / TABLE_NAME, lambda tmp: Path(tmp).write_text(table))
    plot_reports([("", report)], out / PLOT_NAME, report["title"])
    print(table, flush=True)
    print(f"report written to {out / REPORT_NAME}, {out / TABLE_NAME} and {out / PLOT_NAME}", file=sys.stderr)
    return report


# ----------------------------------------------------------------------------- tables
def score(value: Optional[float]) -> str:
    """Three decimals (no "-0.000"), or a dash for a figure not measured."""
    return "–" if value is None else f"{round(value, 3) + 0.0:.3f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, the first column left-aligned and the others (numbers) right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def deranged_score(entry: Optional[dict]) -> Optional[float]:
    return None if entry is None or entry.get("deranged") is None else entry["deranged"]["J&F"]


def report_table(report: dict) -> str:
    """report.md: one row per condition (J&F, its deranged control, the gap between them)."""
    rows = [[entry["label"], score(entry["J&F"]), score(deranged_score(entry)), score(entry.get("gap"))]
            for entry in report["conditions"].values()]
    intro = (f"# Listening report: {report['title']}\n\n"
             f"{report['num_videos']} videos, {report['num_expressions']} expressions "
             f"({report['split_file'] or 'every video of the split'}); checkpoint `{report['model_path']}`, "
             f"seed {report['seed']}. Deranged: the same condition with each video's recordings deranged among its "
             f"expressions; gap: J&F - deranged.\n\n")
    return intro + markdown_table(["condition", "J&F", "deranged", "gap"], rows)


def condition_order(entry: dict) -> Tuple[int, int, float]:
    """Where a condition's row goes: by group (`GROUPS`), a noise's SNRs from the highest, its noise alone last."""
    if entry.get("noise"):
        alone = bool(entry["noise_alone"])
        return GROUPS.index(entry["group"]), int(alone), 0.0 if alone else -entry["snr_db"]
    return GROUPS.index(entry["group"]), 0, 0.0


def ordered_conditions(reports: Sequence[Tuple[str, dict]]) -> Dict[str, str]:
    """{condition name: label} over all `reports`, by `condition_order` (else in the order they first appear)."""
    entries: Dict[str, dict] = {}
    for _, report in reports:
        for name, entry in report["conditions"].items():
            entries.setdefault(name, entry)
    return {name: entries[name]["label"] for name in sorted(entries, key=lambda name: condition_order(entries[name]))}


def comparison_table(reports: Sequence[Tuple[str, dict]]) -> str:
    """One row per condition, each report's J&F and deranged level, and every later report's J&F minus the first's."""
    header = ["condition"]
    for label, _ in reports:
        header += [f"{label} J&F", f"{label} deranged"]
    first_label = reports[0][0]
    header += [f"{label} - {first_label}" for label, _ in reports[1:]]
    rows = []
    for name, condition_label in ordered_conditions(reports).items():
        entries = [report["conditions"].get(name) for _, report in reports]
        row = [condition_label]
        for entry in entries:
            row += [score(None if entry is None else entry["J&F"]), score(deranged_score(entry))]
        for entry in entries[1:]:
            both = entry is not None and entries[0] is not None
            row.append(f"{entry['J&F'] - entries[0]['J&F']:+.3f}" if both else "–")
        rows.append(row)
    return markdown_table(header, rows)


# ----------------------------------------------------------------------------- pictures
def noise_groups(reports: Sequence[Tuple[str, dict]]) -> List[str]:
    present = {entry["group"] for _, report in reports for entry in report["conditions"].values()}
    return [noise for noise in NOISE_TYPES if noise in present]


def level_conditions(reports: Sequence[Tuple[str, dict]]) -> Dict[str, str]:
    return {name: label for name, label in ordered_conditions(reports).items()
            if any(report["conditions"].get(name, {}).get("group") in LEVEL_GROUPS for _, report in reports)}


def draw_snr_panel(axes, reports: Sequence[Tuple[str, dict]], colours: Sequence[str]) -> None:
    """J&F against the SNR, one line per noise type (its deranged control thin and faded, its noise alone a
    horizontal level), and the clean level. One report: a colour per noise type; several: a colour per report."""
    single = len(reports) == 1
    for index, (label, report) in enumerate(reports):
        prefix = f"{label}: " if label else ""
        entries = list(report["conditions"].values())
        for noise_index, noise in enumerate(noise_groups(reports)):
            colour = colours[(noise_index if single else index) % len(colours)]
            points = sorted((e for e in entries if e["group"] == noise and not e["noise_alone"]),
                            key=lambda e: e["snr_db"])
            if points:
                axes.plot([e["snr_db"] for e in points], [e["J&F"] for e in points], NOISE_STYLES[noise],
                          color=colour, marker=NOISE_MARKERS[noise], label=f"{prefix}{noise} noise")
            deranged = [(e["snr_db"], e["deranged"]["J&F"]) for e in points if e["deranged"] is not None]
            if deranged:
                axes.plot(*zip(*deranged), NOISE_STYLES[noise], color=colour, marker="x", linewidth=1.0,
                          alpha=DERANGED_ALPHA, label=f"{prefix}{noise} noise, deranged")
            alone = next((e for e in entries if e["group"] == noise and e["noise_alone"]), None)
            if alone is not None:
                axes.axhline(alone["J&F"], color=colour, linestyle=NOISE_ALONE_STYLE, linewidth=1.2,
                             label=f"{prefix}{noise} noise alone, no speech ({alone['J&F']:.3f})")
        clean = report["conditions"].get(CLEAN)
        if clean is not None:
            axes.axhline(clean["J&F"], color="black" if single else colours[index % len(colours)], linestyle=":",
                         linewidth=1.2, label=f"{prefix}clean ({clean['J&F']:.3f})")
    axes.set_xlabel("signal-to-noise ratio (dB)")
    axes.set_ylabel("J&F")
    axes.set_ylim(0.0, 1.0)
    axes.set_title("noisy speech", fontsize="medium")
    axes.grid(True, alpha=0.3)


def draw_level_panel(axes, reports: Sequence[Tuple[str, dict]], colours: Sequence[str]) -> None:
    """A bar of J&F per clean, unseen, room, band and speed condition (a group of bars per condition when
    several reports are compared; a single report's bars carry their value), its deranged control as a black
    marker on the bar."""
    names = level_conditions(reports)
    positions = np.arange(len(names))
    width = BAR_GROUP_WIDTH / len(reports)
    for index, (label, report) in enumerate(reports):
        entries = [report["conditions"].get(name) for name in names]
        x = positions - BAR_GROUP_WIDTH / 2 + (index + 0.5) * width
        heights = [np.nan if e is None else e["J&F"] for e in entries]
        bars = axes.bar(x, heights, width * BAR_FILL, color=colours[index % len(colours)],
                        label=f"{label}: J&F" if label else "J&F")
        if len(reports) == 1:
            axes.bar_label(bars, labels=["" if e is None else f"{e['J&F']:.2f}" for e in entries],
                           fontsize="x-small", padding=1)
        deranged = [np.nan if deranged_score(e) is None else deranged_score(e) for e in entries]
        if not np.all(np.isnan(deranged)):
            axes.plot(x, deranged, linestyle="none", marker="_", color="black", markeredgewidth=2.0,
                      markersize=DERANGED_MARKER_POINTS / len(reports),
                      label="deranged recordings" if index == len(reports) - 1 else None)
    axes.set_xticks(positions, list(names.values()), rotation=30, ha="right", rotation_mode="anchor",
                    fontsize="small")
    axes.set_ylabel("J&F")
    axes.set_ylim(0.0, 1.0)
    axes.set_title("voices, rooms, band and speed", fontsize="medium")
    axes.grid(True, axis="y", alpha=0.3)


def figure_size(panels: int, legend_entries: int) -> Tuple[float, float]:
    """Inches: `panels` panels side by side above a legend of `legend_entries` in `LEGEND_COLUMNS` columns."""
    rows = math.ceil(legend_entries / LEGEND_COLUMNS)
    return PANEL_SIZE[0] * panels, PANEL_SIZE[1] + LEGEND_ROW_INCHES * rows


def plot_reports(reports: Sequence[Tuple[str, dict]], path: Path, title: str = "") -> None:
    """The picture of one report, or of several side by side: the SNR panel when any noise condition ran, the
    bar panel when any other did, one legend below both. Written atomically as a PNG."""
    import matplotlib
    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    panels: List[Callable] = []
    if noise_groups(reports):
        panels.append(draw_snr_panel)
    if level_conditions(reports):
        panels.append(draw_level_panel)
    figure, axes = plt.subplots(1, len(panels), squeeze=False, layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    handles, labels = [], []
    for draw, panel_axes in zip(panels, axes[0]):
        draw(panel_axes, reports, colours)
        panel_handles, panel_labels = panel_axes.get_legend_handles_labels()
        handles += panel_handles
        labels += panel_labels
    figure.set_size_inches(figure_size(len(panels), len(labels)))
    figure.legend(handles, labels, loc="outside lower center", ncols=LEGEND_COLUMNS, fontsize="x-small")
    if title:
        figure.suptitle(title, fontsize="medium")
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=FIGURE_DPI))
    plt.close(figure)


# ----------------------------------------------------------------------------- comparison
def report_from_sweep(sweep: dict) -> dict:
    """A `sweep.json` of scripts/noise_sweep.py (this tool's earlier version) as a report: the clean condition
    with its deranged control, the noise at each SNR and the noise alone (no deranged control)."""
    clean = {key: sweep[CLEAN][key] for key in METRICS}
    deranged = {key: sweep["deranged"][key] for key in METRICS}
    conditions = {CLEAN: {"label": "training voices", "group": CLEAN, "voices": TRAINING_VOICES, **clean,
                          "deranged": deranged, "gap": clean["J&F"] - deranged["J&F"]}}
    for noise, points in sweep["noise"].items():
        levels = [(point["snr_db"], point) for point in points]
        if noise in sweep.get("noise_only", {}):  # absent from sweeps written before the noise alone existed
            levels.append((NOISE_ALONE_DB, sweep["noise_only"][noise]))
        for snr_db, point in levels:
            alone = snr_db == NOISE_ALONE_DB
            conditions[snr_name(noise, snr_db)] = {
                "label": f"{noise} noise alone" if alone else f"{noise} noise {snr_db:g} dB", "group": noise,
                "voices": TRAINING_VOICES, "noise": noise, "snr_db": None if alone else snr_db, "noise_alone": alone,
                **{key: point[key] for key in METRICS}, "deranged": None, "gap": None}
    return {"title": sweep.get("title", ""), "model_path": sweep.get("model_path", ""), "conditions": conditions}


def read_report(label: str, path: str) -> dict:
    """The report.json (or noise_sweep's sweep.json) of `--compare LABEL=PATH`."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise OptionError(f"--compare {label}: cannot read {path}: {error}") from None
    if isinstance(data, dict) and isinstance(data.get("conditions"), dict) and data["conditions"]:
        return data
    if isinstance(data, dict) and all(key in data for key in (CLEAN, "deranged", "noise")):
        return report_from_sweep(data)
    raise OptionError(f"--compare {label}: {path} is not a report.json (no conditions) nor a noise_sweep sweep.json")


def parse_compare(items: Sequence[str]) -> List[Tuple[str, dict]]:
    reports = []
    for item in items:
        label, separator, path = item.partition("=")
        if not separator or not label or not path:
            raise OptionError(f"--compare takes LABEL=REPORT_JSON, got {item!r}")
        reports.append((label, read_report(label, path)))
    labels = [label for label, _ in reports]
    if len(set(labels)) != len(labels):
        raise OptionError(f"--compare repeats a label: {', '.join(labels)}")
    return reports


def compare(options: argparse.Namespace) -> Dict[str, dict]:
    """The comparison picture and table of `--compare`; returns the reports by label."""
    reports = parse_compare(options.compare)
    options.out.mkdir(parents=True, exist_ok=True)
    title = options.title or " / ".join(label for label, _ in reports)
    table = f"# Listening reports compared: {title}\n\n" + comparison_table(reports)
    atomic_write(options.out / COMPARISON_TABLE_NAME, lambda tmp: Path(tmp).write_text(table))
    plot_reports(reports, options.out / COMPARISON_PLOT_NAME, title)
    print(table, flush=True)
    print(f"comparison written to {options.out / COMPARISON_PLOT_NAME} and {options.out / COMPARISON_TABLE_NAME}",
          file=sys.stderr)
    return dict(reports)


# ----------------------------------------------------------------------------- seeds
def spread(values: Sequence[float]) -> Dict[str, object]:
    """Mean, min, max and spread (max - min) of one figure over the seeds."""
    return {"values": list(values), "mean": float(np.mean(values)), "min": min(values), "max": max(values),
            "spread": max(values) - min(values)}


def seed_summary(reports: Dict[int, dict]) -> Dict[str, dict]:
    """{condition: {label, J&F, deranged, gap: spread over the seeds}} for the conditions every report holds."""
    first = next(iter(reports.values()))
    summary = {}
    for name, entry in first["conditions"].items():
        entries = [report["conditions"].get(name) for report in reports.values()]
        if any(e is None for e in entries):
            continue
        controlled = all(e["deranged"] is not None for e in entries)
        summary[name] = {"label": entry["label"], "J&F": spread([e["J&F"] for e in entries]),
                         "deranged": spread([e["deranged"]["J&F"] for e in entries]) if controlled else None,
                         "gap": spread([e["gap"] for e in entries]) if controlled else None}
    return summary


def mean_of(figure: Optional[Dict[str, object]]) -> Optional[float]:
    return None if figure is None else figure["mean"]


def seeds_table(summary: Dict[str, dict], seeds: Sequence[int]) -> str:
    """seeds.md: per condition the mean, min, max and spread of J&F, the mean deranged level and gap."""
    rows = [[s["label"], *(score(s["J&F"][key]) for key in ("mean", "min", "max", "spread")),
             score(mean_of(s["deranged"])), score(mean_of(s["gap"]))] for s in summary.values()]
    intro = f"# Listening report over seeds {' '.join(map(str, seeds))}\n\nJ&F over the seeds' models.\n\n"
    return intro + markdown_table(["condition", "J&F mean", "min", "max", "spread", "deranged mean", "gap mean"], rows)


def finished_training(folder: Path, args: argparse.Namespace) -> bool:
    """Whether `folder` holds the last epoch's checkpoint of the training `args` (same seed)."""
    path = folder / LATEST_CHECKPOINT
    if not path.is_file():
        return False
    checkpoint = load_weights_file(str(path))
    stored = checkpoint.get("args") or {}
    return checkpoint.get("epoch") == args.epochs - 1 and stored.get("seed") == args.seed


def passes_option(argv: Sequence[str], option: str) -> bool:
    """Whether `argv` sets `option` (`--name VALUE` or `--name=VALUE`)."""
    return any(a == option or a.startswith(option + "=") for a in argv)


def seed_study(options: argparse.Namespace, overrides: Sequence[str]) -> dict:
    """Train one model per seed, report each, and the spread of every condition over the seeds (seeds.json)."""
    if passes_option(overrides, "--seed"):
        raise OptionError("--seeds sets each training run's --seed; leave --seed out")
    if passes_option(overrides, "--model_path"):
        raise OptionError("--seeds reports the model it trains; leave --model_path out")
    training_parser = train.get_parser()
    reports: Dict[int, dict] = {}
    for seed in options.seeds:
        folder = options.out / SEED_DIR.format(seed=seed)
        argv = model_args(options.train_config, options.train_data, folder, overrides)
        if not passes_option(overrides, "--rvos_wav_path"):
            # trained from the recordings, as the demo is (the same features, and what --audio_augment changes)
            argv += ["--rvos_wav_path", str(options.train_data / RECORDINGS_DIR)]
        train_args = train.parse(own_argv([*argv, "--seed", str(seed)], training_parser, inference_rvos.get_parser()))
        start = time.time()
        reused = options.resume and finished_training(folder, train_args)
        if not reused:
            train.train(train_args)
        log_json({"seed": seed, "stage": "train", "reused": reused, "seconds": round(time.time() - start, 2)})
        # The report's --seed is the config's, the same for every run: each model hears the same noise, rooms
        # and derangement, so the spread is the training's.
        report_argv = [*argv, "--model_path", str(folder / LATEST_CHECKPOINT)]
        seed_options = copy(options)
        seed_options.out, seed_options.resume = folder, reused  # a model trained again is reported again
        seed_options.title = f"{options.title or options.train_config}, training seed {seed}"
        reports[seed] = listening_report(seed_options, report_argv)
    summary = seed_summary(reports)
    study = {"seeds": list(options.seeds), "train_config": str(options.train_config),
             "train_data": str(options.train_data), "overrides": list(overrides),
             "reports": {str(seed): str(options.out / SEED_DIR.format(seed=seed) / REPORT_NAME) for seed in reports},
             "conditions": summary}
    atomic_json_dump(study, options.out / SEEDS_NAME, indent=1)
    table = seeds_table(summary, options.seeds)
    atomic_write(options.out / SEEDS_TABLE_NAME, lambda tmp: Path(tmp).write_text(table))
    print(table, flush=True)
    print(f"seeds written to {options.out / SEEDS_NAME} and {options.out / SEEDS_TABLE_NAME}", file=sys.stderr)
    return study


def main(argv: Optional[Sequence[str]] = None) -> dict:
    options, rest = get_parser().parse_known_args(argv)
    check_options(options)
    if options.compare is not None:
        if rest:
            raise OptionError(f"--compare runs no inference; unexpected options {' '.join(rest)}")
        return compare(options)
    set_cpu_threads(options.threads)
    if options.seeds is not None:
        return seed_study(options, rest)
    return listening_report(options, rest)


if __name__ == "__main__":
    sys.exit(run_main(main))
