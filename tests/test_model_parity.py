"""Parity of the model with the official Wnet outputs stored in tests/fixtures/parity_*.pt."""
import json

import pytest
import torch

from models import build_model, optimize_for_inference
from models.backbone import FrozenBatchNorm2d
from main import get_args_parser
from util.config import parse_args

BOX_ABS_TOL = 1e-5
REL_L2_TOL = 1e-4


def relative_l2(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return ((ours.double() - reference.double()).norm() / reference.double().norm()).item()


def build_reference_model(reference_dir, num_frames: int, seed: int) -> torch.nn.Module:
    from reference_weights import reference_state_dict
    args = parse_args(get_args_parser(), ["--num_frames", str(num_frames), "--num_queries", str(num_frames),
                                          "--masks", "--device", "cpu"])
    model, _, _ = build_model(args)
    keys = json.loads((reference_dir / f"wnet_state_dict_keys_T{num_frames}.json").read_text())
    ours = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()]
    assert ours == keys, "state_dict keys, shapes, dtypes or order differ from the official"
    model.load_state_dict(reference_state_dict(keys, seed), strict=True)
    return model.eval()


def load_parity_case(reference_dir, num_frames: int):
    """(fixture, model with the fixture's weights in eval mode, clip [T,3,H,W], audio [1,39,L])."""
    from reference_weights import reference_inputs
    fixture = torch.load(reference_dir / f"parity_T{num_frames}.pt", weights_only=False)
    model = build_reference_model(reference_dir, num_frames, fixture["seed"])
    clip, audio = reference_inputs(num_frames, fixture["height"], fixture["width"], fixture["audio_len"],
                                   fixture["input_seed"])
    return fixture, model, clip, audio


@pytest.mark.parametrize("num_frames", [4, 2])
def test_outputs_match_official(reference_dir, num_frames):
    fixture, model, clip, audio = load_parity_case(reference_dir, num_frames)
    with torch.no_grad():
        plain = model(clip, audio)
        optimize_for_inference(model)
        optimised = model(clip, audio)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules()), "BNs left unfolded"
    for out in (plain, optimised):
        assert_matches(out, fixture)


def assert_within(out: dict, fixture: dict, box_tol: float, mask_tol: float, feature_tol: float) -> None:
    """The outputs against the official fixture: boxes (final and auxiliary) within `box_tol` absolute, masks
    within `mask_tol` and the encoder's `memory`/`fusion` within `feature_tol` relative L2; shapes equal."""
    assert out["pred_boxes"].shape == fixture["pred_boxes"].shape
    assert (out["pred_boxes"].double() - fixture["pred_boxes"]).abs().max() <= box_tol
    aux = torch.stack([a["pred_boxes"] for a in out["aux_outputs"]])
    assert aux.shape == fixture["aux_pred_boxes"].shape
    assert (aux.double() - fixture["aux_pred_boxes"]).abs().max() <= box_tol
    for key, tol in (("pred_masks", mask_tol), ("memory", feature_tol), ("fusion", feature_tol)):
        assert out[key].shape == fixture[key].shape, key
        assert relative_l2(out[key], fixture[key]) <= tol, key


def assert_matches(out: dict, fixture: dict) -> None:
    """The CPU float32 parity tolerances (every parity test)."""
    assert_within(out, fixture, BOX_ABS_TOL, REL_L2_TOL, REL_L2_TOL)
