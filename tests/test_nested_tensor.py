"""Clips into one padded batch (`nested_tensor_from_videos_list`) and its padding mask at each backbone level
(`downsample_mask`): the values DETR's zero-filled copy and `F.interpolate` give, without their copies."""
import pytest
import torch
import torch.nn.functional as F

from util.misc import downsample_mask, nested_tensor_from_videos_list

# the official inference frame (300x540) and a training crop, with their stride 4..32 level sizes, and odd sizes
SIZES = [((300, 540), (75, 135)), ((300, 540), (38, 68)), ((300, 540), (19, 34)), ((300, 540), (10, 17)),
         ((361, 640), (91, 160)), ((361, 640), (12, 20)), ((7, 5), (3, 2)), ((33, 33), (33, 33)), ((9, 4), (18, 8))]


@pytest.mark.parametrize("size, level", SIZES)
def test_downsample_mask_equals_nearest_interpolation(size, level):
    generator = torch.Generator().manual_seed(0)
    mask = torch.rand((3, *size), generator=generator) > 0.7
    mask[1, :, size[1] // 2:] = True  # a padded frame: the right half
    expected = F.interpolate(mask[None].float(), size=level).to(torch.bool)[0]
    assert torch.equal(downsample_mask(mask, level), expected)


def test_every_source_row_nearest_interpolation_would_take():
    for source in range(1, 120):
        mask = torch.eye(source, dtype=torch.bool)[None]  # each row tells its index apart
        for target in range(1, 120):
            expected = F.interpolate(mask[None].float(), size=(target, source)).to(torch.bool)[0]
            assert torch.equal(downsample_mask(mask, (target, source)), expected), (source, target)


def test_clips_of_one_size_are_batched_without_padding():
    clips = [torch.randn(2, 3, 8, 12), torch.randn(2, 3, 8, 12)]
    batch = nested_tensor_from_videos_list(clips)
    assert torch.equal(batch.tensors, torch.cat(clips)) and not batch.mask.any()
    assert batch.mask.shape == (4, 8, 12)
    one = nested_tensor_from_videos_list(clips[:1])
    assert one.tensors.data_ptr() == clips[0].data_ptr() and not one.mask.any()  # no copy of a lone clip


def test_clips_of_other_sizes_are_padded_with_zeros_and_masked():
    small, large = torch.randn(2, 3, 6, 9), torch.randn(2, 3, 8, 12)
    batch = nested_tensor_from_videos_list([small, large])
    assert batch.tensors.shape == (4, 3, 8, 12)
    assert torch.equal(batch.tensors[:2, :, :6, :9], small) and not batch.tensors[:2, :, 6:].any()
    assert torch.equal(batch.tensors[2:], large)
    assert batch.mask[:2, 6:].all() and batch.mask[:2, :, 9:].all() and not batch.mask[:2, :6, :9].any()
    assert not batch.mask[2:].any()
