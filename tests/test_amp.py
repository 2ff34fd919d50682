"""--amp (bfloat16 autocast) on the official parity fixtures: outputs within stated bounds.

bfloat16 keeps 8 significant bits (relative rounding 2**-8 ~ 0.4%). Measured on both fixtures
(plain and optimised model, CPU autocast): boxes and aux boxes max abs error <= 0.0029, masks
relative L2 <= 0.035, memory and fusion relative L2 <= 0.011. The bounds below leave about 3x margin.
"""
import pytest
import torch

from models import optimize_for_inference
from test_model_parity import load_parity_case, relative_l2

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
        aux = torch.stack([a["pred_boxes"] for a in out["aux_outputs"]])
        assert (out["pred_boxes"].double() - fixture["pred_boxes"]).abs().max() <= AMP_BOX_ABS_TOL
        assert (aux.double() - fixture["aux_pred_boxes"]).abs().max() <= AMP_BOX_ABS_TOL
        assert relative_l2(out["pred_masks"], fixture["pred_masks"]) <= AMP_MASK_REL_L2_TOL
        for key in ("memory", "fusion"):
            assert relative_l2(out[key], fixture[key]) <= AMP_FEATURE_REL_L2_TOL, key
