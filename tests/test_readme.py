"""The README says what the code does: its data table shows the parser's (official) defaults, and every
listed deviation says what the official code does."""
import re
from pathlib import Path

from main import get_args_parser

README = Path(__file__).resolve().parents[1] / "README.md"
PATH_OPTIONS = ("ytvos_path", "rvos_audio_path", "a2d_path", "a2d_audio_path", "jhmdb_path", "pretrained_weights")


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def test_data_table_shows_the_official_defaults():
    defaults = get_args_parser().parse_args([])
    table = section("Data")
    for option in PATH_OPTIONS:
        assert f"| `--{option} {getattr(defaults, option)}` |" in table, option
    assert "ann/instances_train_sub.json" in table and "ann/instances_test_sub.json" in table


def test_every_deviation_says_what_the_official_does():
    deviations = section("Deviations from the official code")
    items = re.split(r"\n(?=\d+\. \*\*)", deviations)[1:]
    assert len(items) >= 20
    for item in items:
        assert "official" in item, item[:80]
    # the official uses num_frames and (num_frames - 1) // 2, not hard-coded 36 and 17
    assert "hard-codes frame 17" not in deviations and "hard-coded 36" not in deviations
    assert "(num_frames - 1) // 2" in deviations and "reshapes the result with `num_frames`" in deviations
    photometric = next(item for item in items if "Photometric" in item)
    assert "truncated" in photometric and "nothing clipped on the way" in photometric
