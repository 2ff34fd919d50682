"""Deformable convolution (v1) for the Wnet mask head."""
from .deform_conv import DeformConv, deform_conv

__all__ = ["DeformConv", "deform_conv"]
