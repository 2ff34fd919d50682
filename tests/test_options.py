"""The options are owned by their parts: each entry point's parser holds only what applies to it, every option it
offers is read by the product code, and after the post-parse step nothing assigns to the options (a whole tiny
training, a resume and an inference run on frozen namespaces)."""
import argparse
import re
from pathlib import Path
from typing import Set

import pytest
import torch

import inference_a2d
import inference_jhmdb
import inference_rvos
import main as train
from data_factory import make_ytvos
from util.config import FrozenNamespace, OfficialUnused
from datasets import add_training_data_args
from models import add_model_training_args
from util.options import add_inference_args, add_middle_frame_args, add_rvos_inference_args, add_training_args
from util.results import read_results

ROOT = Path(__file__).resolve().parents[1]
PARSERS = {"main": train.get_parser, "inference_rvos": inference_rvos.get_parser,
           "inference_a2d": inference_a2d.get_parser, "inference_jhmdb": inference_jhmdb.get_parser}
# The product code: what an option must be read by to change behaviour (the option definitions left out).
PRODUCT = ([ROOT / name for name in ("main.py", "inference_rvos.py", "inference_a2d.py", "inference_jhmdb.py")]
           + sorted(ROOT.glob("engine*.py")) + sorted((ROOT / "engine").glob("*.py"))
           + [path for part in ("models", "datasets", "util") for path in sorted((ROOT / part).rglob("*.py"))
              if path.name != "options.py"])
# Read from the command line itself, not the namespace: `util.errors.run_main` looks for `--debug` in argv.
READ_FROM_ARGV = {"debug", "help"}
# (--amp is a run option: bfloat16 autocast in training and at inference, issue 24)
OPTIMISER_OPTIONS = ("--lr", "--lr_backbone", "--weight_decay", "--lr_drop", "--clip_max_norm", "--batch_size",
                     "--epochs", "--warmup_epochs", "--warmup_subset", "--curriculum_stages")


def stored_names(*groups) -> Set[str]:
    """The options `groups` define that store a value (not the official names they accept and ignore)."""
    parser = argparse.ArgumentParser(add_help=False)
    for add_group in groups:
        add_group(parser)
    return offered(parser)



def product_text() -> str:
    return "\n".join(path.read_text() for path in PRODUCT)


def read_names(text: str) -> Set[str]:
    """Names read as `args.<name>` (any namespace variable) or `getattr(args, "<name>")` or listed as a string."""
    return (set(re.findall(r"\b(?:args|parsed|pre|options)\.(\w+)", text))
            | set(re.findall(r"""["'](\w+)["']""", text)))


def listed(help_text: str) -> Set[str]:
    """The options `--help` lists (each at the start of its entry, not those its prose mentions)."""
    return set(re.findall(r"^  (--\w+)", help_text, flags=re.M))


def offered(parser: argparse.ArgumentParser) -> Set[str]:
    """The dests of the options a parser stores (official names that do nothing store none)."""
    return {action.dest for action in parser._actions
            if action.default is not argparse.SUPPRESS and not isinstance(action, OfficialUnused)}


@pytest.mark.parametrize("entry_point", sorted(PARSERS))
def test_every_option_is_read_by_the_product_code(entry_point):
    unread = offered(PARSERS[entry_point]()) - READ_FROM_ARGV - read_names(product_text())
    assert not unread, f"{entry_point} offers options nothing reads: {sorted(unread)}"


def test_the_check_sees_an_unread_option():
    parser = train.get_parser()
    parser.add_argument("--option_nothing_reads", action="store_true")
    assert "option_nothing_reads" in offered(parser) - read_names(product_text())


def test_training_help_shows_no_inference_option(capsys):
    with pytest.raises(SystemExit):
        train.get_parser().parse_args(["--help"])
    shown = listed(capsys.readouterr().out)
    inference_only = {f"--{name}" for name in stored_names(add_inference_args, add_rvos_inference_args,
                                                           add_middle_frame_args)}
    assert not shown & inference_only, sorted(shown & inference_only)
    assert {"--png_dir", "--visualize", "--save_path", "--model_path"}.isdisjoint(shown)
    assert {"--lr", "--masks", "--dataset_file", "--no_hflip"} <= shown


@pytest.mark.parametrize("entry_point", ["inference_rvos", "inference_a2d", "inference_jhmdb"])
def test_inference_help_shows_no_optimiser_option(entry_point, capsys):
    with pytest.raises(SystemExit):
        PARSERS[entry_point]().parse_args(["--help"])
    shown = listed(capsys.readouterr().out)
    assert shown.isdisjoint(OPTIMISER_OPTIONS), sorted(shown.intersection(OPTIMISER_OPTIONS))
    training_only = stored_names(add_training_args, add_training_data_args, add_model_training_args)
    assert shown.isdisjoint({f"--{name}" for name in training_only}), sorted(shown & {f"--{n}" for n in training_only})
    assert {"--checkpoint_activations", "--mask_loss_coef", "--no_aux_loss"}.isdisjoint(shown)
    assert "--model_path" in shown and "--masks" in shown


DATA_PATHS = {"--ytvos_path", "--ytvos_split", "--rvos_audio_path", "--rvos_wav_path", "--a2d_path", "--jhmdb_path",
              "--a2d_audio_path", "--a2d_wav_path"}


@pytest.mark.parametrize("entry_point, own_paths", [
    ("inference_rvos", {"--ytvos_path", "--ytvos_split", "--rvos_audio_path", "--rvos_wav_path"}),
    ("inference_a2d", {"--a2d_path", "--a2d_audio_path", "--a2d_wav_path"}),
    ("inference_jhmdb", {"--jhmdb_path", "--a2d_audio_path", "--a2d_wav_path"}),  # JHMDB's audio sits with A2D's
    ("main", DATA_PATHS)])
def test_each_script_offers_the_data_paths_it_reads(entry_point, own_paths, capsys):
    with pytest.raises(SystemExit):
        PARSERS[entry_point]().parse_args(["--help"])
    assert listed(capsys.readouterr().out) & DATA_PATHS == own_paths


class FrozenFromTheStart(FrozenNamespace):
    """What the test hands to the entry points: assigning to it raises, as to the post-parse step's result."""


def frozen(args: argparse.Namespace) -> FrozenFromTheStart:
    return FrozenFromTheStart(**vars(args))


def test_training_resume_and_inference_run_on_frozen_options(tmp_path: Path):
    data = make_ytvos(tmp_path / "ytvos", num_videos=1, num_frames=2)
    out = tmp_path / "out"
    model = ["--backbone", "resnet18", "--hidden_dim", "48", "--nheads", "4", "--dim_feedforward", "64",
             "--enc_layers", "1", "--dec_layers", "1", "--num_frames", "2", "--num_queries", "2", "--masks",
             "--device", "cpu", "--data_scale", "0.1", "--ytvos_path", data["root"],
             "--rvos_audio_path", data["audio_root"]]
    training = model + ["--dataset_file", "ytvos", "--num_workers", "0", "--pretrained_weights", "none",
                        "--output_dir", str(out)]
    with pytest.raises(AttributeError, match="frozen"):
        frozen(train.parse(training)).start_epoch = 1
    train.main(frozen(train.parse(training + ["--epochs", "1"])))
    # the resumed epoch is the run's own business: the options keep --start_epoch 0
    train.main(frozen(train.parse(training + ["--epochs", "2", "--resume", str(out / train.LATEST_CHECKPOINT)])))
    checkpoint = torch.load(out / train.LATEST_CHECKPOINT, map_location="cpu", weights_only=False)
    assert checkpoint["epoch"] == 1 and checkpoint["args"]["start_epoch"] == 0
    assert checkpoint["args"]["distributed"] is False  # the post-parse step's derived values are saved

    results = tmp_path / "results.json"
    args = inference_rvos.parse(model + ["--model_path", str(out / train.LATEST_CHECKPOINT), "--split_file", "none",
                                         "--save_path", str(results)])
    assert isinstance(args, FrozenNamespace)
    inference_rvos.run(frozen(args), inference_rvos.split_jobs(args))
    assert {entry["file_name"] for entry in read_results(results)} == set(data["videos"])
