"""The engine, DETR style: the training and validation-loss loops (one epoch each), and the evaluation side that the
inference scripts share: the model for inference, frames and recordings, masks over the clips of a whole video,
and the middle-frame protocol of A2D-Sentences and JHMDB-Sentences.

The official scripts build the model, load `{'model': state_dict}`, resize every frame to short side
300 (torchvision `Resize(300)`, no cap on the long side), normalise with the ImageNet statistics, run
one clip of `--num_frames` frames with one recording, upsample the mask logits bilinearly to the
original frame size and threshold the sigmoid at 0.5 (SPEC section 7): `build_model`'s `segm` postprocessor.
"""
import argparse
import contextlib
import functools
import math
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm

import util.misc as utils
from datasets.audio import AudioLoader, build_audio_loader
from datasets.common import (SKIP_HINT, BadSampleLog, BadSampleWarning, MiddleFrameDataset, SampleError,
                             build_for_check, centred_clip_indices, report_data_check)
from datasets.formats import DataFormatError, read_rgb
from datasets.transforms import make_inference_transforms
from models import build_model, optimize_for_inference
from models.postprocess import PostProcessSegm
from util.clips import cyclic_clips, middle_frame_index
from util.config import inference_scale
from util.errors import USER_OS_ERRORS, OptionError, UserError, check_device, one_line
from util.journal import ResultJournal, journal_on_interrupt, journal_settings, unfinished_hint
from util.metrics import db_eval_boundary, db_eval_iou, referring_metrics
from util.reporting import log_json, report_metrics
from util.results import decode_masks, encode_rle
from util.weights import checkpoint_train_videos, load_wnet_checkpoint

PathLike = Union[str, Path]

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
SAMPLE_RECORD_KEYS = ("sample", "frame_idx", "J", "F")  # what the metrics JSON keeps of each sample


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
    progress = tqdm(data_loader, desc=f"epoch {epoch}", disable=not utils.is_main_process(), dynamic_ncols=True)
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
    progress.close()
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


# ----------------------------------------------------------------------------- the model for inference
def load_model_for_inference(args) -> Tuple[nn.Module, Dict[str, nn.Module], Optional[Dict[str, List[str]]], int]:
    """Build the mask model of `args` and its postprocessors, load `--model_path` strictly, and make the model
    ready for inference. Returns (model, postprocessors, the `{part: [video names]}` the checkpoint records as
    trained on or None when it records none, the rate of the features the model was trained on).

    Eval mode unless `--inference_dropout` (the official scripts forget `model.eval()`, so their
    numbers come from the model in training mode); `models.optimize_for_inference` otherwise. The training
    features' rate is the one the checkpoint's args record (0: unknown, e.g. the released checkpoint).
    """
    if not args.model_path:
        raise OptionError("--model_path is required: a checkpoint {'model': state_dict} (e.g. output/checkpoint.pth)")
    if not Path(args.model_path).is_file():
        raise OptionError(f"--model_path {args.model_path}: the file does not exist")
    if not args.masks:
        raise OptionError("inference predicts masks: pass --masks (the mask model), or a config that sets it")
    device = check_device(args.device)
    scale = inference_scale(args)
    if scale != args.data_scale:  # a departure from the official protocol: say so
        log_json({"event": "inference_size", "data_scale": args.data_scale, "inference_data_scale": scale,
                  "note": "--inference_data_scale: the frames are resized for inference to another scale than "
                          "--data_scale (the official infers at the training sizes)"})
    utils.seed_everything(args.seed)
    model, _, postprocessors = build_model(args)
    checkpoint = load_wnet_checkpoint(model, args.model_path)
    saved_args = checkpoint.get("args") or {}
    saved_args = vars(saved_args) if isinstance(saved_args, argparse.Namespace) else saved_args
    model_audio_sample_rate = int(saved_args.get("audio_sample_rate") or 0)
    model.to(device)
    if args.inference_dropout:
        model.train()  # reproduce the official numbers (dropout active)
    else:
        model.eval()
        model = optimize_for_inference(model)
    return model, postprocessors, checkpoint_train_videos(checkpoint, args.model_path), model_audio_sample_rate


# ----------------------------------------------------------------------------- frames and recordings
@functools.lru_cache(maxsize=None)
def frame_transform(scale: float = 1.0):
    """The official inference transform (short side 300, ImageNet normalisation), sizes times `scale`
    (`util.config.inference_scale`: `--inference_data_scale`, else `--data_scale`; below 1 for small demo models)."""
    return make_inference_transforms(scale)


def list_frames(folder: PathLike) -> List[Path]:
    """Image files of a folder, sorted by name (numeric names sort by number)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"frame folder not found: {folder}")
    frames = [p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS and not p.name.startswith(".")]
    if not frames:
        raise FileNotFoundError(f"no frames ({', '.join(FRAME_EXTENSIONS)}) in {folder}")
    return sorted(frames, key=lambda p: (int(p.stem), p.name) if p.stem.isdigit() else (math.inf, p.name))


def load_frame(path: PathLike, scale: float = 1.0) -> Tuple[Tensor, Image.Image]:
    """A frame file -> (normalised tensor `[3, h, w]` at short side 300 x `scale`, the RGB image)."""
    image = read_rgb(path)
    (tensor,), _ = frame_transform(scale)([image], {})
    return tensor, image


# ----------------------------------------------------------------------------- masks of a clip, of a video
@torch.no_grad()
def predict_clip_masks(model: nn.Module, postprocess: PostProcessSegm, clip: Tensor, audio: Tensor,
                       out_size: Tuple[int, int]) -> Dict[str, Tensor]:
    """One clip `[T, 3, h, w]` and one recording `[39, L]` -> the postprocessor's `masks [T, H, W]` (bool) at
    `out_size` (H, W) and their `scores [T]`, on the CPU."""
    device = next(model.parameters()).device
    outputs = model(clip.to(device), audio.to(device)[None])
    (result,) = postprocess(outputs, torch.tensor([out_size]))
    return {key: value.cpu() for key, value in result.items()}


def predict_video_masks(model: nn.Module, postprocess: PostProcessSegm, frames: Tensor, audio: Tensor,
                        num_frames: int, out_size: Tuple[int, int]) -> np.ndarray:
    """Every frame `[n, 3, h, w]` of a video and one recording `[39, L]` -> masks `[n, H, W]` (bool) at `out_size`,
    from consecutive clips of `num_frames` (`util.clips.cyclic_clips`: the last one filled cyclically)."""
    parts = []
    for indices, count in cyclic_clips(len(frames), num_frames):
        masks = predict_clip_masks(model, postprocess, frames[indices], audio, out_size)["masks"]  # [T, H, W]
        parts.append(masks[:count].numpy())
    return np.concatenate(parts)


# ----------------------------------------------------------------------------- A2D / JHMDB protocol
class MiddleFrameSample:
    """One evaluation sample: a clip centred on an annotated frame, a recording, the ground truth."""

    def __init__(self, name: str, frame_paths: Sequence[Path], frame_idx: int, audio_path: Path,
                 load_gt: Callable[[], np.ndarray]):
        self.name, self.frame_paths, self.frame_idx = name, list(frame_paths), frame_idx
        self.audio_path, self.load_gt = audio_path, load_gt


def predict_middle_frame(model: nn.Module, postprocess: PostProcessSegm, sample: MiddleFrameSample, num_frames: int,
                         scale: float, load_audio: Callable[[PathLike], Tensor]) -> Dict:
    """One sample of the A2D/JHMDB protocol -> its record: J, F, the mask score and both masks as RLE."""
    middle = middle_frame_index(num_frames)
    indices = centred_clip_indices(sample.frame_idx, len(sample.frame_paths), num_frames)
    loaded = [load_frame(sample.frame_paths[i], scale) for i in indices]
    clip = torch.stack([tensor for tensor, _ in loaded])  # [T, 3, h, w]
    width, height = loaded[middle][1].size
    audio = load_audio(sample.audio_path)
    predicted = predict_clip_masks(model, postprocess, clip, audio, (height, width))
    pred = predicted["masks"][middle].numpy()  # [H, W]
    gt = np.asarray(sample.load_gt()).astype(bool)
    if gt.shape != pred.shape:
        raise DataFormatError(f"ground-truth mask {gt.shape} does not match the frame "
                              f"{sample.frame_paths[sample.frame_idx]} ({pred.shape})")
    return {"sample": sample.name, "frame_idx": sample.frame_idx, "J": float(db_eval_iou(gt, pred)),
            "F": float(db_eval_boundary(gt, pred)), "score": float(predicted["scores"][middle]),
            "pred": encode_rle(pred), "gt": encode_rle(gt)}


def evaluate_middle_frame(model: nn.Module, postprocess: PostProcessSegm, samples: Sequence[MiddleFrameSample],
                          num_frames: int, desc: str, scale: float = 1.0, skip_bad_samples: bool = False,
                          journal: Optional[ResultJournal] = None,
                          load_audio: Callable[[PathLike], Tensor] = AudioLoader()
                          ) -> Tuple[Dict[str, float], List[Dict], List[str]]:
    """The official A2D/JHMDB protocol: the clip centred on each sample's frame, the middle
    frame's mask against the ground truth. Returns (metrics, per-sample records, dropped samples).

    Metrics: the official mean J and F over samples, plus `referring_metrics` (precision@K,
    overall/mean IoU, mAP); the mask score for mAP is the postprocessor's (the mean foreground probability
    inside the mask). A broken sample stops the evaluation naming it, or with `skip_bad_samples` is named,
    dropped and counted. Each finished sample goes to `journal` at once (its samples are not evaluated again).
    """
    records: List[Dict] = []
    dropped: List[str] = []
    start = time.time()
    for sample in tqdm(samples, desc=desc, dynamic_ncols=True):
        if journal is not None and sample.name in journal.done:
            record = journal.done[sample.name]
        else:
            try:
                record = predict_middle_frame(model, postprocess, sample, num_frames, scale, load_audio)
            except (UserError,) + USER_OS_ERRORS as error:
                message = f"{desc}: sample {sample.name}: {one_line(error)}"
                if not skip_bad_samples:
                    raise SampleError(message + SKIP_HINT + unfinished_hint(journal)) from error
                warnings.warn(message, BadSampleWarning)
                record = {"sample": sample.name, "dropped": message}
            if journal is not None:
                journal.add(sample.name, record)
        if "dropped" in record:
            dropped.append(record["dropped"])
        else:
            records.append(record)
    if not records:
        raise UserError(f"{desc}: no evaluation samples" + (f" ({len(dropped)} dropped as broken)" if dropped else ""))
    preds = [decode_masks([r["pred"]])[0] for r in records]
    gts = [decode_masks([r["gt"]])[0] for r in records]
    metrics = {"J": float(np.mean([r["J"] for r in records])), "F": float(np.mean([r["F"] for r in records])),
               "num_samples": len(records)}
    metrics.update(referring_metrics(preds, gts, [r["score"] for r in records]))
    metrics["seconds"] = round(time.time() - start, 2)
    return metrics, [{k: r[k] for k in SAMPLE_RECORD_KEYS} for r in records], dropped


def middle_frame_samples(dataset: MiddleFrameDataset) -> List[MiddleFrameSample]:
    """Every sample of an A2D/JHMDB evaluation set, as the middle-frame protocol reads it (the ground truth is
    read only when the sample is scored)."""
    return [MiddleFrameSample(dataset.describe(index), dataset.frame_paths(sample.video_id), sample.frame_idx,
                              dataset.sample_audio_path(index), functools.partial(dataset.ground_truth, index))
            for index, sample in enumerate(dataset.samples)]


def run_middle_frame_evaluation(args: argparse.Namespace,
                                build_test_set: Callable[[argparse.Namespace], MiddleFrameDataset]
                                ) -> Union[Dict[str, float], int]:
    """What `inference_a2d.py` and `inference_jhmdb.py` do with the test set that `build_test_set(args)` reads:
    the metrics of the middle-frame protocol, or with `--check_data` the exit code of the data check."""
    if args.check_data:  # `util.options.inference_args` made it --skip_bad_samples: every broken sample listed
        dataset = build_for_check(lambda: build_test_set(args))
        return report_data_check(dataset.check_data(), {"dataset": dataset.name, "samples": len(dataset)})
    return run_middle_frame_protocol(args, build_test_set(args))


def run_middle_frame_protocol(args: argparse.Namespace, dataset: MiddleFrameDataset) -> Dict[str, float]:
    """Load `--model_path`, evaluate every sample of `dataset`, print the metrics and write them to
    `--metrics_path`, with the samples dropped as broken (at `dataset`'s construction and while evaluating)."""
    samples = middle_frame_samples(dataset)
    if args.resume_results and not args.metrics_path:
        raise OptionError("--resume_results needs --metrics_path (the unfinished run's samples are kept beside it)")
    journal = ResultJournal(args.metrics_path, journal_settings(args), args.resume_results) if args.metrics_path else None
    # the audio options first (a bad noise or band fails before the model is loaded)
    load_audio = build_audio_loader(args, sorted({sample.audio_path for sample in samples}))
    model, postprocessors, _, load_audio.model_rate = load_model_for_inference(args)
    load_audio.warn_feature_rate(args.a2d_audio_path)
    with journal_on_interrupt(journal):
        metrics, records, dropped = evaluate_middle_frame(model, postprocessors["segm"], samples, args.num_frames,
                                                          dataset.title, inference_scale(args),
                                                          args.skip_bad_samples, journal, load_audio)
    dropped = dataset.problems + dropped
    metrics["num_dropped"] = len(dropped)
    metrics.update(load_audio.describe())
    report_metrics(metrics, records, args.metrics_path, dropped)
    if journal is not None:
        journal.finish()
    return metrics
