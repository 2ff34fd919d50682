"""Running an entry point's `main` as its script does, and the one-line user error every bad input must give."""
from typing import Callable, List, Sequence, Tuple

from util.errors import run_main


def user_error(capsys, main: Callable, argv: Sequence) -> Tuple[int, List[str], str]:
    """Run `main` as its script does; returns (exit code, the `error:` lines, all of stderr)."""
    capsys.readouterr()
    try:
        code = run_main(main, [str(a) for a in argv])
    except SystemExit as exit_info:  # argparse errors exit at parse time
        code = exit_info.code
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.startswith("error:")], err


def assert_user_error(capsys, main: Callable, argv: Sequence, code: int, *named: str) -> str:
    """Exactly one `error:` line naming everything in `named`, no traceback, exit code `code`."""
    rc, errors, err = user_error(capsys, main, argv)
    assert rc == code and len(errors) == 1 and "Traceback" not in err, err
    for text in named:
        assert text in errors[0], (text, errors[0])
    return errors[0]
