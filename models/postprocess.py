"""Post-processors: model outputs -> boxes in pixels and binary masks at the original image size."""
import math
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from util import box_ops

# The mask head predicts at stride 4 of the (padded) input: a 4*h x 4*w input gives h x w logits.
MASK_STRIDE = 4


def _check_sizes(sizes: Tensor, batch: int, name: str) -> None:
    if sizes.dim() != 2 or sizes.shape != (batch, 2):
        raise ValueError(f"{name} must be [{batch}, 2] (height, width) for a batch of {batch}, got {tuple(sizes.shape)}")


class PostProcess(nn.Module):
    """`pred_boxes` (normalised cx, cy, w, h) -> absolute (x0, y0, x1, y1) pixel boxes."""

    @torch.no_grad()
    def forward(self, outputs: Dict[str, Tensor], target_sizes: Tensor) -> List[Dict[str, Tensor]]:
        """outputs: `pred_boxes [B, Q, 4]`; target_sizes: `[B, 2]` (height, width) to scale to.

        Returns one dict per clip: `boxes [Q, 4]` in pixels of that size.
        """
        pred_boxes = outputs["pred_boxes"]
        _check_sizes(target_sizes, pred_boxes.shape[0], "target_sizes")
        boxes = box_ops.box_cxcywh_to_xyxy(pred_boxes)
        img_h, img_w = target_sizes.to(boxes).unbind(1)
        scale = torch.stack([img_w, img_h, img_w, img_h], dim=1)  # [B, 4]
        boxes = boxes * scale[:, None, :]
        return [{"boxes": b} for b in boxes]


class PostProcessSegm(nn.Module):
    """`pred_masks` logits -> binary masks at the original image size, and a score per mask.

    As the official inference: the logits are upsampled bilinearly (align_corners False) to the
    original size, then `sigmoid > threshold`. In a padded batch, each clip's logits are first
    cropped to the area of its own input image (`ceil(size / 4)` at stride 4). A mask's score is the
    mean foreground probability inside it (0 for an empty mask): what the A2D/JHMDB mAP ranks by.
    """

    def __init__(self, threshold: float = 0.5):
        super().__init__()
        self.threshold = threshold

    @torch.no_grad()
    def forward(self, outputs: Dict[str, Tensor], orig_target_sizes: Tensor,
                image_sizes: Optional[Tensor] = None) -> List[Dict[str, Tensor]]:
        """outputs: `pred_masks [B, T, h, w]` logits; orig_target_sizes: `[B, 2]` (height, width) of
        the original frames; image_sizes: `[B, 2]` sizes of the model's input frames before
        padding (None: no padding, the whole logit map is used).

        Returns one dict per clip: `masks [T, H_orig, W_orig]` bool and `scores [T]`.
        """
        pred_masks = outputs["pred_masks"]
        batch = pred_masks.shape[0]
        _check_sizes(orig_target_sizes, batch, "orig_target_sizes")
        if image_sizes is not None:
            _check_sizes(image_sizes, batch, "image_sizes")
        results = []
        for b in range(batch):
            logits = pred_masks[b].float()  # [T, h, w]; float32 also from a model run under autocast
            if image_sizes is not None:
                height, width = (math.ceil(int(s) / MASK_STRIDE) for s in image_sizes[b].tolist())
                logits = logits[:, :height, :width]
            size = tuple(int(s) for s in orig_target_sizes[b].tolist())
            probabilities = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0].sigmoid()
            masks = probabilities > self.threshold  # [T, H, W]
            scores = [frame[mask].mean() if mask.any() else frame.new_zeros(())
                      for frame, mask in zip(probabilities, masks)]
            results.append({"masks": masks, "scores": torch.stack(scores)})
        return results


def build_postprocessors(args) -> Dict[str, nn.Module]:
    postprocessors: Dict[str, nn.Module] = {"bbox": PostProcess()}
    if args.masks:
        postprocessors["segm"] = PostProcessSegm()
    return postprocessors
