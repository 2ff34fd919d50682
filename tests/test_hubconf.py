"""hubconf.py through torch.hub: an official model with a saved checkpoint, loaded strictly, and a missing
checkpoint named before any model is built."""
import re
from pathlib import Path
from typing import Dict

import pytest
import torch
from torch import Tensor

from main import get_args_parser
from models import build_model
from util.config import parse_args

ROOT = Path(__file__).resolve().parents[1]
R50_CONFIG = ROOT / "configs" / "ytvos_r50.yaml"
ENTRY_POINTS = ("wnet_r50", "wnet_r101")


def save_random_checkpoint(path: Path) -> Dict[str, Tensor]:
    """A checkpoint `{'model': state_dict}` of the official R50 model with every float tensor drawn at random
    (so that no value can come from the model's own initialisation); returns the state dict."""
    model, _, _ = build_model(parse_args(get_args_parser(), ["--config", str(R50_CONFIG)]))
    generator = torch.Generator().manual_seed(0)
    state_dict = {key: torch.randn(value.shape, generator=generator).to(value.dtype)
                  if value.is_floating_point() else value for key, value in model.state_dict().items()}
    torch.save({"model": state_dict, "epoch": 0}, path)
    return state_dict


def test_wnet_r50_loads_a_saved_checkpoint(tmp_path):
    path = tmp_path / "wnet_r50.pth"
    saved = save_random_checkpoint(path)
    model, postprocessors = torch.hub.load(str(ROOT), "wnet_r50", source="local", checkpoint=str(path))
    loaded = model.state_dict()
    assert list(loaded) == list(saved)
    assert all(torch.equal(loaded[key], saved[key]) for key in saved)
    assert not model.training
    assert set(postprocessors) == {"bbox", "segm"}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_missing_checkpoint_is_named(tmp_path, entry):
    missing = tmp_path / "absent.pth"
    with pytest.raises(FileNotFoundError, match=re.escape(f"checkpoint {missing} does not exist")):
        torch.hub.load(str(ROOT), entry, source="local", checkpoint=str(missing))
