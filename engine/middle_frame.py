"""The A2D-Sentences / JHMDB-Sentences protocol: each annotated frame scored at its position in the clip centred on
it. Evaluation reads every sample through the dataset's own `MiddleFrameDataset.load_with_ground_truth` (the clip
selection and loading of training, the frames through the inference transform that `build_test_set` gives), so
training and evaluation cannot disagree on the frames of a sample.
"""
import argparse
import time
import warnings
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
from torch import nn
from tqdm import tqdm

from datasets.audio import build_audio_loader
from datasets.common import (SKIP_HINT, BadSampleWarning, MiddleFrameDataset, SampleError, build_for_check,
                             report_data_check)
from engine.inference import load_model_for_inference, predict_clip_masks
from engine.shard import Shard
from models.postprocess import PostProcessSegm
from util.errors import USER_OS_ERRORS, OptionError, UserError, one_line
from util.journal import ResultJournal, journal_on_interrupt, journal_settings, unfinished_hint
from util.metrics import db_eval_boundary, db_eval_iou, referring_metrics
from util.reporting import report_metrics
from util.results import decode_masks, encode_rle

SAMPLE_RECORD_KEYS = ("sample", "frame_idx", "J", "F")  # what the metrics JSON keeps of each sample


def predict_middle_frame(model: nn.Module, postprocess: PostProcessSegm, dataset: MiddleFrameDataset,
                         index: int) -> Dict:
    """Sample `index` of `dataset` -> its record: J, F, the mask score and both masks as RLE."""
    clip, audio, target, gt = dataset.load_with_ground_truth(index)  # [T, 3, h, w], [39, L], target, [H, W]
    scored = int(target["frame_idx"])  # the annotated frame's position in the clip
    height, width = target["orig_size"].tolist()
    predicted = predict_clip_masks(model, postprocess, clip, audio, (height, width))
    pred = predicted["masks"][scored].numpy()  # [H, W]
    gt = np.asarray(gt).astype(bool)
    return {"sample": dataset.describe(index), "frame_idx": int(target["frame_id"]),
            "J": float(db_eval_iou(gt, pred)), "F": float(db_eval_boundary(gt, pred)),
            "score": float(predicted["scores"][scored]), "pred": encode_rle(pred), "gt": encode_rle(gt)}


def evaluate_middle_frame(model: nn.Module, postprocess: PostProcessSegm, dataset: MiddleFrameDataset,
                          skip_bad_samples: bool = False, journal: Optional[ResultJournal] = None,
                          shard: Shard = Shard(), output: str = ""
                          ) -> Optional[Tuple[Dict[str, float], List[Dict], List[str]]]:
    """The official A2D/JHMDB protocol over every sample of `dataset`: the clip centred on each sample's frame, the
    middle frame's mask against the ground truth. Returns (metrics, per-sample records, dropped samples).

    Metrics: the official mean J and F over samples, plus `referring_metrics` (precision@K,
    overall/mean IoU, mAP); the mask score for mAP is the postprocessor's (the mean foreground probability
    inside the mask). A broken sample stops the evaluation naming it, or with `skip_bad_samples` is named,
    dropped and counted. Each finished sample goes to `journal` at once (its samples are not evaluated again).
    Sharded (`shard`, engine/shard.py), this rank evaluates its share, writes its part beside `output`, and rank 0
    scores every rank's samples in the dataset's order (the other ranks return None).
    """
    records: List[Dict] = []
    dropped: List[str] = []
    start = time.time()
    desc = dataset.title
    done: Dict[str, Dict] = {}
    for index in tqdm(shard.take(range(len(dataset))), desc=desc, dynamic_ncols=True):
        name = dataset.describe(index)
        if journal is not None and name in journal.done:
            done[name] = journal.done[name]
        else:
            try:
                record = predict_middle_frame(model, postprocess, dataset, index)
            except (UserError,) + USER_OS_ERRORS as error:
                message = f"{desc}: sample {name}: {one_line(error)}"
                if not skip_bad_samples:
                    raise SampleError(message + SKIP_HINT + unfinished_hint(journal)) from error
                warnings.warn(message, BadSampleWarning)
                record = {"sample": name, "dropped": message}
            if journal is not None:
                journal.add(name, record)
            done[name] = record
    done = shard.gather(output, done)
    if done is None:
        return None
    for record in (done[dataset.describe(index)] for index in range(len(dataset))):
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
    shard = Shard.of(args)  # under torchrun: this rank's share of the samples (engine/shard.py)
    if (args.resume_results or shard.sharded) and not args.metrics_path:
        raise OptionError("--resume_results and sharded runs need --metrics_path (the unfinished run's samples, "
                          "and the ranks' parts, are kept beside it)")
    if args.metrics_path:
        shard.check_layout(args.metrics_path)
    journal = (ResultJournal(shard.part_path(args.metrics_path), journal_settings(args), args.resume_results)
               if args.metrics_path else None)
    # the audio options first (a bad noise or band fails before the model is loaded)
    dataset.audio_loader = load_audio = build_audio_loader(args, dataset.audio_paths())
    model, postprocessors, _, load_audio.model_rate = load_model_for_inference(args)
    load_audio.warn_feature_rate(args.a2d_audio_path)
    with journal_on_interrupt(journal), shard.named_on_failure():
        evaluated = evaluate_middle_frame(model, postprocessors["segm"], dataset, args.skip_bad_samples, journal,
                                          shard, args.metrics_path)
    if evaluated is None:  # another rank than 0: its part is written, rank 0 reports
        return {}
    metrics, records, dropped = evaluated
    dropped = dataset.problems + dropped
    metrics["num_dropped"] = len(dropped)
    metrics.update(load_audio.describe())
    report_metrics(metrics, records, args.metrics_path, dropped)
    if journal is not None:
        journal.finish()
    shard.finish(args.metrics_path)
    return metrics
