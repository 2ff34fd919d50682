"""Shared test fixtures: the parity fixtures in ../shared/reference and small torch settings.

The repository's modules are imported as installed (`make install`: `pip install -e .`).
"""
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_MODULE = "reference_weights"  # the fixtures' weight and input generators (reference_weights.py)
REFERENCE_ENV = "WNET_REFERENCE_DIR"  # overrides the location (e.g. a copy carried to a GPU machine)
# ../shared beside the checkout; else a shared/ inside it (what travels to a lent GPU machine)
SHARED_REFERENCE = next((path for path in (ROOT.parent / "shared" / "reference", ROOT / "shared" / "reference")
                         if (path / "README.md").is_file()), ROOT.parent / "shared" / "reference")
if os.environ.get(REFERENCE_ENV):
    SHARED_REFERENCE = Path(os.environ[REFERENCE_ENV])

# Two cores: keep intra-op threads at the machine's count, no oversubscription from interop pools.
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """../shared/reference, or a skip that says why the parity tests did not run."""
    if not (SHARED_REFERENCE / "README.md").is_file():
        pytest.skip(f"parity fixtures not found: {SHARED_REFERENCE} is absent (clone with ../shared beside the repo)")
    register_reference_module(SHARED_REFERENCE / f"{REFERENCE_MODULE}.py")
    return SHARED_REFERENCE


def register_reference_module(path: Path) -> None:
    """Load the fixtures' Python helpers from their file as the module `reference_weights`, so that the parity
    tests import them by name (`from reference_weights import reference_state_dict`) without a sys.path entry."""
    if REFERENCE_MODULE in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(REFERENCE_MODULE, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[REFERENCE_MODULE] = module
