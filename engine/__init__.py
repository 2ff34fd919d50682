"""The engine of the entry points (being split into one module per job: this step only moves engine.py here)."""
from engine.train import *  # noqa: F401,F403
from engine.train import _to_device, _weighted_losses  # noqa: F401
