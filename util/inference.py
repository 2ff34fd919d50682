"""What the three inference scripts share: the model for inference, the official frame transform,
mask prediction for a clip, and the middle-frame protocol of A2D-Sentences and JHMDB-Sentences.

The official scripts build the model, load `{'model': state_dict}`, resize every frame to short side
300 (torchvision `Resize(300)`, no cap on the long side), normalise with the ImageNet statistics, run
one clip of `--num_frames` frames with one recording, upsample the mask logits bilinearly to the
original frame size and threshold the sigmoid at 0.5 (SPEC section 7).
"""
import functools
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm

from datasets.transforms import make_inference_transforms
import util.misc as utils
from util.misc import atomic_json_dump

if TYPE_CHECKING:
    from datasets.noise import AudioNoise

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")


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
    numbers come from the model in training mode); `models.optimize_for_inference` otherwise.
    """
    return load_model_and_train_videos(args)[0]


def load_model_and_train_videos(args) -> Tuple[nn.Module, Optional[Dict[str, List[str]]]]:
    """`load_model_for_inference`, and the `{part: [video names]}` the checkpoint records as trained on
    (None when it records none)."""
    from models import build_model, optimize_for_inference
    from util.weights import checkpoint_train_videos, load_wnet_checkpoint

    if not args.model_path:
        raise SystemExit("--model_path is required: a checkpoint {'model': state_dict} (e.g. output/checkpoint.pth)")
    utils.seed_everything(args.seed)
    model, _, _ = build_model(args)
    checkpoint = load_wnet_checkpoint(model, args.model_path)
    model.to(torch.device(args.device))
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


def load_audio_array(path: PathLike, noise: Optional["AudioNoise"] = None) -> Tensor:
    """MFCC-39 features `(frames, 39)` from a `.npy` file or a raw recording -> `[39, L]`; with `noise`, of the
    recording with its noise added (`datasets.noise`)."""
    from datasets.common import load_audio_feature

    if noise is not None:
        return noise.features(path)
    return load_audio_feature(path)  # a recording's features are computed (once per process)


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


def evaluate_middle_frame(model: nn.Module, samples: Sequence[MiddleFrameSample], num_frames: int,
                          desc: str, scale: float = 1.0, noise: Optional["AudioNoise"] = None
                          ) -> Tuple[Dict[str, float], List[Dict]]:
    """The official A2D/JHMDB protocol: the clip centred on each sample's frame, the middle
    frame's mask against the ground truth. Returns (metrics, per-sample records).

    Metrics: the official mean J and F over samples, plus `referring_metrics` (precision@K,
    overall/mean IoU, mAP); the mask score for mAP is the mean foreground probability inside the mask.
    """
    from datasets.common import centred_clip_indices
    from util.metrics import db_eval_boundary, db_eval_iou, referring_metrics

    middle = (num_frames - 1) // 2
    preds, gts, scores, records = [], [], [], []
    start = time.time()
    for sample in tqdm(samples, desc=desc, dynamic_ncols=True):
        indices = centred_clip_indices(sample.frame_idx, len(sample.frame_paths), num_frames)
        loaded = [load_frame(sample.frame_paths[i], scale) for i in indices]
        clip = torch.stack([tensor for tensor, _ in loaded])  # [T, 3, h, w]
        width, height = loaded[middle][1].size
        audio = load_audio_array(sample.audio_path, noise)
        logits = predict_mask_logits(model, clip, audio, (height, width))[middle]  # [H, W]
        pred = binarize(logits)
        gt = np.asarray(sample.load_gt()).astype(bool)
        if gt.shape != pred.shape:
            raise ValueError(f"sample {sample.name}: ground-truth mask {gt.shape} does not match the frame "
                             f"{sample.frame_paths[sample.frame_idx]} ({pred.shape})")
        probability = logits.sigmoid()
        scores.append(float(probability[torch.from_numpy(pred)].mean()) if pred.any() else 0.0)
        preds.append(pred)
        gts.append(gt)
        records.append({"sample": sample.name, "frame_idx": sample.frame_idx,
                        "J": float(db_eval_iou(gt, pred)), "F": float(db_eval_boundary(gt, pred))})
    if not records:
        raise ValueError("no evaluation samples")
    metrics = {"J": float(np.mean([r["J"] for r in records])), "F": float(np.mean([r["F"] for r in records])),
               "num_samples": len(records)}
    metrics.update(referring_metrics(preds, gts, scores))
    metrics["seconds"] = round(time.time() - start, 2)
    return metrics, records


def run_middle_frame_protocol(args, samples: Sequence[MiddleFrameSample], desc: str) -> Dict[str, float]:
    """Load `--model_path`, evaluate `samples`, print the metrics and write them to `--metrics_path`."""
    from datasets.noise import build_noise

    noise = build_noise(args, sorted({sample.audio_path for sample in samples}))  # before the model: fail early
    model = load_model_for_inference(args)
    metrics, records = evaluate_middle_frame(model, samples, args.num_frames, desc, args.data_scale, noise)
    if noise is not None:
        metrics.update(audio_noise=noise.kind, audio_snr_db=noise.snr_db)
    report_metrics(metrics, records, args.metrics_path)
    return metrics


def report_metrics(metrics: Dict, records: List[Dict], path: Optional[PathLike]) -> None:
    """Print the metrics as one JSON line and write metrics + per-sample records atomically."""
    log_json(metrics)
    if path:
        atomic_json_dump({"metrics": metrics, "samples": records}, path, indent=1)
        print(f"metrics written to {path}", file=sys.stderr)
