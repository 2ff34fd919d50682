"""`--channels_last`: the backbone's convolutions in NHWC, the same model (state dict, outputs, gradients)."""
import torch

from tests.test_model import audio, clip, tiny_model

OUTPUT_TOL = 1e-4  # only the summation order of the convolutions differs


def test_channels_last_is_the_same_model_in_another_memory_format():
    model, _ = tiny_model()
    fast, _ = tiny_model("--channels_last")
    fast.load_state_dict(model.state_dict())  # a contiguous checkpoint loads into the channels-last model
    assert list(fast.state_dict()) == list(model.state_dict())
    conv_weights = [p for n, p in fast.named_parameters() if "backbone" in n and p.dim() == 4]
    assert conv_weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights)

    frames, recording = clip(0), audio(1, 30)
    model.eval(), fast.eval()
    with torch.no_grad():
        expected, got = model(frames, recording), fast(frames, recording)
    compared = [key for key, value in expected.items() if torch.is_tensor(value)]
    assert {"pred_boxes", "pred_masks"} <= set(compared)
    for key in compared:
        torch.testing.assert_close(got[key], expected[key], atol=OUTPUT_TOL, rtol=OUTPUT_TOL)
