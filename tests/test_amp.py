"""--amp (bfloat16 autocast) on the official parity fixtures: outputs within stated bounds.

bfloat16 keeps 8 significant bits (relative rounding 2**-8 ~ 0.4%). Measured on both fixtures
(plain and optimised model, CPU autocast): boxes and aux boxes max abs error <= 0.0029, masks
relative L2 <= 0.035, memory and fusion relative L2 <= 0.011. The bounds below leave about 3x margin.
"""
import pytest
import torch

from models import optimize_for_inference
from test_model_parity import assert_within, load_parity_case

AMP_BOX_ABS_TOL = 1e-2
AMP_MASK_REL_L2_TOL = 0.1
AMP_FEATURE_REL_L2_TOL = 0.03  # memory and fusion


@pytest.mark.parametrize("num_frames", [4, 2])
def test_bfloat16_autocast_stays_within_bounds(reference_dir, num_frames):
    fixture, model, clip, audio = load_parity_case(reference_dir, num_frames)
    for optimise in (False, True):
        if optimise:
            optimize_for_inference(model)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(clip, audio)
        assert out["pred_masks"].dtype == torch.bfloat16, "autocast did not reach the mask head"
        assert_within(out, fixture, AMP_BOX_ABS_TOL, AMP_MASK_REL_L2_TOL, AMP_FEATURE_REL_L2_TOL)
