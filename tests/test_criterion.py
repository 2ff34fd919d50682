"""The Wnet criterion (docs/protocol.md §3): parity with the official loss values, finite gradients,
per-sample correctness in a batch, and the edge cases the official gets wrong."""
from pathlib import Path
from typing import Dict, List

import pytest
import torch
import torch.nn.functional as F

from models.criterion import WnetCriterion, build_criterion, kl_divergence_loss
from util import box_ops
from main import get_args_parser
from util.config import parse_args

LOSS_RTOL = 1e-4
BOX_TERMS = ("loss_bbox", "loss_giou")
MASK_TERMS = ("loss_mask", "loss_dice")


def make_criterion(*extra: str) -> WnetCriterion:
    return build_criterion(parse_args(get_args_parser(), ["--masks", *extra]))


def fixture_outputs(fixture: dict, dtype: torch.dtype = torch.float32, requires_grad: bool = False) -> dict:
    """The fixture's stored official outputs as the model returns them (float32 by default)."""
    def leaf(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype).clone().requires_grad_(requires_grad)
    return {"pred_boxes": leaf(fixture["pred_boxes"]), "pred_masks": leaf(fixture["pred_masks"]),
            "aux_outputs": [{"pred_boxes": leaf(a)} for a in fixture["aux_pred_boxes"]],
            "memory": leaf(fixture["memory"]), "fusion": leaf(fixture["fusion"])}


@pytest.fixture(scope="module", params=["parity_T4.pt", "parity_T2.pt"])
def fixture(request, reference_dir: Path) -> dict:
    return torch.load(reference_dir / request.param, weights_only=False)


def test_loss_parity_with_official(fixture: dict):
    criterion = make_criterion()
    assert fixture["losses"], "fixture holds no loss case"
    for case_name, case in fixture["losses"].items():
        assert criterion.weight_dict == case["weight_dict"], case_name
        loss_dict = criterion(fixture_outputs(fixture), case["targets"])
        assert set(loss_dict) == set(case["loss_dict"]), case_name
        for name, expected in case["loss_dict"].items():
            got = loss_dict[name].item()
            assert abs(got - expected) <= LOSS_RTOL * abs(expected), (case_name, name, got, expected)


def test_dataset_keys_keep_the_official_values(fixture: dict):
    """The datasets' extra keys change nothing: identifiers are ignored, and an A2D sample's
    `frame_idx` (its clip position) is the middle frame the official compares with."""
    criterion = make_criterion()
    for case in fixture["losses"].values():
        base = criterion(fixture_outputs(fixture), case["targets"])
        middle = (fixture["num_frames"] - 1) // 2
        targets = [dict(t, frame_idx=torch.tensor(middle), orig_size=torch.tensor([7, 9]), video="v")
                   for t in case["targets"]]
        with_extra = criterion(fixture_outputs(fixture), targets)
        assert all(torch.equal(base[k], with_extra[k]) for k in base)


def test_single_frame_target_follows_frame_idx():
    """A one-frame target with `frame_idx = k` is scored against prediction k: the same as moving
    prediction k to the middle slot and using the default."""
    torch.manual_seed(5)
    T = 4
    outputs = random_outputs(batch=1, frames=T)
    target = random_target(frames=1, height=16, width=20)
    criterion = make_criterion()
    middle = (T - 1) // 2
    order = list(range(T))
    order[0], order[middle] = middle, 0  # swap prediction 0 into the middle slot
    swapped = dict(outputs, pred_boxes=outputs["pred_boxes"][:, order], pred_masks=outputs["pred_masks"][:, order],
                   aux_outputs=[{"pred_boxes": a["pred_boxes"][:, order]} for a in outputs["aux_outputs"]])
    expected = criterion(swapped, [target])
    got = criterion(outputs, [dict(target, frame_idx=0)])
    assert all(torch.equal(got[k], expected[k]) for k in got)
    assert not torch.equal(got["loss_bbox"], criterion(outputs, [target])["loss_bbox"])
    with pytest.raises(ValueError, match="'frame_idx' 4 is outside the clip's 4 frames"):
        criterion(outputs, [dict(target, frame_idx=T)])


def test_single_frame_target_uses_middle_prediction():
    """A one-frame target scores prediction (T - 1) // 2: moving the other frames changes nothing."""
    torch.manual_seed(0)
    T = 5
    outputs = random_outputs(batch=1, frames=T)
    target = random_target(frames=1, height=16, width=20)
    criterion = make_criterion()
    base = criterion(outputs, [target])
    middle = (T - 1) // 2
    moved = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in outputs.items()}
    keep = torch.arange(T) == middle
    moved["pred_boxes"] = torch.where(keep[None, :, None], outputs["pred_boxes"], torch.rand(1, T, 4) * 0.2 + 0.4)
    moved["pred_masks"] = torch.where(keep[None, :, None, None], outputs["pred_masks"], torch.randn_like(outputs["pred_masks"]))
    after = criterion(moved, [target])
    for name in BOX_TERMS + MASK_TERMS:
        assert torch.allclose(base[name], after[name]), name
    # ...while changing the middle frame does change them.
    moved["pred_masks"][0, middle] += 1.0
    assert not torch.allclose(base["loss_mask"], criterion(moved, [target])["loss_mask"])


# ----------------------------------------------------------------------------- gradients
@pytest.mark.filterwarnings("ignore:reduction. .mean. divides")
def test_gradients_finite_where_official_kl_is_nan(fixture: dict):
    """The fixture's fusion underflows softmax to 0; the official formulation's gradient is NaN there."""
    outputs = fixture_outputs(fixture, requires_grad=True)
    probs = F.softmax(outputs["fusion"].detach(), dim=-1)
    assert (probs == 0).any(), "fixture no longer exercises the underflow"
    official = F.kl_div(F.log_softmax(outputs["memory"], -1), F.softmax(outputs["fusion"], -1), reduction="mean")
    (official_grad,) = torch.autograd.grad(official, outputs["fusion"])
    assert torch.isnan(official_grad).any(), "the official formulation no longer gives NaN: update the test"

    criterion = make_criterion()
    case = next(iter(fixture["losses"].values()))
    loss_dict = criterion(outputs, case["targets"])
    total = sum(loss_dict[k] * criterion.weight_dict[k] for k in loss_dict)
    leaves = {"pred_boxes": outputs["pred_boxes"], "pred_masks": outputs["pred_masks"],
              "memory": outputs["memory"], "fusion": outputs["fusion"],
              **{f"aux_{i}": a["pred_boxes"] for i, a in enumerate(outputs["aux_outputs"])}}
    grads = torch.autograd.grad(total, list(leaves.values()))
    for name, grad in zip(leaves, grads):
        assert torch.isfinite(grad).all(), name
        assert grad.abs().sum() > 0, f"{name} gets no gradient"


@pytest.mark.filterwarnings("ignore:reduction. .mean. divides")
def test_kl_value_and_gradient_match_the_math():
    """Value = official formulation; gradient = the analytic one (torch 1.8's), finite under underflow."""
    torch.manual_seed(0)
    memory = (torch.randn(6, 2, 32, dtype=torch.float64) * 40).requires_grad_()
    fusion = (torch.randn(6, 2, 32, dtype=torch.float64) * 400).requires_grad_()
    loss = kl_divergence_loss(memory, fusion)
    official = F.kl_div(F.log_softmax(memory, -1), F.softmax(fusion, -1), reduction="mean")
    assert torch.allclose(loss, official, rtol=1e-12)
    grad_memory, grad_fusion = torch.autograd.grad(loss, [memory, fusion])
    p = F.softmax(fusion, -1).detach()
    log_p, log_q = F.log_softmax(fusion, -1).detach(), F.log_softmax(memory, -1).detach()
    n = memory.numel()
    # d/dmemory = (q - p) / n; d/dfusion = p * (d - sum(p * d)) / n with d = log p - log q
    assert torch.allclose(grad_memory, (log_q.exp() - p) / n, atol=1e-15)
    d = log_p - log_q
    assert torch.allclose(grad_fusion, p * (d - (p * d).sum(-1, keepdim=True)) / n, atol=1e-15)


# ----------------------------------------------------------------------------- batches
def random_outputs(batch: int, frames: int, h: int = 4, w: int = 5, tokens: int = 6, channels: int = 16,
                   aux: int = 3) -> dict:
    def boxes() -> torch.Tensor:
        return torch.cat([torch.rand(batch, frames, 2) * 0.5 + 0.25, torch.rand(batch, frames, 2) * 0.3 + 0.1], -1)
    return {"pred_boxes": boxes(), "pred_masks": torch.randn(batch, frames, h, w) * 3,
            "aux_outputs": [{"pred_boxes": boxes()} for _ in range(aux)],
            "memory": torch.randn(tokens, batch, channels) * 5, "fusion": torch.randn(tokens, batch, channels) * 5}


def random_target(frames: int, height: int, width: int, valid: List[int] = None) -> Dict[str, torch.Tensor]:
    centre = torch.rand(frames, 2) * 0.4 + 0.3
    size = torch.rand(frames, 2) * 0.3 + 0.1
    return {"boxes": torch.cat([centre, size], 1),
            "masks": (torch.rand(frames, height, width) > 0.6).to(torch.uint8),
            "valid": torch.tensor(valid if valid is not None else [1] * frames),
            "labels": torch.zeros(frames, dtype=torch.long)}


def select(outputs: dict, b: int) -> dict:
    """Sample b of batched outputs, as a batch of one."""
    return {"pred_boxes": outputs["pred_boxes"][b:b + 1], "pred_masks": outputs["pred_masks"][b:b + 1],
            "aux_outputs": [{"pred_boxes": a["pred_boxes"][b:b + 1]} for a in outputs["aux_outputs"]],
            "memory": outputs["memory"][:, b:b + 1], "fusion": outputs["fusion"][:, b:b + 1]}


def test_batch_is_consistent_with_each_sample_alone():
    """'Consistent': every box/mask term is a sum over targets divided by num_boxes (the batch's
    target entries), so batch value = sum_b n_b * L_b / sum_b n_b, with L_b the sample alone and
    n_b its entry count (T for an RVOS clip, invalid frames included; 1 for an A2D sample). The KL
    term is a mean over all elements, so with equal token counts it is the mean of the L_b.
    The batch mixes an RVOS clip with invalid frames and an A2D sample, which the official scores
    with the wrong frames (it decides from the first target for the whole batch)."""
    torch.manual_seed(1)
    T, H, W = 4, 16, 20
    outputs = random_outputs(batch=3, frames=T)
    targets = [random_target(T, H, W, valid=[1, 0, 1, 1]), random_target(1, H, W), random_target(T, H, W)]
    criterion = make_criterion()
    batch = criterion(outputs, targets)
    alone = [criterion(select(outputs, b), [t]) for b, t in enumerate(targets)]
    counts = torch.tensor([float(len(t["labels"])) for t in targets])
    assert set(batch) == set(alone[0])
    for name, value in batch.items():
        per_sample = torch.stack([a[name] for a in alone])
        expected = per_sample.mean() if name == "loss_kl" else (per_sample * counts).sum() / counts.sum()
        assert torch.allclose(value, expected, rtol=1e-5, atol=1e-7), name


def test_smaller_sample_is_scored_on_its_own_area():
    """In a padded batch, a smaller sample's mask losses ignore the padding that comes from the
    larger sample (the official scores that padding as background)."""
    torch.manual_seed(2)
    T = 2
    outputs = random_outputs(batch=2, frames=T, h=8, w=10)  # padded input 32 x 40
    small_h, small_w = 16, 20  # the small clip covers the top-left 4 x 5 logits
    targets = [random_target(T, 32, 40), random_target(T, small_h, small_w)]
    criterion = make_criterion()
    base = criterion(outputs, targets)
    changed = dict(outputs, pred_masks=outputs["pred_masks"].clone())
    # Logits of sample 1 two cells beyond its area cannot reach its pixels through bilinear upsampling.
    changed["pred_masks"][1, :, 6:, :] = 50.0
    changed["pred_masks"][1, :, :, 7:] = 50.0
    after = criterion(changed, targets)
    for name in MASK_TERMS:
        assert torch.equal(base[name], after[name]), name


def test_no_valid_frame_gives_zero_mask_losses_with_a_gradient_path():
    torch.manual_seed(3)
    outputs = random_outputs(batch=1, frames=3)
    outputs["pred_masks"].requires_grad_()
    loss_dict = make_criterion()(outputs, [random_target(3, 16, 20, valid=[0, 0, 0])])
    for name in MASK_TERMS + BOX_TERMS:
        assert loss_dict[name].item() == 0.0, name
    (grad,) = torch.autograd.grad(loss_dict["loss_mask"] + loss_dict["loss_dice"], outputs["pred_masks"])
    assert torch.equal(grad, torch.zeros_like(grad))


# ----------------------------------------------------------------------------- bad input, weights
def test_bad_targets_raise_clear_errors():
    torch.manual_seed(4)
    outputs = random_outputs(batch=1, frames=4)
    criterion = make_criterion()
    with pytest.raises(ValueError, match="expected 4"):
        criterion(outputs, [random_target(3, 16, 20)])
    with pytest.raises(ValueError, match="2 targets for a batch of 1"):
        criterion(outputs, [random_target(4, 16, 20)] * 2)
    degenerate = random_target(4, 16, 20)
    degenerate["boxes"][2, 2] = -0.1  # negative width
    with pytest.raises(ValueError, match="degenerate target boxes"):
        criterion(outputs, [degenerate])


def test_weight_dict_follows_options():
    criterion = make_criterion("--no_aux_loss", "--bbox_loss_coef", "5", "--giou_loss_coef", "2")
    assert criterion.weight_dict == {"loss_kl": 500, "loss_bbox": 5, "loss_giou": 2, "loss_mask": 1, "loss_dice": 1}
    no_masks = build_criterion(parse_args(get_args_parser(), ["--dec_layers", "3"]))
    assert set(no_masks.weight_dict) == {f"{n}{s}" for n in ("loss_kl", "loss_bbox", "loss_giou")
                                        for s in ("", "_0", "_1")}
    outputs = random_outputs(batch=1, frames=2, aux=2)
    losses = no_masks(outputs, [random_target(2, 8, 10)])
    assert set(losses) == {"loss_kl", "loss_bbox", "loss_giou", "loss_bbox_0", "loss_giou_0", "loss_bbox_1", "loss_giou_1"}


def test_giou_smoothing_and_pairwise_diagonal():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 2.0, 1.5], [0.3, 0.3, 0.3, 0.3]])
    other = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0], [0.3, 0.3, 0.3, 0.3]])
    giou = box_ops.elementwise_generalized_box_iou(boxes, other)
    assert torch.allclose(giou, torch.diag(box_ops.generalized_box_iou(boxes, other)))

    def official(inter: float, union: float, enclosing: float) -> float:
        return (inter + 1e-6) / (union + 1e-6) - (enclosing - union + 1e-6) / (enclosing + 1e-6)
    # identical unit boxes; overlapping boxes; two identical empty boxes (0/0 made finite by smoothing)
    expected = [official(1.0, 1.0, 1.0), official(0.25, 1.5 + 1.0 - 0.25, 2.0 * 1.5), official(0.0, 0.0, 0.0)]
    assert torch.allclose(giou, torch.tensor(expected), atol=1e-7), (giou, expected)
    round_trip = box_ops.box_xyxy_to_cxcywh(box_ops.box_cxcywh_to_xyxy(torch.tensor([[0.5, 0.4, 0.2, 0.6]])))
    assert torch.allclose(round_trip, torch.tensor([[0.5, 0.4, 0.2, 0.6]]))
