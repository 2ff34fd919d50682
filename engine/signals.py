"""Stopping a training run cleanly: SIGINT and SIGTERM end it after the current step, keeping the last checkpoint."""
import signal
from pathlib import Path
from typing import Optional

import torch

import util.misc as utils
from engine.checkpoint import LATEST_CHECKPOINT
from util.errors import print_line


class StopSignals:
    """SIGINT and SIGTERM during training: finish the current step, keep the last checkpoint, then stop.

    Installed whatever the inherited disposition (a job started in the background of a script inherits
    SIGINT ignored, and Python then installs no KeyboardInterrupt handler). A second signal stops at once.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: Optional[int] = None
        self.previous = {}

    def __enter__(self) -> "StopSignals":
        self.previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        # on a line of its own: a progress bar (this rank's or another's on a shared terminal) may hold the line
        print_line(f"\n{signal.Signals(signum).name}: stopping after the current step (send it again to stop at once)")

    def requested(self) -> bool:
        """Whether a signal asked to stop, on any process (every process must stop at the same step)."""
        stop = self.signum is not None
        if utils.get_world_size() > 1:
            flag = torch.tensor([float(stop)])
            torch.distributed.all_reduce(flag)
            stop = bool(flag.item())
        return stop


def ignore_sigint_in_worker(worker_id: int) -> None:
    """DataLoader workers leave SIGINT to the main process, which stops after the current step."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stopped_message(stop: StopSignals, when: str, output_dir: Optional[Path], saved_epoch: Optional[int]) -> str:
    what = signal.Signals(stop.signum).name if stop.signum is not None else "a signal to another process"
    latest = output_dir / LATEST_CHECKPOINT if output_dir else None
    if saved_epoch is not None:
        kept = f"{latest} holds epoch {saved_epoch}; continue with --resume {latest}"
    elif latest is not None and latest.is_file():
        kept = f"{latest} is unchanged"
    else:
        kept = "no checkpoint was written yet"
    return f"stopped by {what} {when}; {kept}"
