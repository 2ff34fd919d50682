"""Wnet against a bare ResNet-50: inference and training-step time ratios and peak memory.

    python scripts/benchmark.py [--device cpu|cuda] [--json OUT] [--frames 36] [--train_frames 8]
                                [--repeats N] [--size 300x540] [--audio_len 120] [--quick]

(a) Inference: the default mask model (ResNet-50, hidden 384, num_frames = num_queries = --frames,
    float32, eval, after `models.optimize_for_inference`, no_grad) against torchvision's
    `resnet50(weights=None)` children up to layer4 (eval, no_grad, default memory format) on the same
    frames.
(b) Training step at --train_frames: forward, criterion with realistic targets, backward, AdamW step
    (the optimiser of main.py), with default options, with --checkpoint_activations and with --amp;
    against a ResNet-50 body forward+backward with the same frozen parts (stem and layer1 frozen,
    frozen BN), loss = mean of layer4.

Every repeat runs all cases back to back, starting with a different case each time, so that load from
other processes hits them alike; the medians and their ratios to the baseline are reported. Peak
memory: on the CPU each case runs in a fresh process (glibc's mmap threshold fixed, so freed tensors
leave the resident set) with a thread sampling the resident set size; the figure is the peak above the
resident size just before the measured pass (for training, the second step, after AdamW has made its
state). On CUDA: `max_memory_allocated` above the allocation before the pass, timed with CUDA events.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torchvision
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import _outputs_to_float, autocast_context  # noqa: E402
from main import build_optimizer  # noqa: E402
from models import build_model, optimize_for_inference  # noqa: E402
from models.dcn import selected_backend  # noqa: E402
from util.config import ArgumentParser, get_args_parser, parse_args as parse_model_args  # noqa: E402
from util.errors import run_main  # noqa: E402
from util.misc import atomic_json_dump  # noqa: E402

INFERENCE_CASES = ("model", "baseline")
TRAIN_CASES = ("default", "checkpoint_activations", "amp", "baseline")
TRAIN_OPTIONS = {"default": [], "checkpoint_activations": ["--checkpoint_activations"], "amp": ["--amp"]}
QUICK = {"frames": 2, "train_frames": 2, "size": "64x96", "audio_len": 20, "repeats": 1}
MMAP_THRESHOLD = 1 << 16  # bytes; fixed, so that every tensor above it is returned to the OS when freed
SAMPLE_INTERVAL_S = 0.001
MIB = 1 << 20
FROZEN_CHILDREN = ("0.", "1.", "4.")  # parameter prefixes of conv1, bn1 and layer1 in the body's Sequential
MASK_RADIUS = 0.2  # of the shorter image side
MASK_DRIFT = 0.02  # per frame, of the image width


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--frames", type=int, default=36, help="frames (= queries) of the inference clip")
    parser.add_argument("--train_frames", type=int, default=8, help="frames (= queries) of the training clip")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of every case")
    parser.add_argument("--size", default="300x540", help="frame size HxW")
    parser.add_argument("--audio_len", type=int, default=120, help="audio frames")
    parser.add_argument("--backbone", default="resnet50", help="backbone of the model and of the bare baseline body")
    parser.add_argument("--hidden_dim", type=int, default=384)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat (for tests)")
    parser.add_argument("--no_memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument("--memory_worker", default="", help=argparse.SUPPRESS)  # internal: one case, fresh process
    args = parser.parse_args(argv)
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    try:
        args.height, args.width = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size: expected HxW such as 300x540, got {args.size!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    return args


# ---------------------------------------------------------------------------------------------- cases
def model_args(args: argparse.Namespace, frames: int, extra: Sequence[str] = ()) -> argparse.Namespace:
    argv = ["--backbone", args.backbone, "--hidden_dim", str(args.hidden_dim), "--num_frames", str(frames),
            "--num_queries", str(frames), "--masks", "--device", args.device, *extra]
    return parse_model_args(get_args_parser(), argv)


def make_clip(args: argparse.Namespace, frames: int, device: torch.device) -> Tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    clip = torch.randn(frames, 3, args.height, args.width, generator=generator)
    audio = torch.randn(1, 39, args.audio_len, generator=generator)
    return clip.to(device), audio.to(device)


def make_targets(args: argparse.Namespace, frames: int, device: torch.device) -> List[Dict[str, Tensor]]:
    """One clip's targets: a disc drifting to the right, its box, every frame valid."""
    height, width = args.height, args.width
    radius = MASK_RADIUS * min(height, width)
    ys = torch.arange(height, dtype=torch.float32)[:, None]
    xs = torch.arange(width, dtype=torch.float32)[None, :]
    masks, boxes = [], []
    for t in range(frames):
        cx, cy = width * (0.4 + MASK_DRIFT * t), height * 0.5
        masks.append(((ys - cy) ** 2 + (xs - cx) ** 2 <= radius ** 2).to(torch.uint8))
        boxes.append([cx / width, cy / height, 2 * radius / width, 2 * radius / height])
    return [{"masks": torch.stack(masks).to(device), "boxes": torch.tensor(boxes, device=device),
             "valid": torch.ones(frames, dtype=torch.long, device=device),
             "labels": torch.zeros(frames, dtype=torch.long, device=device)}]


def resnet_body(name: str, frozen_bn: bool) -> nn.Sequential:
    """torchvision ResNet children up to layer4 (no pooling, no classifier)."""
    norm_layer = torchvision.ops.FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
    resnet = getattr(torchvision.models, name)(weights=None, norm_layer=norm_layer)
    return nn.Sequential(*list(resnet.children())[:-2])


def inference_case(name: str, args: argparse.Namespace, device: torch.device) -> Callable[[], object]:
    torch.manual_seed(0)
    clip, audio = make_clip(args, args.frames, device)
    if name == "model":
        model, _, _ = build_model(model_args(args, args.frames))
        model = optimize_for_inference(model.to(device))
        return lambda: model(clip, audio)
    body = resnet_body(args.backbone, frozen_bn=False).to(device).eval()
    return lambda: body(clip)


def train_case(name: str, args: argparse.Namespace, device: torch.device) -> Callable[[], object]:
    torch.manual_seed(0)
    clip, audio = make_clip(args, args.train_frames, device)
    if name == "baseline":
        body = resnet_body(args.backbone, frozen_bn=True).to(device).train()
        for param_name, param in body.named_parameters():
            param.requires_grad_(not param_name.startswith(FROZEN_CHILDREN))

        def baseline_step() -> None:
            body(clip).mean().backward()
            body.zero_grad(set_to_none=True)
        return baseline_step

    margs = model_args(args, args.train_frames, TRAIN_OPTIONS[name])
    model, criterion, _ = build_model(margs)
    model.to(device).train()
    optimizer = build_optimizer(model, margs)
    targets = make_targets(args, args.train_frames, device)
    amp_dtype = torch.bfloat16  # bfloat16 autocast on CPU and CUDA (as main.py without --amp_dtype float16)

    def model_step() -> None:
        with autocast_context(device, margs.amp, amp_dtype):
            outputs = model(clip, audio)
        outputs = _outputs_to_float(outputs) if margs.amp else outputs
        losses = criterion(outputs, targets)
        total = sum(criterion.weight_dict[k] * v for k, v in losses.items() if k in criterion.weight_dict)
        total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # between steps only parameters and AdamW's state stay
    return model_step


def build_case(kind: str, name: str, args: argparse.Namespace, device: torch.device) -> Callable[[], object]:
    if kind == "inference":
        step = inference_case(name, args, device)

        def no_grad_step() -> object:
            with torch.no_grad():
                return step()
        return no_grad_step
    return train_case(name, args, device)


# ---------------------------------------------------------------------------------------------- timing
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call (CUDA events on the GPU)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        synchronize(device)
        start.record()
        step()
        end.record()
        synchronize(device)
        return start.elapsed_time(end) / 1000
    begin = time.perf_counter()
    step()
    return time.perf_counter() - begin


def interleaved_times(steps: Dict[str, Callable[[], object]], repeats: int, device: torch.device
                      ) -> Dict[str, List[float]]:
    """One untimed warm-up of every case, then `repeats` rounds of all cases, rotating the first one."""
    names = list(steps)
    for name in names:
        steps[name]()
    synchronize(device)
    times: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(timed(steps[name], device))
    return times


# ---------------------------------------------------------------------------------------------- memory
def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class ResidentPeak:
    """Samples the resident set size in a thread; `peak` is the largest value seen."""

    def __init__(self) -> None:
        self.peak = resident_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, resident_bytes())
            time.sleep(SAMPLE_INTERVAL_S)

    def __enter__(self) -> "ResidentPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, resident_bytes())


def measure_memory_here(kind: str, name: str, args: argparse.Namespace, device: torch.device) -> Dict[str, float]:
    """Peak memory of one pass of one case in this process, in MiB above the memory before it."""
    step = build_case(kind, name, args, device)
    if kind == "train":
        step()  # the first step makes AdamW's state, which every later step keeps
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        synchronize(device)
        return {"peak_mib": (torch.cuda.max_memory_allocated(device) - before) / MIB,
                "before_mib": before / MIB}
    before = resident_bytes()
    with ResidentPeak() as sampler:
        step()
    # (getrusage's ru_maxrss is no help here: Linux carries it over from the parent process)
    return {"peak_mib": (sampler.peak - before) / MIB, "before_mib": before / MIB,
            "process_peak_mib": sampler.peak / MIB}


def measure_memory(kind: str, name: str, args: argparse.Namespace, argv: Sequence[str]) -> Dict[str, float]:
    """`measure_memory_here` in a fresh process (so earlier cases leave nothing behind)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD), MALLOC_TRIM_THRESHOLD_=str(MMAP_THRESHOLD))
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--memory_worker", f"{kind}:{name}"]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"memory measurement of {kind}:{name} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- report
def uptime() -> str:
    try:
        with open("/proc/loadavg") as f:
            return "load average " + " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def summarise(times: Dict[str, List[float]], baseline: str) -> Dict[str, Dict[str, object]]:
    """Per case: the times, their median, `ratio` (median over the baseline's median) and
    `paired_ratio` (median over repeats of the time over the baseline's time in the same repeat,
    which cancels load that changes between repeats)."""
    base = statistics.median(times[baseline])
    return {name: {"times_s": values, "median_s": statistics.median(values),
                   "ratio": statistics.median(values) / base,
                   "paired_ratio": statistics.median(v / b for v, b in zip(values, times[baseline]))}
            for name, values in times.items()}


def print_table(results: Dict[str, object]) -> None:
    print(f"\nmachine: {results['machine']['cpu']}, {results['machine']['threads']} threads, "
          f"device {results['machine']['device']}, DCN backend {results['machine']['dcn_backend']}")
    print(f"load: before {results['load_before']}, after {results['load_after']}")
    header = f"{'case':<26}{'median s':>10}{'ratio':>8}{'paired':>8}{'step peak MiB':>15}{'RSS peak MiB':>14}"
    cfg = results["config"]
    for section in ("inference", "training"):
        frames = cfg["frames"] if section == "inference" else cfg["train_frames"]
        print(f"\n{section} ({frames} frames {cfg['size']}, ratio to the bare {cfg['backbone']} body 'baseline')")
        print(header)
        for name, row in results[section].items():
            memory = row.get("memory", {})
            peaks = "".join(f"{memory[key]:{width}.0f}" if key in memory else f"{'-':>{width}}"
                            for key, width in (("peak_mib", 15), ("process_peak_mib", 14)))
            print(f"{name:<26}{row['median_s']:10.3f}{row['ratio']:8.2f}{row['paired_ratio']:8.2f}{peaks}")
    if "checkpoint_memory_reduction" in results:
        print(f"\n--checkpoint_activations lowers the training step's peak memory by "
              f"{100 * results['checkpoint_memory_reduction']:.0f}%")


def strip_option(argv: Sequence[str], option: str) -> List[str]:
    """argv without `option VALUE` / `option=VALUE`."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == option:
            skip = True
        elif not item.startswith(option + "="):
            out.append(item)
    return out


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.memory_worker:
        kind, name = args.memory_worker.split(":")
        print(json.dumps(measure_memory_here(kind, name, args, device)))
        return 0

    worker_argv = strip_option(argv, "--json")
    results: Dict[str, object] = {
        "machine": {"cpu": cpu_name(), "threads": torch.get_num_threads(), "device": args.device,
                    "cuda_device": torch.cuda.get_device_name() if args.device == "cuda" else None,
                    "torch": torch.__version__, "dcn_backend": selected_backend()},
        "config": {"frames": args.frames, "train_frames": args.train_frames, "size": f"{args.height}x{args.width}",
                   "audio_len": args.audio_len, "repeats": args.repeats, "backbone": args.backbone,
                   "hidden_dim": args.hidden_dim},
        "load_before": uptime(),
    }
    for section, kind, cases in (("inference", "inference", INFERENCE_CASES), ("training", "train", TRAIN_CASES)):
        steps = {name: build_case(kind, name, args, device) for name in cases}
        summary = summarise(interleaved_times(steps, args.repeats, device), baseline="baseline")
        del steps
        if not args.no_memory:
            for name in cases:
                summary[name]["memory"] = measure_memory(kind, name, args, worker_argv)
        results[section] = summary
        print(f"{section} done ({uptime()})", file=sys.stderr)
    results["load_after"] = uptime()
    if not args.no_memory:
        training = results["training"]
        results["checkpoint_memory_reduction"] = 1 - (training["checkpoint_activations"]["memory"]["peak_mib"]
                                                      / training["default"]["memory"]["peak_mib"])
    print_table(results)
    if args.json is not None:
        atomic_json_dump(results, args.json, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
