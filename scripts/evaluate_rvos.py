"""Score a Ref-YouTube-VOS results.json: region J, boundary F and J&F (docs/protocol.md §7).

    python scripts/evaluate_rvos.py RESULTS_JSON --ytvos_path ROOT [--ytvos_split train]
        [--split_file F] [--model_path CKPT] [--out metrics.json]

Ground truth: `ROOT/<split>/Annotations/<vid>/<frame>.png` (palette PNG, pixel value = object id)
and `ROOT/meta_expressions/<split>/meta_expressions.json`. The evaluated expressions are every
expression of the evaluated videos: those of `--split_file` (a YouTube-VIS style json or a text file
of video ids; by default the official `ROOT/ann/instances_test_sub.json` when it exists), else
(`--split_file none`) every video of meta_expressions that has annotations; their frames are those
the YouTube-VIS json lists, else those of meta_expressions. With `--model_path` (the checkpoint that
made the results), evaluated videos it was trained on are counted (`trained_on_evaluated_videos` in
the metrics JSON) and reported on stderr. Unlike the official script, an
expression missing from the results, or predicted empty, is scored as empty masks, and every frame
counts. J and F are averaged over every frame of every evaluated expression. An expression whose
object no annotation of its video holds is an error (an empty ground truth would score anything), and so are
results whose recorded frame names (`frames`) follow another order than the video's.

In-process: `from scripts.evaluate_rvos import evaluate_rvos`.
"""
import argparse
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image
from tqdm import tqdm

from datasets.common import SKIP_HINT, BadSampleWarning, SampleError
from datasets.formats import DataFormatError, read_json, read_palette_png
from datasets.options import OFFICIAL_YTVOS_PATH
from datasets.ytvos import TEST_PART, resolve_split_file
from datasets.ytvos_format import read_meta_expressions, read_video_list, refuse_duplicates
from util.config import ArgumentParser, HelpFormatter, ImgPathAction
from util.errors import USER_OS_ERRORS, UserError, one_line, run_main
from util.metrics import db_eval_boundary, db_eval_iou
from util.misc import atomic_json_dump
from util.names import check_name, child_path
from util.paths import check_outputs_apart
from util.results import (FRAMES_KEY, ResultsFormatError, decode_masks, describe_entry, read_results,
                          validate_results)
from util.weights import count_trained_on, read_train_videos

ANNOTATION_SUFFIX = ".png"
BACKGROUND = 0  # the annotation PNGs' pixel value where no object is
ExpressionKey = Tuple[str, str]  # (video name, exp_id)


def read_split_videos(path: Path) -> Dict[str, Optional[List[str]]]:
    """Videos of a split file -> `{vid: frame names, or None when the file lists none}`, in order.

    A YouTube-VIS style json gives each video's frames (`file_names` = 'vid/frame.jpg'); a text
    file gives one video id per line. A video id that is a path, or a video named twice, is an error naming it.
    """
    path = Path(path)
    if path.suffix == ".json":
        data = read_json(path)
        videos = data.get("videos") if isinstance(data, dict) else None
        if not isinstance(videos, list):
            raise DataFormatError(f"{path}: expected a YouTube-VIS style object with a 'videos' list")
        frames_by_video: Dict[str, Optional[List[str]]] = {}
        for index, video in enumerate(videos):
            file_names = video.get("file_names") if isinstance(video, dict) else None
            if (not isinstance(file_names, list) or not file_names
                    or not all(isinstance(name, str) and name.count("/") == 1 for name in file_names)):
                raise DataFormatError(f"{path}: video {index} has no 'file_names' of the form 'vid/frame.jpg'")
            vid = check_name(file_names[0].split("/")[0], "video id", path)
            if any(name.split("/")[0] != vid for name in file_names):
                raise DataFormatError(f"{path}: video {index} ({vid!r}) has 'file_names' of several videos")
            if vid in frames_by_video:
                refuse_duplicates(path, "video id", [vid])
            frames_by_video[vid] = [Path(name).stem for name in file_names]
        return frames_by_video
    return {vid: None for vid in read_video_list(path)}


def evaluated_videos(meta: Dict[str, dict], annotations_dir: Path, split_file: str) -> Dict[str, List[str]]:
    """`{vid: frame names}` of the evaluated videos: the split file's (each must be in
    meta_expressions and annotated; its frames when it lists them, else meta_expressions'), else
    every annotated video of meta_expressions, in file order."""
    if split_file:
        videos = read_split_videos(Path(split_file))
        for vid in videos:
            if vid not in meta:
                raise DataFormatError(f"{split_file}: video {vid!r} is not in meta_expressions")
            if not child_path(annotations_dir, vid).is_dir():
                raise FileNotFoundError(f"{split_file}: video {vid!r} has no annotations ({annotations_dir / vid} missing)")
        return {vid: frames if frames is not None else meta[vid]["frames"] for vid, frames in videos.items()}
    videos = {vid: meta[vid]["frames"] for vid in meta if child_path(annotations_dir, vid).is_dir()}
    if not videos:
        raise FileNotFoundError(f"no video of meta_expressions has annotations under {annotations_dir}")
    return videos


def index_entries(entries: Sequence[Dict[str, Any]], meta: Dict[str, dict], video_frames: Dict[str, List[str]],
                  results_path: str) -> Dict[ExpressionKey, Tuple[int, Dict[str, Any]]]:
    """`{(vid, exp_id): (entry index, entry)}`; an unknown video or expression, an obj_id that is
    not the expression's, a frame count other than the video's (its evaluated frames, else those
    of meta_expressions), frame names (when the entry records them) other than those frames in their
    order, or a duplicate is an error naming the entry."""
    indexed: Dict[ExpressionKey, Tuple[int, Dict[str, Any]]] = {}
    for index, entry in enumerate(entries):
        where = f"{results_path}: {describe_entry(entry, index)}"
        vid, exp_id = entry["file_name"], entry["exp_id"]
        if vid not in meta:
            raise ResultsFormatError(f"{where}: unknown video {vid!r} (not in meta_expressions)")
        expression = meta[vid]["expressions"].get(exp_id)
        if expression is None:
            raise ResultsFormatError(f"{where}: video {vid!r} has no expression {exp_id!r}")
        if expression.get("obj_id") is not None and int(expression["obj_id"]) != entry["obj_id"]:
            raise ResultsFormatError(f"{where}: obj_id {entry['obj_id']} but the expression refers to "
                                     f"object {expression['obj_id']}")
        frames = list(video_frames.get(vid, meta[vid]["frames"]))
        if len(entry["segmentations"]) != len(frames):
            raise ResultsFormatError(f"{where}: {len(entry['segmentations'])} frames, the video has {len(frames)}")
        recorded = entry.get(FRAMES_KEY)
        if recorded is not None and recorded != frames:
            position = next(i for i, (ours, theirs) in enumerate(zip(recorded, frames)) if ours != theirs)
            raise ResultsFormatError(f"{where}: frame {position} is {recorded[position]!r}, the video's is "
                                     f"{frames[position]!r} (the masks follow another frame order)")
        if (vid, exp_id) in indexed:
            raise ResultsFormatError(f"{where}: duplicates entry {indexed[(vid, exp_id)][0]}")
        indexed[(vid, exp_id)] = (index, entry)
    return indexed


def annotation_size(path: Path) -> Tuple[int, int]:
    """(H, W) of an annotation PNG from its header."""
    if not path.is_file():
        raise FileNotFoundError(f"annotation not found: {path}")
    with Image.open(path) as image:
        return image.height, image.width


def check_rle_sizes(indexed: Dict[ExpressionKey, Tuple[int, Dict[str, Any]]], video_sizes: Dict[str, Tuple[int, int]],
                    results_path: str) -> None:
    """Every RLE of an evaluated video must have the size of its annotations (checked before scoring)."""
    for (vid, _), (index, entry) in indexed.items():
        if vid not in video_sizes:
            continue
        for frame, rle in enumerate(entry["segmentations"]):
            if tuple(rle["size"]) != video_sizes[vid]:
                raise ResultsFormatError(f"{results_path}: {describe_entry(entry, index)}: frame {frame}: RLE size "
                                         f"{list(rle['size'])}, the annotations are {list(video_sizes[vid])}")


def read_video_labels(annotations_dir: Path, vid: str, frames: Sequence[str], size: Tuple[int, int]) -> np.ndarray:
    """Object-id maps `[num_frames, H, W]` of one video."""
    labels = np.empty((len(frames), *size), dtype=np.uint8)
    for i, frame in enumerate(frames):
        path = child_path(annotations_dir, vid, f"{frame}{ANNOTATION_SUFFIX}")
        label = read_palette_png(path)
        if label.shape != size:
            raise DataFormatError(f"{path}: size {list(label.shape)}, the video's first annotation is {list(size)}")
        labels[i] = label
    return labels


def evaluate_rvos(results: Union[str, Path, Sequence[Dict[str, Any]]], ytvos_path: Union[str, Path],
                  split: str = "train", split_file: Optional[Union[str, Path]] = None,
                  progress: bool = False, skip_bad_samples: bool = False, train_videos: Optional[Sequence[str]] = None,
                  train_videos_source: str = "the checkpoint") -> Dict[str, Any]:
    """Score results (a results.json path, or its entries in memory) against the ground truth.

    Returns `{"J", "F", "J&F"}` (fractions in [0, 1]) with `num_frames`, `num_expressions`,
    `num_missing_expressions` and `num_dropped_videos`; with `train_videos` (the videos the model was trained
    on) also `trained_on_evaluated_videos`, warning on stderr when it is not 0. Malformed results raise
    `ResultsFormatError` naming the entry; a video whose annotations cannot be read stops the evaluation, or
    with `skip_bad_samples` is named, left out and counted.
    """
    if isinstance(results, (str, Path)):
        results_path = str(results)
        entries = read_results(results)
    else:
        results_path = "results"
        entries = validate_results(results, results_path)
    root = Path(ytvos_path)
    annotations_dir = root / split / "Annotations"
    meta_path = root / "meta_expressions" / split / "meta_expressions.json"
    meta = read_meta_expressions(meta_path)
    videos = evaluated_videos(meta, annotations_dir, str(split_file) if split_file else "")
    indexed = index_entries(entries, meta, videos, results_path)
    video_sizes, dropped = {}, []

    def drop(vid: str, error: Exception) -> None:
        message = f"video {vid}: {one_line(error)}"
        if not skip_bad_samples:
            raise SampleError(message + SKIP_HINT) from error
        warnings.warn(message, BadSampleWarning)
        dropped.append(vid)

    for vid, frames in videos.items():
        if not frames:
            raise DataFormatError(f"{meta_path}: video {vid!r} lists no frames")
        try:
            video_sizes[vid] = annotation_size(child_path(annotations_dir, vid, f"{frames[0]}{ANNOTATION_SUFFIX}"))
        except (UserError,) + USER_OS_ERRORS as error:
            drop(vid, error)
    check_rle_sizes(indexed, video_sizes, results_path)

    jaccards: List[np.ndarray] = []
    boundaries: List[np.ndarray] = []
    num_expressions = num_missing = 0
    with tqdm(total=sum(len(meta[vid]["expressions"]) for vid in video_sizes), desc="evaluate",
              unit="expr", disable=not progress) as bar:
        for vid, frames in videos.items():
            if vid not in video_sizes:
                continue
            try:
                labels = read_video_labels(annotations_dir, vid, frames, video_sizes[vid])
            except (UserError,) + USER_OS_ERRORS as error:
                drop(vid, error)
                continue
            objects = sorted(set(np.unique(labels).tolist()) - {BACKGROUND})
            for exp_id, expression in meta[vid]["expressions"].items():
                if expression.get("obj_id") is None:
                    raise DataFormatError(f"{meta_path}: video {vid!r} expression {exp_id!r} has no obj_id "
                                          f"(split {split!r} has no ground truth)")
                if int(expression["obj_id"]) not in objects:  # scored against empty masks, it would score anything
                    raise DataFormatError(f"{meta_path}: video {vid!r} expression {exp_id!r} refers to object "
                                          f"{expression['obj_id']}, which no annotation of the video holds "
                                          f"(objects {objects})")
                gt = labels == int(expression["obj_id"])  # [num_frames, H, W]
                if (vid, exp_id) in indexed:
                    pred = decode_masks(indexed[(vid, exp_id)][1]["segmentations"])
                else:
                    pred = np.zeros_like(gt)
                    num_missing += 1
                jaccards.append(db_eval_iou(gt, pred))
                boundaries.append(db_eval_boundary(gt, pred))
                num_expressions += 1
                bar.update(1)
    if not jaccards:
        raise UserError(f"no video left to evaluate: all {len(dropped)} were dropped as broken")
    jaccard = float(np.concatenate(jaccards).mean())
    boundary = float(np.concatenate(boundaries).mean())
    metrics = {"J": jaccard, "F": boundary, "J&F": (jaccard + boundary) / 2,
               "num_frames": int(sum(len(j) for j in jaccards)), "num_expressions": num_expressions,
               "num_missing_expressions": num_missing, "num_dropped_videos": len(dropped)}
    if train_videos is not None:
        metrics["trained_on_evaluated_videos"] = count_trained_on(list(videos), train_videos, train_videos_source)
    return metrics


def get_parser() -> argparse.ArgumentParser:
    """The evaluation's own options: the results, where the ground truth is, which videos count; the names and
    defaults are those of the data's options (datasets/options.py) and inference_rvos.py's."""
    parser = ArgumentParser("evaluate_rvos", formatter_class=HelpFormatter,
                            description="Score a Ref-YouTube-VOS results.json (J, F, J&F).")
    parser.add_argument("results", type=str, help="results.json written by inference_rvos.py")
    parser.add_argument("--out", default="", type=str,
                        help="metrics JSON to write (default: <results stem>_metrics.json beside the results)")
    parser.add_argument("--ytvos_path", default=OFFICIAL_YTVOS_PATH, type=str,
                        help="Ref-YouTube-VOS root (<split>/Annotations, meta_expressions/, ann/)")
    parser.add_argument("--ytvos_split", default="train", type=str, help="the split whose annotations score")
    parser.add_argument("--img_path", action=ImgPathAction, default=argparse.SUPPRESS,
                        metavar="ROOT/SPLIT/JPEGImages",
                        help="the official inference scripts' frame folder: sets --ytvos_path ROOT and "
                             "--ytvos_split SPLIT")
    parser.add_argument("--split_file", "--ann_path", default="", type=str,
                        help="videos to score: a VIS-style json or a text file of ids; default: the official "
                             "<ytvos_path>/ann/instances_test_sub.json when it exists; 'none': every annotated video")
    parser.add_argument("--model_path", default="", type=str,
                        help="the checkpoint that made the results: count the evaluated videos it was trained on")
    parser.add_argument("--skip_bad_samples", action="store_true",
                        help="warn about and drop videos whose annotations cannot be read instead of stopping")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = get_parser().parse_args(argv)
    split_file = resolve_split_file(args.split_file, args.ytvos_path, TEST_PART)
    out = Path(args.out) if args.out else Path(args.results).with_name(f"{Path(args.results).stem}_metrics.json")
    check_outputs_apart({"--out": out}, {"the results": args.results, "--ytvos_path": args.ytvos_path,
                                         "--model_path": args.model_path, "--split_file": split_file or ""})
    recorded = read_train_videos(args.model_path) if args.model_path else None
    train_videos = None if recorded is None else recorded.get("ytvos", [])
    metrics = evaluate_rvos(args.results, args.ytvos_path, args.ytvos_split, split_file, progress=True,
                            skip_bad_samples=args.skip_bad_samples, train_videos=train_videos,
                            train_videos_source=args.model_path)
    if args.model_path and recorded is None:  # a checkpoint without the record (e.g. the released one)
        metrics["trained_on_evaluated_videos"] = count_trained_on([], None, args.model_path)
    missing, total = metrics["num_missing_expressions"], metrics["num_expressions"]
    if missing == total:  # scored as empty masks they would still give a J&F above 0, from absent objects
        raise UserError(f"{args.results}: no prediction for any of the {total} evaluated expressions of split "
                        f"{args.ytvos_split!r}{f' (--split_file {split_file})' if split_file else ''}; "
                        f"are these the results of other videos?")
    print(f"evaluated videos: {split_file or 'every annotated video of the split'}", file=sys.stderr)
    if missing:
        print(f"warning: {args.results}: {missing} of {total} expressions have no prediction; they are scored "
              f"as empty masks", file=sys.stderr)
    print(f"J {metrics['J']:.4f}  F {metrics['F']:.4f}  J&F {metrics['J&F']:.4f}  "
          f"({metrics['num_frames']} frames, {metrics['num_expressions']} expressions, "
          f"{metrics['num_missing_expressions']} missing from the results, "
          f"{metrics['num_dropped_videos']} videos dropped as broken)")
    atomic_json_dump(metrics, out, indent=2)
    print(f"metrics written to {out}")
    return metrics


if __name__ == "__main__":
    sys.exit(run_main(main))
