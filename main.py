"""Training and validation-loss entry point of Wnet (DETR style).

    python -m torch.distributed.launch --nproc_per_node=4 --use_env main.py \
        --backbone resnet50 --dataset_file avos --masks        # data/rvos, data/a2d, ... as the official
    torchrun --nproc_per_node=2 main.py --config configs/ytvos_r50.yaml --device cpu
    sbatch scripts/slurm_train.sh --config configs/avos_r50.yaml  # SLURM: one task per GPU

Checkpoints (`checkpoint.pth` and `checkpoint%04d.pth` in `--output_dir`) are plain dicts written to a
temporary file and renamed; they load with `torch.load(path, weights_only=True)`.
"""
import argparse
import datetime
import json
import random
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

import util.misc as utils
from datasets import (add_dataset_args, add_training_data_args, build_dataset, clip_groups, set_epoch, video_names,
                      videos_sources, without_augmentation)
from datasets.audio import feature_sample_rate
from datasets.common import BadSampleLog, build_for_check, report_data_check
from engine import evaluate_loss, train_one_epoch
from models import add_model_args, build_model
from util.config import ArgumentParser, FrozenNamespace, HelpFormatter, freeze, is_none, option_names, parse_args
from util.errors import DataWarning, Interrupted, OptionError, UserError, check_device, run_main
from util.options import ENTRY_POINT_GROUPS, add_run_args, add_training_args
from util.reporting import log_json
from util.samplers import GroupedDistributedSampler
from util.weights import load_pretrained_weights, load_wnet_checkpoint

LOG_NAME = "log.txt"
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


# ----------------------------------------------------------------------------- RNG state
def get_rng_state() -> Dict[str, Any]:
    """Every RNG the training touches, as tensors and plain tuples (loadable with weights_only=True)."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": np_kind, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states() -> List[Dict[str, Any]]:
    """RNG states of every rank, in rank order (only rank 0 writes checkpoints, so it keeps them all)."""
    state = get_rng_state()
    if utils.get_world_size() == 1:
        return [state]
    states: List[Optional[Dict[str, Any]]] = [None] * utils.get_world_size()
    torch.distributed.all_gather_object(states, state)
    return states


# ----------------------------------------------------------------------------- optimisation
def build_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """AdamW with the backbone at `lr_backbone` and everything else at `lr` (frozen parameters excluded)."""
    param_groups = [
        {"params": [p for n, p in model.named_parameters() if "backbone" not in n and p.requires_grad]},
        {"params": [p for n, p in model.named_parameters() if "backbone" in n and p.requires_grad],
         "lr": args.lr_backbone},
    ]
    return torch.optim.AdamW(param_groups, lr=args.lr, weight_decay=args.weight_decay)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, args: argparse.Namespace):
    """StepLR: every learning rate times 0.1 after `lr_drop` epochs (the official recipe, SPEC section 4)."""
    return torch.optim.lr_scheduler.StepLR(optimizer, args.lr_drop)


def build_loader(dataset, args: argparse.Namespace, shuffle: bool) -> DataLoader:
    # One sampler for one or many processes: its order depends only on (seed, epoch), so a resumed run
    # draws the same batches as an uninterrupted one.
    if shuffle and args.group_expressions:
        sampler = GroupedDistributedSampler(clip_groups(dataset), utils.get_world_size(), utils.get_rank(), args.seed)
    else:
        sampler = DistributedSampler(dataset, num_replicas=utils.get_world_size(), rank=utils.get_rank(),
                                     shuffle=shuffle, seed=args.seed)
    batch_sampler = BatchSampler(sampler, args.batch_size, drop_last=shuffle)
    return DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=utils.collate_fn,
                      num_workers=args.num_workers, worker_init_fn=ignore_sigint_in_worker)


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


def amp_settings(args: argparse.Namespace, device: torch.device):
    dtype = torch.float16 if (args.amp_dtype == "float16" and device.type == "cuda") else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda") if (args.amp and dtype == torch.float16) else None
    return dtype, scaler


class StopSignals:
    """SIGINT and SIGTERM during training: finish the current step, keep the last checkpoint, then stop.

    Installed whatever the inherited disposition (a job started in the background of a script inherits
    SIGINT ignored, and Python then installs no KeyboardInterrupt handler). A second signal stops at once.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: Optional[int] = None
        self.previous = {}

    def __enter__(self) -> "StopSignals":
        self.previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"{signal.Signals(signum).name}: stopping after the current step (send it again to stop at once)",
              file=sys.stderr, flush=True)

    def requested(self) -> bool:
        """Whether a signal asked to stop, on any process (every process must stop at the same step)."""
        stop = self.signum is not None
        if utils.get_world_size() > 1:
            flag = torch.tensor([float(stop)])
            torch.distributed.all_reduce(flag)
            stop = bool(flag.item())
        return stop


def ignore_sigint_in_worker(worker_id: int) -> None:
    """DataLoader workers leave SIGINT to the main process, which stops after the current step."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def check_paths(args: argparse.Namespace) -> None:
    """The weight files the options name exist (checked before any work)."""
    if args.resume and not Path(args.resume).is_file():
        raise OptionError(f"--resume {args.resume}: the file does not exist")
    if not args.resume and not is_none(args.pretrained_weights) and not Path(args.pretrained_weights).is_file():
        raise OptionError(missing_pretrained_weights_message(args.pretrained_weights))


def prepare_output_dir(output_dir: Path, args: argparse.Namespace) -> None:
    """Refuse to train into an earlier run unless `--resume` (continue it) or `--overwrite` (delete its
    checkpoints and log) is given; create `output_dir` and remove the temporary files of a killed save.
    Every process checks (so that all stop together); only the main process changes files."""
    if not utils.is_main_process():
        check_output_dir(output_dir, args)
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    stale = utils.remove_stale_temporaries(output_dir, CHECKPOINT_GLOB)
    if stale:
        print(f"removed {len(stale)} temporary file(s) of an interrupted save: {', '.join(p.name for p in stale)}",
              file=sys.stderr)
    earlier = check_output_dir(output_dir, args)
    for path in earlier:
        path.unlink()
    if earlier:
        print(f"--overwrite: deleted {len(earlier)} file(s) of an earlier run in {output_dir}", file=sys.stderr)


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


def build_checked_dataset(image_set: str, args: argparse.Namespace):
    """The dataset of `image_set`; a UserError when it has no sample (all dropped, or none there)."""
    dataset = build_dataset(image_set, args)
    if len(dataset) == 0:
        reason = (f"all {dataset.num_dropped} were dropped as broken (--skip_bad_samples; the warnings above name "
                  f"them)" if dataset.num_dropped else "the dataset holds none")
        raise UserError(f"no {image_set} samples in --dataset_file {args.dataset_file}: {reason}; check the data "
                        f"paths (--ytvos_path, --a2d_path, --rvos_audio_path, --a2d_audio_path) or run --check_data")
    return dataset


def check_data(args: argparse.Namespace) -> int:
    """`--check_data`: every problem of the dataset the run would use, one line each; 0 when there is none."""
    image_set = "val" if args.eval else "train"
    dataset = build_for_check(lambda: build_dataset(image_set, args))
    return report_data_check(dataset.check_data(), {"dataset_file": args.dataset_file, "image_set": image_set,
                                                    "samples": len(dataset)})


def warm_start(model: torch.nn.Module, criterion: torch.nn.Module, dataset, args: argparse.Namespace,
               device: torch.device, output_dir: Optional[Path], amp_dtype: torch.dtype, scaler,
               stop: "StopSignals", optimizer: Optional[torch.optim.Optimizer] = None) -> None:
    """The `--warmup_epochs` stage: train on the first `--warmup_subset` videos of the training `dataset` with an
    optimizer of its own, or with `optimizer` (the main stage's, `--warmup_shares_optimizer`), whose Adam moments
    then carry over: the main stage's first steps are not the full-size steps of a fresh Adam.

    Why it helps: when every clip shows several objects, each named by its own recording, a model that cannot yet
    tell the objects apart gains nothing from either recording (covering all of them is the best it can do for
    both), so nothing pushes the audio path to pick one. Memorising a few videos, recordings included, ties
    recordings to objects; the training on the whole set then starts from that. The weights are kept in
    `output_dir/warmup.pth`; a resumed run (`--resume`) skips the stage. `--curriculum_stages N:E ...` follow
    it: E epochs on the first N videos each, so that the tie is widened step by step before the whole set.
    """
    model_without_ddp = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    optimizer = optimizer or build_optimizer(model_without_ddp, args)
    stages = [(args.warmup_subset, args.warmup_epochs), *args.curriculum_stages]
    epoch = 0  # counted over the stages: it seeds the data order and the audio of each warm-up epoch
    for videos, epochs in stages:
        stage_data = dataset.first_videos(videos)  # the training set's first videos, already checked
        without_augmentation(stage_data)  # memorise the recordings as they are; --audio_augment is for the main epochs
        loader = build_loader(stage_data, args, shuffle=True)
        log_json({"event": "warmup_start", "videos": videos, "train_samples": len(stage_data), "epochs": epochs})
        for _ in range(epochs):
            loader.batch_sampler.sampler.set_epoch(epoch)
            set_epoch(stage_data, epoch)
            epoch_start = time.time()
            stats = train_one_epoch(model, criterion, loader, optimizer, device, epoch, args.clip_max_norm,
                                    amp=args.amp, amp_dtype=amp_dtype, scaler=scaler, should_stop=stop.requested)
            if stats.pop("stopped"):
                raise Interrupted(stopped_message(stop, f"in warm-up epoch {epoch}", output_dir, None),
                                  stop.signum or signal.SIGTERM)
            append_log(output_dir, {"stage": "warmup", **{f"train_{k}": v for k, v in stats.items()}, "epoch": epoch,
                                    "videos": videos, "epoch_seconds": round(time.time() - epoch_start, 2)})
            epoch += 1
    if output_dir:
        utils.save_on_master({"model": model_without_ddp.state_dict(), "warmup_epochs": args.warmup_epochs,
                              "warmup_subset": args.warmup_subset, "curriculum_stages": args.curriculum_stages,
                              "args": vars(args).copy()},
                             output_dir / WARMUP_CHECKPOINT)


def main(parsed: argparse.Namespace):
    """Train (or with `--eval` run the validation-loss loop); returns the model (unwrapped from DDP), or with
    `--check_data` the exit code of the data check."""
    args = training_args(parsed)
    if args.check_data:
        return check_data(args)
    device = torch.device(args.device)
    if not args.masks:
        raise OptionError("training needs --masks (the KL loss uses the mask model's memory and fusion)")
    check_paths(args)

    output_dir = Path(args.output_dir) if args.output_dir else None
    if output_dir and not args.eval:
        prepare_output_dir(output_dir, args)
    elif output_dir and utils.is_main_process():
        output_dir.mkdir(parents=True, exist_ok=True)

    # The data first: a broken dataset fails before the model is built.
    image_set = "val" if args.eval else "train"
    dataset = build_checked_dataset(image_set, args)
    data_loader = build_loader(dataset, args, shuffle=not args.eval)
    if len(data_loader) == 0:
        raise OptionError(f"--batch_size {args.batch_size} is larger than the {len(data_loader.batch_sampler.sampler)} "
                          f"{image_set} samples of this process; the incomplete last batch is dropped, so no "
                          f"optimizer step would be taken")

    utils.seed_everything(args.seed + utils.get_rank())

    model, criterion, _ = build_model(args)
    model.to(device)
    model_without_ddp = model
    if args.distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        model_without_ddp = model.module
    n_parameters = sum(p.numel() for p in model_without_ddp.parameters() if p.requires_grad)

    optimizer = build_optimizer(model_without_ddp, args)
    lr_scheduler = build_lr_scheduler(optimizer, args)
    amp_dtype, scaler = amp_settings(args, device)

    if not args.resume:
        if is_none(args.pretrained_weights):
            record = {"event": "pretrained_weights", "path": None, "from_scratch": True,
                      "note": "--pretrained_weights none: training starts from scratch (the official starts from "
                              "COCO-trained DETR weights)"}
        else:
            missing, unexpected = load_pretrained_weights(model_without_ddp, args.pretrained_weights)
            record = {"event": "pretrained_weights", "path": args.pretrained_weights, "from_scratch": False,
                      "missing": missing, "unexpected": unexpected}
        log_json(record)

    start_epoch = args.start_epoch  # a resumed checkpoint's next epoch takes its place
    trained_epoch = start_epoch - 1  # the last epoch the weights have seen (for --eval's log line)
    earlier_videos = None  # the videos the resumed weights were trained on
    if args.resume:
        checkpoint = load_wnet_checkpoint(model_without_ddp, args.resume)  # strict, errors list the keys
        trained_epoch = checkpoint.get("epoch", trained_epoch)
        earlier_videos = checkpoint.get("train_videos")
        if not args.eval and all(k in checkpoint for k in ("optimizer", "lr_scheduler", "epoch")):
            optimizer.load_state_dict(checkpoint["optimizer"])
            lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
            if scaler is not None and "scaler" in checkpoint:
                scaler.load_state_dict(checkpoint["scaler"])
            start_epoch = checkpoint["epoch"] + 1
            states = checkpoint.get("rng")
            if states and len(states) == utils.get_world_size():
                set_rng_state(states[utils.get_rank()])
            elif states:
                print(f"warning: {args.resume} holds RNG states of {len(states)} processes, this run has "
                      f"{utils.get_world_size()}; the data order continues, augmentation draws do not",
                      file=sys.stderr)

    bad_samples = BadSampleLog(dataset.num_dropped)
    if args.eval:
        log_json({"event": "eval", "val_samples": len(dataset), "videos_from": videos_sources(dataset)})
        stats = evaluate_loss(model, criterion, data_loader, device, amp=args.amp, amp_dtype=amp_dtype,
                              bad_samples=bad_samples)
        append_log(output_dir, {**{f"val_{k}": v for k, v in stats.items()}, "epoch": trained_epoch,
                                "dropped_samples": bad_samples.count})
        return model_without_ddp

    if start_epoch >= args.epochs:
        raise OptionError(f"--epochs {args.epochs}: the run has already trained {start_epoch} epoch(s) "
                          f"(--resume {args.resume}); nothing to train, raise --epochs to continue")
    # Every checkpoint records the videos its weights were trained on: inference and evaluation warn when
    # they are evaluated on one of them.
    train_videos = merge_video_names(earlier_videos, video_names(dataset))
    log_json({"event": "start", "n_parameters": n_parameters, "train_samples": len(dataset),
               "dropped_samples": dataset.num_dropped, "videos_from": videos_sources(dataset),
               "train_videos": {part: len(names) for part, names in video_names(dataset).items()},
               "world_size": utils.get_world_size(), "dist_backend": utils.get_backend(),
               "start_epoch": start_epoch, "epochs": args.epochs, "subset": args.subset})

    start_time = time.time()
    saved_epoch: Optional[int] = None
    with StopSignals() as stop:
        if args.warmup_epochs and not args.resume:
            warm_start(model, criterion, dataset, args, device, output_dir, amp_dtype, scaler, stop,
                       optimizer if args.warmup_shares_optimizer else None)
        for epoch in range(start_epoch, args.epochs):
            data_loader.batch_sampler.sampler.set_epoch(epoch)
            set_epoch(dataset, epoch)  # seeds the audio augmentation
            epoch_start = time.time()
            train_stats = train_one_epoch(model, criterion, data_loader, optimizer, device, epoch,
                                          args.clip_max_norm, amp=args.amp, amp_dtype=amp_dtype, scaler=scaler,
                                          bad_samples=bad_samples, should_stop=stop.requested)
            if train_stats.pop("stopped") and train_stats["steps"] < len(data_loader):  # incomplete: not saved
                raise Interrupted(stopped_message(stop, f"in epoch {epoch} after {train_stats['steps']} step(s)",
                                                  output_dir, saved_epoch), stop.signum or signal.SIGTERM)
            lr_scheduler.step()
            rng_states = gather_rng_states()
            if output_dir:
                checkpoint = {
                    "model": model_without_ddp.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "lr_scheduler": lr_scheduler.state_dict(),
                    "epoch": epoch,
                    "args": vars(args).copy(),
                    "rng": rng_states,
                    "train_videos": train_videos,
                }
                if scaler is not None:
                    checkpoint["scaler"] = scaler.state_dict()
                # The numbered file first: `checkpoint.pth` always points at a complete epoch.
                utils.save_on_master(checkpoint, output_dir / CHECKPOINT_TEMPLATE.format(epoch=epoch))
                utils.save_on_master(checkpoint, output_dir / LATEST_CHECKPOINT)
                saved_epoch = epoch
            record = {**{f"train_{k}": v for k, v in train_stats.items()}, "epoch": epoch,
                      "n_parameters": n_parameters, "dropped_samples": bad_samples.count,
                      "epoch_seconds": round(time.time() - epoch_start, 2)}
            if args.distributed:  # DDP keeps replicas equal; say so, since a divergence would be silent
                record["ranks_in_sync"] = utils.ranks_in_sync(model_without_ddp)
            append_log(output_dir, record)
            if epoch + 1 < args.epochs and stop.requested():  # a signal during the last step or the save
                raise Interrupted(stopped_message(stop, f"after epoch {epoch}", output_dir, saved_epoch),
                                  stop.signum or signal.SIGTERM)

    total = str(datetime.timedelta(seconds=int(time.time() - start_time)))
    log_json({"event": "done", "training_time": total})
    if args.distributed:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return model_without_ddp


def stopped_message(stop: StopSignals, when: str, output_dir: Optional[Path], saved_epoch: Optional[int]) -> str:
    what = signal.Signals(stop.signum).name if stop.signum is not None else "a signal to another process"
    latest = output_dir / LATEST_CHECKPOINT if output_dir else None
    if saved_epoch is not None:
        kept = f"{latest} holds epoch {saved_epoch}; continue with --resume {latest}"
    elif latest is not None and latest.is_file():
        kept = f"{latest} is unchanged"
    else:
        kept = "no checkpoint was written yet"
    return f"stopped by {what} {when}; {kept}"


def training_args(parsed: argparse.Namespace) -> FrozenNamespace:
    """The post-parse step of training: the options with their derived values, frozen. `--check_data` lists every
    broken sample (as `--skip_bad_samples`); otherwise the distributed settings of this process (`distributed`,
    `rank`, `world_size`, `gpu`, the `device` of its GPU) and `audio_sample_rate` (`training_audio_sample_rate`)."""
    if parsed.check_data:
        return freeze(parsed, skip_bad_samples=True)
    check_device(parsed.device)
    return freeze(parsed, **utils.init_distributed_mode(parsed), audio_sample_rate=training_audio_sample_rate(parsed))


def training_audio_sample_rate(args: argparse.Namespace) -> int:
    """`--audio_sample_rate`, else the rate the features were extracted at, as `scripts/extract_mfcc.py` records
    it beside them (saved with every checkpoint, so that inference can tell a recording of another rate)."""
    folders = {"ytvos": [args.rvos_audio_path], "a2d": [args.a2d_audio_path], "jhmdb": [args.a2d_audio_path],
               "avos": [args.rvos_audio_path, args.a2d_audio_path]}[args.dataset_file]
    rates = {folder: feature_sample_rate(folder) for folder in folders}
    known = {rate for rate in rates.values() if rate}
    if len(known) > 1:
        warnings.warn(f"the audio features were extracted at different sample rates {rates}; the model will "
                      f"hear the same words differently", DataWarning)
    elif known and args.audio_sample_rate and args.audio_sample_rate not in known:
        warnings.warn(f"--audio_sample_rate {args.audio_sample_rate}, but the features were extracted at "
                      f"{known.pop()} Hz ({rates})", DataWarning)
    elif known and not args.audio_sample_rate:
        return known.pop()
    return args.audio_sample_rate


def get_args_parser() -> argparse.ArgumentParser:
    """The options of training: the run's, the model's, the data's, the augmentation and the training groups."""
    parser = ArgumentParser("Wnet", add_help=False)
    for add_group in (add_run_args, add_model_args, add_dataset_args, add_training_data_args, add_training_args):
        add_group(parser)
    return parser


def get_parser() -> argparse.ArgumentParser:
    return ArgumentParser("Wnet training and evaluation script", parents=[get_args_parser()],
                          formatter_class=HelpFormatter)


def parse(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The training options of `argv` (a config's inference keys ignored); `main` does the post-parse step."""
    return parse_args(get_parser(), argv, other_options=option_names(*ENTRY_POINT_GROUPS))


def cli(argv: Optional[Sequence[str]] = None):
    return main(parse(argv))


if __name__ == "__main__":
    sys.exit(run_main(cli))
