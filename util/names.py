"""Names from data are never paths: the one rule for ids read from dataset files, and for the paths built from them.

Video, expression, instance and object ids (and frame names) read from a file (`meta_expressions.json`,
`results.json`, a split file, the A2D/JHMDB lists) become parts of file names: frames and features are read
at `ROOT/<video>/<frame>.jpg` and `<video>_<exp_id>.npy`, PNGs written at `PNG_DIR/<video>/<exp_id>/`. An id
such as `../../x` or `/some/dir` would read and write outside the folders given, so `check_name` refuses it
where the file is read, naming the file and the id; `child_path` builds a path under a folder and checks that it
stays there (what every writer uses). `natural_sorted` orders the frames of a folder as a person numbers them
(`frame_2` before `frame_10`) and refuses a folder whose names that order cannot tell apart (`1.jpg`, `01.jpg`).
"""
import os
import re
import unicodedata
from pathlib import Path
from typing import Any, Iterable, List, Optional, Tuple, Union

from util.errors import UserError

PathLike = Union[str, Path]
SEPARATORS = ("/", "\\")  # both, whatever the OS: data files travel between systems
CONTROL_CATEGORY = "Cc"  # Unicode's control characters (C0, DEL, C1)
_DIGIT_RUNS = re.compile(r"(\d+)")


class UnsafeNameError(UserError, ValueError):
    """An id from a data file that cannot be a file name, a path that would leave its folder, or frames with no
    order."""


def name_problem(value: Any) -> Optional[str]:
    """Why `value` cannot be one file name inside a folder ('holds a path separator', ...), or None when it can."""
    if not isinstance(value, str):
        return f"is a {type(value).__name__}, not text"
    if not value:
        return "is empty"
    if value.startswith(SEPARATORS) or os.path.isabs(value):
        return "is an absolute path"
    if any(separator in value for separator in SEPARATORS):
        return "holds a path separator"
    if value in (os.curdir, os.pardir):
        return f"is {value!r}, a folder of the path"
    if any(unicodedata.category(character) == CONTROL_CATEGORY for character in value):
        return "holds a control character"
    return None


def check_name(value: Any, what: str, source: PathLike) -> str:
    """`value` when it can be a file name; else an `UnsafeNameError` naming `source` (the file it was read from),
    `what` it is ('video id', 'expression id', ...) and the id."""
    problem = name_problem(value)
    if problem is not None:
        raise UnsafeNameError(f"{source}: {what} {value!r} {problem}; ids become file names, so they may not be paths")
    return value


def child_path(folder: PathLike, *names: str) -> Path:
    """`folder / names[0] / names[1] ...`, checked to lie inside `folder` (compared after resolving `..`, without
    following links: a link the user made inside the folder is theirs to make)."""
    path = Path(folder).joinpath(*names)
    base = os.path.normpath(os.path.abspath(folder))
    full = os.path.normpath(os.path.abspath(path))
    if full == base or os.path.commonpath([base, full]) != base:
        raise UnsafeNameError(f"{path} would lie outside {folder}: the names {list(names)} are not file names")
    return path


def natural_key(name: str) -> Tuple[Any, ...]:
    """The sort key of `name` with its digit runs compared as numbers: `frame_2` < `frame_10`, `9.jpg` < `10.jpg`.

    Text and numbers alternate from a text part (maybe empty), so two keys compare part by part of one type."""
    return tuple(int(part) if index % 2 else part for index, part in enumerate(_DIGIT_RUNS.split(name)))


def natural_sorted(paths: Iterable[PathLike], where: PathLike) -> List[Path]:
    """The files `paths` in the natural order of their names; two names of one key (`1.jpg` and `01.jpg`) have no
    order, and are an `UnsafeNameError` naming them and `where` (their folder)."""
    keyed = sorted(((natural_key(Path(path).name), Path(path)) for path in paths), key=lambda pair: pair[0])
    for (key, first), (next_key, second) in zip(keyed, keyed[1:]):
        if key == next_key:
            raise UnsafeNameError(f"{where}: frames {first.name!r} and {second.name!r} have the same number, so their "
                                  f"order is ambiguous; rename them (e.g. to zero-padded numbers)")
    return [path for _, path in keyed]
