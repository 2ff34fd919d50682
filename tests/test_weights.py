"""Weight loading: Wnet checkpoints (strict), VisTR-style DETR weights (converted, non-strict) and
ImageNet ResNet weights (from a path or torchvision's local cache, never downloaded)."""
import argparse
import importlib.util
import logging
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Dict

import pytest
import torch
import torchvision
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops.misc import FrozenBatchNorm2d

from util.errors import run_main
from util.misc import atomic_torch_save
from util.weights import (StateDictMismatchError, convert_detr_state_dict, load_backbone_weights,
                          load_pretrained_weights, load_wnet_checkpoint, torchvision_cache_path)

ROOT = Path(__file__).resolve().parents[1]
CONVERT_SCRIPT = ROOT / "scripts" / "convert_detr_weights.py"


# ----------------------------------------------------------------------------- a Wnet-shaped stand-in
class TinyDetector(nn.Module):
    """The inner detector's naming (transformer, heads, query embedding), tiny."""

    def __init__(self, hidden: int, queries: int):
        super().__init__()
        self.transformer = nn.Sequential(nn.Linear(hidden, hidden), nn.LayerNorm(hidden))
        self.bbox_embed = nn.Linear(hidden, 4)
        self.query_embed = nn.Embedding(queries, hidden)
        self.register_buffer("scale", torch.rand(hidden))


class TinyWnet(nn.Module):
    """Outer mask model with an inner `wnet.` detector, like the real state-dict layout."""

    def __init__(self, hidden: int = 8, queries: int = 4):
        super().__init__()
        self.wnet = TinyDetector(hidden, queries)
        self.mask_head = nn.Conv2d(hidden, 2, 3)


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_wnet_checkpoint_round_trip(tmp_path: Path):
    torch.manual_seed(0)
    source, target = TinyWnet(), TinyWnet()
    assert not same_state(source, target)
    path = tmp_path / "checkpoint.pth"
    atomic_torch_save({"model": source.state_dict(), "epoch": 3, "args": argparse.Namespace(lr=1e-4)}, path)
    checkpoint = load_wnet_checkpoint(target, path)
    assert same_state(source, target)
    assert checkpoint["epoch"] == 3 and checkpoint["args"].lr == 1e-4


def test_wnet_checkpoint_with_wrong_keys_lists_them_all(tmp_path: Path):
    torch.manual_seed(0)
    model = TinyWnet()
    state = model.state_dict()
    del state["wnet.bbox_embed.bias"]
    state["wnet.class_embed.weight"] = torch.zeros(3, 8)
    state["wnet.query_embed.weight"] = torch.zeros(6, 8)
    path = tmp_path / "bad.pth"
    torch.save({"model": state}, path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(StateDictMismatchError) as error:
        load_wnet_checkpoint(model, path)
    message = str(error.value)
    assert str(path) in message
    assert "missing key(s): wnet.bbox_embed.bias" in message
    assert "unexpected key(s): wnet.class_embed.weight" in message
    assert "wnet.query_embed.weight (file [6, 8], model [4, 8])" in message
    assert error.value.missing == ["wnet.bbox_embed.bias"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "a failed load changed the model"


def test_unreadable_files_give_clear_errors(tmp_path: Path):
    model = TinyWnet()
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError, match="nowhere.pth does not exist"):
        load_wnet_checkpoint(model, missing)
    with pytest.raises(FileNotFoundError, match="nowhere.pth does not exist"):
        load_pretrained_weights(model, missing)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="garbage.pth is not a readable torch checkpoint"):
        load_wnet_checkpoint(model, garbage)
    bare = tmp_path / "bare.pth"
    torch.save(model.state_dict(), bare)
    with pytest.raises(ValueError, match=r"bare.pth is not a checkpoint of the form \{'model': state_dict\}"):
        load_wnet_checkpoint(model, bare)


class Arbitrary:
    """A class a weights_only load must refuse to instantiate."""


def test_files_are_loaded_weights_only(tmp_path: Path):
    model = TinyWnet()
    path = tmp_path / "pickled_object.pth"
    torch.save({"model": model.state_dict(), "extra": Arbitrary()}, path)
    with pytest.raises(ValueError, match="weights_only"):
        load_wnet_checkpoint(model, path)


# ----------------------------------------------------------------------------- DETR weights
def fake_detr_state_dict(hidden: int = 8) -> "OrderedDict[str, Tensor]":
    """VisTR-style DETR weights for TinyWnet: `detr.*` keys, a class head, its own query count, and a
    decoder layer the model does not have."""
    torch.manual_seed(5)
    detr = TinyDetector(hidden, queries=10)
    state = OrderedDict((f"detr.{k}", v) for k, v in detr.state_dict().items())
    state["detr.class_embed.weight"] = torch.randn(92, hidden)
    state["detr.class_embed.bias"] = torch.randn(92)
    state["detr.transformer.decoder.layers.5.norm1.weight"] = torch.randn(hidden)
    return state


def test_convert_detr_state_dict():
    state = fake_detr_state_dict()
    converted = convert_detr_state_dict(state)
    dropped = {"detr.class_embed.weight", "detr.class_embed.bias", "detr.query_embed.weight"}
    assert list(converted) == [k.replace("detr.", "wnet.", 1) for k in state if k not in dropped]
    assert torch.equal(converted["wnet.bbox_embed.weight"], state["detr.bbox_embed.weight"])
    # keys already named wnet.* (the official pre-renamed file) convert the same way
    renamed = OrderedDict((k.replace("detr.", "wnet.", 1), v) for k, v in state.items())
    assert list(convert_detr_state_dict(renamed)) == list(converted)


def test_load_pretrained_weights_reports_missing_and_unexpected(tmp_path: Path):
    state = fake_detr_state_dict()
    path = tmp_path / "384_coco_r50.pth"
    torch.save({"model": state}, path)
    model = TinyWnet()
    query_before = model.wnet.query_embed.weight.clone()
    missing, unexpected = load_pretrained_weights(model, path)
    assert sorted(missing) == ["mask_head.bias", "mask_head.weight", "wnet.query_embed.weight"]
    assert unexpected == ["wnet.transformer.decoder.layers.5.norm1.weight"]
    assert torch.equal(model.wnet.bbox_embed.weight, state["detr.bbox_embed.weight"])
    assert torch.equal(model.wnet.query_embed.weight, query_before)

    mis_shaped = dict(state, **{"detr.bbox_embed.weight": torch.zeros(4, 16)})
    torch.save({"model": mis_shaped}, path)
    with pytest.raises(StateDictMismatchError, match=r"wnet.bbox_embed.weight \(file \[4, 16\], model \[4, 8\]\)"):
        load_pretrained_weights(TinyWnet(), path)
    torch.save({"model": {"something.else": torch.zeros(2)}}, path)
    with pytest.raises(ValueError, match="none of its 1 tensors matches a model key"):
        load_pretrained_weights(TinyWnet(), path)


def run_convert_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CONVERT_SCRIPT), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_convert_detr_weights_script(tmp_path: Path):
    state = fake_detr_state_dict()
    source, destination = tmp_path / "detr.pth", tmp_path / "out" / "wnet_init.pth"
    destination.parent.mkdir()
    torch.save({"model": state, "args": argparse.Namespace(hidden_dim=8)}, source)
    result = run_convert_script(str(source), str(destination))
    assert result.returncode == 0, result.stderr
    dropped_line = next(line for line in result.stdout.splitlines() if line.startswith("dropped"))
    assert dropped_line.startswith("dropped 3 key(s)")
    assert all(k in dropped_line for k in ("wnet.class_embed.weight", "wnet.class_embed.bias", "wnet.query_embed.weight"))
    written = torch.load(destination, weights_only=True)
    assert set(written) == {"model"}
    expected = convert_detr_state_dict(state)
    assert list(written["model"]) == list(expected)
    assert all(torch.equal(written["model"][k], v) for k, v in expected.items())
    assert [p.name for p in destination.parent.iterdir()] == ["wnet_init.pth"], "temporary file left behind"
    model = TinyWnet()
    load_pretrained_weights(model, destination)
    assert torch.equal(model.wnet.transformer[0].weight, state["detr.transformer.0.weight"])



def test_convert_detr_weights_script_bad_arguments(tmp_path: Path, capsys):
    spec = importlib.util.spec_from_file_location("convert_detr_weights", CONVERT_SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert run_main(script.main, [str(tmp_path / "absent.pth"), str(tmp_path / "x.pth")]) == 1
    assert "absent.pth does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x.pth").exists()
    assert script.main([str(tmp_path / "only_one.pth")]) == 2
    assert "usage" in capsys.readouterr().err


# ----------------------------------------------------------------------------- ResNet weights
def resnet_body(name: str) -> nn.Module:
    """A backbone body as the model builds it: torchvision ResNet, frozen BN, every level returned."""
    resnet = getattr(torchvision.models, name)(weights=None, norm_layer=FrozenBatchNorm2d)
    return IntermediateLayerGetter(resnet, return_layers={f"layer{i}": f"layer{i}" for i in range(1, 5)})


@pytest.fixture(scope="module")
def imagenet_like_resnet18() -> Dict[str, Tensor]:
    """A torchvision resnet18 state dict (regular BN, with `fc.*` and `num_batches_tracked`)."""
    torch.manual_seed(7)
    resnet = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        for module in resnet.modules():
            if isinstance(module, nn.BatchNorm2d):  # non-trivial statistics, so loading them is visible
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    return resnet.state_dict()


def assert_body_holds(body: nn.Module, weights: Dict[str, Tensor]) -> None:
    state = body.state_dict()
    assert state, "empty body"
    for key, value in state.items():
        assert torch.equal(value, weights[key]), key


@pytest.fixture
def no_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tried to download weights")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_backbone_weights_from_a_path(tmp_path: Path, imagenet_like_resnet18, no_download):
    path = tmp_path / "resnet18.pth"
    torch.save(imagenet_like_resnet18, path)
    body = resnet_body("resnet18")
    load_backbone_weights(body, "resnet18", path)
    assert_body_holds(body, imagenet_like_resnet18)
    with pytest.raises(FileNotFoundError, match="absent.pth does not exist"):
        load_backbone_weights(body, "resnet18", tmp_path / "absent.pth")
    with pytest.raises(StateDictMismatchError, match="resnet34 backbone weights"):
        load_backbone_weights(resnet_body("resnet34"), "resnet34", path)


def test_backbone_weights_from_torchvision_cache(tmp_path: Path, monkeypatch, imagenet_like_resnet18, no_download,
                                                 caplog):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cached = torchvision_cache_path("resnet18")
    assert cached.parent == tmp_path / "hub" / "checkpoints" and cached.name.startswith("resnet18-")

    body = resnet_body("resnet18")
    before = {k: v.clone() for k, v in body.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger="util.weights"):
        load_backbone_weights(body, "resnet18")
    assert "no ImageNet weights for resnet18" in caplog.text and str(cached) in caplog.text
    assert_body_holds(body, before)

    cached.parent.mkdir(parents=True)
    torch.save(imagenet_like_resnet18, cached)
    load_backbone_weights(body, "resnet18")
    assert_body_holds(body, imagenet_like_resnet18)


# ----------------------------------------------------------------------------- the real model, small
def small_wnet(*extra: str) -> nn.Module:
    from models import build_model
    from main import get_args_parser
    from util.config import parse_args
    args = parse_args(get_args_parser(), ["--masks", "--backbone", "resnet18", "--hidden_dim", "48",
                                          "--dim_feedforward", "64", "--enc_layers", "1", "--dec_layers", "2",
                                          "--num_frames", "2", "--num_queries", "2", "--device", "cpu", *extra])
    model, _, _ = build_model(args)
    return model


def test_real_model_checkpoint_round_trip_and_detr_init(tmp_path: Path):
    torch.manual_seed(0)
    source = small_wnet()
    torch.manual_seed(1)
    target = small_wnet()
    assert not same_state(source, target)
    path = tmp_path / "checkpoint.pth"
    atomic_torch_save({"model": source.state_dict(), "epoch": 0}, path)
    load_wnet_checkpoint(target, path)
    assert same_state(source, target)

    # a model with another clip length differs only in the query embedding, which the error names
    torch.manual_seed(2)
    with pytest.raises(StateDictMismatchError) as error:
        load_wnet_checkpoint(small_wnet("--num_frames", "3", "--num_queries", "3"), path)
    assert error.value.mismatched == [("wnet.query_embed.weight", (2, 48), (3, 48))]
    assert not error.value.missing and not error.value.unexpected

    # DETR-style weights made from the same tensors: everything but the query embedding and the
    # modules outside the detector loads, and the class head is dropped
    detr = OrderedDict((k.replace("wnet.", "detr.", 1), v) for k, v in source.state_dict().items()
                       if k.startswith("wnet."))
    detr["detr.class_embed.weight"] = torch.zeros(92, 48)
    detr["detr.class_embed.bias"] = torch.zeros(92)
    detr_path = tmp_path / "detr.pth"
    torch.save({"model": detr}, detr_path)
    torch.manual_seed(3)
    fresh = small_wnet()
    missing, unexpected = load_pretrained_weights(fresh, detr_path)
    assert unexpected == []
    assert "wnet.query_embed.weight" in missing and all(
        k == "wnet.query_embed.weight" or not k.startswith("wnet.") for k in missing)
    loaded = fresh.state_dict()
    assert all(torch.equal(loaded[k.replace("detr.", "wnet.", 1)], v) for k, v in detr.items()
               if "class_embed" not in k and "query_embed" not in k)


def test_real_model_backbone_weights_option(tmp_path: Path, imagenet_like_resnet18, no_download):
    path = tmp_path / "resnet18.pth"
    torch.save(imagenet_like_resnet18, path)
    model = small_wnet("--backbone_weights", str(path))
    body_state = {k.split("backbone.0.body.", 1)[1]: v for k, v in model.state_dict().items()
                  if "backbone.0.body." in k}
    assert set(body_state) == {k for k in imagenet_like_resnet18
                               if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    for key, value in body_state.items():
        assert torch.equal(value, imagenet_like_resnet18[key]), key
