"""The dataset registry: `datasets.DATASETS` is what `--dataset_file` offers and what `build_dataset` builds."""
import pytest
from torch.utils.data import Dataset

import main
from datasets import DATASETS, build_dataset
from tests.data_factory import dataset_args
from util.config import parse_args
from util.errors import OptionError

OFFICIAL_DATASETS = ("avos", "ytvos", "a2d", "jhmdb")


def dataset_file_action(parser):
    return next(action for action in parser._actions if action.dest == "dataset_file")


def test_the_parser_offers_the_registered_datasets():
    parser = main.get_parser()
    assert dataset_file_action(parser).choices == tuple(DATASETS) == OFFICIAL_DATASETS
    assert "{" + ",".join(OFFICIAL_DATASETS) + "}" in parser.format_help()
    assert parse_args(parser, []).dataset_file == "avos"


def test_an_unknown_dataset_is_refused_with_the_registered_names(capsys):
    with pytest.raises(SystemExit):
        parse_args(main.get_parser(), ["--dataset_file", "nope"])
    message = capsys.readouterr().err
    assert "--dataset_file" in message and "'nope'" in message
    assert all(f"'{name}'" in message for name in DATASETS)


def test_a_config_file_naming_an_unknown_dataset_is_refused(tmp_path):
    config = tmp_path / "nope.yaml"
    config.write_text("dataset_file: nope\n")
    with pytest.raises(OptionError, match=r"nope\.yaml: dataset_file: 'nope' is not one of \['avos', 'ytvos'"):
        parse_args(main.get_parser(), ["--config", str(config)])


def test_build_dataset_refuses_an_unregistered_name():
    with pytest.raises(ValueError, match=r"'nope'.*avos, ytvos, a2d, jhmdb \(datasets/__init__\.py\)"):
        build_dataset("val", dataset_args(dataset_file="nope"))


class TinyDataset(Dataset):
    """What a newly registered dataset's builder returns."""

    def __init__(self, image_set: str):
        self.image_set = image_set

    def __len__(self) -> int:
        return 1


def test_a_registered_dataset_is_offered_and_built(monkeypatch):
    monkeypatch.setitem(DATASETS, "tiny", lambda image_set, args, transforms=None: TinyDataset(image_set))
    assert "tiny" in dataset_file_action(main.get_parser()).choices
    dataset = build_dataset("val", parse_args(main.get_parser(), ["--dataset_file", "tiny"]))
    assert isinstance(dataset, TinyDataset) and dataset.image_set == "val"
