"""Speak the text expressions of a referring dataset: one WAV and one MFCC-39 `.npy` per expression, named as the
loaders read them.

    python scripts/speak_expressions.py --format {ytvos,a2d,jhmdb} --annotations FILE --wav_dir DIR
        --feature_dir DIR [--voices en,en-us,... | --speakers {voices,varied,unseen}] [--workers N] [--seed S]

Formats and names (the official ones, docs/protocol.md §6):

    ytvos  meta_expressions.json (Ref-YouTube-VOS; Ref-DAVIS17 uses the same)  -> <video>_<exp_id>
    a2d    a2d_annotation.txt (header video_id,instance_id,query)              -> <video>_<instance_id>
    jhmdb  jhmdb_annotation.txt (header video_id,query)                        -> <video>

`--wav_dir` gets `<name>.wav` (16-bit PCM, 22050 Hz, eSpeak NG as the demo data) and `manifest.json`
(`{name: {"text", "voice", "rate_wpm", "seconds"}}`, merged with the entries already there); `--feature_dir`
gets `<name>.npy`, float64 `(frames, 39)`, equal to what `scripts/extract_mfcc.py` makes of the WAV. Pass the
folders as `--rvos_audio_path` / `--a2d_audio_path` (features) or `--rvos_wav_path` / `--a2d_wav_path`
(recordings, features computed on the fly).

Each expression's voice, rate and eSpeak NG seed are drawn from `--voices` by a random stream of its own
(`--seed` and its name), so they do not depend on the order, the workers or what was already done. The samples
themselves do: eSpeak NG keeps waveform state from one synthesis to the next inside a process that neither its
seed nor a re-initialisation resets, so the same text, style and seed spoken twice in one process gives two
renditions (lengths a few samples apart, correlation about 0.5 at the best shift; measured in eSpeak NG through
espeakng-loader). A run repeats its recordings exactly only with the same expressions in the same order per
process; runs that split the work differently get other renditions of the same styles. `--speakers varied` draws instead
from the training speaker pool of datasets/speech.py (every training accent with every training voice
variant) and draws a pitch, pitch range and word gap too; `--speakers unseen` does the same with the unseen
pool (accents and variants kept out of the training pool). Their manifest entries record the whole style:
`{"text", "voice", "rate_wpm", "pitch", "pitch_range", "word_gap", "seed", "seconds"}`.

Resumable: an expression whose WAV and features both exist (and whose manifest entry, if any, has the same
text) is skipped. Every file is written to a temporary name and renamed, the features after the WAV, so a
killed run leaves only complete files; SIGINT / SIGTERM stop after the expressions under way (exit 128 +
signal), and a SIGKILL may leave a hidden `.<name>.*.tmp`, which the next run removes.
A bad row (no text, a name that is not a file name, a repeated name) is reported with its line number and
skipped; the exit code is then 1, after everything else is done.
"""
import argparse
import csv
import glob
import json
import re
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import soundfile
from tqdm import tqdm

from datasets.formats import JSONObject, duplicate_keys
from datasets.speech import (ENGLISH_VOICES, TRAINING_VOICES, UNSEEN_VOICES, SpeechJob, SpeechStyle,
                             check_voices, draw_style, parse_voices, speak_to_files)
from scripts.extract_mfcc import available_cpus
from util.misc import atomic_json_dump
from util.names import child_path, name_problem

FORMATS = ("ytvos", "a2d", "jhmdb")
MANIFEST_NAME = "manifest.json"
WAV_SUFFIX, FEATURE_SUFFIX = ".wav", ".npy"
TEMP_SUFFIX = ".tmp"  # what util.misc.atomic_write appends to its temporary files
MAX_JOBS_PER_CHUNK = 8  # as scripts/extract_mfcc.py: amortises the inter-process round trip
CHUNKS_PER_WORKER = 4
SIGTERM_EXIT = 128 + signal.SIGTERM
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# --speakers: "voices" draws from --voices at eSpeak NG's default prosody; "varied" and "unseen" draw from a
# speaker pool with a prosody per expression.
SPEAKER_POOLS = {"varied": TRAINING_VOICES, "unseen": UNSEEN_VOICES}
SPEAKER_MODES = ("voices",) + tuple(SPEAKER_POOLS)


@dataclass
class Expression:
    """One expression to speak: its file name without suffix, its text, and where it was read."""

    name: str
    text: str
    line: Optional[int]


@dataclass
class BadRow:
    line: Optional[int]
    reason: str


class AnnotationError(ValueError):
    """The annotation file as a whole cannot be read (not one bad row)."""


# ----------------------------------------------------------------------------- reading the annotations
def _json_line(text: str, video: str, exp_id: Optional[str] = None) -> Optional[int]:
    """Best effort: the line of `video` (of its expression `exp_id`) in the raw JSON text (json keeps no
    positions): the first `"<video>":` and the first `"<exp_id>":` after it."""
    match = re.search(re.escape(json.dumps(video)) + r"\s*:", text)
    if match is None:
        return None
    found = None if exp_id is None else re.compile(re.escape(json.dumps(exp_id)) + r"\s*:").search(text, match.end())
    position = found.start() if found else match.start()
    return text.count("\n", 0, position) + 1


def read_ytvos(path: Path) -> Tuple[List[Expression], List[BadRow]]:
    """`meta_expressions.json` -> expressions `<video>_<exp_id>` in file order, and the bad ones."""
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text, object_pairs_hook=JSONObject)  # notes repeated ids (json keeps the last)
    except (OSError, UnicodeDecodeError) as error:
        raise AnnotationError(f"cannot read {path}: {error}") from None
    except json.JSONDecodeError as error:
        raise AnnotationError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(videos, dict):
        raise AnnotationError(f"{path}: expected an object with a 'videos' mapping (a meta_expressions.json)")
    expressions, bad = [], []
    for video in duplicate_keys(videos):
        bad.append(BadRow(_json_line(text, video), f"video {video!r} appears twice"))
    for video, info in videos.items():
        entries = info.get("expressions") if isinstance(info, dict) else None
        if video in duplicate_keys(videos):
            continue
        if not isinstance(entries, dict):
            bad.append(BadRow(_json_line(text, video), f"video {video!r} has no 'expressions' mapping"))
            continue
        for exp_id, entry in entries.items():
            line = _json_line(text, video, exp_id)
            if exp_id in duplicate_keys(entries):
                bad.append(BadRow(line, f"video {video!r} expression {exp_id!r} appears twice"))
                continue
            phrase = entry.get("exp") if isinstance(entry, dict) else None
            if not isinstance(phrase, str) or not phrase.strip():
                bad.append(BadRow(line, f"video {video!r} expression {exp_id!r} has no 'exp' text"))
                continue
            expressions.append(Expression(f"{video}_{exp_id}", phrase.strip(), line))
    return expressions, bad


def _csv_rows(path: Path, columns: Sequence[str]) -> Iterator[Tuple[int, Optional[List[str]], Optional[str]]]:
    """(line, fields, None) or (line, None, why) per data row of a CSV whose header is `columns`.

    The last column is free text: extra fields of a row (an unquoted comma in the text) are joined back into it.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a BOM is not part of the header
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or [h.strip() for h in header] != list(columns):
                raise AnnotationError(f"{path}:1: expected the header {','.join(columns)}, got "
                                      f"{','.join(header) if header else 'an empty file'}")
            line = reader.line_num
            for row in reader:
                first, line = line + 1, reader.line_num  # a quoted field may span lines: report the first
                if not any(field.strip() for field in row):
                    continue
                if len(row) < len(columns):
                    yield first, None, f"expected {len(columns)} fields ({','.join(columns)}), got {len(row)}"
                    continue
                fields = row[:len(columns) - 1] + [",".join(row[len(columns) - 1:])]
                yield first, [field.strip() for field in fields], None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise AnnotationError(f"cannot read {path}: {error}") from None


def read_csv_expressions(path: Path, columns: Sequence[str]) -> Tuple[List[Expression], List[BadRow]]:
    """A2D (`video_id,instance_id,query` -> `<video>_<instance_id>`) or JHMDB (`video_id,query` -> `<video>`)."""
    expressions, bad = [], []
    for line, fields, reason in _csv_rows(path, columns):
        if fields is None:
            bad.append(BadRow(line, reason))
            continue
        *ids, query = fields
        if not all(ids):
            bad.append(BadRow(line, f"empty {' or '.join(columns[:-1])}"))
        elif not query:
            bad.append(BadRow(line, f"{'_'.join(ids)} has no query text"))
        else:
            expressions.append(Expression("_".join(ids), query, line))
    return expressions, bad


def read_expressions(annotation_format: str, path: Path) -> Tuple[List[Expression], List[BadRow]]:
    """The expressions of an annotation file and its bad rows (bad names and repeated names included)."""
    if not path.is_file():
        raise AnnotationError(f"annotation file not found: {path}")
    if annotation_format == "ytvos":
        expressions, bad = read_ytvos(path)
    elif annotation_format == "a2d":
        expressions, bad = read_csv_expressions(path, ("video_id", "instance_id", "query"))
    elif annotation_format == "jhmdb":
        expressions, bad = read_csv_expressions(path, ("video_id", "query"))
    else:
        raise ValueError(f"unknown format {annotation_format!r}; expected one of {FORMATS}")
    kept, first_line = [], {}
    for expression in expressions:
        problem = name_problem(expression.name)
        reason = None if problem is None else f"{expression.name!r} is not a file name: it {problem}"
        if reason is None and expression.name in first_line:
            where = f" at line {first_line[expression.name]}" if first_line[expression.name] else ""
            reason = f"{expression.name} already named{where}"
        if reason is not None:
            bad.append(BadRow(expression.line, reason))
            continue
        first_line[expression.name] = expression.line
        kept.append(expression)
    return kept, bad


# ----------------------------------------------------------------------------- the work
def read_manifest(wav_dir: Path) -> Dict[str, dict]:
    path = wav_dir / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AnnotationError(f"{path}: not a readable manifest ({error}); remove it to start again") from None
    if not isinstance(manifest, dict):
        raise AnnotationError(f"{path}: expected a mapping of names to entries; remove it to start again")
    return manifest


def remove_stale_temporaries(paths: Sequence[Path]) -> int:
    """Remove what a killed run's atomic writes left: `.<name>.*.tmp` beside each path. Returns how many."""
    removed = 0
    for path in paths:
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*{TEMP_SUFFIX}"):
            stale.unlink(missing_ok=True)
            removed += 1
    return removed


def manifest_entry(text: str, style: SpeechStyle, seconds: float, full_style: bool) -> dict:
    """A manifest entry: text, voice, rate (`full_style`: every field of the style) and seconds."""
    spoken = style.as_record() if full_style else {"voice": style.voice, "rate_wpm": style.rate_wpm}
    return {"text": text, **spoken, "seconds": round(seconds, 3)}


def speaker_voices(args) -> Tuple[str, ...]:
    """The voices the expressions draw from: the pool of --speakers, else --voices (default ENGLISH_VOICES)."""
    return SPEAKER_POOLS.get(args.speakers) or args.voices or ENGLISH_VOICES


def plan(expressions: Sequence[Expression], args, manifest: Dict[str, dict]) -> Tuple[List[SpeechJob], Dict[str, dict]]:
    """(jobs to run, manifest entries of the finished expressions that are skipped)."""
    jobs, skipped = [], {}
    voices = speaker_voices(args)
    vary_prosody = args.speakers in SPEAKER_POOLS
    for expression in expressions:
        style = draw_style(expression.name, args.seed, voices, vary_prosody)
        wav_path = child_path(args.wav_dir, f"{expression.name}{WAV_SUFFIX}")
        feature_path = child_path(args.feature_dir, f"{expression.name}{FEATURE_SUFFIX}")
        known = manifest.get(expression.name)
        same_text = not isinstance(known, dict) or known.get("text") == expression.text
        if wav_path.is_file() and feature_path.is_file() and same_text:
            if isinstance(known, dict):
                skipped[expression.name] = known
            else:  # finished by a run killed before it wrote the manifest: the same draw made it
                skipped[expression.name] = manifest_entry(expression.text, style,
                                                          soundfile.info(str(wav_path)).duration, vary_prosody)
            continue
        jobs.append(SpeechJob(expression.name, expression.text, style, wav_path, feature_path))
    return jobs, skipped


class StopRequest:
    """SIGINT / SIGTERM ask to stop after the expression under way rather than raise at once: an exception
    raised while eSpeak NG calls back into Python is printed and dropped by ctypes, so the signal would be lost."""

    def __init__(self):
        self.signal: Optional[int] = None

    def __call__(self, signum: int, frame) -> None:
        self.signal = signum


def _worker_init() -> None:
    # Workers ignore the signals: the main process stops handing out work and waits for what is under way.
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def run_jobs(jobs: Sequence[SpeechJob], workers: int, entries: Dict[str, dict],
             stop: Optional[StopRequest] = None, full_style: bool = False) -> List[Tuple[SpeechJob, str]]:
    """Speak every job (in `workers` processes; eSpeak NG is process-global state), adding the manifest entry of
    each finished one to `entries` as it finishes (`full_style`: with the whole speech style). Returns the
    failures; raises SystemExit(128 + signal) once the jobs under way are done when `stop` was signalled."""
    failures = []
    workers = min(workers, len(jobs))
    pool = ProcessPoolExecutor(workers, initializer=_worker_init) if workers > 1 else None
    try:
        if pool:
            chunksize = max(1, min(MAX_JOBS_PER_CHUNK, len(jobs) // (workers * CHUNKS_PER_WORKER)))
            results = pool.map(speak_to_files, jobs, chunksize=chunksize)
        else:
            results = map(speak_to_files, jobs)
        with tqdm(total=len(jobs), desc="speech", unit="expression", file=sys.stderr) as bar:
            for job, (_, seconds, reason) in zip(jobs, results):
                bar.update()
                if reason is None:
                    entries[job.key] = manifest_entry(job.text, job.style, seconds, full_style)
                else:
                    failures.append((job, reason))
                    bar.write(f"error: {job.key}: {reason}", file=sys.stderr)
                if stop is not None and stop.signal is not None:
                    bar.write(f"stopping on signal {stop.signal}; a rerun continues", file=sys.stderr)
                    raise SystemExit(128 + stop.signal)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)  # jobs under way finish their (atomic) writes
    return failures


# ----------------------------------------------------------------------------- command line
def get_parser() -> argparse.ArgumentParser:
    # A data-making utility, not a model entry point, so it has its own small parser.
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", required=True, choices=FORMATS, dest="annotation_format",
                        help="ytvos: meta_expressions.json; a2d: a2d_annotation.txt; jhmdb: jhmdb_annotation.txt")
    parser.add_argument("--annotations", required=True, type=Path, help="the annotation file")
    parser.add_argument("--wav_dir", required=True, type=Path, help="where <name>.wav and manifest.json go")
    parser.add_argument("--feature_dir", required=True, type=Path, help="where <name>.npy (MFCC-39) go")
    parser.add_argument("--voices", type=parse_voices, default=None,
                        help=f"comma-separated eSpeak NG voices to draw from (default: {','.join(ENGLISH_VOICES)})")
    parser.add_argument("--speakers", choices=SPEAKER_MODES, default="voices",
                        help="voices: draw from --voices at eSpeak NG's default prosody; varied: from the "
                             f"{len(TRAINING_VOICES)} voices of the training speaker pool, with a pitch, pitch range "
                             f"and word gap per expression; unseen: the same from the {len(UNSEEN_VOICES)} voices "
                             "of the unseen pool (no accent nor variant of the training pool)")
    parser.add_argument("--workers", type=int, default=available_cpus(),
                        help="worker processes (default: the CPUs available); 1 runs in this process")
    parser.add_argument("--seed", type=int, default=0, help="seeds every expression's draw of voice and rate")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    if args.workers < 1:
        print(f"error: --workers must be at least 1, got {args.workers}", file=sys.stderr)
        return 2
    if args.seed < 0:
        print(f"error: --seed must be >= 0, got {args.seed}", file=sys.stderr)
        return 2
    if args.voices is not None and args.speakers != "voices":
        print(f"error: --voices chooses the voices of --speakers voices; --speakers {args.speakers} draws from "
              f"its speaker pool", file=sys.stderr)
        return 2
    try:
        check_voices(speaker_voices(args))
        expressions, bad = read_expressions(args.annotation_format, args.annotations)
        manifest = read_manifest(args.wav_dir)
    except (AnnotationError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for row in bad:
        where = f"{args.annotations}:{row.line}" if row.line else str(args.annotations)
        print(f"error: {where}: {row.reason}; skipped", file=sys.stderr)

    jobs, skipped = plan(expressions, args, manifest)
    remove_stale_temporaries([path for job in jobs for path in (job.wav_path, job.feature_path)]
                             + [args.wav_dir / MANIFEST_NAME])
    args.wav_dir.mkdir(parents=True, exist_ok=True)
    args.feature_dir.mkdir(parents=True, exist_ok=True)
    entries = dict(manifest)
    entries.update(skipped)
    stop = StopRequest()
    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    try:
        failures = run_jobs(jobs, args.workers, entries, stop, full_style=args.speakers in SPEAKER_POOLS)
    finally:
        # Also when interrupted: the manifest records whatever finished.
        atomic_json_dump(dict(sorted(entries.items())), args.wav_dir / MANIFEST_NAME, indent=1)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(f"{len(jobs) - len(failures)} spoken, {len(skipped)} skipped (already done), {len(bad)} bad row(s), "
          f"{len(failures)} failed; manifest {args.wav_dir / MANIFEST_NAME}", file=sys.stderr)
    return 1 if bad or failures else 0


if __name__ == "__main__":
    sys.exit(main())
