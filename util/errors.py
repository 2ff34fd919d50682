"""User errors: one line on stderr and an exit code; tracebacks only with `--debug` (or for real bugs).

Every entry point runs as `sys.exit(run_main(main))`. An error the user can fix (a bad option, a
missing or malformed file, a wrong device, a full disk) is printed as `error: <message>` naming the
option or file; the exit code is 2 for options (as argparse) and 1 for data. Anything else is a bug
and keeps its traceback. Warnings of the data (`DataWarning`) are printed as `warning: <message>`.
"""
import errno
import shutil
import signal
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

EXIT_DATA = 1
EXIT_OPTION = 2
DEBUG_FLAG = "--debug"
# A DataLoader worker's exception is re-raised in the main process with this line and the worker's
# traceback in its message; the original message is the traceback's last line.
WORKER_TRACEBACK_MARKER = "Original Traceback"
# OS errors that are the user's to fix: the message names the path.
USER_OS_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


class UserError(Exception):
    """An error the user can fix; the message names the option or file and what was expected."""

    exit_code = EXIT_DATA
    prefix = "error: "  # what `run_main` prints before the message


class OptionError(UserError, ValueError):
    """A bad option or combination of options (exit code 2, like argparse's own errors)."""

    exit_code = EXIT_OPTION


class WriteError(OSError, UserError):
    """A file that cannot be written (disk full, read-only, no permission); names the file."""

    def __str__(self) -> str:
        return self.strerror  # without OSError's "[Errno N]" prefix


class Interrupted(UserError):
    """SIGINT or SIGTERM stopped the run cleanly; the exit code is 128 + the signal number, as a shell reports."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class StoppedByPeer(UserError):
    """This process of a distributed run stops because another one failed, or found what makes every process
    stop; that one prints the `error:` line, so this one's line has no `error:` and the cause stands out."""

    prefix = ""


class DataWarning(UserWarning):
    """Something in the data a user should know about (printed as one `warning:` line)."""


def one_line(error: BaseException) -> str:
    """The message of `error` on one line (a DataLoader worker's re-raised error keeps only its own message)."""
    message = str(error)
    if WORKER_TRACEBACK_MARKER in message:
        last = [line for line in message.splitlines() if line.strip()][-1]
        message = last.partition(": ")[2] or last  # "module.ErrorClass: message"
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def print_line(text: str) -> None:
    """`text` and its newline to stderr in one write: under `PYTHONUNBUFFERED` (or `python -u`) `print` writes
    the two apart, and another process on the same terminal (the other ranks) can write between them."""
    sys.stderr.write(f"{text}\n")
    sys.stderr.flush()


_default_format_warning = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    if issubclass(category, DataWarning):
        return f"warning: {message}\n"
    return _default_format_warning(message, category, filename, lineno, line)


def run_main(main: Callable[[Optional[Sequence[str]]], Any], argv: Optional[Sequence[str]] = None) -> int:
    """Run `main(argv)` and return the exit code: `main`'s int result (0 otherwise), or that of a user error
    printed as one line on stderr. With `--debug` in `argv` the error propagates with its traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    warnings.formatwarning = _format_warning
    try:
        result = main(argv)
    except (UserError,) + USER_OS_ERRORS as error:
        if debug:
            raise
        print_line(f"{getattr(error, 'prefix', UserError.prefix)}{one_line(error)}")
        return getattr(error, "exit_code", EXIT_DATA)
    except KeyboardInterrupt:
        if debug:
            raise
        print_line("error: interrupted")
        return 128 + signal.SIGINT
    finally:
        warnings.formatwarning = _default_format_warning
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def write_error(path: Union[str, Path], error: OSError) -> WriteError:
    """A `WriteError` naming `path`; a full disk says so, with the space left."""
    reason = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = shutil.disk_usage(Path(path).parent).free
            reason = f"no space left on the device ({free / 2 ** 20:.1f} MiB free)"
        except OSError:
            reason = "no space left on the device"
    return WriteError(error.errno, f"cannot write {path}: {reason}")


def check_device(device: str):
    """`torch.device(device)`, or an OptionError when the machine cannot run on it."""
    import torch

    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise OptionError(f"--device {device}: not a device; expected cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError(f"--device {device}: CUDA is not available on this machine; pass --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise OptionError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return resolved
