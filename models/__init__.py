"""Wnet model package: `build_model(args) -> (model, criterion, postprocessors)` for training,
`build_inference_model(args) -> (model, postprocessors)` for the inference scripts and the hub."""
from typing import Dict, Tuple

import torch
from torch import nn

from util.config import NONE, freeze

from .backbone import fold_frozen_batch_norms
from .criterion import build_criterion
from .options import add_model_args, add_model_training_args, model_training_defaults
from .postprocess import build_postprocessors
from .segmentation import WnetSegm, build_wnet_segm
from .wnet import Wnet, build_wnet

__all__ = ["Wnet", "WnetSegm", "add_model_args", "add_model_training_args", "build_inference_model", "build_model",
           "optimize_for_inference"]


def build_model(args) -> Tuple[nn.Module, nn.Module, Dict[str, nn.Module]]:
    """The mask model `WnetSegm` with `--masks` (needed for training), else the detector `Wnet`."""
    model = build_wnet_segm(args) if args.masks else build_wnet(args)
    return model, build_criterion(args), build_postprocessors(args)


def build_inference_model(args) -> Tuple[nn.Module, Dict[str, nn.Module]]:
    """The model of `build_model` and its postprocessors, from options without the training-only ones
    (`add_model_training_args`: their defaults, and no ImageNet weights nor a note that there are none, since the
    weights loaded next replace every backbone weight). No criterion."""
    args = freeze(args, **{**model_training_defaults(), "backbone_weights": NONE})
    model = build_wnet_segm(args) if args.masks else build_wnet(args)
    return model, build_postprocessors(args)


def optimize_for_inference(model: nn.Module) -> nn.Module:
    """Prepare a loaded model for inference, in place: eval mode, frozen BNs folded into the convs,
    the backbone's and the mask head's conv weights in channels-last layout.

    Call it after loading weights: the backbone's state_dict layout changes (its convs gain a bias,
    the BNs disappear), so the optimised model no longer loads official checkpoints. Outputs stay
    within float32 rounding of the unoptimised model.
    """
    wnet = model.wnet if isinstance(model, WnetSegm) else model
    fold_frozen_batch_norms(wnet.backbone[0].body)
    # oneDNN runs NHWC convolutions without reordering every activation (about 25% faster on the
    # CPU); the features then stay channels-last through the mask head, which reads them.
    conv_stacks = [wnet.backbone[0].body] + ([model.mask_head] if isinstance(model, WnetSegm) else [])
    for stack in conv_stacks:
        stack.to(memory_format=torch.channels_last)
    return model.eval()
