"""Readers and writers of A2D-Sentences' own files (the loader is `datasets/a2d.py`).

`Release/videoset.csv` (the videos and their split), the per-frame instance `.h5` files of
`a2d_annotation_with_instances/`, `a2d_annotation.txt` (queries) and `a2d_annotation_info.txt` (samples).
"""
import csv
import io
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import h5py
import numpy as np

from datasets.formats import DataFormatError, PathLike, read_csv_rows, write_csv_rows, write_text
from util.misc import atomic_write
from util.names import check_name

A2D_TRAIN_SPLIT, A2D_TEST_SPLIT = 0, 1
FIRST_DATA_LINE = 2  # of a table with a header row
_VIDEOSET_COLUMNS = 9


@dataclass
class A2DVideo:
    """One row of `videoset.csv` (no header): id, label, start, end, height, width, frames, annotated, split."""

    video_id: str
    label: int
    start: str
    end: str
    height: int
    width: int
    num_frames: int
    num_annotated_frames: int
    split: int  # 0 train, 1 test


def read_videoset_csv(path: PathLike) -> Dict[str, A2DVideo]:
    """`videoset.csv` -> `{video_id: A2DVideo}` in file order."""
    videos: Dict[str, A2DVideo] = {}
    try:
        with open(path, newline="") as f:
            for line_number, row in enumerate(csv.reader(f), start=1):
                if not row:
                    continue
                if len(row) != _VIDEOSET_COLUMNS:
                    raise DataFormatError(f"{path}:{line_number}: expected {_VIDEOSET_COLUMNS} columns, got {len(row)}")
                check_name(row[0], "video id", f"{path}:{line_number}")
                try:
                    videos[row[0]] = A2DVideo(row[0], int(row[1]), row[2], row[3], int(row[4]), int(row[5]),
                                              int(row[6]), int(row[7]), int(row[8]))
                except ValueError:
                    raise DataFormatError(f"{path}:{line_number}: non-integer field in {row}") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"A2D videoset file not found: {path}") from None
    return videos


def write_videoset_csv(path: PathLike, videos: Sequence[A2DVideo]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for v in videos:
        writer.writerow([v.video_id, v.label, v.start, v.end, v.height, v.width, v.num_frames,
                         v.num_annotated_frames, v.split])
    write_text(path, buffer.getvalue())


@dataclass
class A2DFrameAnnotation:
    """The instances of one annotated A2D frame (one `.h5`), in our orientation.

    `instance_ids [N]` int, `masks [N, H, W]` uint8, `boxes [N, 4]` float32 (x0, y0, x1, y1 in pixels),
    `class_ids [N]` int (A2D actor-action labels). A few release files disagree on N between their
    datasets; they are read as they are (`count_mismatch` says so) and indexed by instance position.
    """

    instance_ids: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    class_ids: np.ndarray

    def counts(self) -> Dict[str, int]:
        """The instance count of each on-disk dataset."""
        return {"instance": len(self.instance_ids), "reMask": len(self.masks), "reBBox": len(self.boxes),
                "id": len(self.class_ids)}

    def count_mismatch(self) -> Optional[str]:
        """'instance 2, reMask 3, reBBox 3, id 3' when the datasets disagree on the instance count, else None."""
        counts = self.counts()
        if len(set(counts.values())) == 1:
            return None
        return ", ".join(f"{name} {count}" for name, count in counts.items())


def read_a2d_h5(path: PathLike) -> A2DFrameAnnotation:
    """Read an `a2d_annotation_with_instances/<vid>/<frame>.h5` file.

    On disk (MATLAB v7.3 layout): `reMask` is `[W, H]` for one instance or `[N, W, H]` (transposed),
    `reBBox` is `[4, N]`, `id` is `[1, N]`, `instance` holds N instance ids.
    """
    try:
        with h5py.File(path, mode="r") as f:
            missing = [k for k in ("instance", "reMask", "reBBox", "id") if k not in f]
            if missing:
                raise DataFormatError(f"{path}: missing datasets {missing}")
            instance_ids = np.asarray(f["instance"]).reshape(-1).astype(np.int64)
            masks = np.asarray(f["reMask"])
            boxes = np.asarray(f["reBBox"], dtype=np.float32)
            class_ids = np.asarray(f["id"]).reshape(-1).astype(np.int64)
    except FileNotFoundError:
        raise FileNotFoundError(f"A2D annotation not found: {path}") from None
    except OSError as error:
        raise DataFormatError(f"{path}: not a readable HDF5 file ({error})") from None
    if masks.ndim == 2:  # MATLAB drops the instance axis when there is one instance
        masks = masks[None]
    if masks.ndim != 3:
        raise DataFormatError(f"{path}: reMask must be [W, H] or [N, W, H], got {masks.shape}")
    masks = np.ascontiguousarray(masks.transpose(0, 2, 1)).astype(np.uint8)  # [N, W, H] -> [N, H, W]
    if boxes.ndim != 2 or boxes.shape[0] != 4:
        raise DataFormatError(f"{path}: reBBox must be [4, N], got {boxes.shape}")
    return A2DFrameAnnotation(instance_ids, masks, np.ascontiguousarray(boxes.T), class_ids)


def write_a2d_h5(path: PathLike, annotation: A2DFrameAnnotation) -> None:
    """Write an A2D instance `.h5` in the on-disk layout `read_a2d_h5` documents."""
    masks = np.asarray(annotation.masks, dtype=np.uint8)
    stored_masks = masks.transpose(0, 2, 1)  # [N, H, W] -> [N, W, H], as stored
    if stored_masks.shape[0] == 1:
        stored_masks = stored_masks[0]

    def write(tmp: str) -> None:
        with h5py.File(tmp, mode="w") as f:
            f.create_dataset("instance", data=np.asarray(annotation.instance_ids, dtype=np.float64).reshape(-1, 1))
            f.create_dataset("reMask", data=stored_masks)
            f.create_dataset("reBBox", data=np.asarray(annotation.boxes, dtype=np.float64).reshape(-1, 4).T)
            f.create_dataset("id", data=np.asarray(annotation.class_ids, dtype=np.float64).reshape(1, -1))
    atomic_write(path, write)


def check_ids(path: PathLike, line_number: int, video_id: str, instance_id: str) -> Tuple[str, str]:
    """The video and instance ids of a row (they name the recordings `<video>_<instance>`), checked as names."""
    where = f"{path}:{line_number}"
    return check_name(video_id, "video id", where), check_name(instance_id, "instance id", where)


@dataclass
class A2DQuery:
    """One row of `a2d_annotation.txt` (header `video_id,instance_id,query`)."""

    video_id: str
    instance_id: str  # kept as text: the release has an id "1 (copy)"
    query: str


@dataclass
class A2DSample:
    """One row of `a2d_annotation_info.txt`: `frame_idx` is 0-based; its h5 is `%05d.h5 % (frame_idx + 1)`."""

    video_id: str
    instance_id: str
    frame_idx: int
    query: str


def read_a2d_annotations(path: PathLike) -> List[A2DQuery]:
    rows = read_csv_rows(path, ("video_id", "instance_id", "query"))
    return [A2DQuery(*check_ids(path, line_number, r["video_id"], r["instance_id"]), r["query"])
            for line_number, r in enumerate(rows, start=FIRST_DATA_LINE)]


def write_a2d_annotations(path: PathLike, queries: Sequence[A2DQuery]) -> None:
    write_csv_rows(path, ("video_id", "instance_id", "query"), [(q.video_id, q.instance_id, q.query) for q in queries])


def read_a2d_annotation_info(path: PathLike) -> List[A2DSample]:
    samples = []
    for line_number, r in enumerate(read_csv_rows(path, ("video_id", "instance_id", "frame_idx", "query")),
                                    start=FIRST_DATA_LINE):
        check_ids(path, line_number, r["video_id"], r["instance_id"])
        try:
            frame_idx = int(r["frame_idx"])
        except ValueError:
            raise DataFormatError(f"{path}:{line_number}: frame_idx {r['frame_idx']!r} is not an integer") from None
        samples.append(A2DSample(r["video_id"], r["instance_id"], frame_idx, r["query"]))
    return samples


def write_a2d_annotation_info(path: PathLike, samples: Sequence[A2DSample]) -> None:
    write_csv_rows(path, ("video_id", "instance_id", "frame_idx", "query"),
                    [(s.video_id, s.instance_id, s.frame_idx, s.query) for s in samples])


