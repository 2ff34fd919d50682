"""What the runs print and write: one JSON line per event (training and inference), the metrics file."""
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from util.misc import atomic_json_dump, is_main_process

PathLike = Union[str, Path]


def log_json(record: Dict) -> None:
    """One JSON line on stdout (tqdm writes its bar on stderr), from rank 0 only: the lines of several training
    processes would interleave (one process, as in inference, is rank 0)."""
    if is_main_process():
        print(json.dumps(record), flush=True)


def report_metrics(metrics: Dict, records: List[Dict], path: Optional[PathLike], dropped: Sequence[str] = ()) -> None:
    """Print the metrics as one JSON line and write metrics + per-sample records + dropped samples atomically."""
    log_json(metrics)
    if path:
        atomic_json_dump({"metrics": metrics, "samples": records, "dropped": list(dropped)}, path, indent=1)
        print(f"metrics written to {path}", file=sys.stderr)
