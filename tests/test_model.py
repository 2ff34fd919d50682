"""Model behaviour beyond parity: gradients, batching, input forms, robustness, other sizes."""
import json

import pytest
import torch

from models import build_model
from models.backbone import level_channels
from main import get_args_parser
from util.config import parse_args
from util.misc import NestedTensor, nested_tensor_from_audio_list, nested_tensor_from_videos_list

BATCH_TOL = 1e-4
TINY_SIZE = 64  # stride-32 level is 2x2
TINY_FRAMES = 2


def tiny_args(*extra: str, frames: int = TINY_FRAMES):
    """ResNet-18, hidden 96, two encoder and decoder layers: a fast model with every component."""
    argv = ["--backbone", "resnet18", "--hidden_dim", "96", "--nheads", "8", "--dim_feedforward", "128",
            "--enc_layers", "2", "--dec_layers", "2", "--num_frames", str(frames), "--num_queries", str(frames),
            "--masks", "--device", "cpu", *extra]
    return parse_args(get_args_parser(), argv)


def tiny_model(*extra: str, frames: int = TINY_FRAMES, seed: int = 0):
    torch.manual_seed(seed)
    model, criterion, _ = build_model(tiny_args(*extra, frames=frames))
    return model, criterion


def clip(seed: int, frames: int = TINY_FRAMES, size: int = TINY_SIZE, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn((frames, 3, size, size), generator=torch.Generator().manual_seed(seed))


def audio(seed: int, length: int, scale: float = 5.0) -> torch.Tensor:
    return scale * torch.randn((39, length), generator=torch.Generator().manual_seed(seed))


def assert_outputs_close(batched: dict, single: dict, index: int) -> None:
    for key in ("pred_boxes", "pred_masks"):
        torch.testing.assert_close(batched[key][index], single[key][0], rtol=BATCH_TOL, atol=BATCH_TOL)
    for key in ("memory", "fusion"):
        torch.testing.assert_close(batched[key][:, index], single[key][:, 0], rtol=BATCH_TOL, atol=BATCH_TOL)
    for aux_b, aux_s in zip(batched["aux_outputs"], single["aux_outputs"]):
        torch.testing.assert_close(aux_b["pred_boxes"][index], aux_s["pred_boxes"][0], rtol=BATCH_TOL, atol=BATCH_TOL)


def test_batch_equals_each_clip_alone():
    model, _ = tiny_model()
    model.eval()
    # Different scales so that a shared wavelet threshold would change the small clip's result;
    # audio lengths around L_v = 8 so that the cross-modal attention mask depends on each length.
    clips = [clip(1, scale=3.0), clip(2, scale=0.3)]
    audios = [audio(3, 5), audio(4, 13)]
    with torch.no_grad():
        batched = model(nested_tensor_from_videos_list(clips), nested_tensor_from_audio_list(audios))
        assert batched["pred_masks"].shape == (2, TINY_FRAMES, TINY_SIZE // 4, TINY_SIZE // 4)
        for i in range(2):
            assert_outputs_close(batched, model(clips[i], audios[i][None]), i)


def test_input_forms_agree():
    model, _ = tiny_model()
    model.eval()
    frames, features = clip(5), audio(6, 9)
    with torch.no_grad():
        reference = model(frames, features[None])
        forms = [(frames[None], [features]), ([frames], features),
                 (nested_tensor_from_videos_list([frames]), nested_tensor_from_audio_list([features])),
                 (NestedTensor(frames, None), features[None])]
        for samples, sound in forms:
            out = model(samples, sound)
            torch.testing.assert_close(out["pred_masks"], reference["pred_masks"])
            torch.testing.assert_close(out["pred_boxes"], reference["pred_boxes"])


def test_odd_token_count_runs():
    # T = 3 frames of 1x1 at stride 32: 3 visual tokens (the official's inverse wavelet returns 4).
    model, _ = tiny_model(frames=3)
    model.eval()
    with torch.no_grad():
        out = model(clip(7, frames=3, size=32), audio(8, 4)[None])
    assert out["memory"].shape == (3, 1, 96)
    assert out["pred_masks"].shape == (1, 3, 8, 8)
    assert torch.isfinite(out["pred_masks"]).all()


def test_bad_inputs_raise_value_error_with_expected_shape():
    model, _ = tiny_model()
    model.eval()
    with pytest.raises(ValueError, match=r"\[B, 39, L\]"):
        model(clip(1), torch.randn(1, 40, 6))
    with pytest.raises(ValueError, match=r"\[39, L\]"):
        model(clip(1), [torch.randn(13, 6)])
    with pytest.raises(ValueError, match=r"\[2, 3, H, W\]"):
        model(clip(1, frames=3), audio(2, 6)[None])
    with pytest.raises(ValueError, match=r"\[2, 3, H, W\]"):
        model([clip(1), clip(2, frames=3)], [audio(2, 6), audio(3, 6)])
    with pytest.raises(ValueError, match="one recording per clip"):
        model([clip(1), clip(2)], audio(2, 6)[None])


def test_bad_sizes_rejected_at_build():
    with pytest.raises(ValueError, match="divisible"):
        build_model(parse_args(get_args_parser(), ["--hidden_dim", "100", "--masks"]))
    with pytest.raises(ValueError, match="dilation"):
        build_model(tiny_args("--dilation"))


@pytest.mark.parametrize("backbone", ["resnet18", "resnet34", "resnet50", "resnet101"])
def test_backbones_set_mask_head_widths(backbone):
    args = tiny_args("--backbone", backbone, "--hidden_dim", "192")
    model, _, _ = build_model(args)
    layer1, layer2, layer3, layer4 = level_channels(backbone)
    head = model.mask_head
    assert model.wnet.input_proj.in_channels == layer4
    assert [head.adapter1.in_channels, head.adapter2.in_channels, head.adapter3.in_channels] == [layer3, layer2, layer1]
    assert [head.lay1.in_channels, head.lay2.out_channels, head.lay3.out_channels, head.lay4.out_channels,
            head.dcn.out_channels] == [192 + 8, 96, 48, 24, 12]


def test_training_step_gives_finite_gradients(reference_dir):
    """Official weights and a fixture clip and targets: every trainable parameter gets a finite gradient."""
    from reference_weights import reference_inputs, reference_state_dict
    fixture = torch.load(reference_dir / "parity_T2.pt", weights_only=False)
    args = parse_args(get_args_parser(), ["--num_frames", "2", "--num_queries", "2", "--masks", "--device", "cpu"])
    model, criterion, _ = build_model(args)
    keys = json.loads((reference_dir / "wnet_state_dict_keys_T2.json").read_text())
    model.load_state_dict(reference_state_dict(keys, fixture["seed"]), strict=True)
    frames, features = reference_inputs(2, fixture["height"], fixture["width"], fixture["audio_len"],
                                        fixture["input_seed"])
    targets = [{k: v.float() if k == "boxes" else v for k, v in t.items()}
               for t in fixture["losses"]["rvos_all_valid"]["targets"]]
    model.train()
    torch.manual_seed(0)
    losses = criterion(model(frames, features), targets)
    total = sum(criterion.weight_dict[k] * v for k, v in losses.items() if k in criterion.weight_dict)
    total.backward()

    body = model.wnet.backbone[0].body
    frozen = [p for name, p in body.named_parameters() if not name.startswith(("layer2", "layer3", "layer4"))]
    assert frozen and not any(p.requires_grad for p in frozen), "the stem and layer1 must stay frozen"
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    missing = [name for name, p in trainable if p.grad is None]
    not_finite = [name for name, p in trainable if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not missing, f"no gradient for {missing}"
    assert not not_finite, f"non-finite gradient for {not_finite}"


def test_checkpoint_activations_gives_the_same_gradients():
    frames, features = clip(9), audio(10, 7)[None]
    grads = []
    for extra in ([], ["--checkpoint_activations"]):
        model, _ = tiny_model("--dropout", "0", *extra, "--lr_backbone", "1e-5")
        model.train()
        model.wnet.transformer.encoder.embed_dropout = 0.0
        out = model(frames, features)
        (out["pred_masks"].sum() + out["pred_boxes"].sum() + out["memory"].square().mean()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and any("backbone" in n for n in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6, msg=name)


def test_pre_norm_and_detector_only_run():
    for extra in (["--pre_norm"], []):
        torch.manual_seed(0)
        args = tiny_args(*extra)
        if not extra:
            args.masks = False
        model, _, _ = build_model(args)
        model.eval()
        with torch.no_grad():
            out = model(clip(11), audio(12, 6)[None])
        assert out["pred_boxes"].shape == (1, TINY_FRAMES, 4)
        assert ("pred_masks" in out) == bool(extra)


def spec_pre_norm_layer(layer, tgt, memory, pos, query_pos, key_padding_mask):
    """docs/protocol.md §2: the --pre_norm formula, transcribed literally (dropout off: eval mode):
    t2 = real(fftn(norm1(tgt) + query_pos)); tgt += t2;
    tgt += cross_attn(norm2(tgt) + query_pos, memory + pos, memory); tgt += FFN(norm3(tgt))."""
    t2 = torch.fft.fftn(layer.norm1(tgt) + query_pos).real  # every axis of (Q, B, C); B = 1
    tgt = tgt + t2
    tgt = tgt + layer.multihead_attn(layer.norm2(tgt) + query_pos, memory + pos, memory,
                                     key_padding_mask=key_padding_mask)[0]
    return tgt + layer.linear2(torch.relu(layer.linear1(layer.norm3(tgt))))


def test_pre_norm_decoder_is_the_spec_formula():
    from models.decoder import FourierDecoder, FourierDecoderLayer

    torch.manual_seed(0)
    queries, tokens, channels = 5, 7, 48
    decoder = FourierDecoder(FourierDecoderLayer(channels, 4, dim_feedforward=64, dropout=0.1, normalize_before=True),
                             num_layers=2, norm=torch.nn.LayerNorm(channels)).eval()
    with torch.no_grad():  # non-trivial LayerNorm affine parameters, so that each norm's place matters
        for module in decoder.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    tgt = torch.zeros(queries, 1, channels)
    memory, pos = torch.randn(tokens, 1, channels), torch.randn(tokens, 1, channels)
    query_pos = torch.randn(queries, 1, channels)
    mask = torch.tensor([[False] * (tokens - 2) + [True] * 2])
    expected, output = [], tgt
    with torch.no_grad():
        for layer in decoder.layers:
            output = spec_pre_norm_layer(layer, output, memory, pos, query_pos, mask)
            expected.append(decoder.norm(output))
        hs = decoder(tgt, memory, memory_key_padding_mask=mask, pos=pos, query_pos=query_pos)
        torch.testing.assert_close(hs, torch.stack(expected), rtol=1e-5, atol=1e-5)
        post = decoder.layers[0].forward_post(tgt, memory, mask, pos, query_pos)
        assert not torch.allclose(post, spec_pre_norm_layer(decoder.layers[0], tgt, memory, pos, query_pos, mask))
    # --pre_norm reaches every decoder layer of the built model
    model, _ = tiny_model("--pre_norm")
    assert all(layer.normalize_before for layer in model.wnet.transformer.decoder.layers)
    model, _ = tiny_model()
    assert not any(layer.normalize_before for layer in model.wnet.transformer.decoder.layers)


def test_bfloat16_autocast_runs():
    model, _ = tiny_model()
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(clip(13), audio(14, 7)[None])
    loss = out["pred_masks"].float().mean() + out["pred_boxes"].float().mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("kernel, padding, dilation", [(3, 2, 2), (3, 1, 1), (1, 0, 1)])
def test_frame_decomposed_conv3d_equals_conv3d(kernel, padding, dilation):
    from models.segmentation import FrameDecomposedConv3d
    torch.manual_seed(0)
    conv = FrameDecomposedConv3d(6, 4, kernel, padding=padding, dilation=dilation)
    x = torch.randn(2, 6, 5, 7, 9, requires_grad=True)
    ours = conv(x)
    reference = torch.nn.functional.conv3d(x, conv.weight, conv.bias, padding=padding, dilation=dilation)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(ours.square().sum(), (x, conv.weight))
    reference_grads = torch.autograd.grad(reference.square().sum(), (x, conv.weight))
    for ours_grad, reference_grad in zip(grads, reference_grads):
        torch.testing.assert_close(ours_grad, reference_grad, rtol=1e-4, atol=1e-4)
