"""Segmentation metrics: DAVIS region J and boundary F, and the referring-segmentation metrics.

J and F follow the DAVIS 2016 definitions used by the official evaluation (docs/protocol.md §7):
J is the IoU (1 when both masks are empty); F is the F-measure of boundary precision and recall,
a boundary pixel counting as matched when the other mask's boundary lies within a disk of radius
`ceil(bound_th * image diagonal)` pixels. `referring_metrics` gives the numbers the text-RVOS
community reports on A2D/JHMDB-Sentences: precision@K, overall and mean IoU, and COCO mask mAP.
"""
import contextlib
import io
import math
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy.spatial import cKDTree

from util.results import encode_rle

BOUND_TH = 0.008  # DAVIS boundary tolerance, as a fraction of the image diagonal
PRECISION_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
IOU_EPS = 1e-6  # smoothing of the per-sample IoU in `mean_iou` (the community's convention)
COCO_CATEGORY_ID = 1  # every sample is one object of one class (COCOeval runs with useCats = 0)

FloatOrArray = Union[float, np.ndarray]


def _as_bool_pair(gt: np.ndarray, pred: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
    if gt.ndim not in (2, 3):
        raise ValueError(f"expected masks [H, W] or [N, H, W], got shape {gt.shape}")
    return gt.astype(bool, copy=False), pred.astype(bool, copy=False)


def db_eval_iou(gt: np.ndarray, pred: np.ndarray) -> FloatOrArray:
    """Region similarity J of binary masks `[H, W]` (-> float) or `[N, H, W]` (-> array [N]).

    J = |gt & pred| / |gt | pred|, and 1 when both masks are empty.
    """
    gt, pred = _as_bool_pair(gt, pred)
    intersection = np.count_nonzero(gt & pred, axis=(-2, -1))
    union = np.count_nonzero(gt | pred, axis=(-2, -1))
    jaccard = np.where(union == 0, 1.0, intersection / np.maximum(union, 1))
    return float(jaccard) if gt.ndim == 2 else jaccard


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """Boolean boundary map of binary masks `[..., H, W]`, one pixel wide (DAVIS `seg2bmap`).

    A pixel is on the boundary when it differs from its east, south or south-east neighbour; the
    last row compares east only, the last column south only, and the last pixel is never a
    boundary. So the image border itself is no boundary: a full mask has none.
    """
    seg = np.asarray(mask).astype(bool, copy=False)
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[..., :, :-1] = seg[..., :, 1:]
    south[..., :-1, :] = seg[..., 1:, :]
    south_east[..., :-1, :-1] = seg[..., 1:, 1:]
    boundary = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    boundary[..., -1, :] = seg[..., -1, :] ^ east[..., -1, :]
    boundary[..., :, -1] = seg[..., :, -1] ^ south[..., :, -1]
    boundary[..., -1, -1] = False
    return boundary


def boundary_radius(height: int, width: int, bound_th: float = BOUND_TH) -> float:
    """Tolerance in pixels: `bound_th` itself when >= 1, else `ceil(bound_th * diagonal)`."""
    if bound_th >= 1:
        return float(bound_th)
    return float(math.ceil(bound_th * math.hypot(height, width)))


def _count_matched(points: np.ndarray, others: np.ndarray, radius: float) -> int:
    """How many of `points` [P, 2] have one of `others` [Q, 2] within `radius` (disk: d^2 <= r^2)."""
    if len(points) == 0 or len(others) == 0:
        return 0
    # Distances beyond the radius come back as inf; squared distances are integers, so rounding
    # them makes the disk test exact.
    distances, _ = cKDTree(others).query(points, k=1, distance_upper_bound=radius + 0.5)
    return int(np.count_nonzero(np.rint(distances[np.isfinite(distances)] ** 2) <= radius ** 2))


def _f_measure(matched_pred: int, num_pred: int, matched_gt: int, num_gt: int) -> float:
    """DAVIS boundary F from match counts; empty boundaries follow the DAVIS conventions."""
    if num_pred == 0 and num_gt == 0:
        return 1.0
    if num_pred == 0 or num_gt == 0:  # precision 1 / recall 0, or precision 0 / recall 1
        return 0.0
    precision = matched_pred / num_pred
    recall = matched_gt / num_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def db_eval_boundary(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH) -> FloatOrArray:
    """Boundary F-measure of binary masks `[H, W]` (-> float) or `[N, H, W]` (-> array [N]).

    Equal to the DAVIS `db_eval_boundary` (disk dilation of the `seg2bmap` boundaries, radius from
    `boundary_radius`); matching is computed from boundary point sets, which gives the same counts
    as dilating and is far faster on large frames.
    """
    gt, pred = _as_bool_pair(gt, pred)
    single = gt.ndim == 2
    if single:
        gt, pred = gt[None], pred[None]
    radius = boundary_radius(gt.shape[-2], gt.shape[-1], bound_th)
    scores = np.empty(len(gt), dtype=np.float64)
    for i, (gt_frame, pred_frame) in enumerate(zip(gt, pred)):
        gt_points, pred_points = _boundary_points(gt_frame, pred_frame)
        scores[i] = _f_measure(_count_matched(pred_points, gt_points, radius), len(pred_points),
                               _count_matched(gt_points, pred_points, radius), len(gt_points))
    return float(scores[0]) if single else scores


def _boundary_points(gt: np.ndarray, pred: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(y, x) coordinates `[P, 2]` of the `seg2bmap` boundaries of two masks `[H, W]`.

    Computed on the crop around both masks, one pixel wider above and left (where a boundary pixel
    can lie outside its mask) and below and right (an all-background row or column there has no
    boundary, so seg2bmap's special last row and column fall on empty pixels, as in the full frame).
    """
    union = gt | pred
    rows, columns = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    if rows.size == 0:
        empty = np.zeros((0, 2), dtype=np.int64)
        return empty, empty
    top, left = max(rows[0] - 1, 0), max(columns[0] - 1, 0)
    crop = (slice(top, rows[-1] + 2), slice(left, columns[-1] + 2))
    offset = np.array([top, left])
    return np.argwhere(seg2bmap(gt[crop])) + offset, np.argwhere(seg2bmap(pred[crop])) + offset


# ----------------------------------------------------------------------------- referring metrics
def _intersection_union(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions for {len(gts)} ground-truth masks")
    intersections = np.zeros(len(gts), dtype=np.float64)
    unions = np.zeros(len(gts), dtype=np.float64)
    for i, (pred, gt) in enumerate(zip(preds, gts)):
        gt, pred = _as_bool_pair(gt, pred)
        if gt.ndim != 2:
            raise ValueError(f"sample {i}: expected masks [H, W], got shape {gt.shape}")
        intersections[i] = np.count_nonzero(gt & pred)
        unions[i] = np.count_nonzero(gt | pred)
    return intersections, unions


def coco_mask_ap(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray],
                 scores: Optional[Sequence[float]] = None) -> Dict[str, float]:
    """COCO mask AP (`mAP` @[.5:.95], `AP50`, `AP75`): each sample is one image with one ground-truth
    object and one prediction carrying its score, all of one category (`useCats = 0`)."""
    if scores is None:
        scores = [1.0] * len(preds)
    if not len(preds) == len(gts) == len(scores):
        raise ValueError(f"{len(preds)} predictions, {len(gts)} ground-truth masks and {len(scores)} scores")
    images, annotations, detections = [], [], []
    for image_id, (pred, gt, score) in enumerate(zip(preds, gts, scores), start=1):
        gt_rle, pred_rle = encode_rle(gt), encode_rle(pred)
        height, width = np.asarray(gt).shape
        images.append({"id": image_id, "height": height, "width": width})
        annotations.append({"id": image_id, "image_id": image_id, "category_id": COCO_CATEGORY_ID,
                            "segmentation": gt_rle, "area": float(mask_utils.area(gt_rle)),
                            "bbox": mask_utils.toBbox(gt_rle).tolist(), "iscrowd": 0})
        detections.append({"image_id": image_id, "category_id": COCO_CATEGORY_ID,
                           "segmentation": pred_rle, "score": float(score)})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": annotations,
                           "categories": [{"id": COCO_CATEGORY_ID, "name": "object"}]}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(detections)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="segm")
        evaluator.params.useCats = 0
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # stats: [0] AP@[.5:.95], [1] AP@.5, [2] AP@.75 (all areas, 100 detections)
    return {"mAP": float(evaluator.stats[0]), "AP50": float(evaluator.stats[1]),
            "AP75": float(evaluator.stats[2])}


def referring_metrics(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray],
                      scores: Optional[Sequence[float]] = None) -> Dict[str, float]:
    """Per-sample masks `[H_i, W_i]` -> `precision@0.5` .. `precision@0.9`, `overall_iou`,
    `mean_iou`, `mAP`, `AP50`, `AP75` (fractions in [0, 1]).

    precision@K is the fraction of samples whose IoU I / U (1 when both masks are empty) is strictly
    above K; overall IoU is sum(I) / sum(U); mean IoU averages (I + 1e-6) / (U + 1e-6).
    """
    if len(gts) == 0:
        raise ValueError("referring_metrics needs at least one sample")
    intersections, unions = _intersection_union(preds, gts)
    # Exact IoU for the thresholds (the smoothing would lift an IoU of exactly K above K).
    exact_ious = np.where(unions == 0, 1.0, intersections / np.maximum(unions, 1))
    metrics = {f"precision@{threshold}": float(np.mean(exact_ious > threshold)) for threshold in PRECISION_THRESHOLDS}
    metrics["overall_iou"] = float(intersections.sum() / unions.sum()) if unions.sum() > 0 else 1.0
    metrics["mean_iou"] = float(np.mean((intersections + IOU_EPS) / (unions + IOU_EPS)))
    metrics.update(coco_mask_ap(preds, gts, scores))
    return metrics
