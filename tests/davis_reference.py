"""A literal, slow re-implementation of the DAVIS J and boundary F, for the tests.

A pixel is on the boundary when it differs from an existing east, south or south-east neighbour;
boundaries are dilated with a disk of radius ceil(0.008 * diagonal) (scipy's binary dilation, as
skimage does); precision and recall count the boundary pixels that fall inside the other mask's
dilated boundary; the empty-boundary conventions are those of the DAVIS code.
"""
import math

import numpy as np
from scipy import ndimage

BOUND_TH = 0.008

NEIGHBOUR_OFFSETS = ((0, 1), (1, 0), (1, 1))  # east, south, south-east


def reference_jaccard(gt: np.ndarray, pred: np.ndarray) -> float:
    union = int(np.sum(gt | pred))
    return 1.0 if union == 0 else int(np.sum(gt & pred)) / union


def reference_boundary_map(mask: np.ndarray) -> np.ndarray:
    height, width = mask.shape
    boundary = np.zeros_like(mask, dtype=bool)
    for dy, dx in NEIGHBOUR_OFFSETS:
        here = mask[:height - dy, :width - dx]
        neighbour = mask[dy:, dx:]
        boundary[:height - dy, :width - dx] |= here != neighbour
    return boundary


def reference_disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return x ** 2 + y ** 2 <= radius ** 2


def reference_boundary_f(gt: np.ndarray, pred: np.ndarray, radius=None) -> float:
    if radius is None:
        radius = math.ceil(BOUND_TH * math.sqrt(gt.shape[0] ** 2 + gt.shape[1] ** 2))
    gt_boundary, pred_boundary = reference_boundary_map(gt), reference_boundary_map(pred)
    disk = reference_disk(radius)
    gt_dilated = ndimage.binary_dilation(gt_boundary, structure=disk)
    pred_dilated = ndimage.binary_dilation(pred_boundary, structure=disk)
    num_gt, num_pred = int(gt_boundary.sum()), int(pred_boundary.sum())
    if num_gt == 0 and num_pred == 0:
        precision, recall = 1.0, 1.0
    elif num_pred == 0:
        precision, recall = 1.0, 0.0
    elif num_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        precision = int(np.sum(pred_boundary & gt_dilated)) / num_pred
        recall = int(np.sum(gt_boundary & pred_dilated)) / num_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
