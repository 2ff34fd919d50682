"""The one parser: official defaults, YAML configs as defaults, flags override, unknown keys rejected."""
import argparse
from pathlib import Path

import pytest

import main
from main import get_args_parser
from util.config import parse_args
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
                    save_path="result.json", num_ins=1, remove_difficult=False,
                    # the official data layout and initialisation (docs/protocol.md §1)
                    pretrained_weights="coco_pretrained_weights/384_coco_r50.pth", ytvos_path="data/rvos",
                    rvos_audio_path="data/rvos_audio_feature", a2d_path="data/a2d",
                    a2d_audio_path="data/a2d_j_audio_feature", jhmdb_path="data/JHMDB")
    assert {k: getattr(args, k) for k in expected} == expected


def test_help_shows_the_official_defaults(capsys):
    parser = argparse.ArgumentParser(parents=[main.get_args_parser()], formatter_class=main.HelpFormatter)
    with pytest.raises(SystemExit):
        parse_args(parser, ["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for shown in ("--lr_drop LR_DROP default: 12", "(default: coco_pretrained_weights/384_coco_r50.pth)",
                  "(default: data/rvos)", "(default: data/rvos_audio_feature)", "(default: data/a2d)",
                  "(default: data/a2d_j_audio_feature)", "(default: data/JHMDB)", "--kl_loss_coef KL_LOSS_COEF default: 500"):
        assert shown in text, shown


# The official command-line surface (docs/protocol.md §1) plus the official names the inference scripts add.
OFFICIAL_ARGV = ("--lr 1e-4 --lr_backbone 1e-5 --batch_size 1 --weight_decay 1e-4 --epochs 18 --lr_drop 12 "
                 "--clip_max_norm 0.1 --pretrained_weights P --backbone resnet50 --dilation --position_embedding sine "
                 "--enc_layers 4 --dec_layers 4 --dim_feedforward 2048 --hidden_dim 384 --dropout 0.1 --nheads 8 "
                 "--num_frames 36 --num_queries 36 --pre_norm --masks --no_aux_loss --mask_loss_coef 1 "
                 "--dice_loss_coef 1 --bbox_loss_coef 7.5 --giou_loss_coef 3 --kl_loss_coef 500 --dataset_file avos "
                 "--ytvos_path Y --output_dir output --device cuda --seed 42 --resume R --start_epoch 0 --eval "
                 "--num_workers 4 --world_size 1 --dist_url env:// --remove_difficult "
                 "--model_path M --save_path result.json --num_ins 1").split()


def test_every_official_option_name_is_accepted():
    args = parse_args(_parser(), list(OFFICIAL_ARGV))
    assert (args.pre_norm, args.dilation, args.aux_loss, args.eval, args.remove_difficult) == (True, True, False, True,
                                                                                               True)
    assert (args.pretrained_weights, args.ytvos_path, args.resume, args.model_path) == ("P", "Y", "R", "M")


def test_official_inference_paths_are_aliases_of_ours(tmp_path):
    args = parse_args(_parser(), ["--img_path", "data/rvos/train/JPEGImages",
                                  "--ann_path", "data/rvos/ann/instances_test_sub.json"])
    assert (args.ytvos_path, args.ytvos_split) == ("data/rvos", "train")
    assert args.split_file == "data/rvos/ann/instances_test_sub.json"
    with pytest.raises(SystemExit):
        parse_args(_parser(), ["--img_path", "data/rvos/train"])  # not a JPEGImages folder
    cfg = tmp_path / "c.yaml"
    cfg.write_text("img_path: /x/valid/JPEGImages\nann_path: /x/ann/a.json\n")
    args = parse_args(_parser(), ["--config", str(cfg)])
    assert (args.ytvos_path, args.ytvos_split, args.split_file) == ("/x", "valid", "/x/ann/a.json")


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_loads_and_flags_override(path):
    args = parse_args(_parser(), ["--config", str(path), "--num_frames", "5", "--device", "cpu"])
    assert args.num_frames == 5 and args.device == "cpu"
    assert args.masks is True
    if path.name.startswith("a2d"):
        assert args.num_queries == 8


@pytest.mark.parametrize("name", ["avos_r50.yaml", "ytvos_r50.yaml", "a2d_r50.yaml"])
def test_r50_configs_are_the_official_set_ups_with_official_paths(name):
    """No path flag needed: the configs set no path and the defaults are the official data/ layout."""
    args = parse_args(_parser(), ["--config", str(CONFIG_DIR / name)])
    official = parse_args(_parser(), [])
    for key in ("ytvos_path", "rvos_audio_path", "a2d_path", "a2d_audio_path", "jhmdb_path", "pretrained_weights",
                "ytvos_ann_file", "lr", "lr_backbone", "epochs", "lr_drop", "hidden_dim", "batch_size"):
        assert getattr(args, key) == getattr(official, key), key
    assert args.backbone == "resnet50" and args.masks


def test_demo_config_trains_from_scratch():
    assert parse_args(_parser(), ["--config", str(CONFIG_DIR / "demo.yaml")]).pretrained_weights == "none"


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
