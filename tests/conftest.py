"""Shared test fixtures: the parity fixtures in tests/fixtures and small torch settings.

The repository's modules are imported as installed (`make install`: `pip install -e .`).
"""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REFERENCE_MODULE = "reference_weights"  # the fixtures' weight and input generators (reference_weights.py)
FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures"  # what made them: fixtures/README.md

# Two cores: keep intra-op threads at the machine's count, no oversubscription from interop pools.
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """tests/fixtures: the official outputs, weights generator and MFCC features (part of the repository)."""
    register_reference_module(FIXTURE_DIR / f"{REFERENCE_MODULE}.py")
    return FIXTURE_DIR


def register_reference_module(path: Path) -> None:
    """Load the fixtures' Python helpers from their file as the module `reference_weights`, so that the parity
    tests import them by name (`from reference_weights import reference_state_dict`) without a sys.path entry."""
    if REFERENCE_MODULE in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(REFERENCE_MODULE, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[REFERENCE_MODULE] = module
