"""The parsers of the entry points, built from the parts' argument groups: official defaults, YAML configs as
defaults (keys of another entry point ignored, unknown keys rejected), flags override, official names accepted."""
import argparse
from pathlib import Path

import pytest

import inference_a2d
import inference_jhmdb
import inference_rvos
import main
from datasets import DATASETS
from models.audio_encoder import AUDIO_ENCODERS
from models.backbone import RESNET_NAMES
from util.config import FrozenNamespace, freeze, parse_args
from util.errors import OptionError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
ENTRY_POINT_MODULES = {"main": main, "inference_rvos": inference_rvos, "inference_a2d": inference_a2d,
                       "inference_jhmdb": inference_jhmdb}
ENTRY_POINTS = {name: module.get_parser for name, module in ENTRY_POINT_MODULES.items()}
OFFICIAL_UNUSED = ("position_embedding", "remove_difficult", "num_ins", "world_size")


def _parser() -> argparse.ArgumentParser:
    return main.get_parser()


def _parse(entry_point: str, argv):
    """`argv` parsed as the entry point parses it (a config's keys of another entry point ignored)."""
    return ENTRY_POINT_MODULES[entry_point].parse(argv)


def test_official_defaults():
    args = parse_args(_parser(), [])
    expected = dict(lr=1e-4, lr_backbone=1e-5, batch_size=1, weight_decay=1e-4, epochs=18, lr_drop=12,
                    clip_max_norm=0.1, backbone="resnet50", dilation=False,
                    enc_layers=4, dec_layers=4, dim_feedforward=2048, hidden_dim=384, dropout=0.1, nheads=8,
                    num_frames=36, num_queries=36, pre_norm=False, masks=False, aux_loss=True,
                    mask_loss_coef=1, dice_loss_coef=1, bbox_loss_coef=7.5, giou_loss_coef=3,
                    kl_loss_coef=500, dataset_file="avos", output_dir="output", device="cuda", seed=42,
                    resume="", start_epoch=0, eval=False, num_workers=4, dist_url="env://",
                    # the official data layout and initialisation (docs/protocol.md §1)
                    pretrained_weights="coco_pretrained_weights/384_coco_r50.pth", ytvos_path="data/rvos",
                    rvos_audio_path="data/rvos_audio_feature", a2d_path="data/a2d",
                    a2d_audio_path="data/a2d_j_audio_feature", jhmdb_path="data/JHMDB")
    assert {k: getattr(args, k) for k in expected} == expected
    assert parse_args(inference_rvos.get_parser(), []).save_path == "result.json"


def test_help_shows_the_official_defaults(capsys):
    parser = _parser()
    with pytest.raises(SystemExit):
        parse_args(parser, ["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for shown in ("--lr_drop LR_DROP default: 12", "(default: coco_pretrained_weights/384_coco_r50.pth)",
                  "(default: data/rvos)", "(default: data/rvos_audio_feature)", "(default: data/a2d)",
                  "(default: data/a2d_j_audio_feature)", "(default: data/JHMDB)", "--kl_loss_coef KL_LOSS_COEF default: 500"):
        assert shown in text, shown


# The official command-line surface (docs/protocol.md §1); the inference scripts add the official names below.
OFFICIAL_ARGV = ("--lr 1e-4 --lr_backbone 1e-5 --batch_size 1 --weight_decay 1e-4 --epochs 18 --lr_drop 12 "
                 "--clip_max_norm 0.1 --pretrained_weights P --backbone resnet50 --dilation --position_embedding sine "
                 "--enc_layers 4 --dec_layers 4 --dim_feedforward 2048 --hidden_dim 384 --dropout 0.1 --nheads 8 "
                 "--num_frames 36 --num_queries 36 --pre_norm --masks --no_aux_loss --mask_loss_coef 1 "
                 "--dice_loss_coef 1 --bbox_loss_coef 7.5 --giou_loss_coef 3 --kl_loss_coef 500 --dataset_file avos "
                 "--ytvos_path Y --output_dir output --device cuda --seed 42 --resume R --start_epoch 0 --eval "
                 "--num_workers 4 --world_size 1 --dist_url env:// --remove_difficult").split()
OFFICIAL_INFERENCE_ARGV = "--model_path M --num_ins 1".split()
OFFICIAL_RVOS_ARGV = "--save_path result.json".split()


def test_every_official_option_name_is_accepted():
    args = parse_args(_parser(), list(OFFICIAL_ARGV))
    assert (args.pre_norm, args.dilation, args.aux_loss, args.eval) == (True, True, False, True)
    assert (args.pretrained_weights, args.ytvos_path, args.resume) == ("P", "Y", "R")


@pytest.mark.parametrize("entry_point", ["inference_rvos", "inference_a2d", "inference_jhmdb"])
def test_the_inference_scripts_accept_the_official_command_lines(entry_point, capsys):
    """The official inference scripts parse the training options too: accepted, ignored, and said so."""
    argv = OFFICIAL_ARGV + OFFICIAL_INFERENCE_ARGV + (OFFICIAL_RVOS_ARGV if entry_point == "inference_rvos" else [])
    args = parse_args(ENTRY_POINTS[entry_point](), argv)
    assert (args.model_path, args.masks) == ("M", True)
    # the official path option: read by the Ref-YouTube-VOS script, accepted with a note by the others
    assert getattr(args, "ytvos_path", None) == ("Y" if entry_point == "inference_rvos" else None)
    # training options, the model's losses among them: nothing to read
    assert not any(hasattr(args, name) for name in ("lr", "epochs", "aux_loss", "mask_loss_coef", "kl_loss_coef"))
    assert "note: --lr is ignored: a training option" in capsys.readouterr().err


@pytest.mark.parametrize("name", OFFICIAL_UNUSED)
def test_official_options_that_do_nothing_say_so_and_store_nothing(name, capsys):
    parser = main.get_parser() if name == "world_size" else inference_rvos.get_parser()
    option = {"position_embedding": ["--position_embedding", "sine"], "remove_difficult": ["--remove_difficult"],
              "num_ins": ["--num_ins", "1"], "world_size": ["--world_size", "4"]}[name]
    args = parse_args(parser, option)
    assert not hasattr(args, name)
    assert f"note: --{name} is ignored" in capsys.readouterr().err
    if name in ("position_embedding", "num_ins"):  # only the official value
        with pytest.raises(SystemExit):
            parse_args(parser, [option[0], "2"])


def test_official_inference_paths_are_aliases_of_ours(tmp_path):
    args = parse_args(inference_rvos.get_parser(), ["--img_path", "data/rvos/train/JPEGImages",
                                  "--ann_path", "data/rvos/ann/instances_test_sub.json"])
    assert (args.ytvos_path, args.ytvos_split) == ("data/rvos", "train")
    assert args.split_file == "data/rvos/ann/instances_test_sub.json"
    with pytest.raises(SystemExit):
        parse_args(inference_rvos.get_parser(), ["--img_path", "data/rvos/train"])  # not a JPEGImages folder
    cfg = tmp_path / "c.yaml"
    cfg.write_text("img_path: /x/valid/JPEGImages\nann_path: /x/ann/a.json\n")
    args = _parse("inference_rvos", ["--config", str(cfg)])
    assert (args.ytvos_path, args.ytvos_split, args.split_file) == ("/x", "valid", "/x/ann/a.json")


@pytest.mark.parametrize("entry_point", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_loads_and_flags_override(path, entry_point):
    args = _parse(entry_point, ["--config", str(path), "--num_frames", "5", "--device", "cpu"])
    assert args.num_frames == 5 and args.device == "cpu"
    assert args.masks is True
    if path.name.startswith("a2d"):
        assert args.num_queries == 8


@pytest.mark.parametrize("name", ["avos_r50.yaml", "ytvos_r50.yaml", "a2d_r50.yaml"])
def test_r50_configs_are_the_official_set_ups_with_official_paths(name):
    """No path flag needed: the configs set no path and the defaults are the official data/ layout."""
    args = _parse("main", ["--config", str(CONFIG_DIR / name)])
    official = parse_args(_parser(), [])
    for key in ("ytvos_path", "rvos_audio_path", "a2d_path", "a2d_audio_path", "jhmdb_path", "pretrained_weights",
                "ytvos_ann_file", "lr", "lr_backbone", "epochs", "lr_drop", "hidden_dim", "batch_size"):
        assert getattr(args, key) == getattr(official, key), key
    assert args.backbone == "resnet50" and args.masks


def test_demo_config_trains_from_scratch():
    assert _parse("main", ["--config", str(CONFIG_DIR / "demo.yaml")]).pretrained_weights == "none"


def test_config_sets_defaults(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("hidden_dim: 96\nbackbone: resnet18\n")
    args = _parse("main", ["--config", str(cfg)])
    assert (args.hidden_dim, args.backbone) == (96, "resnet18")


@pytest.mark.parametrize("entry_point", sorted(ENTRY_POINTS))
def test_unknown_config_key_is_an_error_naming_file(tmp_path, entry_point):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("hidden_dims: 96\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*hidden_dims"):
        _parse(entry_point, ["--config", str(cfg)])


def test_a_config_key_of_another_entry_point_is_ignored(tmp_path):
    cfg = tmp_path / "shared.yaml"
    cfg.write_text("hidden_dim: 96\nlr: 0.5\nwarmup_epochs: 3\nno_hflip: true\nsave_path: r.json\n"
                   "metrics_path: m.json\npng_dir: p\n")
    train = _parse("main", ["--config", str(cfg)])
    assert (train.hidden_dim, train.lr, train.warmup_epochs, train.no_hflip) == (96, 0.5, 3, True)
    assert not hasattr(train, "save_path") and not hasattr(train, "png_dir")
    rvos = _parse("inference_rvos", ["--config", str(cfg)])
    assert (rvos.hidden_dim, rvos.save_path, rvos.png_dir) == (96, "r.json", "p")
    assert not hasattr(rvos, "lr") and not hasattr(rvos, "warmup_epochs") and not hasattr(rvos, "metrics_path")
    assert _parse("inference_a2d", ["--config", str(cfg)]).metrics_path == "m.json"
    with pytest.raises(OptionError, match="save_path"):  # without the other entry points' names: an error
        parse_args(main.get_parser(), ["--config", str(cfg)])


def test_missing_config_file(tmp_path):
    with pytest.raises(OptionError, match="nope.yaml"):
        _parse("main", ["--config", str(tmp_path / "nope.yaml")])


def test_choice_lists_are_the_registries():
    actions = {a.dest: a for a in main.get_parser()._actions}
    assert tuple(actions["dataset_file"].choices) == tuple(DATASETS) and actions["dataset_file"].default == "avos"
    assert tuple(actions["backbone"].choices) == RESNET_NAMES
    assert tuple(actions["audio_encoder"].choices) == tuple(AUDIO_ENCODERS)


def test_frozen_namespace_refuses_assignment_and_copies_with_changes():
    args = freeze(argparse.Namespace(a=1), b=2)
    assert isinstance(args, FrozenNamespace) and (args.a, args.b) == (1, 2) and vars(args) == {"a": 1, "b": 2}
    with pytest.raises(AttributeError, match="frozen"):
        args.a = 3
    changed = freeze(args, a=3)
    assert (changed.a, args.a) == (3, 1)
