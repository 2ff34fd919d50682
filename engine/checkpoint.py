"""A training run's files in `--output_dir`: the names of its checkpoints and log, which weight files a run starts
from, what an earlier run's files allow (`--resume`, `--overwrite`), the epoch log and the videos a checkpoint
records."""
import argparse
import fcntl
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import util.misc as utils
from util.config import is_none
from util.errors import OptionError
from util.paths import check_outputs_apart, check_writable
from util.reporting import log_json

LOG_NAME = "log.txt"
# The data a run reads, which its --output_dir may not be or lie inside (util.paths.check_outputs_apart)
TRAINING_INPUT_OPTIONS = ("--ytvos_path", "--rvos_audio_path", "--rvos_wav_path", "--a2d_path", "--jhmdb_path",
                          "--a2d_audio_path", "--a2d_wav_path")
LATEST_CHECKPOINT = "checkpoint.pth"
CHECKPOINT_TEMPLATE = "checkpoint{epoch:04}.pth"
CHECKPOINT_GLOB = "checkpoint*.pth"
WARMUP_CHECKPOINT = "warmup.pth"
MAX_NAMES_SHOWN = 3  # files of an earlier run named in the --output_dir error
# Where the official README sends users for VisTR's COCO-trained DETR weights (384_coco_r50.pth, 384_coco_r101.pth).
PRETRAINED_WEIGHTS_URL = "https://drive.google.com/drive/folders/1DlN8uWHT2WaKruarGW2_XChhpZeI9MFG"


def missing_pretrained_weights_message(path: str) -> str:
    return (f"--pretrained_weights: {path} does not exist. The official training starts from VisTR's COCO-trained "
            f"DETR weights (hidden 384): download 384_coco_r50.pth (384_coco_r101.pth for ResNet-101) from "
            f"{PRETRAINED_WEIGHTS_URL} (the official README's link; BaiduYun in README.md) and save it as {path}, "
            f"or pass --pretrained_weights PATH. Files with 'detr.*' keys load as they are "
            f"(scripts/convert_detr_weights.py IN OUT writes a copy with Wnet's names). "
            f"--pretrained_weights none trains from scratch.")


def check_paths(args: argparse.Namespace) -> None:
    """The weight files the options name exist (checked before any work)."""
    if args.resume and not Path(args.resume).is_file():
        raise OptionError(f"--resume {args.resume}: the file does not exist")
    if not args.resume and not is_none(args.pretrained_weights) and not Path(args.pretrained_weights).is_file():
        raise OptionError(missing_pretrained_weights_message(args.pretrained_weights))


def prepare_output_dir(output_dir: Path, args: argparse.Namespace) -> Optional["OutputDirLock"]:
    """Refuse to train into an earlier run unless `--resume` (continue it) or `--overwrite` (delete its
    checkpoints and log) is given, into a dataset's folder, or into a folder that cannot be written; create
    `output_dir`, lock it for this run and remove the temporary files of a killed save. Every process checks
    (so that all stop together); only the main process changes files. Returns the main process's lock."""
    check_outputs_apart({"--output_dir": output_dir}, {option: getattr(args, option[2:], "")
                                                       for option in TRAINING_INPUT_OPTIONS})
    if not utils.is_main_process():
        check_output_dir(output_dir, args)
        return None
    check_writable("--output_dir", output_dir)
    lock = OutputDirLock(output_dir)
    stale = utils.remove_stale_temporaries(output_dir, CHECKPOINT_GLOB)
    if stale:
        print(f"removed {len(stale)} temporary file(s) of an interrupted save: {', '.join(p.name for p in stale)}",
              file=sys.stderr)
    earlier = check_output_dir(output_dir, args)
    for path in earlier:
        path.unlink()
    if earlier:
        print(f"--overwrite: deleted {len(earlier)} file(s) of an earlier run in {output_dir}", file=sys.stderr)
    return lock


class OutputDirLock:
    """An exclusive lock on a run's `--output_dir` (`flock` on the folder itself: no file is left behind), held
    until `release()` or until the lock is collected; the system releases it when the process ends, however it
    ends. An OptionError when another run holds it."""

    def __init__(self, output_dir: Path):
        self.descriptor: Optional[int] = os.open(output_dir, os.O_RDONLY)
        try:
            fcntl.flock(self.descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.release()
            raise OptionError(f"--output_dir {output_dir}: another training run is writing there (it holds the "
                              f"folder's lock); wait for it to end or choose another folder") from None

    def release(self) -> None:
        if getattr(self, "descriptor", None) is not None:  # None: released, or the folder never opened
            os.close(self.descriptor)
            self.descriptor = None

    __del__ = release


def check_output_dir(output_dir: Path, args: argparse.Namespace) -> List[Path]:
    """The files of an earlier run in `output_dir` that `--overwrite` deletes; an OptionError when there are
    some and neither `--resume` nor `--overwrite` is given."""
    earlier = sorted(output_dir.glob(CHECKPOINT_GLOB)) + [p for p in [output_dir / LOG_NAME] if p.is_file()]
    if not earlier or args.resume:
        return []
    if not args.overwrite:
        shown = ", ".join(p.name for p in earlier[:MAX_NAMES_SHOWN]) + (", ..." if len(earlier) > MAX_NAMES_SHOWN else "")
        raise OptionError(f"--output_dir {output_dir} holds an earlier run ({shown}); pass --resume "
                          f"{output_dir / LATEST_CHECKPOINT} to continue it or --overwrite to start again")
    return earlier


# What a resumed run takes from its checkpoint whatever the command line says: the optimizer's and the schedule's
# state, restored with them, hold these values.
RESTORED_OPTIONS = ("lr", "lr_backbone", "weight_decay", "lr_drop")
# What may change between a run and its resumption without a word: where and how long it runs, not what it learns.
UNCOMPARED_OPTIONS = frozenset({"resume", "output_dir", "overwrite", "start_epoch", "epochs", "config", "device",
                                "num_workers", "eval", "check_data", "dist_url", "world_size", "rank", "gpu",
                                "distributed", "debug", "skip_bad_samples", "pretrained_weights", "backbone_weights"})


def resume_notes(recorded: Dict[str, Any], args: argparse.Namespace, restored: bool) -> List[str]:
    """One line per option whose value differs from the one the resumed checkpoint records (`recorded`), saying
    which value wins: the checkpoint's for `RESTORED_OPTIONS` when its optimizer state is `restored`, this run's
    for the others."""
    def comparable(value: Any) -> Any:
        return [comparable(item) for item in value] if isinstance(value, (list, tuple)) else value

    notes = []
    for name in sorted(set(vars(args)) & set(recorded) - UNCOMPARED_OPTIONS):
        if comparable(getattr(args, name)) == comparable(recorded[name]):
            continue
        wins = ("the checkpoint's wins (its optimizer and schedule state are restored)"
                if restored and name in RESTORED_OPTIONS else "this run's wins")
        notes.append(f"note: --resume {args.resume}: --{name} {getattr(args, name)}, the checkpoint's "
                     f"{recorded[name]}: {wins}")
    return notes


def merge_video_names(earlier: Optional[Dict[str, List[str]]], current: Dict[str, List[str]]) -> Dict[str, List[str]]:
    """The videos a resumed model has seen: those of its checkpoint, then the new ones of this run."""
    merged = {part: list(names) for part, names in (earlier or {}).items()}
    for part, names in current.items():
        seen = merged.setdefault(part, [])
        known = set(seen)
        for name in names:
            if name not in known:
                seen.append(name)
                known.add(name)
    return merged


def append_log(output_dir: Path, record: Dict[str, Any]) -> None:
    """One JSON line per epoch in output_dir/log.txt and on stdout (rank 0 only)."""
    log_json(record)
    if utils.is_main_process() and output_dir:
        with open(output_dir / LOG_NAME, "a") as f:
            f.write(json.dumps(record) + "\n")
