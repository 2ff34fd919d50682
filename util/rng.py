"""The state of every random number generator a training run draws from (torch, CUDA, NumPy, Python), saved in
each checkpoint so that `--resume` continues the augmentation draws where the run stopped."""
import random
from typing import Any, Dict, List, Optional

import numpy as np
import torch

import util.misc as utils


def get_rng_state() -> Dict[str, Any]:
    """Every RNG the training touches, as tensors and plain tuples (loadable with weights_only=True)."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": np_kind, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states() -> List[Dict[str, Any]]:
    """RNG states of every rank, in rank order (only rank 0 writes checkpoints, so it keeps them all)."""
    state = get_rng_state()
    if utils.get_world_size() == 1:
        return [state]
    states: List[Optional[Dict[str, Any]]] = [None] * utils.get_world_size()
    torch.distributed.all_gather_object(states, state)
    return states
