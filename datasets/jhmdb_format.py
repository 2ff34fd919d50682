"""Readers and writers of JHMDB-Sentences' own files (the loader is `datasets/jhmdb.py`).

`puppet_mask/<class>/<video>/puppet_mask.mat` (the per-frame actor masks) and `jhmdb_annotation.txt`
(one query per video). `video_info.json` is plain JSON (`datasets.formats.read_json`).
"""
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np
import scipy.io

from datasets.formats import DataFormatError, PathLike, read_csv_rows, write_csv_rows
from util.misc import atomic_write
from util.names import check_name

FIRST_DATA_LINE = 2  # of a table with a header row


def read_puppet_mask(path: PathLike) -> np.ndarray:
    """`puppet_mask.mat` -> `part_mask [H, W, frames]` uint8."""
    try:
        data = scipy.io.loadmat(str(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"JHMDB puppet mask not found: {path}") from None
    # scipy reports a truncated or corrupt file as MatReadError, zlib.error, IndexError, TypeError, ...
    # depending on where it breaks: any failure of its parser means this file cannot be read.
    except Exception as error:
        raise DataFormatError(f"{path}: not a readable .mat file ({error})") from None
    if "part_mask" not in data:
        raise DataFormatError(f"{path}: no 'part_mask' variable")
    part_mask = np.asarray(data["part_mask"])
    if part_mask.ndim == 2:  # MATLAB drops a trailing singleton frame axis
        part_mask = part_mask[:, :, None]
    if part_mask.ndim != 3:
        raise DataFormatError(f"{path}: part_mask must be [H, W, frames], got {part_mask.shape}")
    return part_mask.astype(np.uint8)


def write_puppet_mask(path: PathLike, part_mask: np.ndarray) -> None:
    part_mask = np.asarray(part_mask, dtype=np.uint8)
    if part_mask.ndim != 3:
        raise ValueError(f"{path}: part_mask must be [H, W, frames], got {part_mask.shape}")

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            scipy.io.savemat(f, {"part_mask": part_mask}, do_compression=True)
    atomic_write(path, write)


@dataclass
class JHMDBQuery:
    """One row of `jhmdb_annotation.txt` (header `video_id,query`)."""

    video_id: str
    query: str


def read_jhmdb_annotations(path: PathLike) -> List[JHMDBQuery]:
    """The queries, their video ids checked as names (they name the recordings `<video>`)."""
    rows = read_csv_rows(path, ("video_id", "query"))
    return [JHMDBQuery(check_name(r["video_id"], "video id", f"{path}:{line_number}"), r["query"])
            for line_number, r in enumerate(rows, start=FIRST_DATA_LINE)]


def write_jhmdb_annotations(path: PathLike, queries: Sequence[JHMDBQuery]) -> None:
    write_csv_rows(path, ("video_id", "query"), [(q.video_id, q.query) for q in queries])


