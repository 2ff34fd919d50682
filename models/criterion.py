"""The Wnet training losses (docs/protocol.md §3): boxes, masks and the encoder's KL term.

There is no Hungarian matching: query `j` predicts frame `j` of the clip, and only frames whose
target `valid` flag is 1 count. A target with a single frame (an A2D-Sentences sample, annotated on
its middle frame) is compared with the prediction of its clip position `frame_idx` when the target
holds one, else with the middle prediction `(T - 1) // 2` (the official always uses the middle; the
datasets centre the clip on the annotated frame, so both agree).

Deviations from the official criterion, none of which changes a batch-size-1 value:
- the frame selection is decided per sample (the official decides it for the whole batch from the
  first target, for boxes, and from the padded target tensor, for masks, which picks the wrong
  frames when A2D and RVOS samples share a batch);
- each sample's mask losses are computed over its own image area (the official also scores the
  zero padding that comes from the other, larger samples of the batch);
- the KL term is computed from `log_softmax(fusion)` with `log_target=True`: the same value, but
  a finite gradient where a probability of `softmax(fusion)` underflows to 0 (the official
  formulation gives NaN there under current torch);
- no valid frame in the batch gives zero mask losses (the official falls into a bare `except` and
  compares the prediction with itself).
"""
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from util import box_ops
from util.clips import middle_frame_index
from util.misc import all_reduce_mean

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
# Added to the numerator and denominator of the dice ratio (official value).
DICE_SMOOTHING = 1.0

Target = Dict[str, Tensor]


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = FOCAL_ALPHA,
                       gamma: float = FOCAL_GAMMA) -> Tensor:
    """RetinaNet focal loss of `[N, P]` logits, averaged over the P pixels: returns `[N]`."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(dim=1)


def dice_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """1 - soft dice of `[N, P]` logits against binary targets: returns `[N]`."""
    prob = logits.sigmoid()
    numerator = 2 * (prob * targets).sum(dim=1)
    denominator = prob.sum(dim=1) + targets.sum(dim=1)
    return 1 - (numerator + DICE_SMOOTHING) / (denominator + DICE_SMOOTHING)


def kl_divergence_loss(memory: Tensor, fusion: Tensor) -> Tensor:
    """Mean over all elements of `softmax(fusion) * (log_softmax(fusion) - log_softmax(memory))`.

    Softmax over the channel (last) axis. The value equals the official
    `F.kl_div(log_softmax(memory), softmax(fusion))`; computing the target in log space keeps the
    gradient finite where a probability underflows to 0.
    """
    log_p_memory = F.log_softmax(memory, dim=-1)
    log_p_fusion = F.log_softmax(fusion, dim=-1)
    return F.kl_div(log_p_memory, log_p_fusion, reduction="none", log_target=True).mean()


class WnetCriterion(nn.Module):
    """Computes the Wnet losses; `weight_dict` holds the weight of every loss name (aux ones included).

    The official code calls it `SetCriterion` after DETR's, but there is no set matching: query `j` predicts
    frame `j` of the clip (module docstring).

    `losses` lists the loss groups to compute: "kl" (`loss_kl`), "boxes" (`loss_bbox`,
    `loss_giou`, and `_i` copies for every auxiliary decoder output) and "masks" (`loss_mask`,
    `loss_dice`).
    """

    available_losses = ("kl", "boxes", "masks")

    def __init__(self, weight_dict: Dict[str, float], losses: Sequence[str]):
        super().__init__()
        unknown = [name for name in losses if name not in self.available_losses]
        if unknown:
            raise ValueError(f"unknown loss(es) {unknown}; available: {list(self.available_losses)}")
        self.weight_dict = dict(weight_dict)
        self.losses = list(losses)

    # ------------------------------------------------------------------ frame selection
    @staticmethod
    def _frame_indices(target: Target, key: str, num_pred_frames: int) -> Tuple[Tensor, Tensor]:
        """Indices (prediction frames, target rows) of the valid frames of one sample's `target[key]`.

        A target with `num_pred_frames` rows is compared frame by frame; a single-row target (A2D)
        with prediction `target['frame_idx']`, by default the middle one `(T - 1) // 2`.
        """
        target_frames, valid = target[key].shape[0], target["valid"]
        if valid.numel() != target_frames:
            raise ValueError(f"target 'valid' has {valid.numel()} entries but its {key} have {target_frames} frames")
        if target_frames == num_pred_frames:
            pred_offset = 0
        elif target_frames == 1:
            pred_offset = int(target.get("frame_idx", middle_frame_index(num_pred_frames)))
            if not 0 <= pred_offset < num_pred_frames:
                raise ValueError(f"target 'frame_idx' {pred_offset} is outside the clip's {num_pred_frames} frames")
        else:
            raise ValueError(f"target {key} have {target_frames} frames; expected {num_pred_frames} "
                             f"(one per predicted frame) or 1 (one annotated frame)")
        target_rows = (valid.flatten() == 1).nonzero().flatten()
        return target_rows + pred_offset, target_rows

    # ------------------------------------------------------------------ losses
    def loss_boxes(self, pred_boxes: Tensor, targets: List[Target], num_boxes: float) -> Dict[str, Tensor]:
        """L1 and GIoU losses of `pred_boxes [B, T, 4]` (cx, cy, w, h) against the valid target boxes."""
        src, tgt = [], []
        for b, target in enumerate(targets):
            pred_idx, tgt_idx = self._frame_indices(target, "boxes", pred_boxes.shape[1])
            src.append(pred_boxes[b, pred_idx.to(pred_boxes.device)])
            tgt.append(target["boxes"][tgt_idx])
        src_boxes = torch.cat(src)  # [N_valid, 4]
        target_boxes = torch.cat(tgt).to(src_boxes)  # [N_valid, 4]
        loss_bbox = F.l1_loss(src_boxes, target_boxes, reduction="none").sum() / num_boxes
        giou = box_ops.elementwise_generalized_box_iou(box_ops.box_cxcywh_to_xyxy(src_boxes),
                                                       box_ops.box_cxcywh_to_xyxy(target_boxes))
        loss_giou = (1 - giou).sum() / num_boxes
        return {"loss_bbox": loss_bbox, "loss_giou": loss_giou}

    def loss_masks(self, pred_masks: Tensor, targets: List[Target], num_boxes: float) -> Dict[str, Tensor]:
        """Focal and dice losses of `pred_masks [B, T, h, w]` logits against the valid target masks.

        Predictions are upsampled bilinearly to the padded target size (the largest target of the
        batch, which is the padded image size), then each sample is scored on its own area.
        """
        padded_h = max(t["masks"].shape[-2] for t in targets)
        padded_w = max(t["masks"].shape[-1] for t in targets)
        focal_terms, dice_terms = [], []
        for b, target in enumerate(targets):
            masks = target["masks"]
            pred_idx, tgt_idx = self._frame_indices(target, "masks", pred_masks.shape[1])
            if pred_idx.numel() == 0:
                continue
            logits = pred_masks[b, pred_idx.to(pred_masks.device)]  # [n, h, w]
            logits = F.interpolate(logits[:, None], size=(padded_h, padded_w), mode="bilinear",
                                   align_corners=False)[:, 0]  # [n, H_pad, W_pad]
            height, width = masks.shape[-2:]
            logits = logits[:, :height, :width].flatten(1)  # [n, H*W]
            target_masks = masks[tgt_idx.to(masks.device)].flatten(1).to(logits)  # [n, H*W]
            focal_terms.append(sigmoid_focal_loss(logits, target_masks))
            dice_terms.append(dice_loss(logits, target_masks))
        if not focal_terms:
            # Nothing to score; keep the graph connected so every parameter still gets a (zero) gradient.
            zero = pred_masks.sum() * 0
            return {"loss_mask": zero, "loss_dice": zero.clone()}
        return {"loss_mask": torch.cat(focal_terms).sum() / num_boxes,
                "loss_dice": torch.cat(dice_terms).sum() / num_boxes}

    def loss_kl(self, outputs: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """KL divergence between the encoder's first cross-modal state (`fusion`) and its output (`memory`)."""
        if "memory" not in outputs or "fusion" not in outputs:
            raise KeyError("the 'kl' loss needs the outputs 'memory' and 'fusion' of the mask model "
                           "(build the model with --masks)")
        return {"loss_kl": kl_divergence_loss(outputs["memory"], outputs["fusion"])}

    # ------------------------------------------------------------------ forward
    def _num_boxes(self, targets: List[Target], device: torch.device) -> float:
        """Target entries in the batch (invalid frames included), averaged over processes, at least 1."""
        count = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], dtype=torch.float, device=device)
        return torch.clamp(all_reduce_mean(count), min=1).item()

    def forward(self, outputs: Dict[str, object], targets: List[Target]) -> Dict[str, Tensor]:
        """Loss dict for model `outputs` and one target dict per clip.

        outputs: `pred_boxes [B, T, 4]`, `pred_masks [B, T, h, w]` (for "masks"), `memory` and
        `fusion [L_v, B, C]` (for "kl"), optional `aux_outputs` (list of `{'pred_boxes'}`).
        targets: dicts with `boxes [T or 1, 4]` (normalised cx, cy, w, h), `masks [T or 1, H, W]`,
        `valid [T or 1]`, `labels`, and for a one-frame target optionally `frame_idx` (its position in
        the clip; default the middle); other keys are ignored.
        Returns scalar tensors `loss_kl`, `loss_bbox`, `loss_giou`, `loss_mask`, `loss_dice` and
        `loss_bbox_i`, `loss_giou_i` for each auxiliary output i.
        """
        pred_boxes = outputs["pred_boxes"]
        if len(targets) != pred_boxes.shape[0]:
            raise ValueError(f"got {len(targets)} targets for a batch of {pred_boxes.shape[0]} clips")
        num_boxes = self._num_boxes(targets, pred_boxes.device)

        losses: Dict[str, Tensor] = {}
        if "kl" in self.losses:
            losses.update(self.loss_kl(outputs))
        if "boxes" in self.losses:
            losses.update(self.loss_boxes(pred_boxes, targets, num_boxes))
        if "masks" in self.losses:
            losses.update(self.loss_masks(outputs["pred_masks"], targets, num_boxes))
        # Intermediate decoder layers only get the box losses (their masks are not computed).
        if "boxes" in self.losses:
            for i, aux in enumerate(outputs.get("aux_outputs", [])):
                aux_losses = self.loss_boxes(aux["pred_boxes"], targets, num_boxes)
                losses.update({f"{name}_{i}": value for name, value in aux_losses.items()})
        return losses


def build_weight_dict(kl_loss_coef: float, bbox_loss_coef: float, giou_loss_coef: float,
                      mask_loss_coef: float, dice_loss_coef: float, masks: bool,
                      aux_loss: bool, dec_layers: int) -> Dict[str, float]:
    """Loss weights, with a `_i` copy of every weight per auxiliary decoder layer (as the official)."""
    weight_dict = {"loss_kl": kl_loss_coef, "loss_bbox": bbox_loss_coef, "loss_giou": giou_loss_coef}
    if masks:
        weight_dict.update({"loss_mask": mask_loss_coef, "loss_dice": dice_loss_coef})
    if aux_loss:
        base = dict(weight_dict)
        for i in range(dec_layers - 1):
            weight_dict.update({f"{name}_{i}": value for name, value in base.items()})
    return weight_dict


def build_criterion(args) -> WnetCriterion:
    weight_dict = build_weight_dict(args.kl_loss_coef, args.bbox_loss_coef, args.giou_loss_coef,
                                    args.mask_loss_coef, args.dice_loss_coef, masks=args.masks,
                                    aux_loss=args.aux_loss, dec_layers=args.dec_layers)
    losses = ["kl", "boxes"] + (["masks"] if args.masks else [])
    return WnetCriterion(weight_dict=weight_dict, losses=losses)
