"""What the three inference scripts share: the model for inference, the official frame transform,
mask prediction for a clip, and the middle-frame protocol of A2D-Sentences and JHMDB-Sentences.

The official scripts build the model, load `{'model': state_dict}`, resize every frame to short side
300 (torchvision `Resize(300)`, no cap on the long side), normalise with the ImageNet statistics, run
one clip of `--num_frames` frames with one recording, upsample the mask logits bilinearly to the
original frame size and threshold the sigmoid at 0.5 (SPEC section 7).
"""
import argparse
import contextlib
import functools
import glob
import json
import logging
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm

from datasets.common import SKIP_HINT, BadSampleWarning, SampleError
from datasets.formats import DataFormatError
from datasets.transforms import make_inference_transforms
import util.misc as utils
from util.config import PARTIAL_SUFFIX
from util.errors import USER_OS_ERRORS, Interrupted, OptionError, UserError, check_device, one_line
from util.misc import atomic_json_dump, atomic_write

if TYPE_CHECKING:
    from datasets.noise import AudioNoise

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
# Options the predictions depend on (with the checkpoint): a journal of an unfinished run is resumed only
# when they are the same.
JOURNAL_OPTIONS = ("num_frames", "data_scale", "audio_feature", "audio_sample_rate", "inference_dropout", "seed")
SAMPLE_RECORD_KEYS = ("sample", "frame_idx", "J", "F")  # what the metrics JSON keeps of each sample


@functools.lru_cache(maxsize=None)
def frame_transform(scale: float = 1.0):
    """The official inference transform (short side 300, ImageNet normalisation), sizes times `scale`
    (`--data_scale`, for small demo models)."""
    return make_inference_transforms(scale)


def log_json(record: Dict) -> None:
    """One JSON line on stdout (tqdm writes its bar on stderr)."""
    print(json.dumps(record), flush=True)


def load_model_for_inference(args) -> nn.Module:
    """Build the model of `args`, load `--model_path` strictly, and make it ready for inference.

    Eval mode unless `--inference_dropout` (the official scripts forget `model.eval()`, so their
    numbers come from the model in training mode); `models.optimize_for_inference` otherwise. Sets
    `args.model_audio_sample_rate`: the rate of the features the model was trained on, as its
    checkpoint records it (0: unknown, e.g. the released checkpoint).
    """
    return load_model_and_train_videos(args)[0]


def load_model_and_train_videos(args) -> Tuple[nn.Module, Optional[Dict[str, List[str]]]]:
    """`load_model_for_inference`, and the `{part: [video names]}` the checkpoint records as trained on
    (None when it records none)."""
    from models import build_model, optimize_for_inference
    from util.weights import checkpoint_train_videos, load_wnet_checkpoint

    if not args.model_path:
        raise OptionError("--model_path is required: a checkpoint {'model': state_dict} (e.g. output/checkpoint.pth)")
    if not Path(args.model_path).is_file():
        raise OptionError(f"--model_path {args.model_path}: the file does not exist")
    device = check_device(args.device)
    utils.seed_everything(args.seed)
    model, _, _ = build_model(args)
    checkpoint = load_wnet_checkpoint(model, args.model_path)
    saved_args = checkpoint.get("args") or {}
    saved_args = vars(saved_args) if isinstance(saved_args, argparse.Namespace) else saved_args
    args.model_audio_sample_rate = int(saved_args.get("audio_sample_rate") or 0)
    model.to(device)
    if args.inference_dropout:
        model.train()  # reproduce the official numbers (dropout active)
    else:
        model.eval()
        model = optimize_for_inference(model)
    return model, checkpoint_train_videos(checkpoint, args.model_path)


def list_frames(folder: PathLike) -> List[Path]:
    """Image files of a folder, sorted by name (numeric names sort by number)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"frame folder not found: {folder}")
    frames = [p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS and not p.name.startswith(".")]
    if not frames:
        raise FileNotFoundError(f"no frames ({', '.join(FRAME_EXTENSIONS)}) in {folder}")
    return sorted(frames, key=lambda p: (int(p.stem), p.name) if p.stem.isdigit() else (float("inf"), p.name))


def load_frame(path: PathLike, scale: float = 1.0) -> Tuple[Tensor, Image.Image]:
    """A frame file -> (normalised tensor `[3, h, w]` at short side 300 x `scale`, the RGB image)."""
    from datasets.formats import read_rgb

    image = read_rgb(path)
    (tensor,), _ = frame_transform(scale)([image], {})
    return tensor, image


def load_audio_array(path: PathLike, feature: str = "wnet", resample_to: int = 0, model_rate: int = 0,
                     noise: Optional["AudioNoise"] = None) -> Tensor:
    """MFCC-39 features `(frames, 39)` from a `.npy` file or a raw recording -> `[39, L]`.

    A recording is resampled to `resample_to` Hz first when it is not 0 (`--audio_sample_rate`); otherwise a
    recording at another rate than `model_rate` (the rate of the model's training features, when known) is
    warned about, since the same words give other features at another rate. With `noise` (`--audio_noise`),
    the features of the recording with its noise added (`datasets.noise`).
    """
    from datasets.audio import AudioWarning, features_from_samples, load_audio
    from datasets.common import load_audio_feature

    if noise is not None:
        return noise.features(path)
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return load_audio_feature(path)
    samples, sample_rate = load_audio(path)
    if model_rate and not resample_to and sample_rate != model_rate:
        warnings.warn(f"{path}: recorded at {sample_rate} Hz, but the model's training features were extracted at "
                      f"{model_rate} Hz; pass --audio_sample_rate {model_rate} to resample it", AudioWarning)
    features, _ = features_from_samples(samples, sample_rate, feature, resample_to, path)
    return torch.as_tensor(np.ascontiguousarray(features.T), dtype=torch.float32)


def audio_loader(args, noise: Optional["AudioNoise"] = None) -> Callable[[PathLike], Tensor]:
    """`load_audio_array` with the options of `args` (feature type, resampling, the model's rate) and `noise`."""
    return functools.partial(load_audio_array, feature=args.audio_feature, resample_to=args.audio_sample_rate,
                             model_rate=getattr(args, "model_audio_sample_rate", 0), noise=noise)


def warn_feature_rate(folder: PathLike, args) -> None:
    """Warn when `scripts/extract_mfcc.py` recorded another rate for the features in `folder` than the one the
    model was trained on (both known)."""
    from datasets.audio import AudioWarning, feature_sample_rate

    model_rate, rate = getattr(args, "model_audio_sample_rate", 0), feature_sample_rate(folder)
    if model_rate and rate and rate != model_rate:
        warnings.warn(f"the features in {folder} were extracted at {rate} Hz, the model's training features at "
                      f"{model_rate} Hz: extract them again with --audio_sample_rate {model_rate}", AudioWarning)


def cyclic_clips(num_frames: int, clip_len: int) -> List[Tuple[List[int], int]]:
    """Cover frames `0..num_frames-1` with consecutive clips of `clip_len` frames.

    Returns `(frame indices of the clip, number of new frames it predicts)`. A clip short of frames
    (the last one, or the only one of a short video) repeats its frames cyclically, as the official
    does for videos shorter than the clip; only its first `count` predictions are kept.
    """
    clips = []
    for start in range(0, num_frames, clip_len):
        own = list(range(start, min(start + clip_len, num_frames)))
        clips.append(([own[j % len(own)] for j in range(clip_len)], len(own)))
    return clips


@torch.no_grad()
def predict_mask_logits(model: nn.Module, clip: Tensor, audio: Tensor, out_size: Tuple[int, int]) -> Tensor:
    """One clip `[T, 3, h, w]` and one recording `[39, L]` -> mask logits `[T, H, W]` at `out_size`."""
    device = next(model.parameters()).device
    outputs = model(clip.to(device), audio.to(device)[None])
    logits = outputs["pred_masks"][0]  # [T, h/4, w/4]
    # bilinear, align_corners=False: the official F.interpolate defaults
    return F.interpolate(logits[:, None].float(), size=out_size, mode="bilinear")[:, 0].cpu()


def binarize(logits: Tensor) -> np.ndarray:
    """sigmoid(logit) > 0.5, i.e. logit > 0."""
    return (logits.sigmoid() > 0.5).numpy()


# ----------------------------------------------------------------------------- A2D / JHMDB protocol
class MiddleFrameSample:
    """One evaluation sample: a clip centred on an annotated frame, a recording, the ground truth."""

    def __init__(self, name: str, frame_paths: Sequence[Path], frame_idx: int, audio_path: Path,
                 load_gt: Callable[[], np.ndarray]):
        self.name, self.frame_paths, self.frame_idx = name, list(frame_paths), frame_idx
        self.audio_path, self.load_gt = audio_path, load_gt


def predict_middle_frame(model: nn.Module, sample: MiddleFrameSample, num_frames: int, scale: float,
                         load_audio: Callable[[PathLike], Tensor]) -> Dict:
    """One sample of the A2D/JHMDB protocol -> its record: J, F, the mask score and both masks as RLE."""
    from datasets.common import centred_clip_indices
    from util.metrics import db_eval_boundary, db_eval_iou
    from util.results import encode_masks

    middle = (num_frames - 1) // 2
    indices = centred_clip_indices(sample.frame_idx, len(sample.frame_paths), num_frames)
    loaded = [load_frame(sample.frame_paths[i], scale) for i in indices]
    clip = torch.stack([tensor for tensor, _ in loaded])  # [T, 3, h, w]
    width, height = loaded[middle][1].size
    audio = load_audio(sample.audio_path)
    logits = predict_mask_logits(model, clip, audio, (height, width))[middle]  # [H, W]
    pred = binarize(logits)
    gt = np.asarray(sample.load_gt()).astype(bool)
    if gt.shape != pred.shape:
        raise DataFormatError(f"ground-truth mask {gt.shape} does not match the frame "
                              f"{sample.frame_paths[sample.frame_idx]} ({pred.shape})")
    score = float(logits.sigmoid()[torch.from_numpy(pred)].mean()) if pred.any() else 0.0
    (pred_rle,), (gt_rle,) = encode_masks(pred[None]), encode_masks(gt[None])
    return {"sample": sample.name, "frame_idx": sample.frame_idx, "J": float(db_eval_iou(gt, pred)),
            "F": float(db_eval_boundary(gt, pred)), "score": score, "pred": pred_rle, "gt": gt_rle}


def evaluate_middle_frame(model: nn.Module, samples: Sequence[MiddleFrameSample], num_frames: int,
                          desc: str, scale: float = 1.0, skip_bad_samples: bool = False,
                          journal: Optional["ResultJournal"] = None,
                          load_audio: Callable[[PathLike], Tensor] = load_audio_array
                          ) -> Tuple[Dict[str, float], List[Dict], List[str]]:
    """The official A2D/JHMDB protocol: the clip centred on each sample's frame, the middle
    frame's mask against the ground truth. Returns (metrics, per-sample records, dropped samples).

    Metrics: the official mean J and F over samples, plus `referring_metrics` (precision@K,
    overall/mean IoU, mAP); the mask score for mAP is the mean foreground probability inside the mask.
    A broken sample stops the evaluation naming it, or with `skip_bad_samples` is named, dropped and
    counted. Each finished sample goes to `journal` at once (its samples are not evaluated again).
    """
    from util.metrics import referring_metrics
    from util.results import decode_masks

    records: List[Dict] = []
    dropped: List[str] = []
    start = time.time()
    for sample in tqdm(samples, desc=desc, dynamic_ncols=True):
        if journal is not None and sample.name in journal.done:
            record = journal.done[sample.name]
        else:
            try:
                record = predict_middle_frame(model, sample, num_frames, scale, load_audio)
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


def run_middle_frame_protocol(args, samples: Sequence[MiddleFrameSample], desc: str, dataset) -> Dict[str, float]:
    """Load `--model_path`, evaluate `samples` (of `dataset`), print the metrics and write them to
    `--metrics_path`, with the samples dropped as broken (at `dataset`'s construction and while evaluating)."""
    from datasets.noise import build_noise

    if args.resume_results and not args.metrics_path:
        raise OptionError("--resume_results needs --metrics_path (the unfinished run's samples are kept beside it)")
    journal = ResultJournal(args.metrics_path, journal_settings(args), args.resume_results) if args.metrics_path else None
    noise = build_noise(args, sorted({sample.audio_path for sample in samples}))  # before the model: fail early
    model = load_model_for_inference(args)
    warn_feature_rate(args.a2d_audio_path, args)
    with journal_on_interrupt(journal):
        metrics, records, dropped = evaluate_middle_frame(model, samples, args.num_frames, desc, args.data_scale,
                                                          args.skip_bad_samples, journal, audio_loader(args, noise))
    dropped = dataset.problems + dropped
    metrics["num_dropped"] = len(dropped)
    if noise is not None:
        metrics.update(audio_noise=noise.kind, audio_snr_db=noise.snr_db)
    report_metrics(metrics, records, args.metrics_path, dropped)
    if journal is not None:
        journal.finish()
    return metrics


def report_metrics(metrics: Dict, records: List[Dict], path: Optional[PathLike], dropped: Sequence[str] = ()) -> None:
    """Print the metrics as one JSON line and write metrics + per-sample records + dropped samples atomically."""
    log_json(metrics)
    if path:
        atomic_json_dump({"metrics": metrics, "samples": records, "dropped": list(dropped)}, path, indent=1)
        print(f"metrics written to {path}", file=sys.stderr)


# ----------------------------------------------------------------------------- keeping finished work
def journal_settings(args) -> Dict[str, object]:
    """What the results of an inference run depend on: a journal is resumed only with the same."""
    model = Path(args.model_path)
    stat = model.stat() if model.is_file() else None
    return {"model_path": str(model.resolve()), "model_bytes": stat.st_size if stat else None,
            "model_mtime_ns": stat.st_mtime_ns if stat else None,
            **{key: getattr(args, key) for key in JOURNAL_OPTIONS}}


class ResultJournal:
    """What an inference run has finished, one JSON line per video or sample, flushed to disk as each is
    made: an interrupted or failed run loses nothing, `--resume_results` continues it, and the final output
    replaces it (`finish`). The first line holds the settings; a journal of other settings is refused. The
    file is created with the first finished item, so a run that fails before leaves none."""

    def __init__(self, output: PathLike, settings: Dict[str, object], resume: bool):
        self.path = Path(f"{output}{PARTIAL_SUFFIX}")
        self.settings = settings
        self.done: Dict[str, Dict] = {}
        self.file = None
        for name in (Path(output).name, self.path.name):  # temporary files of a save killed in an earlier run
            utils.remove_stale_temporaries(self.path.parent, glob.escape(name))
        if not self.path.exists():
            return
        valid = self._read()
        if not self.done:
            return  # nothing finished: the next item starts the journal again
        if not resume:
            raise OptionError(f"{self.path} holds {len(self.done)} item(s) an interrupted run finished; pass "
                              f"--resume_results to continue it, or delete it to start again")
        os.truncate(self.path, valid)  # a line cut short by a kill would spoil the next one
        self.file = open(self.path, "a")
        log_json({"resumed": str(self.path), "finished": len(self.done)})

    def _read(self) -> int:
        """Load the finished items; returns the length in bytes of the journal's complete lines."""
        valid = 0
        with open(self.path, "rb") as f:
            for number, line in enumerate(f):
                try:
                    record = json.loads(line) if line.endswith(b"\n") else None
                except json.JSONDecodeError:
                    record = None
                if not isinstance(record, dict) or (number > 0 and "key" not in record):
                    break
                if number == 0 and record.get("settings") != self.settings:
                    saved = record.get("settings") or {}
                    changed = sorted(k for k in self.settings if saved.get(k) != self.settings[k])
                    raise OptionError(f"--resume_results: {self.path} was made with other settings "
                                      f"({', '.join(changed)}); delete it to start again")
                if number > 0:
                    self.done[record.pop("key")] = record
                valid += len(line)
        return valid

    def add(self, key: str, record: Dict) -> None:
        if self.file is None:
            header = json.dumps({"settings": self.settings}) + "\n"
            atomic_write(self.path, lambda tmp: Path(tmp).write_text(header))
            self.file = open(self.path, "a")
        self.done[key] = record
        self.file.write(json.dumps({"key": key, **record}) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def finish(self) -> None:
        """The final output is written: the journal is no longer needed."""
        if self.file is not None:
            self.file.close()
        self.path.unlink(missing_ok=True)


def unfinished_hint(journal: Optional[ResultJournal]) -> str:
    if journal is None or not journal.done:
        return ""
    return f"; the {len(journal.done)} finished item(s) are kept in {journal.path}: rerun with --resume_results"


@contextlib.contextmanager
def journal_on_interrupt(journal: Optional[ResultJournal]):
    """Ctrl-C during inference: say where the finished work is kept."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted("interrupted" + unfinished_hint(journal), signal.SIGINT) from None
