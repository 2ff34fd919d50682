"""Inference sharded across processes: `torchrun --nproc_per_node N inference_rvos.py ...` (and the A2D/JHMDB
scripts, and SLURM through scripts/slurm_infer.sh) gives each rank every N-th video (sample), and rank 0 merges
the ranks' parts into the one output a single process writes, entries in the same order.

Files beside the output OUT (a shared file system when the ranks run on several machines):
- `OUT.rank<R>of<N>.partial`: rank R's journal (`util.journal.ResultJournal`), what it has finished; a stopped run
  continues from the journals with `--resume_results` and the same number of processes;
- `OUT.rank<R>of<N>`: rank R's part, written atomically when it has finished its share.
Rank 0 waits for every rank's word, reads the parts, writes OUT and removes the parts and journals. A rank that
fails says so on stderr with its rank and exits; the launcher (torchrun, `srun --kill-on-bad-exit`) then stops the
others and names the failed rank, and no merged output is written. One process (no launcher) is a shard of one:
the output and its journal are the usual `OUT` and `OUT.partial`.
"""
import contextlib
import datetime
import glob
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, TypeVar, Union

import torch.distributed as dist

from util.config import PARTIAL_SUFFIX
from util.errors import OptionError, UserError, one_line
from util.misc import atomic_json_dump

PathLike = Union[str, Path]
Item = TypeVar("Item")
PART_PATTERN = re.compile(r"\.rank(\d+)of(\d+)$")
STATUS_OK = "ok"


# The longest a rank that has finished its share waits for the others (the process group's default, 30 minutes,
# is shorter than the gap between the ranks' shares of a long split can be).
SHARE_WAIT = datetime.timedelta(days=3)


@dataclass(frozen=True)
class Shard:
    """The share of one process: rank `rank` of `world_size` takes every `world_size`-th item from `rank` on;
    `group` the gloo group the ranks report through (None in one process)."""
    rank: int = 0
    world_size: int = 1
    group: Optional[Any] = field(default=None, compare=False)

    @classmethod
    def of(cls, args) -> "Shard":
        """The shard of this process from its post-parse settings (`util.misc.init_distributed_mode`); sharded, every
        rank calls it at the same point (it sets up the ranks' gloo group, CPU objects on NCCL runs too)."""
        if args.world_size <= 1:
            return cls()
        return cls(args.rank, args.world_size, dist.new_group(backend="gloo", timeout=SHARE_WAIT))

    @property
    def sharded(self) -> bool:
        return self.world_size > 1

    def take(self, items: Sequence[Item]) -> List[Item]:
        """This rank's items, in their order (every rank gets a share of the long and the short videos alike)."""
        return list(items)[self.rank::self.world_size]

    def part_path(self, output: PathLike, rank: Optional[int] = None) -> Path:
        """Where rank `rank` (default this one) keeps its part of `output` (`output` itself in one process)."""
        if not self.sharded:
            return Path(output)
        return Path(f"{output}.rank{self.rank if rank is None else rank}of{self.world_size}")

    def check_layout(self, output: PathLike) -> None:
        """Refuse the journals of a run of `output` with another number of processes: their work would be done
        again, or lost, without a word."""
        found = set()
        for path in glob.glob(glob.escape(str(output)) + ".rank*of*" + PARTIAL_SUFFIX) + [f"{output}{PARTIAL_SUFFIX}"]:
            match = PART_PATTERN.search(path[:-len(PARTIAL_SUFFIX)])
            world_size = int(match.group(2)) if match else 1
            if Path(path).is_file() and world_size != self.world_size:
                found.add(world_size)
        if found:
            raise OptionError(f"{output}: an unfinished run with {', '.join(map(str, sorted(found)))} process(es) "
                              f"left its journals ({output}[.rank*of*]{PARTIAL_SUFFIX}); continue it with "
                              f"--resume_results and as many processes, or delete them to start again")

    @contextlib.contextmanager
    def named_on_failure(self) -> Iterator[None]:
        """A sharded run: an error of this rank is announced with the rank on stderr before it stops the process."""
        try:
            yield
        except BaseException as error:
            if self.sharded:
                print(f"error: rank {self.rank} of {self.world_size} failed: {one_line(error)}; no merged output "
                      f"is written", file=sys.stderr, flush=True)
            raise

    def gather(self, output: PathLike, done: Dict[str, Dict]) -> Optional[Dict[str, Dict]]:
        """Every rank's finished records by key: in one process `done` itself; sharded, this rank's part is written
        atomically, every rank reports, and rank 0 returns the union of the parts (the others None)."""
        if not self.sharded:
            return done
        atomic_json_dump(done, self.part_path(output))
        statuses: List[Optional[str]] = [None] * self.world_size
        try:
            dist.all_gather_object(statuses, STATUS_OK, group=self.group)
        except RuntimeError as error:  # a rank that died without a word (killed): its connection is gone
            raise UserError(f"rank {self.rank} of {self.world_size}: another rank stopped before its part of {output} "
                            f"was finished ({one_line(error)}); no merged output is written") from error
        if self.rank != 0:
            return None
        merged: Dict[str, Dict] = {}
        for rank in range(self.world_size):
            path = self.part_path(output, rank)
            try:
                merged.update(json.loads(path.read_text()))
            except (OSError, ValueError) as error:
                raise UserError(f"rank {rank}'s part {path} cannot be read ({one_line(error)}; the ranks must share "
                                f"the output's folder); no merged output is written") from error
        return merged

    def finish(self, output: PathLike) -> None:
        """Rank 0, once the merged output is written: every rank's part and journal go."""
        if not self.sharded:
            return
        for rank in range(self.world_size):
            part = self.part_path(output, rank)
            part.unlink(missing_ok=True)
            Path(f"{part}{PARTIAL_SUFFIX}").unlink(missing_ok=True)
