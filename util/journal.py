"""Keeping the finished work of an inference run: a journal of finished videos or samples, flushed as each is
made, that an interrupted run continues from (`--resume_results`) when its settings are the same."""
import contextlib
import glob
import json
import os
import signal
import threading
from pathlib import Path
from typing import Dict, Iterator, Optional, Union

from util.config import PARTIAL_SUFFIX
from util.errors import Interrupted, OptionError
from util.misc import atomic_write, remove_stale_temporaries
from util.reporting import log_json

PathLike = Union[str, Path]
# Options the predictions depend on (with the checkpoint): a journal of an unfinished run is resumed only
# when they are the same.
JOURNAL_OPTIONS = ("num_frames", "data_scale", "inference_data_scale", "audio_feature", "audio_sample_rate",
                   "inference_dropout", "dropout", "seed", "audio_speed", "audio_rt60", "audio_noise", "audio_snr_db",
                   "audio_band", "wavelet_threshold", "audio_cmvn", "audio_encoder", "ytvos_split", "amp", "amp_dtype",
                   "compile")
# The input paths the predictions depend on (frames, features, recordings), compared resolved.
JOURNAL_PATHS = ("ytvos_path", "rvos_audio_path", "rvos_wav_path", "a2d_path", "jhmdb_path", "a2d_audio_path",
                 "a2d_wav_path", "audio", "video_dir")
CHANGES_SHOWN = 3  # changed settings named, with their values, when a journal is refused


def journal_settings(args) -> Dict[str, object]:
    """What the results of an inference run depend on: a journal is resumed only with the same."""
    model = Path(args.model_path)
    stat = model.stat() if model.is_file() else None
    return {"model_path": str(model.resolve()), "model_bytes": stat.st_size if stat else None,
            "model_mtime_ns": stat.st_mtime_ns if stat else None,
            **{key: getattr(args, key, None) for key in JOURNAL_OPTIONS},
            **{key: resolved(getattr(args, key, "")) for key in JOURNAL_PATHS}}


def resolved(path: str) -> str:
    """`path` absolute, links followed ('' stays '': an input not given)."""
    return os.path.realpath(path) if path else ""


class ResultJournal:
    """What an inference run has finished, one JSON line per video or sample, flushed to disk as each is
    made: an interrupted or failed run loses nothing, `--resume_results` continues it, and the final output
    replaces it (`finish`). The first line holds the settings; a journal of other settings is refused. The
    file is created with the first finished item, so a run that fails before leaves none."""

    def __init__(self, output: PathLike, settings: Dict[str, object], resume: bool):
        self.path = Path(f"{output}{PARTIAL_SUFFIX}")
        self.settings = settings
        self.done: Dict[str, Dict] = {}
        self.file = None
        for name in (Path(output).name, self.path.name):  # temporary files of a save killed in an earlier run
            remove_stale_temporaries(self.path.parent, glob.escape(name))
        if not self.path.exists():
            return
        valid = self._read()
        if not self.done:
            return  # nothing finished: the next item starts the journal again
        if not resume:
            raise OptionError(f"{self.path} holds {len(self.done)} item(s) an interrupted run finished; pass "
                              f"--resume_results to continue it, or delete it to start again")
        os.truncate(self.path, valid)  # a line cut short by a kill would spoil the next one
        self.file = open(self.path, "a")
        log_json({"resumed": str(self.path), "finished": len(self.done)})

    def _read(self) -> int:
        """Load the finished items; returns the length in bytes of the journal's complete lines."""
        valid = 0
        with open(self.path, "rb") as f:
            for number, line in enumerate(f):
                try:
                    record = json.loads(line) if line.endswith(b"\n") else None
                except json.JSONDecodeError:
                    record = None
                if not isinstance(record, dict) or (number > 0 and "key" not in record):
                    break
                if number == 0 and record.get("settings") != self.settings:
                    saved = record.get("settings") or {}
                    changed = [f"{k} {saved.get(k)!r} then, {self.settings[k]!r} now"
                               for k in sorted(self.settings) if saved.get(k) != self.settings[k]]
                    more = f", and {len(changed) - CHANGES_SHOWN} more" if len(changed) > CHANGES_SHOWN else ""
                    raise OptionError(f"--resume_results: {self.path} was made with other settings "
                                      f"({'; '.join(changed[:CHANGES_SHOWN])}{more}); delete it to start again")
                if number > 0:
                    self.done[record.pop("key")] = record
                valid += len(line)
        return valid

    def add(self, key: str, record: Dict) -> None:
        """Keep `record` as the finished work of `key`, on disk at once."""
        if self.file is None:
            header = json.dumps({"settings": self.settings}) + "\n"
            atomic_write(self.path, lambda tmp: Path(tmp).write_text(header))
            self.file = open(self.path, "a")
        self.done[key] = record
        self.file.write(json.dumps({"key": key, **record}) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def finish(self) -> None:
        """The final output is written: the journal is no longer needed."""
        if self.file is not None:
            self.file.close()
        self.path.unlink(missing_ok=True)


def unfinished_hint(journal: Optional[ResultJournal]) -> str:
    """The end of an error message of a stopped run: where its finished work is kept (empty when nothing is)."""
    if journal is None or not journal.done:
        return ""
    return f"; the {len(journal.done)} finished item(s) are kept in {journal.path}: rerun with --resume_results"


class Terminated(Exception):
    """SIGTERM arrived (raised by `journal_on_interrupt`'s handler, as Python raises KeyboardInterrupt for SIGINT)."""


def _raise_terminated(signum: int, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def journal_on_interrupt(journal: Optional[ResultJournal]) -> Iterator[None]:
    """Ctrl-C or SIGTERM during inference: stop with one line that says where the finished work is kept (a
    handler can only be installed in the main thread; elsewhere SIGTERM keeps its action)."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted("interrupted" + unfinished_hint(journal), signal.SIGINT) from None
    except Terminated:
        raise Interrupted("terminated (SIGTERM)" + unfinished_hint(journal), signal.SIGTERM) from None
    finally:
        if in_main_thread:  # None: a handler installed from outside Python, which cannot be put back
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
