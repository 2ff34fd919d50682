"""hubconf.py through torch.hub: an official model with a saved checkpoint, loaded strictly, and a missing
checkpoint named before any model is built."""
import json
import re
import subprocess
import sys
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
SUBPROCESS_TIMEOUT_S = 300  # builds a ResNet-50 model on two shared cores


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


# Run in a fresh process: hubconf imported while the data, the engine and the training entry point cannot be,
# a model built from the checkpoint, and the third-party packages that the loaded modules import compared with
# hubconf's `dependencies`.
WITHOUT_DATA_AND_ENGINE = """
import ast, importlib.abc, json, sys
BLOCKED = ("datasets", "engine", "main")
OURS = ("hubconf", "models", "util")

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked")
        return None

sys.meta_path.insert(0, Blocked())
import torch
import hubconf
model, postprocessors = hubconf.wnet_r50(checkpoint=sys.argv[1])
saved = torch.load(sys.argv[1], weights_only=True)["model"]
loaded = model.state_dict()
imported = set()
for name, module in list(sys.modules.items()):
    if name.split(".")[0] in OURS and getattr(module, "__file__", None) and module.__file__.endswith(".py"):
        for node in ast.walk(ast.parse(open(module.__file__).read())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
print(json.dumps({
    "equal": list(loaded) == list(saved) and all(torch.equal(loaded[k], saved[k]) for k in saved),
    "postprocessors": sorted(postprocessors),
    "third_party": sorted(imported - set(sys.stdlib_module_names) - set(OURS)),
    "dependencies": sorted(hubconf.dependencies),
    "blocked_loaded": sorted(n for n in sys.modules if n.split(".")[0] in BLOCKED),
}))
"""


def test_hubconf_needs_neither_data_nor_engine_and_lists_its_dependencies(tmp_path):
    path = tmp_path / "wnet_r50.pth"
    save_random_checkpoint(path)
    done = subprocess.run([sys.executable, "-c", WITHOUT_DATA_AND_ENGINE, str(path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=SUBPROCESS_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["equal"] and result["postprocessors"] == ["bbox", "segm"]
    assert result["blocked_loaded"] == []
    assert result["third_party"] == result["dependencies"]
