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
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

import util.misc as utils
from util.config import HelpFormatter, get_args_parser, is_none, parse_args

LOG_NAME = "log.txt"
LATEST_CHECKPOINT = "checkpoint.pth"
WARMUP_CHECKPOINT = "warmup.pth"
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
    sampler = DistributedSampler(dataset, num_replicas=utils.get_world_size(), rank=utils.get_rank(),
                                 shuffle=shuffle, seed=args.seed)
    batch_sampler = BatchSampler(sampler, args.batch_size, drop_last=shuffle)
    return DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=utils.collate_fn,
                      num_workers=args.num_workers)


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
    """One JSON line per epoch in output_dir/log.txt (rank 0 only) and on stdout."""
    line = json.dumps(record)
    print(line, flush=True)
    if utils.is_main_process() and output_dir:
        with open(output_dir / LOG_NAME, "a") as f:
            f.write(line + "\n")


def amp_settings(args: argparse.Namespace, device: torch.device):
    dtype = torch.float16 if (args.amp_dtype == "float16" and device.type == "cuda") else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda") if (args.amp and dtype == torch.float16) else None
    return dtype, scaler


def warm_start(model: torch.nn.Module, criterion: torch.nn.Module, args: argparse.Namespace, device: torch.device,
               output_dir: Optional[Path], amp_dtype: torch.dtype, scaler) -> None:
    """The `--warmup_epochs` stage: train on the first `--warmup_subset` videos with an optimizer of its own.

    Why it helps: when every clip shows several objects, each named by its own recording, a model that cannot yet
    tell the objects apart gains nothing from either recording (covering all of them is the best it can do for
    both), so nothing pushes the audio path to pick one. Memorising a few videos, recordings included, ties
    recordings to objects; the training on the whole set then starts from that. The weights are kept in
    `output_dir/warmup.pth`; a resumed run (`--resume`) skips the stage.
    """
    from datasets import build_dataset
    from engine import train_one_epoch

    model_without_ddp = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    warmup_args = argparse.Namespace(**{**vars(args), "subset": args.warmup_subset})
    dataset = build_dataset("train", warmup_args)
    loader = build_loader(dataset, args, shuffle=True)
    optimizer = build_optimizer(model_without_ddp, args)
    print(json.dumps({"event": "warmup_start", "videos": args.warmup_subset, "train_samples": len(dataset),
                      "epochs": args.warmup_epochs}), flush=True)
    for epoch in range(args.warmup_epochs):
        loader.batch_sampler.sampler.set_epoch(epoch)
        epoch_start = time.time()
        stats = train_one_epoch(model, criterion, loader, optimizer, device, epoch, args.clip_max_norm,
                                amp=args.amp, amp_dtype=amp_dtype, scaler=scaler)
        append_log(output_dir, {"stage": "warmup", **{f"train_{k}": v for k, v in stats.items()}, "epoch": epoch,
                                "epoch_seconds": round(time.time() - epoch_start, 2)})
    if output_dir:
        utils.save_on_master({"model": model_without_ddp.state_dict(), "warmup_epochs": args.warmup_epochs,
                              "warmup_subset": args.warmup_subset, "args": vars(args).copy()},
                             output_dir / WARMUP_CHECKPOINT)


def main(args: argparse.Namespace) -> torch.nn.Module:
    """Train (or with `--eval` run the validation-loss loop); returns the model (unwrapped from DDP)."""
    from datasets import build_dataset, video_names, videos_sources
    from engine import NonFiniteLossError, evaluate_loss, train_one_epoch
    from models import build_model
    from util.weights import load_pretrained_weights, load_wnet_checkpoint

    utils.init_distributed_mode(args)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but CUDA is not available; pass --device cpu")
    if not args.masks:
        raise SystemExit("training needs --masks (the KL loss uses the mask model's memory and fusion)")
    from_scratch = is_none(args.pretrained_weights)
    if not from_scratch and not args.resume and not Path(args.pretrained_weights).is_file():
        raise SystemExit(missing_pretrained_weights_message(args.pretrained_weights))

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

    output_dir = Path(args.output_dir) if args.output_dir else None
    if output_dir and utils.is_main_process():
        output_dir.mkdir(parents=True, exist_ok=True)

    if not args.resume:
        if from_scratch:
            record = {"event": "pretrained_weights", "path": None, "from_scratch": True,
                      "note": "--pretrained_weights none: training starts from scratch (the official starts from "
                              "COCO-trained DETR weights)"}
        else:
            missing, unexpected = load_pretrained_weights(model_without_ddp, args.pretrained_weights)
            record = {"event": "pretrained_weights", "path": args.pretrained_weights, "from_scratch": False,
                      "missing": missing, "unexpected": unexpected}
        if utils.is_main_process():
            print(json.dumps(record), flush=True)

    trained_epoch = args.start_epoch - 1  # the last epoch the weights have seen (for --eval's log line)
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
            args.start_epoch = checkpoint["epoch"] + 1
            states = checkpoint.get("rng")
            if states and len(states) == utils.get_world_size():
                set_rng_state(states[utils.get_rank()])
            elif states:
                print(f"warning: {args.resume} holds RNG states of {len(states)} processes, this run has "
                      f"{utils.get_world_size()}; the data order continues, augmentation draws do not",
                      file=sys.stderr)

    if args.eval:
        dataset_val = build_dataset("val", args)
        print(json.dumps({"event": "eval", "val_samples": len(dataset_val), "videos_from": videos_sources(dataset_val)}),
              flush=True)
        stats = evaluate_loss(model, criterion, build_loader(dataset_val, args, shuffle=False), device,
                              amp=args.amp, amp_dtype=amp_dtype)
        append_log(output_dir, {**{f"val_{k}": v for k, v in stats.items()}, "epoch": trained_epoch})
        return model_without_ddp

    if args.warmup_epochs and not args.resume:
        warm_start(model, criterion, args, device, output_dir, amp_dtype, scaler)

    dataset_train = build_dataset("train", args)
    data_loader_train = build_loader(dataset_train, args, shuffle=True)
    # Every checkpoint records the videos its weights were trained on: inference and evaluation warn when
    # they are evaluated on one of them.
    train_videos = merge_video_names(earlier_videos, video_names(dataset_train))
    print(json.dumps({"event": "start", "n_parameters": n_parameters, "train_samples": len(dataset_train),
                      "videos_from": videos_sources(dataset_train),
                      "train_videos": {part: len(names) for part, names in video_names(dataset_train).items()},
                      "world_size": utils.get_world_size(), "dist_backend": utils.get_backend(),
                      "start_epoch": args.start_epoch, "epochs": args.epochs, "subset": args.subset}), flush=True)

    start_time = time.time()
    for epoch in range(args.start_epoch, args.epochs):
        data_loader_train.batch_sampler.sampler.set_epoch(epoch)
        epoch_start = time.time()
        try:
            train_stats = train_one_epoch(model, criterion, data_loader_train, optimizer, device, epoch,
                                          args.clip_max_norm, amp=args.amp, amp_dtype=amp_dtype, scaler=scaler)
        except NonFiniteLossError as e:
            raise SystemExit(str(e)) from None
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
            utils.save_on_master(checkpoint, output_dir / f"checkpoint{epoch:04}.pth")
            utils.save_on_master(checkpoint, output_dir / LATEST_CHECKPOINT)
        record = {**{f"train_{k}": v for k, v in train_stats.items()}, "epoch": epoch, "n_parameters": n_parameters,
                  "epoch_seconds": round(time.time() - epoch_start, 2)}
        if args.distributed:  # DDP keeps replicas equal; say so, since a divergence would be silent
            record["ranks_in_sync"] = utils.ranks_in_sync(model_without_ddp)
        append_log(output_dir, record)

    total = str(datetime.timedelta(seconds=int(time.time() - start_time)))
    print(json.dumps({"event": "done", "training_time": total}), flush=True)
    if args.distributed:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return model_without_ddp


if __name__ == "__main__":
    parser = argparse.ArgumentParser("Wnet training and evaluation script", parents=[get_args_parser()],
                                     formatter_class=HelpFormatter)
    main(parse_args(parser))
