"""`--channels_last`: the backbone's convolutions in NHWC, the same model (state dict, outputs, gradients)."""
from typing import Dict

import torch

from tests.test_model import audio, clip, tiny_model

OUTPUT_TOL = 1e-4  # only the summation order of the convolutions differs
GRAD_REL_TOL = 1e-4  # per parameter, relative L2 (measured at most 3e-6): the backward sums in another order


def output_sum(outputs: Dict[str, torch.Tensor]) -> torch.Tensor:
    """A scalar that every output reaches: boxes, mask logits and the encoder's features."""
    return sum(outputs[key].float().mean() for key in ("pred_boxes", "pred_masks", "memory", "fusion"))


def parameter_grads(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {name: p.grad.contiguous() for name, p in model.named_parameters() if p.grad is not None}


def test_channels_last_is_the_same_model_in_another_memory_format():
    model, _ = tiny_model()
    fast, _ = tiny_model("--channels_last")
    fast.load_state_dict(model.state_dict())  # a contiguous checkpoint loads into the channels-last model
    assert list(fast.state_dict()) == list(model.state_dict())
    conv_weights = [p for n, p in fast.named_parameters() if "backbone" in n and p.dim() == 4]
    assert conv_weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights)

    frames, recording = clip(0), audio(1, 30)
    model.eval(), fast.eval()  # no dropout: both see the same function
    expected, got = model(frames, recording), fast(frames, recording)
    compared = [key for key, value in expected.items() if torch.is_tensor(value)]
    assert {"pred_boxes", "pred_masks"} <= set(compared)
    for key in compared:
        torch.testing.assert_close(got[key], expected[key], atol=OUTPUT_TOL, rtol=OUTPUT_TOL)

    output_sum(expected).backward()
    output_sum(got).backward()
    expected_grads, got_grads = parameter_grads(model), parameter_grads(fast)
    assert list(got_grads) == list(expected_grads)
    backbone_convs = [name for name in expected_grads if "backbone" in name and expected_grads[name].dim() == 4]
    assert backbone_convs, "no gradient reached a trainable backbone convolution"
    for name, grad in expected_grads.items():
        error = (got_grads[name] - grad).norm() / grad.norm().clamp(min=torch.finfo(grad.dtype).tiny)
        assert error <= GRAD_REL_TOL, f"{name}: relative L2 error {error:.2e}"
