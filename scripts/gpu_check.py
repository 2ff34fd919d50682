"""GPU readiness in one unattended command: `make gpu-check` (= python scripts/gpu_check.py).

    python scripts/gpu_check.py [--budget_s 465] [--steps build cuda_tests nccl benchmark]
                                [--json docs/gpu.json] [--markdown docs/benchmark.md] [--log_dir output/gpu_check]

Runs these steps in order, each within its own time budget and all before a global deadline (8 minutes on
one GPU). Every step prints one JSON line ({"step", "ok", "seconds", ...; "error" when it failed}) and a
failure or a timeout does not stop the next step:

  environment the requirements' modules importable, nvcc found (a report only: the steps run anyway);
  build       the deformable-convolution extension with its CUDA kernels for the present GPU
              (TORCH_CUDA_ARCH_LIST from its compute capability), then a fresh process checks that the
              kernels are in it; later steps fall back to torchvision's deform_conv2d when they are not;
  cuda_tests  pytest tests/test_cuda.py tests/test_dcn.py: DCN CUDA against the CPU extension and
              torchvision, the parity fixtures on CUDA (TF32 off at the CPU tolerances, TF32 on, autocast),
              float16 + grad scaler and bfloat16 training steps. A skipped test counts as a failure here;
  nccl        torchrun --nproc_per_node=1 main.py: two training steps on CUDA with an NCCL process group
              (DDP) on tiny generated data (`write_tiny_ytvos`);
  benchmark   scripts/benchmark.py --device cuda: inference at 36x300x540 (fp32, TF32, bf16), training
              steps at 8 and 36 frames (default, --checkpoint_activations, --amp) and the largest
              --num_frames that trains in 32 GiB with each.

Then everything goes into --json (docs/gpu.json) and a marked "GPU" section of --markdown
(docs/benchmark.md, replaced on a rerun); each step's full output is in --log_dir. Exit status 1 when
a step failed. Without CUDA it prints one line saying so and exits 0. The repository must be installed
(`make install`; in a Python that already has the requirements: `pip install --no-build-isolation --no-deps -e .`).
"""
import argparse
import datetime
import importlib.util
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from util.misc import atomic_json_dump, atomic_write

ROOT = Path(__file__).resolve().parents[1]

GLOBAL_BUDGET_S = 8 * 60 - 15  # 8 minutes of GPU time in all, less time to write the report and start Python
STEP_GRACE_S = 10.0  # a step's thread may take this long past its limit to kill its subprocess and return
OUTPUT_TAIL_CHARS = 2000  # of a failed command's output, in its step's record
MAX_NAMED_FAILURES = 5  # failing tests named in a step's error (all are in the report's "tests")
ENVIRONMENT_BUDGET_S = 30.0
BUILD_BUDGET_S = 180.0
CUDA_TESTS_BUDGET_S = 120.0
NCCL_BUDGET_S = 90.0
BENCHMARK_BUDGET_S = 300.0
# the benchmark's max-frames search stops starting probes this long before the step's limit (a probe at
# hundreds of frames builds a model and runs two steps)
BENCHMARK_TAIL_S = 40.0
MEMORY_CAP_GIB = 32.0  # the official Wnet trains 36-frame clips on 32 GB cards
BENCHMARK_ARGV = ["--device", "cuda", "--frames", "36", "--train_frames", "8", "36", "--size", "300x540",
                  "--repeats", "3", "--max_frames_gib", str(MEMORY_CAP_GIB)]
CUDA_TEST_FILES = ["tests/test_cuda.py", "tests/test_dcn.py"]
# the modules of requirements.txt, requirements/test.txt and requirements/speech.txt (a GPU machine's own
# Python may lack some: carry their wheels there)
REQUIRED_MODULES = ("torchvision", "pytorch_wavelets", "pywt", "numpy", "scipy", "pycocotools", "librosa",
                    "soundfile", "PIL", "tqdm", "h5py", "yaml", "pytest", "espeakng_loader", "av")
# A small model on tiny clips (`write_tiny_ytvos`): the step checks NCCL and DDP, not the model.
NCCL_MODEL = ["--backbone", "resnet18", "--hidden_dim", "48", "--nheads", "4", "--dim_feedforward", "64",
              "--enc_layers", "1", "--dec_layers", "2", "--num_frames", "2", "--num_queries", "2", "--masks",
              "--pretrained_weights", "none"]
NCCL_VIDEOS, NCCL_VIDEO_FRAMES, NCCL_BATCH_SIZE = 1, 2, 2  # 4 samples in batches of 2: two steps
TINY_SIZE = (24, 32)  # height, width of the tiny clips' frames
TINY_AUDIO_FRAMES, MFCC_DIM = 12, 39  # the features of each expression: [frames, 39]
YTVOS_FRAME_STEP = 5  # the release names its frames 00000, 00005, ...
DETAIL_KEYS = ("figures", "tests")  # bulky parts of a record: in the report, not in the printed line
MARK_START = "<!-- gpu-check: start (written by scripts/gpu_check.py; replaced on every run) -->"
MARK_END = "<!-- gpu-check: end -->"


# ---------------------------------------------------------------------------------------------- runner
class StepTimeout(RuntimeError):
    """A step (or the command it ran) went past its time limit."""


@dataclass
class Step:
    """`run(limit_s)` does the work within `limit_s` seconds and returns its figures for the report
    (a false "ok" in them marks a failure that raised nothing); it raises on failure."""
    name: str
    run: Callable[[float], Dict[str, Any]]
    budget_s: float


def run_step(step: Step, limit_s: float, grace_s: float = STEP_GRACE_S,
             clock: Callable[[], float] = time.monotonic) -> Dict[str, Any]:
    """One step in a worker thread, waited for at most `limit_s + grace_s`; never raises."""
    outcome: Dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = step.run(limit_s)
        except Exception as error:  # any failure of a step is recorded, and the next step runs
            outcome["error"] = f"{type(error).__name__}: {error}"

    # a daemon thread: one that overruns is abandoned (its subprocesses are killed by run_command)
    worker = threading.Thread(target=target, name=f"gpu-check-{step.name}", daemon=True)
    begin = clock()
    worker.start()
    worker.join(limit_s + grace_s)
    seconds = round(clock() - begin, 3)
    if worker.is_alive():
        return {"step": step.name, "ok": False, "error": f"timed out after {limit_s:.0f} s", "seconds": seconds}
    if "error" in outcome:
        return {"step": step.name, "ok": False, "error": outcome["error"], "seconds": seconds}
    if "result" not in outcome:
        return {"step": step.name, "ok": False, "error": "the step ended without a result", "seconds": seconds}
    result = dict(outcome["result"])
    ok = bool(result.pop("ok", True))
    return {"step": step.name, "ok": ok, "seconds": seconds, **result}


def summary_line(record: Dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in record.items() if k not in DETAIL_KEYS})


def run_steps(steps: Sequence[Step], deadline: float, clock: Callable[[], float] = time.monotonic,
              grace_s: float = STEP_GRACE_S, emit: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    """Every step in order, each given min(its budget, the time left before `deadline`); one JSON line
    per step through `emit`. A step that finds no time left is recorded as failed without running."""
    records = []
    for step in steps:
        left = deadline - clock()
        if left <= 0:
            record = {"step": step.name, "ok": False, "error": "no time left before the global deadline",
                      "seconds": 0.0}
        else:
            record = run_step(step, min(step.budget_s, left), grace_s, clock)
        emit(summary_line(record))
        records.append(record)
    return records


# ---------------------------------------------------------------------------------------------- commands
@dataclass
class CommandResult:
    returncode: int
    output_tail: str
    seconds: float


def tail(path: Path, chars: int = OUTPUT_TAIL_CHARS) -> str:
    text = path.read_text(errors="replace") if path.is_file() else ""
    return text[-chars:]


def run_command(command: Sequence[str], timeout_s: float, log: Path, env: Optional[Dict[str, str]] = None,
                cwd: Path = ROOT) -> CommandResult:
    """Run `command` with its output in `log`; past `timeout_s` its whole process group is killed
    (torchrun and pytest start children) and StepTimeout raised with the output's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    begin = time.monotonic()
    with open(log, "w") as out:
        process = subprocess.Popen(list(command), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            returncode = process.wait(timeout=max(timeout_s, 0.0))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise StepTimeout(f"{Path(command[0]).name} ... timed out after {timeout_s:.0f} s; output ends:\n"
                              f"{tail(log)}") from None
    return CommandResult(returncode, tail(log), round(time.monotonic() - begin, 3))


def command_env(**overrides: Optional[str]) -> Dict[str, str]:
    """This process's environment, unbuffered output, with `overrides` (None removes a variable)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------- steps
class GpuCheck:
    """The steps; `dcn_backend` is what the steps after the build use."""

    def __init__(self, log_dir: Path, python: str = sys.executable) -> None:
        self.log_dir = log_dir
        self.python = python
        self.dcn_backend = "torchvision"  # until the build shows the CUDA kernels

    def steps(self) -> List[Step]:
        return [Step("environment", self.environment, ENVIRONMENT_BUDGET_S),
                Step("build", self.build, BUILD_BUDGET_S), Step("cuda_tests", self.cuda_tests, CUDA_TESTS_BUDGET_S),
                Step("nccl", self.nccl, NCCL_BUDGET_S), Step("benchmark", self.benchmark, BENCHMARK_BUDGET_S)]

    def env(self) -> Dict[str, str]:
        return command_env(WNET_DCN_BACKEND=self.dcn_backend)

    def environment(self, limit_s: float) -> Dict[str, Any]:
        missing = [name for name in REQUIRED_MODULES if importlib.util.find_spec(name) is None]
        nvcc = shutil.which("nvcc")
        problems = ([f"modules missing: {', '.join(missing)}"] if missing else []) + ([] if nvcc else ["no nvcc"])
        record: Dict[str, Any] = {"ok": not problems, "python": sys.version.split()[0], "torch": torch.__version__,
                                  "cuda": torch.version.cuda, "nvcc": nvcc, "missing": missing}
        if problems:
            record["error"] = "; ".join(problems)
        return record

    def build(self, limit_s: float) -> Dict[str, Any]:
        major, minor = torch.cuda.get_device_capability()
        arch = f"{major}.{minor}"
        env = command_env(TORCH_CUDA_ARCH_LIST=arch, MAX_JOBS=str(os.cpu_count() or 1), WNET_DCN_CPU_ONLY=None)
        begin = time.monotonic()
        # --force: an up-to-date CPU-only build would otherwise be kept
        built = run_command([self.python, "setup.py", "build_ext", "--inplace", "--force"], limit_s,
                            self.log_dir / "build.log", env, cwd=ROOT / "models" / "dcn")
        if built.returncode != 0:
            return {"ok": False, "arch": arch, "error": f"setup.py exited {built.returncode}: {built.output_tail}"}
        probe = "import json; from models.dcn import extension_has_cuda as h; print(json.dumps(h()))"
        checked = run_command([self.python, "-c", probe], limit_s - (time.monotonic() - begin),
                              self.log_dir / "build_probe.log", command_env())
        has_cuda = checked.returncode == 0 and checked.output_tail.strip().splitlines()[-1:] == ["true"]
        if has_cuda:
            self.dcn_backend = "extension"
        return {"ok": has_cuda, "arch": arch, "extension_has_cuda": has_cuda,
                **({} if has_cuda else {"error": f"the built extension has no CUDA kernels: {checked.output_tail}"})}

    def cuda_tests(self, limit_s: float) -> Dict[str, Any]:
        junit = self.log_dir / "cuda_tests.xml"
        junit.unlink(missing_ok=True)
        result = run_command([self.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                              f"--junitxml={junit}", *CUDA_TEST_FILES], limit_s, self.log_dir / "cuda_tests.log",
                             self.env())
        if not junit.is_file():
            return {"ok": False, "error": f"pytest exited {result.returncode} without a report: {result.output_tail}"}
        tests = parse_junit(junit)
        problems = tests["failures"] + tests["skips"]
        record = {"ok": result.returncode == 0 and not problems, "dcn_backend": self.dcn_backend,
                  **{k: tests[k] for k in ("passed", "failed", "skipped")}, "tests": tests}
        if problems:  # a skip here means something went unchecked on the GPU
            record["error"] = problem_summary(tests)
        elif result.returncode != 0:
            record["error"] = f"pytest exited {result.returncode}: {result.output_tail}"
        return record

    def nccl(self, limit_s: float, device: str = "cuda", backend: str = "nccl") -> Dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="gpu-check-nccl-") as scratch:
            data = write_tiny_ytvos(Path(scratch) / "ytvos", NCCL_VIDEOS, NCCL_VIDEO_FRAMES)
            output_dir = Path(scratch) / "out"
            command = [self.python, "-m", "torch.distributed.run", "--nproc_per_node=1",
                       f"--master_port={free_port()}", "main.py", *NCCL_MODEL, "--dataset_file", "ytvos",
                       "--ytvos_path", data["root"], "--rvos_audio_path", data["audio_root"], "--device", device,
                       "--num_workers", "0", "--data_scale", "0.1", "--batch_size", str(NCCL_BATCH_SIZE),
                       "--epochs", "1", "--output_dir", str(output_dir)]
            log = self.log_dir / "nccl.log"
            result = run_command(command, limit_s, log, self.env())
            if result.returncode != 0:
                return {"ok": False, "error": f"torchrun exited {result.returncode}: {result.output_tail}"}
            return check_training_run(log.read_text(errors="replace"), output_dir, backend)

    def benchmark(self, limit_s: float) -> Dict[str, Any]:
        figures_path = self.log_dir / "benchmark.json"
        figures_path.unlink(missing_ok=True)
        command = [self.python, str(ROOT / "scripts" / "benchmark.py"), *BENCHMARK_ARGV,
                   "--time_budget_s", str(max(1.0, limit_s - BENCHMARK_TAIL_S)), "--json", str(figures_path)]
        error = None
        try:
            result = run_command(command, limit_s, self.log_dir / "benchmark.log", self.env())
            if result.returncode != 0:
                error = f"benchmark.py exited {result.returncode}: {result.output_tail}"
        except StepTimeout as timeout:  # the sections it finished are in its JSON all the same
            error = str(timeout)
        figures = json.loads(figures_path.read_text()) if figures_path.is_file() else None
        record: Dict[str, Any] = {"ok": error is None and figures is not None, "figures": figures}
        if figures is not None:
            record.update(headline(figures))
        if error is not None:
            record["error"] = error
        elif figures is None:
            record["error"] = "benchmark.py wrote no figures"
        return record


def write_tiny_ytvos(root: Path, num_videos: int, num_frames: int) -> Dict[str, str]:
    """A tiny Ref-YouTube-VOS train split in the release layout (datasets/ytvos_format.py reads it): videos
    `vid000, ...` of `num_frames` frames, two squares in each, one expression and random MFCC-39 features per
    square. Returns {"root", "audio_root"} for `--ytvos_path` and `--rvos_audio_path`."""
    audio_root = root / "audio_feature"
    rng = np.random.default_rng(0)
    boxes = {1: (2, 2, 10, 10), 2: (18, 10, 26, 18)}  # object id -> x0, y0, x1, y1 in a TINY_SIZE frame
    meta_expressions, meta = {}, {}
    for v in range(num_videos):
        name = f"vid{v:03d}"
        frames = [f"{i * YTVOS_FRAME_STEP:05d}" for i in range(num_frames)]
        for folder in ("JPEGImages", "Annotations"):
            (root / "train" / folder / name).mkdir(parents=True, exist_ok=True)
        labels = np.zeros(TINY_SIZE, np.uint8)
        for obj_id, (x0, y0, x1, y1) in boxes.items():
            labels[y0:y1, x0:x1] = obj_id
        rgb = np.stack([labels * 100, 255 - labels * 100, np.full(TINY_SIZE, 60)], axis=-1).astype(np.uint8)
        for frame in frames:
            Image.fromarray(rgb).save(root / "train" / "JPEGImages" / name / f"{frame}.jpg")
            mask = Image.fromarray(labels)  # object ids as a palette PNG, as the release stores them
            mask.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
            mask.save(root / "train" / "Annotations" / name / f"{frame}.png")
        meta_expressions[name] = {"frames": frames, "expressions": {
            str(obj_id - 1): {"exp": f"square {obj_id}", "obj_id": str(obj_id)} for obj_id in boxes}}
        meta[name] = {"objects": {str(obj_id): {"category": "square", "frames": frames} for obj_id in boxes}}
        audio_root.mkdir(parents=True, exist_ok=True)
        for obj_id in boxes:
            np.save(audio_root / f"{name}_{obj_id - 1}.npy", rng.standard_normal((TINY_AUDIO_FRAMES, MFCC_DIM)))
    (root / "meta_expressions" / "train").mkdir(parents=True, exist_ok=True)
    (root / "meta_expressions" / "train" / "meta_expressions.json").write_text(json.dumps({"videos": meta_expressions}))
    (root / "train" / "meta.json").write_text(json.dumps({"videos": meta}))
    return {"root": str(root), "audio_root": str(audio_root)}


def parse_junit(path: Path) -> Dict[str, Any]:
    """Counts and the failing and skipped tests (name, first line of the message) of a JUnit XML report."""
    root = ElementTree.parse(path).getroot()
    cases = root.iter("testcase")
    failures, skips, total = [], [], 0
    for case in cases:
        total += 1
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        for kind, bucket in (("failure", failures), ("error", failures), ("skipped", skips)):
            for element in case.findall(kind):
                message = (element.get("message") or element.text or "").strip().splitlines()
                bucket.append({"name": name, "kind": kind, "message": message[0] if message else ""})
    failed = len({f["name"] for f in failures})
    return {"total": total, "passed": total - failed - len(skips), "failed": failed, "skipped": len(skips),
            "failures": failures, "skips": skips}


def problem_summary(tests: Dict[str, Any]) -> str:
    """Failing tests by name (the first few), skipped ones counted by reason."""
    parts = []
    if tests["failures"]:
        named = [f"{f['name']} ({f['message']})" for f in tests["failures"][:MAX_NAMED_FAILURES]]
        more = len(tests["failures"]) - len(named)
        parts.append("failed: " + ", ".join(named) + (f" and {more} more" if more else ""))
    reasons: Dict[str, int] = {}
    for skip in tests["skips"]:
        reasons[skip["message"]] = reasons.get(skip["message"], 0) + 1
    parts += [f"{count} skipped: {reason}" for reason, count in reasons.items()]
    return "; ".join(parts)[:OUTPUT_TAIL_CHARS]


def check_training_run(output: str, output_dir: Path, backend: str) -> Dict[str, Any]:
    """What a one-process torchrun training must show: the process group's backend, the steps run, a
    finite loss, the ranks-in-sync record that only distributed runs write, and a checkpoint."""
    start = next((json.loads(line[line.index("{"):]) for line in output.splitlines() if '"event": "start"' in line),
                 None)
    log_file = output_dir / "log.txt"
    records = [json.loads(line) for line in log_file.read_text().splitlines()] if log_file.is_file() else []
    problems = []
    if start is None:
        problems.append("no start event in the output")
    elif start.get("dist_backend") != backend:
        problems.append(f"process group backend {start.get('dist_backend')!r}, expected {backend!r}")
    loss = records[-1].get("train_loss") if records else None
    if loss is None or not math.isfinite(loss):
        problems.append(f"training loss {loss!r}")
    if not records or records[-1].get("ranks_in_sync") is not True:
        problems.append("no ranks_in_sync: true record (DDP did not run)")
    if not (output_dir / "checkpoint.pth").is_file():
        problems.append("no checkpoint written")
    steps = start["train_samples"] // NCCL_BATCH_SIZE if start else None
    record = {"ok": not problems, "backend": start.get("dist_backend") if start else None,
              "world_size": start.get("world_size") if start else None, "steps": steps, "train_loss": loss}
    if problems:
        record["error"] = "; ".join(problems)
    return record


def headline(figures: Dict[str, Any]) -> Dict[str, Any]:
    """A few benchmark figures for the step's printed line."""
    out: Dict[str, Any] = {}
    for name, row in figures.get("inference", {}).items():
        if "frames_per_s" in row:
            out[f"fps_{name}"] = round(row["frames_per_s"], 1)
    for option, found in figures.get("max_frames", {}).get("options", {}).items():
        out[f"max_frames_{option}"] = found["largest_fitting"]
    return out


# ---------------------------------------------------------------------------------------------- report
def device_info() -> Dict[str, Any]:
    properties = torch.cuda.get_device_properties(0)
    return {"name": properties.name, "capability": f"{properties.major}.{properties.minor}",
            "memory_gib": round(properties.total_memory / (1 << 30), 1), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_section(report: Dict[str, Any]) -> str:
    """The "GPU" section of docs/benchmark.md, between its markers."""
    device = report.get("device", {})
    lines = [MARK_START, "## Measured (GPU, `make gpu-check`)", "",
             f"{report['date']}: {device.get('name', '?')} (compute capability {device.get('capability', '?')}, "
             f"{device.get('memory_gib', '?')} GiB), torch {device.get('torch', '?')}, CUDA {device.get('cuda', '?')}; "
             f"{report['seconds']:.0f} s of a {report['budget_s']:.0f} s budget. Full figures: `docs/gpu.json`.", "",
             "| step | ok | seconds | result |", "| --- | --- | ---: | --- |"]
    for record in report["steps"]:
        detail = record.get("error") or ", ".join(f"{k} {v}" for k, v in record.items()
                                                  if k not in ("step", "ok", "seconds", "error", *DETAIL_KEYS))
        detail = " ".join(str(detail).split())[:300].replace("|", "\\|")
        lines.append(f"| {record['step']} | {'yes' if record['ok'] else '**no**'} | {record['seconds']:.0f} | "
                     f"{detail} |")
    figures = next((r.get("figures") for r in report["steps"] if r["step"] == "benchmark" and r.get("figures")), None)
    if figures:
        lines += benchmark_tables(figures)
    lines.append(MARK_END)
    return "\n".join(lines) + "\n"


def benchmark_tables(figures: Dict[str, Any]) -> List[str]:
    config = figures["config"]
    baseline = f"bare {config.get('backbone', 'resnet50')} body"
    lines = ["", f"Inference, {config['frames']} frames of {config['size']} after `optimize_for_inference` "
             f"(`model`: float32 with TF32 off, `model_tf32`: TF32 on, `model_bf16`: bfloat16 autocast; "
             f"`baseline`: the {baseline}, float32):", "",
             "| case | median s | clips/s | frames/s | ratio to baseline | step peak MiB |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, row in figures.get("inference", {}).items():
        lines.append(f"| {name} | {fmt(row['median_s'], 4)} | {fmt(row.get('clips_per_s'))} | "
                     f"{fmt(row.get('frames_per_s'), 1)} | {fmt(row['ratio'])} | "
                     f"{fmt(row.get('memory', {}).get('peak_mib'), 0)} |")
    training = [(section, frames) for section, frames in config.get("section_frames", {}).items()
                if section.startswith("training") and section in figures]
    if training:
        lines += ["", f"Training step (forward, loss, backward, AdamW; `baseline`: the {baseline}'s forward "
                  "and backward), PyTorch's TF32 defaults; *total* = weights, gradients, AdamW state and the "
                  "step's peak:", "",
                  "| frames | case | median s | ratio to baseline | step peak MiB | total MiB |",
                  "| ---: | --- | ---: | ---: | ---: | ---: |"]
        for section, frames in training:
            for name, row in figures[section].items():
                memory = row.get("memory", {})
                lines.append(f"| {frames} | {name} | {fmt(row['median_s'], 4)} | {fmt(row['ratio'])} | "
                             f"{fmt(memory.get('peak_mib'), 0)} | {fmt(memory.get('total_peak_mib'), 0)} |")
    search = figures.get("max_frames")
    if search:
        lines += ["", f"Largest `--num_frames` (= queries) that trains with the allocator capped at "
                  f"{search['cap_gib']:g} GiB (frames of {config['size']}):", "",
                  "| option | largest that fits | smallest that does not | total MiB at the largest | search |",
                  "| --- | ---: | ---: | ---: | --- |"]
        for option, found in search["options"].items():
            fitting = [p for p in found["probes"] if p["fits"] and p["frames"] == found["largest_fitting"]]
            lines.append(f"| {option} | {found['largest_fitting']} | {fmt(found['smallest_failing'])} | "
                         f"{fmt(fitting[0]['figure'], 0) if fitting else '-'} | "
                         f"{search_state(found)} |")
    return lines


def search_state(found: Dict[str, Any]) -> str:
    if "error" in found:
        return "failed: " + " ".join(found["error"].split()).replace("|", "\\|")
    return "complete" if found["complete"] else "cut short by the time budget"


def replace_section(text: str, section: str) -> str:
    """`text` with its marked section replaced by `section`, or `section` appended."""
    if MARK_START in text and MARK_END in text:
        before = text[:text.index(MARK_START)]
        after = text[text.index(MARK_END) + len(MARK_END):].lstrip("\n")
        return before + section + ("\n" + after if after else "")
    return text.rstrip("\n") + "\n\n" + section if text.strip() else section


def write_report(report: Dict[str, Any], json_path: Path, markdown_path: Path) -> None:
    atomic_json_dump(report, json_path, indent=1)
    text = markdown_path.read_text() if markdown_path.is_file() else ""
    updated = replace_section(text, markdown_section(report))

    def write(tmp: str) -> None:
        Path(tmp).write_text(updated)
    atomic_write(markdown_path, write)


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget_s", type=float, default=GLOBAL_BUDGET_S, help="global deadline, seconds")
    parser.add_argument("--steps", nargs="+", default=None, help="run only these steps (in the usual order)")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "gpu.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "docs" / "benchmark.md")
    parser.add_argument("--log_dir", type=Path, default=ROOT / "output" / "gpu_check")
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print(f"gpu-check: skipped, no CUDA device on this machine (torch {torch.__version__}, "
              f"CUDA build {torch.version.cuda or 'none'}); run it where a GPU is")
        return 0
    start = time.monotonic()
    check = GpuCheck(args.log_dir)
    steps = check.steps()
    if args.steps:
        unknown = set(args.steps) - {step.name for step in steps}
        if unknown:
            raise SystemExit(f"--steps: unknown {sorted(unknown)}; the steps are {[s.name for s in steps]}")
        steps = [step for step in steps if step.name in args.steps]
    records = run_steps(steps, deadline=start + args.budget_s)
    report = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "device": device_info(),
              "budget_s": args.budget_s, "seconds": round(time.monotonic() - start, 1),
              "ok": all(r["ok"] for r in records), "steps": records}
    write_report(report, args.json, args.markdown)
    print(json.dumps({"gpu_check": "done", "ok": report["ok"], "seconds": report["seconds"],
                      "json": str(args.json), "markdown": str(args.markdown)}))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
