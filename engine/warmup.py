"""The warm-up stage of training (`--warmup_epochs`, `--curriculum_stages`): a few videos first, then more."""
import argparse
import signal
import time
from pathlib import Path
from typing import Optional

import torch

import util.misc as utils
from datasets import set_epoch, without_augmentation
from engine.checkpoint import WARMUP_CHECKPOINT, append_log
from engine.signals import StopSignals, stopped_message
from engine.train import build_loader, build_optimizer, train_one_epoch
from util.errors import Interrupted
from util.reporting import log_json


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
