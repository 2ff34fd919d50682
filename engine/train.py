"""The training engine, DETR style: one training epoch and the validation-loss loop, the optimiser and learning-rate
schedule, the batches (one sampler for one or many processes) and mixed precision (`--amp`).
"""
import argparse
import contextlib
import math
from collections import defaultdict
from typing import Any, Callable, ContextManager, Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler
from tqdm import tqdm

import util.misc as utils
from datasets import clip_groups
from datasets.common import BadSampleLog
from engine.signals import ignore_sigint_in_worker
from util.errors import UserError
from util.samplers import GroupedDistributedSampler


class NonFiniteLossError(UserError, RuntimeError):
    """The loss became NaN or infinite; training stops before anything is saved."""


def describe_samples(targets: List[dict]) -> str:
    """Human-readable ids of the samples in a batch, for error messages."""
    names = []
    for t in targets:
        keys = [k for k in ("video", "video_id", "exp_id", "instance_id", "frame_idx", "frame_id") if k in t]
        parts = []
        for k in keys:
            v = t[k]
            if torch.is_tensor(v):
                v = v.tolist()
            parts.append(f"{k}={v}")
        names.append("(" + ", ".join(parts) + ")" if parts else "(unnamed sample)")
    return ", ".join(names)


def autocast_context(device: torch.device, enabled: bool, dtype: torch.dtype) -> ContextManager:
    """Autocast to `dtype` on `device` when `enabled` (`--amp`), else nothing."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _to_device(targets: List[dict], device: torch.device) -> List[dict]:
    return [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]


class EpochAverages:
    """Running means of scalar loss terms (already reduced over processes)."""

    def __init__(self) -> None:
        self.sums: Dict[str, float] = defaultdict(float)
        self.count = 0

    def update(self, values: Dict[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] += v
        self.count += 1

    def means(self) -> Dict[str, float]:
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}


def _weighted_losses(loss_dict: Dict[str, torch.Tensor], weight_dict: Dict[str, float]):
    total = sum(loss_dict[k] * weight_dict[k] for k in loss_dict if k in weight_dict)
    return total


def forward_batch(model: nn.Module, samples: utils.NestedTensor, audio: utils.NestedTensor,
                  targets: List[Dict[str, Any]], device: torch.device, amp: bool = False, amp_dtype: torch.dtype = torch.bfloat16,
                  bad_samples: Optional[BadSampleLog] = None) -> Tuple[Any, List[Dict[str, Any]]]:
    """One collated batch of the training or validation loop through the model: clips `samples` `[B, T, 3, H, W]`
    and `audio` `[B, 39, L]` on `device` -> (the model's outputs, float32 under `amp`; the targets on `device`).

    The samples replaced while loading the batch (`--skip_bad_samples`) are named once through `bad_samples`.
    """
    if bad_samples is not None:
        bad_samples.add(targets)
    samples, audio = samples.to(device), audio.to(device)
    targets = _to_device(targets, device)
    with autocast_context(device, amp, amp_dtype):
        outputs = model(samples, audio)
    return (outputs_to_float(outputs) if amp else outputs), targets


def train_one_epoch(model: nn.Module, criterion: nn.Module, data_loader: Iterable,
                    optimizer: torch.optim.Optimizer, device: torch.device, epoch: int,
                    max_norm: float = 0.0, amp: bool = False, amp_dtype: torch.dtype = torch.bfloat16,
                    scaler: Optional[torch.amp.GradScaler] = None, bad_samples: Optional[BadSampleLog] = None,
                    should_stop: Callable[[], bool] = lambda: False) -> Dict[str, float]:
    """One pass over `data_loader`; returns the epoch means of every loss term (reduced over ranks), the
    number of optimizer `steps`, and `stopped`: whether `should_stop()` ended the epoch after a step.

    Raises `NonFiniteLossError` naming the batch's samples when the loss is not finite on any rank, and a
    `UserError` when the epoch takes no optimizer step. Broken samples replaced while loading
    (`--skip_bad_samples`) are named once through `bad_samples`.
    """
    model.train()
    criterion.train()
    averages = EpochAverages()
    stopped = False
    # closed also when an error stops the epoch, so that the error line starts a line of its own
    with tqdm(data_loader, desc=f"epoch {epoch}", disable=not utils.is_main_process(), dynamic_ncols=True) as progress:
        for samples, audio, targets in progress:
            outputs, targets = forward_batch(model, samples, audio, targets, device, amp, amp_dtype, bad_samples)
            loss_dict = criterion(outputs, targets)
            losses = _weighted_losses(loss_dict, criterion.weight_dict)

            reduced = utils.reduce_dict({k: v.detach() for k, v in loss_dict.items()})
            reduced_total = float(_weighted_losses(reduced, criterion.weight_dict))
            if not math.isfinite(reduced_total):
                local_ok = math.isfinite(float(losses.detach()))
                where = "another process's batch" if local_ok else f"the batch of samples {describe_samples(targets)}"
                raise NonFiniteLossError(
                    f"epoch {epoch}: loss is {reduced_total} on {where}; terms: "
                    f"{ {k: float(v) for k, v in reduced.items()} }. Stopping; the last checkpoint is left untouched.")

            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(losses).backward()
                scaler.unscale_(optimizer)
            else:
                losses.backward()
            if max_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()

            values = {k: float(v) for k, v in reduced.items()}
            values["loss"] = reduced_total
            averages.update(values)
            progress.set_postfix(loss=f"{reduced_total:.4f}")
            if should_stop():
                stopped = True
                break
    if averages.count == 0:
        raise UserError(f"epoch {epoch} took no optimizer step: the data loader gave no batch")
    means = averages.means()
    means["lr"] = optimizer.param_groups[0]["lr"]
    means["steps"] = averages.count
    means["stopped"] = stopped
    return means


@torch.no_grad()
def evaluate_loss(model: nn.Module, criterion: nn.Module, data_loader: Iterable, device: torch.device,
                  amp: bool = False, amp_dtype: torch.dtype = torch.bfloat16,
                  bad_samples: Optional[BadSampleLog] = None) -> Dict[str, float]:
    """The validation-loss loop: epoch means of every loss term in eval mode."""
    model.eval()
    criterion.eval()
    averages = EpochAverages()
    for samples, audio, targets in tqdm(data_loader, desc="eval", disable=not utils.is_main_process(),
                                        dynamic_ncols=True):
        outputs, targets = forward_batch(model, samples, audio, targets, device, amp, amp_dtype, bad_samples)
        reduced = utils.reduce_dict(criterion(outputs, targets))
        values = {k: float(v) for k, v in reduced.items()}
        values["loss"] = float(_weighted_losses(reduced, criterion.weight_dict))
        averages.update(values)
    return averages.means()


def outputs_to_float(outputs: Any) -> Any:
    """The model's outputs (tensors in dicts and lists) in float32: losses run in float32 even under autocast
    (focal/dice/KL are sensitive to low precision)."""
    if torch.is_tensor(outputs):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, dict):
        return {k: outputs_to_float(v) for k, v in outputs.items()}
    if isinstance(outputs, list):
        return [outputs_to_float(v) for v in outputs]
    return outputs


# ----------------------------------------------------------------------------- optimisation, batches, precision
def build_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """AdamW with the backbone at `lr_backbone` and everything else at `lr` (frozen parameters excluded)."""
    param_groups = [
        {"params": [p for n, p in model.named_parameters() if "backbone" not in n and p.requires_grad]},
        {"params": [p for n, p in model.named_parameters() if "backbone" in n and p.requires_grad],
         "lr": args.lr_backbone},
    ]
    return torch.optim.AdamW(param_groups, lr=args.lr, weight_decay=args.weight_decay)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, args: argparse.Namespace):
    """StepLR: every learning rate times 0.1 after `lr_drop` epochs (the official recipe, docs/protocol.md §4)."""
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


def amp_settings(args: argparse.Namespace, device: torch.device):
    dtype = torch.float16 if (args.amp_dtype == "float16" and device.type == "cuda") else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda") if (args.amp and dtype == torch.float16) else None
    return dtype, scaler
