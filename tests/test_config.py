"""The one parser: official defaults, YAML configs as defaults, flags override, unknown keys rejected."""
import argparse
from pathlib import Path

import pytest

import main
from util.config import get_args_parser, parse_args
from util.errors import OptionError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def _parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(parents=[main.get_args_parser()])


def test_official_defaults():
    args = parse_args(_parser(), [])
    expected = dict(lr=1e-4, lr_backbone=1e-5, batch_size=1, weight_decay=1e-4, epochs=18, lr_drop=12,
                    clip_max_norm=0.1, backbone="resnet50", dilation=False, position_embedding="sine",
                    enc_layers=4, dec_layers=4, dim_feedforward=2048, hidden_dim=384, dropout=0.1, nheads=8,
                    num_frames=36, num_queries=36, pre_norm=False, masks=False, aux_loss=True,
                    mask_loss_coef=1, dice_loss_coef=1, bbox_loss_coef=7.5, giou_loss_coef=3,
                    kl_loss_coef=500, dataset_file="avos", output_dir="output", device="cuda", seed=42,
                    resume="", start_epoch=0, eval=False, num_workers=4, world_size=1, dist_url="env://",
                    save_path="result.json", num_ins=1, pretrained_weights="")
    assert {k: getattr(args, k) for k in expected} == expected


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_loads_and_flags_override(path):
    args = parse_args(_parser(), ["--config", str(path), "--num_frames", "5", "--device", "cpu"])
    assert args.num_frames == 5 and args.device == "cpu"
    assert args.masks is True
    if path.name.startswith("a2d"):
        assert args.num_queries == 8


def test_config_sets_defaults(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("hidden_dim: 96\nbackbone: resnet18\n")
    args = parse_args(_parser(), ["--config", str(cfg)])
    assert (args.hidden_dim, args.backbone) == (96, "resnet18")


def test_unknown_config_key_is_an_error_naming_file(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("hidden_dims: 96\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*hidden_dims"):
        parse_args(_parser(), ["--config", str(cfg)])


def test_missing_config_file(tmp_path):
    with pytest.raises(OptionError, match="nope.yaml"):
        parse_args(_parser(), ["--config", str(tmp_path / "nope.yaml")])


def test_parser_is_shared():
    assert main.get_args_parser is get_args_parser
