"""scripts/gpu_check.py on the CPU: the step runner, the command runner, the report writer, the result
checks, and the one-line skip without CUDA. (The steps themselves need a GPU: `make gpu-check`.)"""
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from data_factory import dataset_args
from datasets import build_dataset
from datasets.formats import read_palette_png
from scripts import gpu_check

ROOT = Path(__file__).resolve().parents[1]
FAST_GRACE_S = 0.1


def figures() -> dict:
    """The shape of scripts/benchmark.py's JSON on CUDA (two training sections, the max-frames search)."""
    def row(median: float, ratio: float, **extra) -> dict:
        return {"times_s": [median], "median_s": median, "ratio": ratio, "paired_ratio": ratio, **extra}

    memory = {"peak_mib": 900.0, "before_mib": 300.0, "total_peak_mib": 1200.0}
    training = {name: row(0.5, 1.5, memory=memory) for name in ("default", "checkpoint_activations", "amp")}
    training["baseline"] = row(0.33, 1.0, memory=memory)
    return {
        "config": {"frames": 36, "train_frames": 8, "size": "300x540",
                   "section_frames": {"inference": 36, "training": 8, "training_36": 36}},
        "inference": {"model": row(0.5, 0.8, clips_per_s=2.0, frames_per_s=72.0, memory=memory),
                      "model_bf16": row(0.25, 0.4, clips_per_s=4.0, frames_per_s=144.0, memory=memory),
                      "baseline": row(0.625, 1.0, clips_per_s=1.6, frames_per_s=57.6, memory=memory)},
        "training": training, "training_36": training,
        "max_frames": {"cap_gib": 32.0, "options": {
            "default": {"largest_fitting": 180, "smallest_failing": 190, "complete": True,
                        "probes": [{"frames": 180, "fits": True, "figure": 31000.0},
                                   {"frames": 190, "fits": False, "figure": None}]},
            "checkpoint_activations": {"largest_fitting": 0, "smallest_failing": None, "complete": False,
                                       "probes": [], "error": "RuntimeError: CUDA error | launch"},
            "amp": {"largest_fitting": 144, "smallest_failing": None, "complete": False,
                    "probes": [{"frames": 144, "fits": True, "figure": 20000.0}]}}},
    }


def report(steps: list) -> dict:
    return {"date": "2026-11-25T10:00:00", "device": {"name": "NVIDIA H200", "capability": "9.0", "memory_gib": 139.8,
                                                     "torch": "2.14.1", "cuda": "13.0"},
            "budget_s": 465.0, "seconds": 400.0, "ok": all(s["ok"] for s in steps), "steps": steps}


# ---------------------------------------------------------------------------------------------- runner
def test_runner_continues_after_a_failing_and_a_timing_out_step():
    release = threading.Event()
    limits = {}

    def fine(limit_s: float) -> dict:
        limits["fine"] = limit_s
        return {"value": 1}

    def failing(limit_s: float) -> dict:
        raise ValueError("boom")

    def hanging(limit_s: float) -> dict:
        release.wait(30)
        return {"value": "late"}

    def failing_softly(limit_s: float) -> dict:
        return {"ok": False, "error": "2 tests failed", "failed": 2}

    def last(limit_s: float) -> dict:
        limits["last"] = limit_s
        return {}

    steps = [gpu_check.Step("fine", fine, 5.0), gpu_check.Step("failing", failing, 5.0),
             gpu_check.Step("hanging", hanging, 0.3), gpu_check.Step("failing_softly", failing_softly, 5.0),
             gpu_check.Step("last", last, 1000.0)]
    lines = []
    begin = time.monotonic()
    try:
        records = gpu_check.run_steps(steps, deadline=time.monotonic() + 60, grace_s=FAST_GRACE_S, emit=lines.append)
    finally:
        release.set()
    assert time.monotonic() - begin < 5
    assert [r["step"] for r in records] == ["fine", "failing", "hanging", "failing_softly", "last"]
    assert [r["ok"] for r in records] == [True, False, False, False, True]
    assert records[0]["value"] == 1 and "error" not in records[0]
    assert records[1]["error"] == "ValueError: boom"
    assert records[2]["error"] == "timed out after 0 s" and records[2]["seconds"] < 2
    assert records[3]["error"] == "2 tests failed" and records[3]["failed"] == 2
    assert all(isinstance(r["seconds"], float) for r in records)
    assert [json.loads(line) for line in lines] == records  # one JSON line per step, as recorded
    assert limits["fine"] == 5.0 and 55 < limits["last"] <= 60  # min(budget, time left)


def test_runner_records_steps_that_find_no_time_left():
    ran = []
    steps = [gpu_check.Step("a", lambda limit_s: ran.append("a") or {}, 5.0),
             gpu_check.Step("b", lambda limit_s: ran.append("b") or {}, 5.0)]
    records = gpu_check.run_steps(steps, deadline=time.monotonic() - 1, emit=lambda line: None)
    assert ran == []
    no_time = "no time left before the global deadline"
    assert [(r["step"], r["ok"], r["error"]) for r in records] == [("a", False, no_time), ("b", False, no_time)]


def test_printed_line_leaves_out_the_bulky_parts():
    record = {"step": "benchmark", "ok": True, "seconds": 1.0, "fps_model": 72.0, "figures": figures()}
    assert json.loads(gpu_check.summary_line(record)) == {"step": "benchmark", "ok": True, "seconds": 1.0,
                                                          "fps_model": 72.0}


# ---------------------------------------------------------------------------------------------- commands
CHILD_AND_HANG = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
open(sys.argv[1], "w").write(str(child.pid))
print("started", flush=True)
time.sleep(60)
"""


def process_gone(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        return True
    return any(line.startswith("State:") and "Z" in line.split()[1] for line in status.read_text().splitlines())


def test_command_timeout_kills_the_whole_process_group(tmp_path: Path):
    pid_file = tmp_path / "child.pid"
    begin = time.monotonic()
    with pytest.raises(gpu_check.StepTimeout, match=r"timed out after 2 s; output ends:\nstarted"):
        gpu_check.run_command([sys.executable, "-c", CHILD_AND_HANG, str(pid_file)], 2.0, tmp_path / "log.txt")
    assert time.monotonic() - begin < 10
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while not process_gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process_gone(child), "the grandchild survived the timeout"


def test_command_result_has_the_exit_status_and_output(tmp_path: Path):
    result = gpu_check.run_command([sys.executable, "-c", "import sys; print('hello'); sys.exit(3)"], 30.0,
                                   tmp_path / "log.txt")
    assert result.returncode == 3 and result.output_tail.strip() == "hello"
    assert (tmp_path / "log.txt").read_text().strip() == "hello"


# ---------------------------------------------------------------------------------------------- checks
def test_junit_report_is_counted(tmp_path: Path):
    path = tmp_path / "junit.xml"
    path.write_text("""<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="3">
<testcase classname="tests.test_cuda" name="test_a" time="0.1"/>
<testcase classname="tests.test_cuda" name="test_b" time="0.1">
  <failure message="AssertionError: output&#10;more">trace</failure></testcase>
<testcase classname="tests.test_cuda" name="test_c" time="0.0">
  <skipped type="pytest.skip" message="parity fixtures not found"/></testcase>
</testsuite></testsuites>""")
    counted = gpu_check.parse_junit(path)
    assert (counted["total"], counted["passed"], counted["failed"], counted["skipped"]) == (3, 1, 1, 1)
    assert counted["failures"] == [{"name": "tests.test_cuda::test_b", "kind": "failure",
                                    "message": "AssertionError: output"}]
    assert counted["skips"][0]["message"] == "parity fixtures not found"
    counted["skips"] *= 3
    assert gpu_check.problem_summary(counted) == ("failed: tests.test_cuda::test_b (AssertionError: output); "
                                                  "3 skipped: parity fixtures not found")


def write_training_run(output_dir: Path, loss: float, in_sync: bool = True, checkpoint: bool = True) -> None:
    output_dir.mkdir()
    record = {"train_loss": loss, "epoch": 0, **({"ranks_in_sync": True} if in_sync else {})}
    (output_dir / "log.txt").write_text(json.dumps(record) + "\n")
    if checkpoint:
        (output_dir / "checkpoint.pth").write_bytes(b"x")


START = '{"event": "start", "n_parameters": 10, "train_samples": 4, "world_size": 1, "dist_backend": "nccl"}'


def test_training_run_check_passes_a_good_run(tmp_path: Path):
    write_training_run(tmp_path / "out", 1.5)
    record = gpu_check.check_training_run(f"noise\n{START}\nepoch 0: 100%\n", tmp_path / "out", "nccl")
    assert record == {"ok": True, "backend": "nccl", "world_size": 1, "steps": 2, "train_loss": 1.5}


@pytest.mark.parametrize("problem", ["backend", "loss", "not_distributed", "no_checkpoint", "no_start"])
def test_training_run_check_names_what_is_wrong(tmp_path: Path, problem: str):
    write_training_run(tmp_path / "out", float("nan") if problem == "loss" else 1.5,
                       in_sync=problem != "not_distributed", checkpoint=problem != "no_checkpoint")
    output = {"backend": START.replace("nccl", "gloo"), "no_start": "nothing"}.get(problem, START)
    record = gpu_check.check_training_run(output, tmp_path / "out", "nccl")
    expected = {"backend": "backend 'gloo', expected 'nccl'", "loss": "training loss nan",
                "not_distributed": "DDP did not run", "no_checkpoint": "no checkpoint written",
                "no_start": "no start event"}[problem]
    assert record["ok"] is False and expected in record["error"]


# ---------------------------------------------------------------------------------------------- report
def test_report_writer_json_and_markdown_section(tmp_path: Path):
    steps = [{"step": "build", "ok": True, "seconds": 61.2, "arch": "9.0", "extension_has_cuda": True},
             {"step": "cuda_tests", "ok": False, "seconds": 40.0, "error": "tests.test_cuda::test_x: a | b"},
             {"step": "benchmark", "ok": True, "seconds": 250.0, "fps_model": 72.0, "figures": figures()}]
    json_path, markdown = tmp_path / "docs" / "gpu.json", tmp_path / "docs" / "benchmark.md"
    markdown.parent.mkdir()
    markdown.write_text("# Performance\n\nCPU figures.\n")
    gpu_check.write_report(report(steps), json_path, markdown)

    assert json.loads(json_path.read_text()) == report(steps)
    text = markdown.read_text()
    assert text.startswith("# Performance\n\nCPU figures.\n\n" + gpu_check.MARK_START)
    assert text.endswith(gpu_check.MARK_END + "\n")
    assert "NVIDIA H200 (compute capability 9.0, 139.8 GiB)" in text
    assert "| build | yes | 61 | arch 9.0, extension_has_cuda True |" in text
    assert "| cuda_tests | **no** | 40 | tests.test_cuda::test_x: a \\| b |" in text  # a '|' cannot break the table
    assert "| model | 0.5000 | 2.00 | 72.0 | 0.80 | 900 |" in text
    assert "| model_bf16 | 0.2500 | 4.00 | 144.0 | 0.40 | 900 |" in text
    assert "| 8 | default | 0.5000 | 1.50 | 900 | 1200 |" in text
    assert "| 36 | amp | 0.5000 | 1.50 | 900 | 1200 |" in text
    assert "| default | 180 | 190 | 31000 | complete |" in text
    assert "| amp | 144 | - | 20000 | cut short by the time budget |" in text
    assert "| checkpoint_activations | 0 | - | - | failed: RuntimeError: CUDA error \\| launch |" in text
    assert not list(json_path.parent.glob(".*.tmp"))  # atomic writes leave no temporaries

    # a rerun replaces the section and keeps what follows it
    markdown.write_text(markdown.read_text() + "\n## Later notes\n")
    steps[1] = {"step": "cuda_tests", "ok": True, "seconds": 30.0, "passed": 60}
    gpu_check.write_report(report(steps), json_path, markdown)
    text = markdown.read_text()
    assert text.count(gpu_check.MARK_START) == 1 and text.count(gpu_check.MARK_END) == 1
    assert "| cuda_tests | yes | 30 | passed 60 |" in text and "**no**" not in text
    assert text.startswith("# Performance\n\nCPU figures.\n\n")
    assert text.endswith(gpu_check.MARK_END + "\n\n## Later notes\n")


def test_report_without_benchmark_figures(tmp_path: Path):
    steps = [{"step": "benchmark", "ok": False, "seconds": 300.0, "error": "timed out after 300 s", "figures": None}]
    gpu_check.write_report(report(steps), tmp_path / "gpu.json", tmp_path / "benchmark.md")
    text = (tmp_path / "benchmark.md").read_text()
    assert text.startswith(gpu_check.MARK_START) and "| benchmark | **no** | 300 | timed out after 300 s |" in text
    assert "Inference" not in text


def test_headline_figures():
    assert gpu_check.headline(figures()) == {"fps_model": 72.0, "fps_model_bf16": 144.0, "fps_baseline": 57.6,
                                             "max_frames_default": 180, "max_frames_checkpoint_activations": 0,
                                             "max_frames_amp": 144}


# ---------------------------------------------------------------------------------------------- no CUDA
def test_without_cuda_one_line_and_exit_0(tmp_path: Path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # also on a GPU machine: no device visible
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--json", str(tmp_path / "g.json"),
                             "--markdown", str(tmp_path / "b.md"), "--log_dir", str(tmp_path / "logs")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: skipped, no CUDA device")
    assert not any(tmp_path.iterdir())  # nothing written


def test_environment_step_reports_missing_modules(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(gpu_check, "REQUIRED_MODULES", ("json", "no_such_module_wnet"))
    monkeypatch.setattr(gpu_check.shutil, "which", lambda name: None)
    record = gpu_check.GpuCheck(tmp_path).environment(10.0)
    assert record["ok"] is False and record["missing"] == ["no_such_module_wnet"]
    assert record["error"] == "modules missing: no_such_module_wnet; no nvcc"


def test_the_nccl_steps_data_loads_as_ref_youtube_vos(tmp_path: Path):
    """The tiny data of the nccl step (written by the script itself, not by tests/) is a Ref-YouTube-VOS split
    that the training reads: two steps of NCCL_BATCH_SIZE, each square's mask where it was drawn."""
    data = gpu_check.write_tiny_ytvos(tmp_path, gpu_check.NCCL_VIDEOS, gpu_check.NCCL_VIDEO_FRAMES)
    args = dataset_args(dataset_file="ytvos", ytvos_path=data["root"], rvos_audio_path=data["audio_root"],
                        num_frames=gpu_check.NCCL_VIDEO_FRAMES, data_scale=0.1)
    dataset = build_dataset("train", args)
    assert len(dataset) == 2 * gpu_check.NCCL_BATCH_SIZE
    clip, audio, target = dataset.load(0)
    assert clip.shape[0] == gpu_check.NCCL_VIDEO_FRAMES and audio.shape == (39, gpu_check.TINY_AUDIO_FRAMES)
    masks = read_palette_png(Path(data["root"]) / "train" / "Annotations" / "vid000" / "00005.png")
    assert sorted(np.unique(masks)) == [0, 1, 2] and (masks == 1).sum() == (masks == 2).sum() == 64
