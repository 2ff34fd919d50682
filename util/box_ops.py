"""Box format conversions and the (generalised) IoU with the official smoothing.

Boxes are `[..., 4]` tensors, either (cx, cy, w, h) or (x0, y0, x1, y1). The IoU terms carry the
official `+1e-6` smoothing (docs/protocol.md §3), so two empty boxes have IoU 1 rather than NaN.
"""
from typing import Tuple

import torch
from torch import Tensor

# Added to numerator and denominator of every IoU ratio, as the official box_ops does.
IOU_SMOOTHING = 1e-6


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def check_boxes_not_degenerate(boxes: Tensor, name: str = "boxes", allow_nan: bool = False) -> None:
    """Raise a ValueError if some xyxy box has x1 < x0 or y1 < y0 (or a NaN): GIoU is undefined there.

    `allow_nan` lets NaN rows through (predictions): the loss is then NaN and the training loop
    stops with a message naming the samples.
    """
    ok = (boxes[..., 2:] >= boxes[..., :2]).all(dim=-1)
    if allow_nan:
        ok |= boxes.isnan().any(dim=-1)
    if not bool(ok.all()):
        bad = (~ok).nonzero().flatten().tolist()
        raise ValueError(f"degenerate {name} (x1 < x0 or y1 < y0, or NaN) at rows {bad}: "
                         f"{boxes[~ok].detach().cpu().tolist()}")


def _iou_and_union(boxes1: Tensor, boxes2: Tensor) -> Tuple[Tensor, Tensor]:
    """IoU and union of boxes that broadcast against each other (xyxy)."""
    top_left = torch.max(boxes1[..., :2], boxes2[..., :2])
    bottom_right = torch.min(boxes1[..., 2:], boxes2[..., 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(boxes1) + box_area(boxes2) - inter
    return (inter + IOU_SMOOTHING) / (union + IOU_SMOOTHING), union


def _giou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    iou, union = _iou_and_union(boxes1, boxes2)
    top_left = torch.min(boxes1[..., :2], boxes2[..., :2])
    bottom_right = torch.max(boxes1[..., 2:], boxes2[..., 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    enclosing = wh[..., 0] * wh[..., 1]
    return iou - ((enclosing - union) + IOU_SMOOTHING) / (enclosing + IOU_SMOOTHING)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise GIoU `[N, M]` of xyxy boxes `[N, 4]` and `[M, 4]`; degenerate boxes raise a ValueError."""
    check_boxes_not_degenerate(boxes1, "predicted boxes", allow_nan=True)
    check_boxes_not_degenerate(boxes2, "target boxes")
    return _giou(boxes1[:, None, :], boxes2[None, :, :])


def elementwise_generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """GIoU `[N]` of row i with row i (the diagonal of `generalized_box_iou`); degenerate boxes raise."""
    if boxes1.shape != boxes2.shape:
        raise ValueError(f"expected boxes of the same shape, got {tuple(boxes1.shape)} and {tuple(boxes2.shape)}")
    check_boxes_not_degenerate(boxes1, "predicted boxes", allow_nan=True)
    check_boxes_not_degenerate(boxes2, "target boxes")
    return _giou(boxes1, boxes2)
