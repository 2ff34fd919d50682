"""Wnet model package: `build_model(args) -> (model, criterion, postprocessors)`."""
from typing import Dict, Tuple

from torch import nn

from .criterion import build_criterion
from .postprocess import build_postprocessors
from .segmentation import WnetSegm, build_wnet_segm
from .wnet import Wnet, build_wnet

__all__ = ["Wnet", "WnetSegm", "build_model"]


def build_model(args) -> Tuple[nn.Module, nn.Module, Dict[str, nn.Module]]:
    """The mask model `WnetSegm` with `--masks` (needed for training), else the detector `Wnet`."""
    model = build_wnet_segm(args) if args.masks else build_wnet(args)
    return model, build_criterion(args), build_postprocessors(args)
