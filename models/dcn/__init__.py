"""Deformable convolution (v1) for the Wnet mask head.

The compiled extension `_C` (build: `make build-ext`) is used when present, torchvision otherwise;
WNET_DCN_BACKEND=extension|torchvision forces one.
"""
from .ops import (BACKEND_ENV, DeformConv, DeformConvFunction, deform_conv, extension_available,
                  extension_has_cuda, selected_backend)

__all__ = ["BACKEND_ENV", "DeformConv", "DeformConvFunction", "deform_conv", "extension_available",
           "extension_has_cuda", "selected_backend"]
