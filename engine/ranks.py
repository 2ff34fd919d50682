"""The processes (ranks) of a distributed training run agree or stop together: they check that they read the same
samples before training (`check_same_data`), and a rank that fails stops the others within seconds with one line
(`StopTogether`).

Why a flag in the rendezvous store, watched by a thread. When a rank fails, the others are usually waiting for it
inside a collective (DDP's gradient all-reduce, the loss reduction), where no per-step check of theirs can run.
Gloo notices the closed connection and raises at once ("Connection closed by peer", 60 lines of traceback); NCCL
notices nothing until the process group's timeout (10 minutes), and a launcher's SIGTERM cannot reach Python code
that waits in a CUDA synchronisation. So the failing rank writes its rank to the store the processes met through
(`util.misc.run_store`: a TCPStore or FileStore, the same for gloo and NCCL) and exits once the others have read it
(at most `TELL_SECONDS`: outside torchrun the store lives in rank 0's process), and in every rank a daemon thread
asks the store once a second whether a rank has failed (one small request; the training steps pay nothing). A
rank whose collective raised (gloo) finds the flag and stops with one line, `rank 0 stopped: rank 1
failed`, without a traceback; one still waiting after `GRACE_SECONDS` (NCCL) is ended by the thread with the same
line (`os._exit`: nothing can interrupt the wait; checkpoints are written atomically and the `--output_dir` lock
goes with the process).
"""
import os
import threading
import time
from types import TracebackType
from typing import Optional, Type

import torch.distributed as dist
from torch.utils.data import Dataset

import util.misc as utils
from datasets import sample_digest
from engine.train import NonFiniteLossError
from util.errors import EXIT_DATA, Interrupted, StoppedByPeer, UserError, one_line, print_line

FAILED_KEY = "wnet/failed_rank"  # set in the run's store by a rank that fails
FAILING_KEY = "wnet/ranks_failed"  # counts the ranks that have failed
TOLD_KEY = "wnet/ranks_told"  # counts the ranks that have read FAILED_KEY
STORE_GONE = -1  # in place of a rank: the store could not be reached
TELL_SECONDS = 5.0  # the longest a failing rank waits for the others to read its flag before it exits
TOLD_POLL_SECONDS = 0.1  # how often it looks
POLL_SECONDS = 1.0  # how often the watching thread asks the store
GRACE_SECONDS = 3.0  # how long a rank that knows of a failure lets its main thread stop on its own
FLAG_WAIT_SECONDS = 2.0  # how long a rank whose collective failed looks for the flag (set before the failer exits)


class DifferentData(UserError):
    """The ranks read different samples (their counts or their identities differ): every rank stops before training."""


class RankFailed(UserError):
    """A user error of this rank, named with the rank (the other ranks stop with `StoppedByPeer`)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


# Errors raised by every rank at the same point (agreed through a collective): nobody is left waiting to be told.
RAISED_ON_EVERY_RANK = (DifferentData, Interrupted, NonFiniteLossError, StoppedByPeer)


def check_same_data(dataset: Dataset, image_set: str) -> None:
    """Every rank of a distributed run reads the same samples in the same order (their count and
    `datasets.sample_digest` gathered); otherwise rank 0 raises `DifferentData` naming the ranks that differ from it,
    the others `StoppedByPeer`. Ranks that read different data would wait for each other's collectives forever."""
    if utils.get_world_size() == 1:
        return
    seen = utils.all_gather_object((len(dataset), sample_digest(dataset)))
    if len(set(seen)) == 1:
        return
    if utils.get_rank() != 0:
        raise StoppedByPeer(f"rank {utils.get_rank()} stopped: the ranks read different data (rank 0 names them)")
    count, digest = seen[0]
    differ = "; ".join(f"rank {rank} sees {n} {image_set} samples (hash {h[:12]})"
                       for rank, (n, h) in enumerate(seen) if (n, h) != seen[0])
    raise DifferentData(f"{differ}, rank 0 sees {count} (hash {digest[:12]}): every rank must read the same data "
                        f"(the same dataset files and options on every machine)")


class StopTogether:
    """`with StopTogether(): ...` around a distributed run's work (nothing in one process): an error of this rank is
    named with the rank (`error: rank 1 failed: ...`) and flagged in the run's store; a rank that another's failure
    leaves waiting stops within seconds with one line (`rank 0 stopped: rank 1 failed`) and a nonzero exit code."""

    def __init__(self):
        self.store = utils.run_store()
        self.rank = utils.get_rank()
        self.world_size = utils.get_world_size()
        self.failed: Optional[int] = None  # the rank whose failure this one has read (STORE_GONE: the store ended)
        self.left = threading.Event()  # the main thread has left the block
        self.watcher = threading.Thread(target=self._watch, name="watch-failed-ranks", daemon=True)

    def __enter__(self) -> "StopTogether":
        if self.store is not None:
            self.watcher.start()
        return self

    def __exit__(self, kind: Optional[Type[BaseException]], error: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        self.left.set()
        if self.store is None or error is None or isinstance(error, RAISED_ON_EVERY_RANK):
            return
        # A collective that lost a rank raises a RuntimeError (gloo: "Connection closed by peer"; NCCL: a DistError);
        # the failing rank flagged itself before it exited.
        if isinstance(error, RuntimeError):
            failed = self.failed if self.failed is not None else self._read_flag(FLAG_WAIT_SECONDS)
            if failed is not None:
                raise StoppedByPeer(f"rank {self.rank} stopped: {failure(failed)}") from None
            if isinstance(error, dist.DistError):
                raise StoppedByPeer(f"rank {self.rank} stopped: another rank ended without a word (killed?): "
                                    f"{one_line(error)}") from None
        self._flag_and_tell()
        # Another rank's progress bar may hold the terminal's line: this rank's error starts a line of its own.
        print_line("")
        if isinstance(error, UserError):
            raise RankFailed(f"rank {self.rank} failed: {one_line(error)}", error.exit_code) from error
        # a bug (or a second Ctrl-C) keeps its traceback; the others were told

    def _flag_and_tell(self) -> None:
        """Flag this rank's failure, then wait (at most TELL_SECONDS) until every other rank has read it: outside
        torchrun the store is rank 0's, and ends with it."""
        deadline = time.monotonic() + TELL_SECONDS
        try:
            self.store.set(FAILED_KEY, str(self.rank))
            self.store.add(FAILING_KEY, 1)  # ranks that fail at once need not hear of each other
            while (int(self.store.add(TOLD_KEY, 0)) + int(self.store.add(FAILING_KEY, 0)) < self.world_size
                   and time.monotonic() < deadline):
                time.sleep(TOLD_POLL_SECONDS)
        except dist.DistError:  # the store has ended with its host: the others see that
            pass

    def _read_flag(self, wait: float) -> Optional[int]:
        """The other rank that flagged its failure (STORE_GONE when the store cannot be reached), read and counted
        as told; None when none did within `wait` seconds."""
        deadline = time.monotonic() + wait
        try:
            while not self.store.check([FAILED_KEY]):
                if time.monotonic() >= deadline:
                    return None
                time.sleep(POLL_SECONDS)
            failed = int(self.store.get(FAILED_KEY))
            if failed == self.rank:
                return None
            self.failed = failed  # before telling: the failing rank may end the store as soon as it is told
            self.store.add(TOLD_KEY, 1)
        except dist.DistError:  # the store has ended with its host (rank 0 outside torchrun)
            self.failed = STORE_GONE if self.failed is None else self.failed
        return self.failed

    def _watch(self) -> None:
        while not self.left.wait(POLL_SECONDS):
            failed = self._read_flag(0)
            if failed is None:
                continue
            if self.left.wait(GRACE_SECONDS):  # the main thread stopped on its own (its collective raised)
                return
            print_line(f"\nrank {self.rank} stopped: {failure(failed)}")
            os._exit(EXIT_DATA)


def failure(failed: int) -> str:
    """What stopped a rank: the failure of rank `failed`, or the end of the run's store."""
    return f"rank {failed} failed" if failed != STORE_GONE else "the run's store is gone (its host, rank 0, ended)"
