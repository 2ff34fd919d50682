"""Speak a list of phrases with eSpeak NG and write one 16-bit WAV (22050 Hz, mono) per phrase.

    python scripts/synthesize_speech.py OUT_DIR [PHRASE ...] [--phrases FILE] [--voice en] [--speed WPM]

Phrases come from the arguments and/or a UTF-8 text file with one phrase per line (blank lines and lines
starting with '#' are skipped). Phrase i goes to `OUT_DIR/<i, 4 digits>_<first words>.wav`, written to a
temporary file and renamed. For test and demo data: feed the folder to `scripts/extract_mfcc.py`.
"""
import argparse
import re
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from tqdm import tqdm

from datasets.speech import DEFAULT_VOICE, synthesize, write_wav
from util.config import ArgumentParser
from util.errors import run_main

MAX_NAME_CHARS = 40  # of the phrase's words kept in the file name
COMMENT_PREFIX = "#"


def get_parser() -> argparse.ArgumentParser:
    # A utility with positional arguments, so it has its own small parser rather than the model's.
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="where the WAV files go (created if missing)")
    parser.add_argument("phrases", nargs="*", help="phrases to speak")
    parser.add_argument("--phrases", dest="phrases_file", type=Path,
                        help="text file with one phrase per line (added after the positional phrases)")
    parser.add_argument("--voice", default=DEFAULT_VOICE, help="eSpeak NG voice, e.g. en, en-us, en+f3")
    parser.add_argument("--speed", type=int, default=None, help="words per minute (80-450; default 175)")
    return parser


def read_phrases(path: Path) -> List[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read phrases from {path}: {error}") from None
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith(COMMENT_PREFIX)]


def file_name(index: int, phrase: str) -> str:
    """`0003_the_red_car.wav`: the index keeps names unique and ordered, the words make them readable."""
    words = re.sub(r"[^0-9a-z]+", "_", phrase.lower()).strip("_")[:MAX_NAME_CHARS].rstrip("_")
    return f"{index:04d}_{words}.wav" if words else f"{index:04d}.wav"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    phrases = [p.strip() for p in args.phrases if p.strip()]
    if args.phrases_file is not None:
        try:
            phrases += read_phrases(args.phrases_file)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    if not phrases:
        print("error: no phrases given (pass them as arguments or with --phrases FILE)", file=sys.stderr)
        return 2
    for index, phrase in enumerate(tqdm(phrases, desc="speech", unit="phrase", file=sys.stderr)):
        try:
            samples, sample_rate = synthesize(phrase, voice=args.voice, speed=args.speed)
        except ValueError as error:  # unknown voice or speed: every phrase would fail the same way
            print(f"error: {error}", file=sys.stderr)
            return 2
        write_wav(args.out_dir / file_name(index, phrase), samples, sample_rate)
    print(f"wrote {len(phrases)} WAV file(s) to {args.out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
