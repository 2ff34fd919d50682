"""Video-consistent transforms (docs/protocol.md §4): one random draw per clip for every geometric step.

A transform is called as `frames, target = t(frames, target)` with `frames` a list of RGB PIL images (one
clip) and `target` a dict holding, before `Normalize`:

- `boxes [N, 4]` float, (x0, y0, x1, y1) in pixels of the current frames (N = T frames, or 1 for A2D/JHMDB);
- `masks [N, H, W]` uint8, aligned with the frames;
- `valid [N]` int64 (0 where the object is absent);
- `size` = tensor (H, W) of the current frames.

Flip, resize and crop draw once per clip and apply the same change to every frame, box and mask; the
photometric distortion is drawn per frame, as the official. Flipping does not touch the expression: the
expression is spoken audio, so there is no "left"/"right" word to swap (the official flips anyway too).
`Normalize` turns the frames into ImageNet-normalised tensors and the boxes into (cx, cy, w, h) divided
by the frame width and height.
"""
import random
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image
from torch import Tensor

Target = Dict[str, object]
Frames = List[Image.Image]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The official training and validation sizes (docs/protocol.md §4).
TRAIN_SCALES = tuple(range(480, 769, 32))
TRAIN_MAX_SIZE = 800
CROP_RESIZE_SCALES = (400, 500, 600)
CROP_MIN_SIZE, CROP_MAX_SIZE = 384, 600
TRAIN_FINAL_SIZE, TRAIN_FINAL_MAX_SIZE = 300, 540
VAL_SIZE, VAL_MAX_SIZE = 360, 640
INFERENCE_SIZE = 300  # the inference scripts' torchvision Resize(300): short side, no cap on the long side

# SSD-style photometric distortion (docs/protocol.md §4), each step with probability 0.5.
BRIGHTNESS_DELTA = 32.0
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA_DEGREES = 18.0
MIN_SCALED_SIZE = 32  # `--data_scale` never shrinks a size below one stride-32 feature cell


def _frame_size(frames: Frames) -> Tuple[int, int]:
    """(W, H) of a clip, checking that every frame has it (masks and boxes assume one size)."""
    sizes = {frame.size for frame in frames}
    if len(sizes) != 1:
        raise ValueError(f"frames of one clip have different sizes: {sorted(sizes)}")
    return frames[0].size


class Compose:
    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, frames: Frames, target: Target):
        for t in self.transforms:
            frames, target = t(frames, target)
        return frames, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transforms})"


# ----------------------------------------------------------------------------- geometry
def hflip(frames: Frames, target: Target) -> Tuple[Frames, Target]:
    width, _ = _frame_size(frames)
    frames = [TF.hflip(frame) for frame in frames]
    target = dict(target)
    if "boxes" in target:
        boxes = target["boxes"]
        # x0' = W - x1, x1' = W - x0
        target["boxes"] = boxes[:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor([width, 0, width, 0])
    if "masks" in target:
        target["masks"] = target["masks"].flip(-1)
    return frames, target


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, frames: Frames, target: Target):
        if random.random() < self.p:
            return hflip(frames, target)
        return frames, target


def resized_size(image_size: Tuple[int, int], size: int, max_size: Optional[int] = None) -> Tuple[int, int]:
    """(H, W) with the short side `size` and, when given, the long side at most `max_size` (DETR's rule)."""
    width, height = image_size
    if max_size is not None:
        short, long = float(min(width, height)), float(max(width, height))
        if long / short * size > max_size:
            size = int(round(max_size * short / long))
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def _mark_vanished(target: Target) -> Target:
    """`valid = 0` (and an all-zero box) for objects a crop or a down-scaling removed from the frame."""
    if "valid" not in target:
        return target
    visible = torch.ones_like(target["valid"], dtype=torch.bool)
    if "boxes" in target:
        boxes = target["boxes"]
        visible &= (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if "masks" in target:
        visible &= (target["masks"].flatten(1) != 0).any(1)
    target["valid"] = target["valid"] * visible.to(target["valid"].dtype)
    if "boxes" in target:
        target["boxes"] = target["boxes"] * visible[:, None]
    return target


def resize(frames: Frames, target: Target, size: int, max_size: Optional[int] = None) -> Tuple[Frames, Target]:
    old_width, old_height = _frame_size(frames)
    new_height, new_width = resized_size((old_width, old_height), size, max_size)
    if (new_height, new_width) == (old_height, old_width):
        return frames, target
    frames = [frame.resize((new_width, new_height), Image.BILINEAR) for frame in frames]
    target = dict(target)
    if "boxes" in target:
        scale = torch.tensor([new_width / old_width, new_height / old_height] * 2, dtype=torch.float32)
        target["boxes"] = target["boxes"] * scale
    if "masks" in target:
        masks = target["masks"]
        # [N, H, W] -> [N, 1, H, W] for interpolate; nearest keeps the masks binary
        resized = F.interpolate(masks[:, None].float(), size=(new_height, new_width), mode="nearest")[:, 0]
        target["masks"] = (resized > 0.5).to(masks.dtype)
        target = _mark_vanished(target)  # a sliver of an object can vanish when shrunk
    target["size"] = torch.tensor([new_height, new_width])
    return frames, target


class RandomResize:
    """Resize the short side to one of `sizes` (drawn once per clip), long side capped at `max_size`."""

    def __init__(self, sizes: Sequence[int], max_size: Optional[int] = None):
        self.sizes = list(sizes)
        self.max_size = max_size

    def __call__(self, frames: Frames, target: Target):
        return resize(frames, target, random.choice(self.sizes), self.max_size)


def crop(frames: Frames, target: Target, top: int, left: int, height: int, width: int) -> Tuple[Frames, Target]:
    """Crop every frame to the region; boxes are shifted and clamped, and an object the crop removes
    entirely gets `valid = 0` (its box and mask are then empty, so no loss may use them)."""
    frames = [frame.crop((left, top, left + width, top + height)) for frame in frames]
    target = dict(target)
    if "boxes" in target:
        boxes = target["boxes"] - torch.tensor([left, top, left, top], dtype=torch.float32)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(min=0, max=width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(min=0, max=height)
        target["boxes"] = boxes
    if "masks" in target:
        target["masks"] = target["masks"][:, top:top + height, left:left + width]
    target = _mark_vanished(target)
    target["size"] = torch.tensor([height, width])
    return frames, target


class RandomSizeCrop:
    """Crop a random region with sides in [min_size, max_size] (capped at the frame), one region per clip."""

    def __init__(self, min_size: int, max_size: int):
        self.min_size = min_size
        self.max_size = max_size

    def __call__(self, frames: Frames, target: Target):
        width, height = _frame_size(frames)
        crop_width = random.randint(min(self.min_size, width), min(width, self.max_size))
        crop_height = random.randint(min(self.min_size, height), min(height, self.max_size))
        top = random.randint(0, height - crop_height)
        left = random.randint(0, width - crop_width)
        return crop(frames, target, top, left, crop_height, crop_width)


# ----------------------------------------------------------------------------- photometric
FLT_EPSILON = float(np.finfo(np.float32).eps)  # OpenCV's FLT_EPSILON in its float HSV conversion
HUE_RANGE = 360.0  # float HSV: hue in degrees
HUE_SECTOR = 60.0
HUE_OFFSETS = (120.0, 240.0)  # OpenCV adds these when the maximum is the middle / first channel
UINT8_MAX = 255
# OpenCV's HSV -> BGR table: which of (v, v(1-s), v(1-s f), v(1-s(1-f))) each channel takes per 60° sector.
HSV_SECTOR_TABLE = ((1, 3, 0), (1, 0, 2), (3, 0, 1), (0, 2, 1), (0, 1, 3), (2, 1, 0))


def bgr_to_hsv(image: np.ndarray) -> np.ndarray:
    """OpenCV's float `cvtColor(image, COLOR_BGR2HSV)` on `[..., 3]` float32, with no clipping: V = max,
    S = (V - min) / (|V| + eps), H in degrees [0, 360). Values outside [0, 255] go through as OpenCV's
    formulas take them (a negative V gives S > 1). The official calls it on RGB arrays, so channel 0 plays
    blue; we do the same (hue shifts are drawn symmetrically, so only the exact draws would differ)."""
    image = np.asarray(image, dtype=np.float32)
    b, g, r = image[..., 0], image[..., 1], image[..., 2]
    # channel-wise maximum and minimum: the same values as image.max(-1), about 10x faster than a reduction
    # over the short last axis
    value = np.maximum(np.maximum(b, g), r)
    diff = value - np.minimum(np.minimum(b, g), r)
    saturation = (diff / (np.abs(value) + np.float32(FLT_EPSILON))).astype(np.float32)
    scale = (HUE_SECTOR / (diff.astype(np.float64) + FLT_EPSILON)).astype(np.float32)  # C: (float)(60./(diff+eps))
    hue = np.where(value == r, (g - b) * scale,
                   np.where(value == g, (b - r) * scale + np.float32(HUE_OFFSETS[0]),
                            (r - g) * scale + np.float32(HUE_OFFSETS[1])))
    hue = np.where(hue < 0, hue + np.float32(HUE_RANGE), hue)
    return np.stack([hue, saturation, value], -1).astype(np.float32)


def hsv_to_bgr(hsv: np.ndarray) -> np.ndarray:
    """OpenCV's float `cvtColor(hsv, COLOR_HSV2BGR)`: the inverse of `bgr_to_hsv` for values in range, and
    the official's arithmetic for any other (no clipping; a saturation above 1 gives negative channels)."""
    hsv = np.asarray(hsv, dtype=np.float32)
    hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    sectors = np.float32(HUE_RANGE / HUE_SECTOR)
    h = np.fmod(hue * np.float32(1 / HUE_SECTOR), sectors)
    h = np.where(h < 0, h + sectors, h)
    sector = np.floor(h)
    fraction = (h - sector).astype(np.float32)
    sector = sector.astype(np.int64)
    outside = (sector < 0) | (sector >= len(HSV_SECTOR_TABLE))
    sector, fraction = np.where(outside, 0, sector), np.where(outside, np.float32(0), fraction)
    one = np.float32(1)
    tab = (value, value * (one - saturation), value * (one - saturation * fraction),
           value * (one - saturation * (one - fraction)))
    grey = saturation == 0
    # each channel picks, per pixel, the entry of tab its sector names (pure selection, channel by channel:
    # several times faster than indexing a stacked [..., 4] table)
    channels = [np.where(grey, value, np.choose(sector, [tab[row[channel]] for row in HSV_SECTOR_TABLE]))
                for channel in range(3)]
    return np.stack(channels, -1).astype(np.float32, copy=False)


def truncate_to_uint8(image: np.ndarray) -> np.ndarray:
    """The official's final `astype('uint8')` truncates; we clip to [0, 255] first, where it wraps around."""
    return np.clip(image, 0, UINT8_MAX).astype(np.uint8)


class PhotometricDistort:
    """SSD photometric distortion as the official, drawn independently per frame, on float32 values.

    Brightness (+-32), then contrast (x0.5..1.5) either before or after the HSV round trip (always done,
    as the official), in which saturation (x0.5..1.5) and hue (+-18 degrees, wrapped once into [0, 360])
    may change, then a random channel permutation; each step with probability 0.5. Nothing is clipped on
    the way, as in the official; at the end the values are clipped to [0, 255] (the only deviation: the
    official wraps around) and truncated to uint8 as the official.
    `rng`: the source of the draws (`random` by default; the tests script it).
    """

    def __init__(self, p: float = 0.5, rng=None):
        self.p = p
        self.rng = rng if rng is not None else random

    def _maybe(self) -> bool:
        return self.rng.random() < self.p

    def _contrast(self, image: np.ndarray) -> np.ndarray:
        if self._maybe():
            image = image * np.float32(self.rng.uniform(*CONTRAST_RANGE))
        return image

    def distort_array(self, image: np.ndarray) -> np.ndarray:
        """`[H, W, 3]` float32 in 0..255 -> the distorted float32 image, before the final conversion."""
        image = np.asarray(image, dtype=np.float32)
        if self._maybe():
            image = image + np.float32(self.rng.uniform(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA))
        contrast_first = self._maybe()
        if contrast_first:
            image = self._contrast(image)
        hsv = bgr_to_hsv(image)
        if self._maybe():
            hsv[..., 1] *= np.float32(self.rng.uniform(*SATURATION_RANGE))
        if self._maybe():
            hue = hsv[..., 0] + np.float32(self.rng.uniform(-HUE_DELTA_DEGREES, HUE_DELTA_DEGREES))
            hue = np.where(hue > HUE_RANGE, hue - np.float32(HUE_RANGE), hue)
            hsv[..., 0] = np.where(hue < 0, hue + np.float32(HUE_RANGE), hue)
        image = hsv_to_bgr(hsv)
        if not contrast_first:
            image = self._contrast(image)
        if self._maybe():
            image = image[..., self.rng.sample(range(3), 3)]
        return image

    def distort(self, frame: Image.Image) -> Image.Image:
        return Image.fromarray(truncate_to_uint8(self.distort_array(np.asarray(frame, dtype=np.float32))))

    def __call__(self, frames: Frames, target: Target):
        return [self.distort(frame) for frame in frames], target


# ----------------------------------------------------------------------------- to tensors
def box_xyxy_to_normalised_cxcywh(boxes: Tensor, height: int, width: int) -> Tensor:
    """[N, 4] pixel (x0, y0, x1, y1) -> [N, 4] (cx, cy, w, h) divided by the frame width and height."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    cxcywh = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)
    return cxcywh / torch.tensor([width, height, width, height], dtype=torch.float32)


class Normalize:
    """Frames -> ImageNet-normalised `[3, H, W]` float tensors; boxes -> normalised (cx, cy, w, h)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean = list(mean)
        self.std = list(std)

    def __call__(self, frames: Frames, target: Target):
        width, height = _frame_size(frames)
        tensors = [TF.normalize(TF.to_tensor(frame), self.mean, self.std) for frame in frames]
        target = dict(target)
        if "boxes" in target:
            boxes = box_xyxy_to_normalised_cxcywh(target["boxes"], height, width)
            if "valid" in target:  # absent objects keep an all-zero box whatever the flips did to it
                boxes = boxes * (target["valid"] > 0)[:, None]
            target["boxes"] = boxes
        target["size"] = torch.tensor([height, width])
        return tensors, target


def _scaled(sizes: Sequence[int], scale: float) -> List[int]:
    return sorted({max(MIN_SCALED_SIZE, int(round(s * scale))) for s in sizes})


def make_video_transforms(image_set: str, scale: float = 1.0, hflip: bool = True,
                          photometric: bool = True) -> Compose:
    """The official clip transforms of docs/protocol.md §4 for 'train' or 'val'.

    `scale` multiplies every resize and crop size (1 = the official sizes; tiny test and demo runs use
    less, sizes never below 32 pixels). `hflip=False` / `photometric=False` leave out the training
    flip / photometric distortion (the CPU demo, whose expressions name colours and left/right motion).
    """
    (final,) = _scaled([TRAIN_FINAL_SIZE], scale)
    if image_set == "train":
        (crop_min,) = _scaled([CROP_MIN_SIZE], scale)
        (crop_max,) = _scaled([CROP_MAX_SIZE], scale)
        steps = [
            RandomHorizontalFlip() if hflip else None,
            RandomResize(_scaled(TRAIN_SCALES, scale), max_size=_scaled([TRAIN_MAX_SIZE], scale)[0]),
            PhotometricDistort() if photometric else None,
            RandomResize(_scaled(CROP_RESIZE_SCALES, scale)),
            RandomSizeCrop(crop_min, crop_max),
            RandomResize([final], max_size=_scaled([TRAIN_FINAL_MAX_SIZE], scale)[0]),
            Normalize(),
        ]
        return Compose([step for step in steps if step is not None])
    if image_set == "val":
        return Compose([
            RandomResize(_scaled([VAL_SIZE], scale), max_size=_scaled([VAL_MAX_SIZE], scale)[0]),
            Normalize(),
        ])
    raise ValueError(f"unknown image set {image_set!r}; expected 'train' or 'val'")


def video_transforms_from_args(image_set: str, args) -> Compose:
    """`make_video_transforms` with the size (`--data_scale`) and augmentation switches of the options."""
    return make_video_transforms(image_set, args.data_scale, hflip=not args.no_hflip,
                                 photometric=not args.no_photometric)


def make_inference_transforms(scale: float = 1.0) -> Compose:
    """The inference scripts' transform: short side 300 (times `scale`, as the training sizes), no cap on
    the long side, normalised."""
    return Compose([RandomResize(_scaled([INFERENCE_SIZE], scale)), Normalize()])
