"""Frozen-BN ResNet backbone returning the four levels (layer1..layer4) with their padding masks.

Layout as the official (DETR/VisTR): `backbone.0.body.*` is the ResNet without its head,
`backbone.1` is the 3-D position encoding (no parameters). Frames of all clips are on the batch
axis. The position encoding is computed only for the last level, the only one that uses it.
"""
from typing import Dict, List, Tuple

import torch
import torchvision
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torchvision.models._utils import IntermediateLayerGetter

from util.errors import OptionError
from util.misc import NestedTensor, downsample_mask
from util.weights import load_backbone_weights

from .position_encoding import NUM_AXES, PositionEmbeddingSine3D

FROZEN_BN_EPS = 1e-5
RESNET_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101")
BOTTLENECK_RESNETS = ("resnet50", "resnet101")
LEVEL_NAMES = ("layer1", "layer2", "layer3", "layer4")
TRAINABLE_LEVELS = ("layer2", "layer3", "layer4")  # the stem and layer1 never train
# --checkpoint_activations keeps the input of every segment of this many residual blocks and recomputes
# the rest in backward: pairs keep ~40% fewer block inputs than single blocks for a little more
# recomputed memory at a time (measured lowest peak at 8 frames of 300x540 with ResNet-50).
BLOCKS_PER_SEGMENT = 2


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters, all buffers (as DETR)."""

    def __init__(self, num_features: int, eps: float = FROZEN_BN_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # torchvision checkpoints carry a BN step counter that a frozen BN does not have.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def scale_and_shift(self) -> Tuple[Tensor, Tensor]:
        """The affine map this layer applies: `x * scale + shift`, each `[C]`."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = self.scale_and_shift()
        # one fused pass (no intermediate `x * scale` tensor)
        return torch.addcmul(shift.reshape(1, -1, 1, 1), x, scale.reshape(1, -1, 1, 1))


def level_channels(name: str) -> List[int]:
    """Channels of layer1..layer4 of torchvision ResNet `name`."""
    if name not in RESNET_NAMES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {', '.join(RESNET_NAMES)}")
    expansion = 4 if name in BOTTLENECK_RESNETS else 1
    return [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]


class Backbone(nn.Module):
    """ResNet body with frozen BN; returns every level as a NestedTensor with its padding mask."""

    def __init__(self, name: str, train_backbone: bool, dilation: bool = False,
                 checkpoint_activations: bool = False) -> None:
        super().__init__()
        channels = level_channels(name)
        if dilation and name not in BOTTLENECK_RESNETS:
            raise OptionError(f"--dilation needs a bottleneck ResNet ({', '.join(BOTTLENECK_RESNETS)}), got {name}")
        resnet = getattr(torchvision.models, name)(weights=None, norm_layer=FrozenBatchNorm2d,
                                                   replace_stride_with_dilation=[False, False, dilation])
        for param_name, param in resnet.named_parameters():
            if not train_backbone or not param_name.startswith(TRAINABLE_LEVELS):
                param.requires_grad_(False)
        self.body = IntermediateLayerGetter(resnet, return_layers={n: n for n in LEVEL_NAMES})
        self.level_channels = channels
        self.num_channels = channels[-1]
        self.checkpoint_activations = checkpoint_activations

    def forward(self, images: NestedTensor) -> List[NestedTensor]:
        """images: `[N, 3, H, W]` with mask `[N, H, W]`. Returns layer1..layer4 as NestedTensors."""
        x, mask = images.decompose()
        levels: Dict[str, Tensor] = {}
        recompute = self.checkpoint_activations and self.training and torch.is_grad_enabled()
        for name, module in self.body.items():
            if recompute and name in TRAINABLE_LEVELS:
                # segments of a few residual blocks: only one segment's activations live at a time
                for start in range(0, len(module), BLOCKS_PER_SEGMENT):
                    x = checkpoint(module[start:start + BLOCKS_PER_SEGMENT], x, use_reentrant=False)
            else:
                x = module(x)
            if name in LEVEL_NAMES:
                levels[name] = x
        out = []
        for name in LEVEL_NAMES:
            feature = levels[name]
            level_mask = downsample_mask(mask, feature.shape[-2:])  # [N, h, w]
            out.append(NestedTensor(feature, level_mask))
        return out


def _fold_into_conv(conv: nn.Conv2d, norm: FrozenBatchNorm2d) -> nn.Conv2d:
    """A conv computing `norm(conv(x))`: the frozen BN's scale and shift moved into weight and bias."""
    scale, shift = norm.scale_and_shift()
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                       padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
                       padding_mode=conv.padding_mode).to(device=conv.weight.device, dtype=conv.weight.dtype)
    bias = conv.bias * scale + shift if conv.bias is not None else shift
    with torch.no_grad():
        folded.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        folded.bias.copy_(bias)
    folded.weight.requires_grad_(conv.weight.requires_grad)
    folded.bias.requires_grad_(conv.weight.requires_grad)
    return folded


def fold_frozen_batch_norms(module: nn.Module) -> int:
    """Fold every frozen BN that directly follows a conv of a torchvision ResNet into that conv.

    Pairs are `convK`/`bnK` attributes of one module and `downsample = Sequential(conv, bn)`; each BN
    becomes an Identity. For inference only: the state_dict layout changes (convs gain a bias).
    Returns the number of folded layers.
    """
    folded = 0
    for child in list(module.modules()):
        for name, conv in list(child.named_children()):
            if not isinstance(conv, nn.Conv2d):
                continue
            if isinstance(child, nn.Sequential):
                norm_name = str(int(name) + 1)
            elif name.startswith("conv"):
                norm_name = "bn" + name[len("conv"):]
            else:
                continue
            norm = getattr(child, norm_name, None)
            if isinstance(norm, FrozenBatchNorm2d):
                setattr(child, name, _fold_into_conv(conv, norm))
                setattr(child, norm_name, nn.Identity())
                folded += 1
    return folded


class Joiner(nn.Sequential):
    """`[backbone, position_encoding]`: the features of every level and the encoding of the last."""

    def __init__(self, backbone: Backbone, position_embedding: PositionEmbeddingSine3D) -> None:
        super().__init__(backbone, position_embedding)
        self.num_channels = backbone.num_channels
        self.level_channels = backbone.level_channels

    def forward(self, images: NestedTensor) -> Tuple[List[NestedTensor], Tensor]:
        """Returns (layer1..layer4 NestedTensors, position encoding of layer4 `[B, T, C, h, w]`)."""
        features = self[0](images)
        last = features[-1]
        pos = self[1](last.mask).to(last.tensors.dtype)
        return features, pos


def build_backbone(args) -> Joiner:
    if args.hidden_dim % (2 * NUM_AXES) != 0:
        raise OptionError(f"--hidden_dim must be divisible by {2 * NUM_AXES} (three sine/cosine axes), "
                         f"got {args.hidden_dim}")
    backbone = Backbone(args.backbone, train_backbone=args.lr_backbone > 0, dilation=args.dilation,
                        checkpoint_activations=args.checkpoint_activations)
    # ImageNet weights from --backbone_weights or the local torchvision cache; never downloaded.
    load_backbone_weights(backbone.body, args.backbone, args.backbone_weights)
    if args.channels_last:
        backbone.to(memory_format=torch.channels_last)  # 4-D weights only; the convolutions then run NHWC
    position_embedding = PositionEmbeddingSine3D(args.hidden_dim // NUM_AXES, num_frames=args.num_frames)
    return Joiner(backbone, position_embedding)
