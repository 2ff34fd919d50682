"""util/visualize.py: overlay colours and contour, contact-sheet layout, GIF frames."""
import numpy as np
import pytest
from PIL import Image

from util.visualize import (LABEL_HEIGHT, PALETTE, SHEET_BACKGROUND, annotate_frame, contact_sheet, labelled_rows,
                             mask_box, mask_contour, overlay, save_gif)


def gradient_image(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[:height, :width]
    return np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
                     np.full_like(x, 90)], axis=-1).astype(np.uint8)


def test_overlay_tints_the_mask_draws_its_contour_and_leaves_the_rest():
    height, width = 30, 40
    rgb = gradient_image(height, width)
    mask = np.zeros((height, width), dtype=bool)
    mask[5:20, 10:30] = True  # 15 x 20 rectangle
    color, alpha = (200, 10, 50), 0.25
    out = overlay(rgb, mask, color=color, alpha=alpha, contour_width=2)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~mask], rgb[~mask])
    contour = np.zeros_like(mask)
    contour[5:20, 10:30] = True
    contour[7:18, 12:28] = False  # a rectangle's 2-pixel inner ring
    np.testing.assert_array_equal(mask_contour(mask, 2), contour)
    assert np.all(out[contour] == color)
    inside = mask & ~contour
    expected = np.rint((1 - alpha) * rgb[inside].astype(float) + alpha * np.array(color, dtype=float))
    np.testing.assert_array_equal(out[inside], expected.astype(np.uint8))
    assert overlay(rgb, mask).shape == rgb.shape  # default colour and opacity
    np.testing.assert_array_equal(rgb, gradient_image(height, width))  # the input is not modified


def test_overlay_of_an_empty_mask_is_the_image_and_the_border_is_contour():
    rgb = gradient_image(8, 9)
    np.testing.assert_array_equal(overlay(rgb, np.zeros((8, 9), dtype=bool)), rgb)
    full = overlay(rgb, np.ones((8, 9), dtype=bool), color=(0, 0, 255), contour_width=1)
    assert np.all(full[0] == (0, 0, 255)) and np.all(full[:, -1] == (0, 0, 255))
    assert not np.all(full[4, 4] == (0, 0, 255))


def test_overlay_bad_input():
    rgb = gradient_image(8, 9)
    with pytest.raises(ValueError, match="differ in size"):
        overlay(rgb, np.zeros((9, 8), dtype=bool))
    with pytest.raises(ValueError, match="uint8 RGB"):
        overlay(rgb.astype(np.float32), np.zeros((8, 9), dtype=bool))
    with pytest.raises(ValueError, match="alpha"):
        overlay(rgb, np.zeros((8, 9), dtype=bool), alpha=1.5)


def test_contact_sheet_layout():
    images = [np.full((10, 16, 3), PALETTE[i], dtype=np.uint8) for i in range(5)]
    images[4] = np.full((6, 8, 3), PALETTE[4], dtype=np.uint8)  # a smaller last image
    padding, background = 3, (255, 255, 255)
    sheet = contact_sheet(images, columns=2, padding=padding, background=background)
    rows, columns = 3, 2
    assert sheet.shape == (rows * 10 + (rows + 1) * padding, columns * 16 + (columns + 1) * padding, 3)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        top, left = padding + row * (10 + padding), padding + column * (16 + padding)
        np.testing.assert_array_equal(sheet[top:top + image.shape[0], left:left + image.shape[1]], image)
    assert np.all(sheet[:padding] == background) and np.all(sheet[:, :padding] == background)
    # the empty cell after the last image, and the unused part of the small image's cell
    last_top = padding + 2 * (10 + padding)
    assert np.all(sheet[last_top:last_top + 10, padding + 16 + padding:-padding] == background)
    assert np.all(sheet[last_top + 6:last_top + 10, padding:padding + 16] == background)
    # fewer images than columns: one row, as wide as the images
    assert contact_sheet(images[:2], columns=8, padding=0).shape == (10, 32, 3)
    with pytest.raises(ValueError):
        contact_sheet([], columns=2)


def test_labelled_rows_put_each_row_under_its_caption():
    rows = [[np.full((10, 16, 3), PALETTE[r], dtype=np.uint8) for _ in range(3)] for r in range(2)]
    padding, background = 2, (255, 255, 255)
    picture = labelled_rows(rows, ['"the red circle"', '"the blue square"'], padding=padding, background=background)
    row_height = 10 + 2 * padding
    assert picture.shape == (2 * (LABEL_HEIGHT + row_height), 3 * 16 + 4 * padding, 3)
    for r in range(2):
        caption = picture[r * (LABEL_HEIGHT + row_height):r * (LABEL_HEIGHT + row_height) + LABEL_HEIGHT]
        assert np.any(caption != background)  # the words are written
        top = r * (LABEL_HEIGHT + row_height) + LABEL_HEIGHT + padding
        np.testing.assert_array_equal(picture[top:top + 10, padding:padding + 16], rows[r][0])
    with pytest.raises(ValueError, match="one label per row"):
        labelled_rows(rows, ["only one"])


def test_save_gif_writes_every_frame_at_the_rate(tmp_path):
    frames = [np.full((12, 20, 3), color, dtype=np.uint8) for color in PALETTE[:4]]
    path = tmp_path / "sub" / "clip.gif"
    save_gif(frames, path, fps=5)
    assert sorted(p.name for p in path.parent.iterdir()) == ["clip.gif"]  # no temporary file left
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.size == (20, 12) and gif.n_frames == len(frames)
        assert gif.info["duration"] == 200 and gif.info["loop"] == 0
        for index, color in enumerate(PALETTE[:4]):
            gif.seek(index)
            assert tuple(np.asarray(gif.convert("RGB"))[6, 10]) == color
    with pytest.raises(ValueError, match="differ in size"):
        save_gif([frames[0], np.zeros((5, 5, 3), dtype=np.uint8)], tmp_path / "bad.gif", fps=5)
    assert not (tmp_path / "bad.gif").exists()


def test_annotate_frame_draws_each_mask_its_box_and_a_caption_band():
    rgb = np.zeros((20, 30, 3), dtype=np.uint8)
    first, second = np.zeros((20, 30), dtype=bool), np.zeros((20, 30), dtype=bool)
    first[4:9, 3:12] = True
    second[12:18, 20:27] = True
    assert mask_box(first) == (3, 4, 11, 8) and mask_box(np.zeros((2, 2), dtype=bool)) is None
    plain = annotate_frame(rgb, [first, second], ["", ""])
    assert plain.shape == rgb.shape  # no words: no band
    assert tuple(plain[4, 3]) == PALETTE[0] and tuple(plain[17, 26]) == PALETTE[1]  # box corners, own colours
    assert not plain[~(first | second)].any()  # nothing outside the masks
    captioned = annotate_frame(rgb, [first, second], ['"the red circle"', ""])
    assert captioned.shape == (20 + LABEL_HEIGHT, 30, 3)  # one caption line: the second has no words
    np.testing.assert_array_equal(captioned[:20], plain)
    band = captioned[20:]
    ink = band[(band != SHEET_BACKGROUND).any(axis=2)].astype(int)  # the words (antialiased), in their mask's colour
    assert len(ink) and (ink[:, 0] > ink[:, 1]).all() and PALETTE[0][0] > PALETTE[0][1]
