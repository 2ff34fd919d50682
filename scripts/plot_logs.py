"""Training curves, as DETR's `util/plot_utils.plot_logs`: the `log.txt` of one or several runs -> one PNG.

    python scripts/plot_logs.py output/demo/log.txt --out training_curves.png
    python scripts/plot_logs.py runA/ runB/ --labels A B --out compare.png     # a run folder means its log.txt

One panel per loss term (`train_loss`, `train_loss_bbox`, ..., and the `val_*` losses of `--eval` lines when
present) and one for the learning rate (log scale), against the epochs a run has trained: the warm-up stage's
epochs first (main.py logs them with `"stage": "warmup"`, numbered from 0), then the main epochs (also numbered
from 0 in the log). Warm-up epochs are drawn dashed, with the main stage's start marked by a dotted line.
"""
import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from datasets.formats import DataFormatError
from util.errors import OptionError, run_main
from util.misc import atomic_write

LOG_NAME = "log.txt"  # engine.checkpoint.LOG_NAME; a run folder given on the command line means this file
WARMUP_STAGE = "warmup"
LOSS_PREFIXES = ("train_loss", "val_loss")
LEARNING_RATE_KEY = "train_lr"
PANEL_COLUMNS = 3
PANEL_SIZE_INCHES = (4.2, 3.0)
DPI = 110

Curve = Tuple[List[float], List[float]]  # (epochs trained, values)


def log_file(path: Path) -> Path:
    return path / LOG_NAME if path.is_dir() else path


def read_log(path: Path) -> List[dict]:
    """The JSON lines of a training log (blank lines skipped); a line that is not a JSON object names the file."""
    if not path.is_file():
        raise FileNotFoundError(f"training log not found: {path}")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataFormatError(f"{path}: line {number} is not JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise DataFormatError(f"{path}: line {number} is not a JSON object")
        records.append(record)
    return records


def run_curves(records: Sequence[dict]) -> Tuple[Dict[str, Dict[str, Curve]], int]:
    """`{key: {"warmup" | "main": (x, values)}}` of every loss term and the learning rate, and the number of warm-up
    epochs. x counts the epochs trained: warm-up epoch e at x = e + 1, main epoch e at x = warm-up epochs + e + 1
    (a resumed run's lines continue its numbering)."""
    warmup_epochs = sum(1 for record in records if record.get("stage") == WARMUP_STAGE)
    curves: Dict[str, Dict[str, Curve]] = {}
    for record in records:
        if "epoch" not in record:
            continue
        stage = "warmup" if record.get("stage") == WARMUP_STAGE else "main"
        x = record["epoch"] + 1 + (warmup_epochs if stage == "main" else 0)
        for key, value in record.items():
            if (key.startswith(LOSS_PREFIXES) or key == LEARNING_RATE_KEY) and isinstance(value, (int, float)):
                xs, values = curves.setdefault(key, {}).setdefault(stage, ([], []))
                xs.append(x)
                values.append(float(value))
    return curves, warmup_epochs


def panel_keys(runs: Sequence[Dict[str, Dict[str, Curve]]]) -> List[str]:
    """Every loss term of the runs (the total first), then the learning rate."""
    keys = sorted({key for curves in runs for key in curves if key != LEARNING_RATE_KEY},
                  key=lambda key: (not key.endswith("_loss"), key))
    return keys + ([LEARNING_RATE_KEY] if any(LEARNING_RATE_KEY in curves for curves in runs) else [])


def plot_logs(logs: Sequence[Path], out: Path, labels: Optional[Sequence[str]] = None) -> List[str]:
    """Draw the curves of every log into the PNG `out` (written atomically); returns the panels' keys."""
    import matplotlib
    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    labels = list(labels) if labels else [log.parent.name or str(log) for log in logs]
    runs = [run_curves(read_log(log)) for log in logs]
    keys = panel_keys([curves for curves, _ in runs])
    if not keys:
        raise DataFormatError(f"{', '.join(map(str, logs))}: no epoch line with a loss or learning rate")
    rows = -(-len(keys) // PANEL_COLUMNS)
    columns = min(PANEL_COLUMNS, len(keys))
    figure, axes = plt.subplots(rows, columns, squeeze=False,
                                figsize=(PANEL_SIZE_INCHES[0] * columns, PANEL_SIZE_INCHES[1] * rows))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes.flat, keys):
        for number, ((curves, warmup_epochs), label) in enumerate(zip(runs, labels)):
            colour = colours[number % len(colours)]
            stages = curves.get(key, {})
            if "warmup" in stages:
                ax.plot(*stages["warmup"], linestyle="--", marker=".", color=colour, label=f"{label} (warm-up)")
            if "main" in stages:
                ax.plot(*stages["main"], linestyle="-", marker=".", color=colour, label=label)
            if warmup_epochs and stages:
                ax.axvline(warmup_epochs + 0.5, linestyle=":", color=colour, linewidth=1)
        ax.set_title(key)
        ax.set_xlabel("epochs trained (warm-up, then main)")
        if key == LEARNING_RATE_KEY:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize="small")
    figure.tight_layout()
    atomic_write(out, lambda tmp: figure.savefig(tmp, format="png", dpi=DPI))
    plt.close(figure)
    return keys


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser("python scripts/plot_logs.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", nargs="+", type=Path, help="log.txt files or run folders (--output_dir)")
    parser.add_argument("--out", type=Path, default=Path("training_curves.png"), help="the PNG to write")
    parser.add_argument("--labels", nargs="*", default=None, help="one name per run (default: its folder's name)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def parse(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    args = get_parser().parse_args(argv)
    if args.labels is not None and len(args.labels) != len(args.logs):
        raise OptionError(f"--labels: {len(args.labels)} label(s) for {len(args.logs)} log(s)")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse(argv)
    keys = plot_logs([log_file(path) for path in args.logs], args.out, args.labels)
    print(f"wrote {args.out}: {', '.join(keys)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
