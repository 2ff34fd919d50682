"""Outputs never replace inputs, and are writable before any work.

An output path (`--save_path`, `--out`, `--png_dir`, `--visualize`, `--output_dir`) that is, or lies inside, an
input (a dataset root, `--video_dir`, `--model_path`, `--audio`, the results being scored) would overwrite what the
run reads: `check_outputs_apart` refuses it, naming both options. A folder output whose files are named after the
inputs (`--visualize DIR` writes `DIR/<video folder name>/<frame>.jpg`) must not be that input's parent either. Paths are
compared resolved (links followed: a link into the dataset is the dataset). `check_writable` creates an output
folder and writes a probe file there, so that an unwritable folder fails at start, not after an epoch;
`file_problem` says why an input file cannot be read (absent, a folder, a FIFO or device).
"""
import os
import tempfile
from pathlib import Path
from typing import Mapping, Optional, Union

from util.errors import OptionError

PathLike = Union[str, Path]


def _resolved(path: PathLike) -> str:
    return os.path.realpath(os.path.abspath(path))


def lies_in(path: PathLike, folder: PathLike) -> bool:
    """`path` is `folder` or lies inside it (both resolved)."""
    inner, outer = _resolved(path), _resolved(folder)
    return os.path.commonpath([inner, outer]) == outer


def check_outputs_apart(outputs: Mapping[str, PathLike], inputs: Mapping[str, PathLike],
                        named_after: Optional[Mapping[str, str]] = None) -> None:
    """An OptionError when an output (`{option: path}`, empty paths skipped) is, or lies inside, one of `inputs`
    (`{option: path}`), or when an output folder whose files go to `<folder>/<an input's name>/` (`named_after`:
    `{output option: input option}`) is that input's parent; checked before any work."""
    for output_option, output in outputs.items():
        for input_option, source in inputs.items():
            if not output or not source:
                continue
            if lies_in(output, source):
                where = "is" if _resolved(output) == _resolved(source) else "lies inside"
                raise OptionError(f"{output_option} {output} {where} {input_option} {source}, an input: outputs never "
                                  f"replace inputs; choose another path")
            if (named_after or {}).get(output_option) == input_option and _resolved(Path(_resolved(source)).parent) == \
                    _resolved(output):
                raise OptionError(f"{output_option} {output} holds {input_option} {source}: its files would replace "
                                  f"the input's; choose another folder")


def file_problem(path: PathLike) -> Optional[str]:
    """Why `path` cannot be read as a file ('does not exist', 'is a folder', 'is not a regular file ...'), or None
    when it can: a FIFO or a device would be read forever or not at all."""
    path = Path(path)
    if path.is_file():
        return None
    if path.is_dir():
        return "is a folder, not a file"
    if path.exists():
        return "is not a regular file (a FIFO, a socket or a device); pass a file"
    return "the file does not exist"


def check_writable(option: str, folder: PathLike) -> None:
    """Create `folder` (the output folder of `option`) and write a probe file there: an OptionError naming the
    option when it cannot be written."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise OptionError(f"{option} {folder}: cannot write there ({error.strerror or error})") from None
