"""scripts/benchmark_precision.py on a tiny clip: every mode asked for is timed and compared with float32 (no
timing assertions)."""
import json
from pathlib import Path

from scripts import benchmark_precision


def test_precision_benchmark_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "precision.json"
    assert benchmark_precision.main(["--frames", "2", "--size", "64x96", "--repeats", "2", "--modes", "fp32", "amp",
                                     "--json", str(out)]) == 0
    modes = json.loads(out.read_text())["modes"]
    assert set(modes) == {"fp32", "amp"}
    for row in modes.values():
        assert 0 < row["min_s"] <= row["median_s"] <= row["max_s"] and row["speedup"] > 0 and row["paired_speedup"] > 0
    assert modes["fp32"]["speedup"] == 1.0 and "mask_iou" not in modes["fp32"]
    for key in ("logit_sign_agreement", "mask_pixel_agreement", "mask_iou"):
        assert 0.5 < modes["amp"][key] <= 1.0, key  # bfloat16 rounding moves few logits across 0
