"""torch.hub entry points: the official Wnet models with their weights, as DETR offers its own.

    model, postprocessors = torch.hub.load(REPO_DIR, "wnet_r50", source="local", checkpoint="wnet_r50.pth")
    out = model(clip, audio)  # clip [36, 3, H, W] ImageNet-normalised, audio [39, L] MFCC-39 (datasets/audio/)
    masks = postprocessors["segm"](out, torch.tensor([[H, W]]))[0]["masks"]  # [36, H, W] bool

The settings of each backbone are those of its training config (configs/ytvos_r50.yaml,
configs/ytvos_r101.yaml) read through the model's options (models/options.py), so the defaults live in
one place. The checkpoint (`{'model': state_dict}`, as main.py writes it) is loaded strictly
with `torch.load(weights_only=True)`: every key must fit; a `.safetensors` export of it
(`scripts/export_weights.py`) loads the same way, without pickle. Nothing is downloaded unless `checkpoint` is
an http(s) URL; the DETR and ImageNet initialisations are not needed (the checkpoint replaces them).

Only the model and the weight loading are imported (`models`, `util`), not the data, the engine or the training
entry point, so `dependencies` is every package that loading a model needs (tests/test_hubconf.py checks it
against the imports).
"""
import hashlib
import urllib.error
from pathlib import Path
from typing import Dict, Tuple
from urllib.parse import urlparse

import torch
from torch import nn

from models import add_model_args, build_inference_model
from util.config import ANY_OPTION, ArgumentParser, parse_args
from util.options import add_run_args, add_training_args
from util.errors import UserError
from util.weights import load_wnet_checkpoint

dependencies = ["torch", "torchvision", "numpy", "pytorch_wavelets", "safetensors", "threadpoolctl", "yaml"]  # torch.hub checks them

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
URL_SCHEMES = ("http", "https")
URL_HASH_LENGTH = 12  # hex digits of the URL's SHA-256 in its cached file's name


def _checkpoint_file(checkpoint: str) -> Path:
    """A local checkpoint path, checked before the model is built; a URL is downloaded once into torch.hub's
    cache (`cached_checkpoint_path`: one file per URL, in the folder where `torch.hub.load_state_dict_from_url`
    keeps its files)."""
    url = urlparse(str(checkpoint))
    if url.scheme not in URL_SCHEMES:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist (a Wnet checkpoint {{'model': state_dict}}, "
                                    f"as main.py writes it, or an http(s) URL of one)")
        return path
    # Downloaded to a file rather than through load_state_dict_from_url: the strict loader reads files, and
    # training checkpoints hold their argparse.Namespace, which it allows and a bare weights_only load refuses.
    return _download_once(checkpoint)


def cached_checkpoint_path(url: str) -> Path:
    """Where a checkpoint URL is kept: `<hub dir>/checkpoints/<file stem>-<hash of the whole URL><suffix>`, so
    that two URLs of one file name (`.../v1/checkpoint.pth`, `.../v2/checkpoint.pth`) are two files."""
    name = Path(urlparse(url).path)
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:URL_HASH_LENGTH]
    return Path(torch.hub.get_dir()) / "checkpoints" / f"{name.stem}-{digest}{name.suffix}"


def _download_once(url: str) -> Path:
    """The cached copy of `url`, downloaded when absent; a download that fails (offline, a wrong URL) is a
    UserError naming the URL."""
    cached = cached_checkpoint_path(url)
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(cached))
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", None) or error
            raise UserError(f"checkpoint {url}: cannot download it ({reason}); download it yourself and pass its "
                            f"path") from None
    return cached


def _official_wnet(config_name: str, checkpoint: str) -> Tuple[nn.Module, Dict[str, nn.Module]]:
    """The mask model of `configs/<config_name>` with the weights of `checkpoint`, in eval mode."""
    path = _checkpoint_file(checkpoint)
    parser = ArgumentParser("Wnet hub", add_help=False)
    for add_group in (add_run_args, add_model_args, add_training_args):  # the model's, trainable as main.py's
        add_group(parser)
    args = parse_args(parser, ["--config", str(CONFIG_DIR / config_name)], other_options=ANY_OPTION)
    model, postprocessors = build_inference_model(args)
    load_wnet_checkpoint(model, path)
    return model.eval(), postprocessors


def wnet_r50(checkpoint: str) -> Tuple[nn.Module, Dict[str, nn.Module]]:
    """Wnet with a ResNet-50 backbone (hidden 384, 4+4 layers, 36 frames) and the weights of `checkpoint`
    (a file path or an http(s) URL). Returns `(model, postprocessors)`: `postprocessors['segm']` turns the
    model's mask logits into binary masks at the frames' size, `postprocessors['bbox']` its boxes into pixels."""
    return _official_wnet("ytvos_r50.yaml", checkpoint)


def wnet_r101(checkpoint: str) -> Tuple[nn.Module, Dict[str, nn.Module]]:
    """Wnet with a ResNet-101 backbone (otherwise as `wnet_r50`) and the weights of `checkpoint`.
    Returns `(model, postprocessors)`."""
    return _official_wnet("ytvos_r101.yaml", checkpoint)
