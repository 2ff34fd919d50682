"""util/metrics.py against the literal DAVIS re-implementation of tests/davis_reference.py, and the
referring metrics on cases whose answers follow from their definitions."""
import math

import numpy as np
import pytest
from scipy import ndimage

from davis_reference import reference_boundary_f, reference_jaccard
from util.metrics import BOUND_TH, boundary_radius, db_eval_boundary, db_eval_iou, referring_metrics


# ----------------------------------------------------------------------------- mask makers
def ellipse(height: int, width: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    y, x = np.mgrid[:height, :width]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1


def blobs(height: int, width: int, seed: int, scale: float = 25.0) -> np.ndarray:
    """Irregular shapes with long, ragged boundaries: thresholded smoothed noise."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.standard_normal((height, width)), sigma=scale)
    return noise > 0


def rect(height: int, width: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


# ----------------------------------------------------------------------------- J and F
def test_empty_and_full_masks_follow_the_davis_conventions():
    empty = np.zeros((48, 64), dtype=bool)
    full = np.ones((48, 64), dtype=bool)
    square = rect(48, 64, 10, 30, 20, 40)
    cases = [(empty, empty), (full, full), (empty, full), (full, empty), (square, empty), (empty, square),
             (full, square), (square, full)]
    for gt, pred in cases:
        assert db_eval_iou(gt, pred) == pytest.approx(reference_jaccard(gt, pred), abs=1e-12)
        assert db_eval_boundary(gt, pred) == pytest.approx(reference_boundary_f(gt, pred), abs=1e-12)
    # The conventions themselves: both empty -> J = F = 1; full vs empty -> J = 0, and neither has
    # a boundary (the image border is none), so F = 1; a boundary against none -> F = 0.
    assert db_eval_iou(empty, empty) == 1.0 and db_eval_boundary(empty, empty) == 1.0
    assert db_eval_iou(full, empty) == 0.0 and db_eval_boundary(full, empty) == 1.0
    assert db_eval_boundary(square, empty) == 0.0 and db_eval_boundary(empty, square) == 0.0


@pytest.mark.parametrize("pred_offset", [(0, 0), (0, 1), (1, 1), (0, 2), (3, 4), (20, 20)])
def test_one_pixel_objects(pred_offset):
    height, width = 40, 60
    gt = np.zeros((height, width), dtype=bool)
    gt[10, 10] = True
    pred = np.zeros_like(gt)
    pred[10 + pred_offset[0], 10 + pred_offset[1]] = True
    for radius in (1, 2, 5):  # bound_th >= 1 is a radius in pixels
        expected = reference_boundary_f(gt, pred, radius)
        assert db_eval_boundary(gt, pred, bound_th=radius) == pytest.approx(expected, abs=1e-12)
    assert db_eval_iou(gt, pred) == reference_jaccard(gt, pred)
    assert db_eval_boundary(gt, pred) == pytest.approx(reference_boundary_f(gt, pred), abs=1e-12)


def test_one_pixel_objects_in_corners_and_on_edges():
    height, width = 30, 50
    for y, x in [(0, 0), (0, width - 1), (height - 1, 0), (height - 1, width - 1), (0, 17), (12, width - 1)]:
        gt = np.zeros((height, width), dtype=bool)
        gt[y, x] = True
        pred = np.roll(gt, 1, axis=1)
        assert db_eval_boundary(gt, pred) == pytest.approx(reference_boundary_f(gt, pred), abs=1e-12)
        assert db_eval_boundary(gt, gt) == 1.0


def test_random_small_masks_anywhere_in_the_frame():
    """Sparse random masks touching every border, and crowded ones: the per-frame crops the
    implementation uses must not change the boundaries."""
    rng = np.random.default_rng(7)
    for _ in range(60):
        height, width = rng.integers(3, 20, size=2)
        density = rng.choice([0.02, 0.1, 0.5, 0.95])
        gt = rng.random((height, width)) < density
        pred = rng.random((height, width)) < density
        for radius in (1, 3):
            expected = reference_boundary_f(gt, pred, radius)
            assert db_eval_boundary(gt, pred, bound_th=radius) == pytest.approx(expected, abs=1e-12)


def test_disk_tolerance_is_inclusive_and_round():
    """A boundary matches exactly when it lies within distance r (x^2 + y^2 <= r^2), not a square."""
    radius = 8
    gt = rect(64, 64, 20, 40, 20, 40)
    for dy, dx in [(0, 8), (0, 9), (5, 6), (6, 6), (4, 7), (5, 7)]:
        pred = np.roll(gt, (dy, dx), axis=(0, 1))
        expected = reference_boundary_f(gt, pred, radius)
        assert db_eval_boundary(gt, pred, bound_th=radius) == pytest.approx(expected, abs=1e-12)
    # a shift inside the disk matches everything; one just outside does not
    assert db_eval_boundary(gt, np.roll(gt, (5, 6), axis=(0, 1)), bound_th=radius) == 1.0
    assert db_eval_boundary(gt, np.roll(gt, (6, 6), axis=(0, 1)), bound_th=radius) < 1.0


@pytest.mark.parametrize("height,width", [(480, 854), (720, 1280)])
def test_real_frame_sizes(height, width):
    assert boundary_radius(height, width) == math.ceil(BOUND_TH * math.sqrt(height ** 2 + width ** 2))
    gt = blobs(height, width, seed=height)
    preds = [
        gt,
        np.roll(gt, (3, -5), axis=(0, 1)),  # within the tolerance
        np.roll(gt, (15, 20), axis=(0, 1)),  # beyond it
        blobs(height, width, seed=height + 1),  # unrelated
        ellipse(height, width, height / 2, width / 2, height / 4, width / 5),
    ]
    for pred in preds:
        assert db_eval_iou(gt, pred) == pytest.approx(reference_jaccard(gt, pred), abs=1e-12)
        assert db_eval_boundary(gt, pred) == pytest.approx(reference_boundary_f(gt, pred), abs=1e-12)
    assert db_eval_boundary(gt, gt) == 1.0 and db_eval_iou(gt, gt) == 1.0


def test_video_with_an_object_absent_in_some_frames():
    height, width, num_frames = 60, 80, 5
    gt = np.zeros((num_frames, height, width), dtype=bool)
    pred = np.zeros_like(gt)
    gt[0] = ellipse(height, width, 30, 40, 10, 15)
    gt[2] = rect(height, width, 5, 25, 5, 35)  # frames 1, 3 and 4: absent from the ground truth
    pred[0] = ellipse(height, width, 32, 43, 10, 15)
    pred[3] = rect(height, width, 40, 50, 40, 70)  # false positive where the object is absent
    pred[4] = np.ones((height, width), dtype=bool)  # full mask where the object is absent
    jaccards = db_eval_iou(gt, pred)
    boundaries = db_eval_boundary(gt, pred)
    assert jaccards.shape == boundaries.shape == (num_frames,)
    for frame in range(num_frames):
        assert jaccards[frame] == pytest.approx(reference_jaccard(gt[frame], pred[frame]), abs=1e-12)
        assert boundaries[frame] == pytest.approx(reference_boundary_f(gt[frame], pred[frame]), abs=1e-12)
        # the batched result is the per-frame one
        assert boundaries[frame] == db_eval_boundary(gt[frame], pred[frame])
    assert jaccards[1] == 1.0 and boundaries[1] == 1.0  # absent and predicted absent
    assert jaccards[2] == 0.0 and boundaries[2] == 0.0  # present and missed
    assert jaccards[3] == 0.0 and boundaries[3] == 0.0  # absent and predicted present


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        db_eval_iou(np.zeros((4, 5), bool), np.zeros((5, 4), bool))
    with pytest.raises(ValueError, match="differ in shape"):
        db_eval_boundary(np.zeros((4, 5), bool), np.zeros((4, 6), bool))


# ----------------------------------------------------------------------------- referring metrics
def square_with_iou(iou_numerator: int, side: int = 10, size: int = 20):
    """A ground-truth square of side*side pixels and a prediction inside it with
    `iou_numerator` pixels, so IoU = iou_numerator / side^2 exactly."""
    gt = rect(size, size, 0, side, 0, side)
    pred = np.zeros_like(gt)
    pred.reshape(-1)[np.flatnonzero(gt.reshape(-1))[:iou_numerator]] = True
    return pred, gt


def test_referring_metrics_precision_is_strictly_above_and_ious_add_up():
    samples = [square_with_iou(n) for n in (50, 80, 95)]
    disjoint_gt = rect(20, 20, 0, 10, 0, 10)
    disjoint_pred = rect(20, 20, 10, 20, 10, 20)
    samples.append((disjoint_pred, disjoint_gt))
    preds, gts = [p for p, _ in samples], [g for _, g in samples]
    metrics = referring_metrics(preds, gts)
    ious = [0.5, 0.8, 0.95, 0.0]
    for threshold in (0.5, 0.6, 0.7, 0.8, 0.9):
        expected = sum(iou > threshold for iou in ious) / len(ious)
        assert metrics[f"precision@{threshold}"] == pytest.approx(expected)
    assert metrics["precision@0.5"] == 0.5 and metrics["precision@0.8"] == 0.25  # ties are not above
    intersections = [50, 80, 95, 0]
    unions = [100, 100, 100, 200]
    assert metrics["overall_iou"] == pytest.approx(sum(intersections) / sum(unions))
    assert metrics["mean_iou"] == pytest.approx(np.mean([(i + 1e-6) / (u + 1e-6) for i, u in zip(intersections, unions)]))


def test_referring_metrics_perfect_predictions():
    gts = [rect(16, 24, 2, 9, 3, 15), ellipse(20, 20, 10, 10, 6, 4), rect(30, 10, 0, 30, 0, 5)]
    metrics = referring_metrics(gts, gts)
    assert all(metrics[f"precision@{t}"] == 1.0 for t in (0.5, 0.6, 0.7, 0.8, 0.9))
    assert metrics["overall_iou"] == 1.0 and metrics["mean_iou"] == pytest.approx(1.0)
    assert metrics["mAP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AP75"] == pytest.approx(1.0)


def test_coco_ap_counts_the_iou_thresholds_passed():
    """Every prediction has IoU 0.62: it matches at thresholds 0.50, 0.55 and 0.60 of the ten
    0.50:0.05:0.95, so AP is 1 there and 0 above: mAP = 3 / 10, AP50 = 1, AP75 = 0."""
    samples = [square_with_iou(62) for _ in range(3)]
    metrics = referring_metrics([p for p, _ in samples], [g for _, g in samples])
    iou_thresholds = np.linspace(0.5, 0.95, 10)
    assert metrics["mAP"] == pytest.approx(np.mean(iou_thresholds <= 0.62))
    assert metrics["AP50"] == pytest.approx(1.0) and metrics["AP75"] == pytest.approx(0.0)


def test_coco_ap_ranks_predictions_by_score():
    """Two samples: one perfect, one disjoint. Recall reaches 1/2 at most. Ranked first, the hit
    gives precision 1 at every recall point <= 1/2; ranked second, precision 1/2 there. COCO
    averages precision over the 101 recall points 0, 0.01, ..., 1 (0 where recall is not reached)."""
    gt = rect(20, 20, 0, 10, 0, 10)
    miss = rect(20, 20, 10, 20, 10, 20)
    recall_points_reached = np.sum(np.linspace(0, 1, 101) <= 0.5 + 1e-9)
    hit_first = referring_metrics([gt, miss], [gt, gt], scores=[0.9, 0.1])
    hit_last = referring_metrics([gt, miss], [gt, gt], scores=[0.1, 0.9])
    assert hit_first["AP50"] == pytest.approx(1.0 * recall_points_reached / 101)
    assert hit_last["AP50"] == pytest.approx(0.5 * recall_points_reached / 101)
    assert hit_first["mAP"] == pytest.approx(hit_first["AP50"])


def test_referring_metrics_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        referring_metrics([], [])
    with pytest.raises(ValueError, match="2 predictions for 1"):
        referring_metrics([np.zeros((3, 3), bool)] * 2, [np.zeros((3, 3), bool)])
