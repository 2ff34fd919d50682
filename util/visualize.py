"""Pictures of predictions: mask overlays with a contour, contact sheets, animated GIFs (Pillow).

Images are `[H, W, 3]` uint8 RGB arrays throughout; masks are `[H, W]` booleans.
"""
import math
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from util.misc import atomic_write

Color = Tuple[int, int, int]

# Distinct colours, one per expression drawn on the same frame.
PALETTE: Tuple[Color, ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128),
)
DEFAULT_ALPHA = 0.5
CONTOUR_WIDTH = 2  # pixels, inside the mask
SHEET_PADDING = 4  # pixels between (and around) the cells of a contact sheet
SHEET_BACKGROUND: Color = (255, 255, 255)
MILLISECONDS_PER_SECOND = 1000
LABEL_HEIGHT = 16  # pixels of the caption band above each row of `labelled_rows`
LABEL_TEXT: Color = (0, 0, 0)


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an [H, W, 3] uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    return rgb


def mask_contour(mask: np.ndarray, width: int = CONTOUR_WIDTH) -> np.ndarray:
    """The mask's pixels within `width` 4-connected steps of the outside (the image border counts
    as outside) -> boolean `[H, W]`."""
    interior = np.asarray(mask, dtype=bool)
    for _ in range(width):
        # a pixel stays interior when it and its four neighbours are in the mask
        padded = np.pad(interior, 1, constant_values=False)
        interior = (padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1]
                    & padded[1:-1, :-2] & padded[1:-1, 2:])
    return np.asarray(mask, dtype=bool) & ~interior


def overlay(rgb: np.ndarray, mask: np.ndarray, color: Color = PALETTE[0], alpha: float = DEFAULT_ALPHA,
            contour_width: int = CONTOUR_WIDTH) -> np.ndarray:
    """Tint the mask's pixels with `color` (opacity `alpha`) and draw its contour opaque.

    `rgb [H, W, 3]` uint8, `mask [H, W]` -> a new `[H, W, 3]` uint8 image; pixels outside the mask
    are unchanged.
    """
    rgb = _check_rgb(rgb)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask {mask.shape} and image {rgb.shape[:2]} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    color_array = np.asarray(color, dtype=np.float64)
    out = rgb.copy()
    blended = (1.0 - alpha) * rgb[mask].astype(np.float64) + alpha * color_array  # [P, 3]
    out[mask] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    out[mask_contour(mask, contour_width)] = color_array.astype(np.uint8)
    return out


def contact_sheet(images: Sequence[np.ndarray], columns: int, padding: int = SHEET_PADDING,
                  background: Color = SHEET_BACKGROUND) -> np.ndarray:
    """Tile images row by row in `columns` columns -> one `[H, W, 3]` uint8 image.

    Every cell has the largest image's size (smaller images sit in its top-left corner); cells are
    separated and surrounded by `padding` pixels of `background`.
    """
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    images = [_check_rgb(image) for image in images]
    cell_height = max(image.shape[0] for image in images)
    cell_width = max(image.shape[1] for image in images)
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    sheet = np.empty((rows * cell_height + (rows + 1) * padding, columns * cell_width + (columns + 1) * padding, 3),
                     dtype=np.uint8)
    sheet[:] = np.asarray(background, dtype=np.uint8)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        top = padding + row * (cell_height + padding)
        left = padding + column * (cell_width + padding)
        sheet[top:top + image.shape[0], left:left + image.shape[1]] = image
    return sheet


def labelled_rows(rows: Sequence[Sequence[np.ndarray]], labels: Sequence[str], padding: int = SHEET_PADDING,
                  background: Color = SHEET_BACKGROUND) -> np.ndarray:
    """One row of images per label, each row under a caption band with its label -> `[H, W, 3]` uint8.

    For several expressions of one video: row k shows the frames with expression k's mask, captioned with
    its words, so that one can see each mask follow its own words.
    """
    if len(rows) != len(labels) or not rows:
        raise ValueError(f"labelled_rows needs one label per row, got {len(rows)} row(s) and {len(labels)} label(s)")
    sheets = [contact_sheet(row, columns=len(row), padding=padding, background=background) for row in rows]
    width = max(sheet.shape[1] for sheet in sheets)
    bands = []
    font = ImageFont.load_default()
    for sheet, label in zip(sheets, labels):
        caption = Image.new("RGB", (width, LABEL_HEIGHT), background)
        ImageDraw.Draw(caption).text((padding, 0), label, fill=LABEL_TEXT, font=font)
        row = np.empty((sheet.shape[0], width, 3), dtype=np.uint8)
        row[:] = np.asarray(background, dtype=np.uint8)
        row[:, :sheet.shape[1]] = sheet
        bands += [np.asarray(caption), row]
    return np.concatenate(bands, axis=0)


def save_gif(frames: Sequence[np.ndarray], path: Union[str, Path], fps: float) -> None:
    """Write `frames` (`[H, W, 3]` uint8, one size) as a looping animated GIF, atomically."""
    if not frames:
        raise ValueError(f"{path}: save_gif needs at least one frame")
    if fps <= 0:
        raise ValueError(f"{path}: fps must be positive, got {fps}")
    frames = [_check_rgb(frame) for frame in frames]
    if len({frame.shape for frame in frames}) != 1:
        raise ValueError(f"{path}: frames differ in size {sorted({frame.shape for frame in frames})}")
    pictures = [Image.fromarray(frame) for frame in frames]
    duration_ms = round(MILLISECONDS_PER_SECOND / fps)
    atomic_write(path, lambda tmp: pictures[0].save(tmp, format="GIF", save_all=True, append_images=pictures[1:],
                                                    duration=duration_ms, loop=0))


def mask_box(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """The bounding box `(x0, y0, x1, y1)` of a mask's pixels (x1 / y1 inclusive), None for an empty mask."""
    ys, xs = np.nonzero(np.asarray(mask, dtype=bool))
    if not len(xs):
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def annotate_frame(rgb: np.ndarray, masks: Sequence[np.ndarray], captions: Sequence[str]) -> np.ndarray:
    """A frame with each mask overlaid in its `PALETTE` colour with its bounding box, and a caption band below
    it holding each non-empty caption in its mask's colour -> `[H + LABEL_HEIGHT * captions, W, 3]` uint8
    (no band when every caption is empty)."""
    image = _check_rgb(rgb)
    colors = [PALETTE[number % len(PALETTE)] for number in range(len(masks))]
    for mask, color in zip(masks, colors):
        image = overlay(image, mask, color=color)
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    for mask, color in zip(masks, colors):
        box = mask_box(mask)
        if box is not None:
            draw.rectangle(box, outline=color)
    lines = [(caption, color) for caption, color in zip(captions, colors) if caption]
    if not lines:
        return np.asarray(picture)
    band = Image.new("RGB", (picture.width, LABEL_HEIGHT * len(lines)), SHEET_BACKGROUND)
    band_draw, font = ImageDraw.Draw(band), ImageFont.load_default()
    for row, (caption, color) in enumerate(lines):
        band_draw.text((SHEET_PADDING, row * LABEL_HEIGHT), caption, fill=color, font=font)
    return np.concatenate([np.asarray(picture), np.asarray(band)], axis=0)
