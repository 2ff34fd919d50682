"""The training run: its parser (`get_args_parser`, `parse`), the post-parse step (`training_args`) and
`train(parsed)`: the data, the model, resuming, the warm-up, the epoch loop and its checkpoints.

`main.py` is the command line around it; scripts that train (`scripts/demo.py`, `scripts/listening_report.py`)
call `train` here, so no product module imports the entry point. Checkpoints (`checkpoint.pth` and
`checkpoint%04d.pth` in `--output_dir`) are plain dicts written to a temporary file and renamed; they load with
`torch.load(path, weights_only=True)`.
"""
import argparse
import datetime
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Optional, Sequence

import torch

import util.misc as utils
from datasets import add_dataset_args, add_training_data_args, build_dataset, set_epoch, video_names, videos_sources
from datasets.audio import feature_sample_rate
from datasets.common import BadSampleLog, build_for_check, report_data_check
from engine.checkpoint import (CHECKPOINT_TEMPLATE, LATEST_CHECKPOINT, append_log, check_paths, merge_video_names,
                               prepare_output_dir, resume_notes)
from engine.ranks import StopTogether, check_same_data
from engine.signals import StopSignals, stopped_message
from engine.train import (amp_settings, build_loader, build_lr_scheduler, build_optimizer, evaluate_loss,
                          train_one_epoch)
from engine.warmup import warm_start
from models import add_model_args, add_model_training_args, build_model
from util.config import ArgumentParser, FrozenNamespace, HelpFormatter, freeze, is_none, option_names, parse_args
from util.errors import DataWarning, Interrupted, OptionError, UserError, check_device
from util.options import ENTRY_POINT_GROUPS, add_run_args, add_training_args
from util.reporting import log_json
from util.rng import gather_rng_states, set_rng_state
from util.weights import checkpoint_args, load_pretrained_weights, load_wnet_checkpoint


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


def train(parsed: argparse.Namespace):
    """Train (or with `--eval` run the validation-loss loop); returns the model (unwrapped from DDP), or with
    `--check_data` the exit code of the data check."""
    args = training_args(parsed)
    if args.check_data:
        return check_data(args)
    with StopTogether():  # a rank that fails stops the others within seconds (engine/ranks.py)
        return train_process(args)


def train_process(args: FrozenNamespace):
    """The training (or `--eval`) of this process, with its post-parse `args`; returns the model."""
    device = torch.device(args.device)
    if not args.masks:
        raise OptionError("training needs --masks (the KL loss uses the mask model's memory and fusion)")
    check_paths(args)

    output_dir = Path(args.output_dir) if args.output_dir else None
    lock = None  # the --output_dir lock, held while this function runs (released when it returns or fails)
    if output_dir and not args.eval:
        lock = prepare_output_dir(output_dir, args)
    elif output_dir and utils.is_main_process():
        output_dir.mkdir(parents=True, exist_ok=True)

    # The data first: a broken dataset fails before the model is built.
    image_set = "val" if args.eval else "train"
    dataset = build_checked_dataset(image_set, args)
    check_same_data(dataset, image_set)  # ranks that read different data would wait for each other forever
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
        restored = not args.eval and all(k in checkpoint for k in ("optimizer", "lr_scheduler", "epoch"))
        for note in resume_notes(checkpoint_args(checkpoint, args.resume), args, restored):
            print(note, file=sys.stderr)
        if restored:
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
                                "dropped_samples": bad_samples.count_over_ranks()})
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
                      "n_parameters": n_parameters, "dropped_samples": bad_samples.count_over_ranks(),
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
    for add_group in (add_run_args, add_model_args, add_model_training_args, add_dataset_args, add_training_data_args,
                      add_training_args):
        add_group(parser)
    return parser


def get_parser() -> argparse.ArgumentParser:
    return ArgumentParser("Wnet training and evaluation script", parents=[get_args_parser()],
                          formatter_class=HelpFormatter)


def parse(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The training options of `argv` (a config's inference keys ignored); `train` does the post-parse step."""
    return parse_args(get_parser(), argv, other_options=option_names(*ENTRY_POINT_GROUPS))
