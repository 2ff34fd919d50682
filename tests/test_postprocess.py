"""Post-processors: boxes to absolute xyxy pixels, masks upsampled to the original size and thresholded."""
import pytest
import torch
import torch.nn.functional as F

from models.postprocess import PostProcess, PostProcessSegm, build_postprocessors
from main import get_args_parser
from util.config import parse_args


def test_boxes_to_absolute_xyxy_per_clip_size():
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.25, 0.75, 0.5, 0.5]],
                          [[0.5, 0.5, 1.0, 1.0], [0.1, 0.2, 0.2, 0.2]]])  # [B=2, T=2, 4] cx, cy, w, h
    sizes = torch.tensor([[100, 200], [30, 60]])  # (height, width)
    results = PostProcess()({"pred_boxes": boxes}, sizes)
    assert len(results) == 2
    expected0 = torch.tensor([[80.0, 30.0, 120.0, 70.0], [0.0, 50.0, 100.0, 100.0]])
    expected1 = torch.tensor([[0.0, 0.0, 60.0, 30.0], [0.0, 3.0, 12.0, 9.0]])
    assert torch.allclose(results[0]["boxes"], expected0)
    assert torch.allclose(results[1]["boxes"], expected1)
    with pytest.raises(ValueError, match=r"\[2, 2\]"):
        PostProcess()({"pred_boxes": boxes}, torch.tensor([[100, 200]]))


def test_masks_upsampled_to_original_size_and_thresholded():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 8, 10) * 4
    orig = torch.tensor([[45, 61]])
    masks = PostProcessSegm()({"pred_masks": logits}, orig)[0]["masks"]
    assert masks.shape == (3, 45, 61) and masks.dtype == torch.bool
    # the official inference: bilinear (align_corners False) to the original size, sigmoid > 0.5
    upsampled = F.interpolate(logits, size=(45, 61), mode="bilinear", align_corners=False)[0]
    assert torch.equal(masks, upsampled.sigmoid() > 0.5)
    assert 0 < masks.float().mean() < 1
    strict = PostProcessSegm(threshold=0.9)({"pred_masks": logits}, orig)[0]["masks"]
    assert strict.sum() < masks.sum() and not (strict & ~masks).any()


def test_padded_batch_masks_use_each_clips_own_area():
    """A clip padded to a larger batch gives the same masks as run alone, when the logits of its area agree."""
    torch.manual_seed(1)
    alone = torch.randn(1, 2, 5, 6)  # input 20 x 24
    padded = torch.randn(2, 2, 8, 10)  # batch padded to 32 x 40
    padded[1, :, :5, :6] = alone[0]
    orig = torch.tensor([[50, 60], [40, 47]])
    results = PostProcessSegm()({"pred_masks": padded}, orig, image_sizes=torch.tensor([[32, 40], [20, 24]]))
    expected = PostProcessSegm()({"pred_masks": alone}, orig[1:])[0]["masks"]
    assert results[1]["masks"].shape == (2, 40, 47)
    assert torch.equal(results[1]["masks"], expected)
    assert results[0]["masks"].shape == (2, 50, 60)


def test_build_postprocessors():
    with_masks = build_postprocessors(parse_args(get_args_parser(), ["--masks"]))
    assert set(with_masks) == {"bbox", "segm"} and with_masks["segm"].threshold == 0.5
    assert set(build_postprocessors(parse_args(get_args_parser(), []))) == {"bbox"}


def test_mask_scores_are_the_mean_probability_inside_each_mask():
    logits = torch.full((1, 2, 4, 4), -5.0)
    logits[0, 0, :2, :2] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # frame 1 stays empty
    result = PostProcessSegm()({"pred_masks": logits}, torch.tensor([[4, 4]]))[0]
    assert result["masks"][0].sum() == 4 and not result["masks"][1].any()
    assert result["scores"].tolist() == pytest.approx([float(torch.tensor([1.0, 2.0, 3.0, 4.0]).sigmoid().mean()), 0.0])
