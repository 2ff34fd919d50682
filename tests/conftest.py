"""Shared test fixtures: the parity fixtures in ../shared/reference and small torch settings."""
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_ENV = "WNET_REFERENCE_DIR"  # overrides the location (e.g. a copy carried to a GPU machine)
# ../shared beside the checkout; else a shared/ inside it (what travels to a lent GPU machine)
SHARED_REFERENCE = next((path for path in (ROOT.parent / "shared" / "reference", ROOT / "shared" / "reference")
                         if (path / "README.md").is_file()), ROOT.parent / "shared" / "reference")
if os.environ.get(REFERENCE_ENV):
    SHARED_REFERENCE = Path(os.environ[REFERENCE_ENV])

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Two cores: keep intra-op threads at the machine's count, no oversubscription from interop pools.
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """../shared/reference, or a skip that says why the parity tests did not run."""
    if not (SHARED_REFERENCE / "README.md").is_file():
        pytest.skip(f"parity fixtures not found: {SHARED_REFERENCE} is absent (clone with ../shared beside the repo)")
    if str(SHARED_REFERENCE) not in sys.path:
        sys.path.insert(0, str(SHARED_REFERENCE))
    return SHARED_REFERENCE
