"""The A2D-Sentences / JHMDB-Sentences protocol: each annotated frame scored at the middle of the clip centred on it."""
import argparse
import functools
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from datasets.audio import AudioLoader, build_audio_loader
from datasets.common import (SKIP_HINT, BadSampleWarning, MiddleFrameDataset, SampleError, build_for_check,
                             centred_clip_indices, report_data_check)
from datasets.formats import DataFormatError
from engine.inference import PathLike, load_frame, load_model_for_inference, predict_clip_masks
from models.postprocess import PostProcessSegm
from util.clips import middle_frame_index
from util.config import inference_scale
from util.errors import USER_OS_ERRORS, OptionError, UserError, one_line
from util.journal import ResultJournal, journal_on_interrupt, journal_settings, unfinished_hint
from util.metrics import db_eval_boundary, db_eval_iou, referring_metrics
from util.reporting import report_metrics
from util.results import decode_masks, encode_rle

SAMPLE_RECORD_KEYS = ("sample", "frame_idx", "J", "F")  # what the metrics JSON keeps of each sample


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
    if args.check_data:
        args.skip_bad_samples = True  # list every broken sample
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
    model, postprocessors, _ = load_model_for_inference(args)
    load_audio.model_rate = args.model_audio_sample_rate
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
