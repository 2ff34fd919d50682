"""Wnet against a bare ResNet-50: inference and training-step time ratios and peak memory.

    python scripts/benchmark.py [--device cpu|cuda] [--json OUT] [--frames 36] [--train_frames 8 [36 ...]]
                                [--repeats N] [--size 300x540] [--audio_len 120] [--quick]
                                [--max_frames_gib 32 [--max_frames_limit 1024] [--time_budget_s S]] [--threads N]
    python scripts/benchmark.py --stages | --loader | --scaling [--scaling_plot PNG]   (one mode alone)

(a) Inference: the default mask model (ResNet-50, hidden 384, num_frames = num_queries = --frames,
    float32, eval, after `models.optimize_for_inference`, no_grad) against torchvision's
    `resnet50(weights=None)` children up to layer4 (eval, no_grad, default memory format) on the same
    frames.
    On CUDA also `model_tf32` (TF32 matmuls and convolutions) and `model_bf16` (bfloat16 autocast);
    `model` and the baseline run with TF32 off. Every inference row has clips/s and frames/s.
(b) Training step at each --train_frames: forward, criterion with realistic targets, backward, AdamW
    step (the optimiser of main.py), with default options, with --checkpoint_activations and with --amp;
    against a ResNet-50 body forward+backward with the same frozen parts (stem and layer1 frozen,
    frozen BN), loss = mean of layer4. Sections `training` (the first value), `training_<F>` (others).
(c) CUDA only, with --max_frames_gib G: for each training option the largest --num_frames (= queries)
    whose training steps fit when PyTorch's allocator is capped at G GiB
    (`torch.cuda.set_per_process_memory_fraction`): doubling from the anchor of 36 frames until a step
    runs out of memory, then bisection, within --time_budget_s (probes that find no room report their
    bracket as it stands).

(d) The optimised model stage by stage at --frames (`scripts/benchmark_stages.py`): time per stage, FLOPs, the
    ratio of the whole inference to its own backbone; the default run ends with it, --stages runs it alone.
(e) --loader: the Ref-YouTube-VOS training loader at 720x1280 JPEG against the training step
    (`scripts/benchmark_loader.py`); --scaling: time and memory against clip length, frame size, video length
    and the training clip length (`scripts/benchmark_scaling.py`).

Every repeat runs all cases back to back, starting with a different case each time, so that load from
other processes hits them alike; the medians and their ratios to the baseline are reported. Peak
memory: on the CPU each case runs in a fresh process (glibc's mmap threshold fixed, so freed tensors
leave the resident set) with a thread sampling the resident set size; the figure is the peak above the
resident size just before the measured pass (for training, the second step, after AdamW has made its
state). On CUDA, in this process: `max_memory_allocated` above the allocation before the pass, and
`total_peak_mib` above the allocation before the case was built (its weights, gradients and AdamW state
included: what must fit on the card); timed with CUDA events. Training runs with PyTorch's TF32 defaults
(as main.py does), recorded under machine.tf32_defaults. With --json the figures are written after every
section, so a run cut short still leaves the finished ones.
"""
import argparse
import contextlib
import functools
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torchvision
from torch import Tensor, nn

from engine.train import autocast_context, build_optimizer, outputs_to_float
from engine.inference import predict_clip_masks, predict_video_masks
from engine.run import get_args_parser
from models import build_model, optimize_for_inference
from models.dcn import selected_backend
from util.config import ArgumentParser, freeze, parse_args as parse_model_args
from util.errors import run_main
from util.misc import atomic_json_dump, set_cpu_threads

from scripts.benchmark_loader import OFFICIAL_FRAME_SIZE, benchmark_loader, format_loader_table
from scripts.benchmark_scaling import (CLIP_LENGTHS, FRAME_SCALES, TRAIN_LENGTHS, VIDEO_LENGTHS_MEASURED, Point,
                                      format_scaling_table, plot as plot_scaling, scaling_points,
                                      summarise as summarise_scaling)
from scripts.benchmark_stages import Stage, StageClock, format_stage_table, profile_stages

SCALING_SWEEPS = ("clip_length", "frame_size", "video_length", "training")
INFERENCE_CASES = ("model", "baseline")
CUDA_INFERENCE_CASES = ("model", "model_tf32", "model_bf16", "baseline")
# inference case -> precision; "fp32" is float32 with TF32 off (no effect on the CPU)
PRECISIONS = {"model": "fp32", "model_tf32": "tf32", "model_bf16": "bf16", "baseline": "fp32"}
TRAIN_CASES = ("default", "checkpoint_activations", "amp", "baseline")
TRAIN_OPTIONS = {"default": [], "checkpoint_activations": ["--checkpoint_activations"], "amp": ["--amp"]}
QUICK = {"frames": 2, "train_frames": [2], "size": "64x96", "audio_len": 20, "repeats": 1, "stage_repeats": 2,
         "loader_size": "96x160", "loader_frames": 4, "loader_clips": 2, "loader_workers": [0, 1], "loader_videos": 1,
         "scaling_clip_lengths": [2, 4], "scaling_video_lengths": [2, 4], "scaling_train_lengths": [2, 4],
         "scaling_frame_scales": [0.5, 1.0]}
MMAP_THRESHOLD = 1 << 16  # bytes; fixed, so that every tensor above it is returned to the OS when freed
SAMPLE_INTERVAL_S = 0.001
MIB = 1 << 20
FROZEN_CHILDREN = ("0.", "1.", "4.")  # parameter prefixes of conv1, bn1 and layer1 in the body's Sequential
MASK_RADIUS = 0.2  # of the shorter image side
MASK_DRIFT = 0.02  # per frame, of the image width
GIB = 1 << 30
MAX_FRAMES_START = 36  # the anchor: official Wnet trains 36-frame clips on 32 GB cards
MAX_FRAMES_RESOLUTION = 1 / 16  # bisection stops when the bracket is this fraction of its upper end
PROBE_STEPS = 2  # the second step holds AdamW's state next to the activations, the first makes it
OUT_OF_MEMORY_SIGNS = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED")
ERROR_CHARS = 500


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--frames", type=int, default=36, help="frames (= queries) of the inference clip")
    parser.add_argument("--train_frames", type=int, nargs="+", default=[8],
                        help="frames (= queries) of the training clip; several values give several sections")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of every case")
    parser.add_argument("--size", default="300x540", help="frame size HxW")
    parser.add_argument("--audio_len", type=int, default=120, help="audio frames")
    parser.add_argument("--backbone", default="resnet50", help="backbone of the model and of the bare baseline body")
    parser.add_argument("--hidden_dim", type=int, default=384)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat (for tests)")
    parser.add_argument("--no_memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument("--max_frames_gib", type=float, default=0.0,
                        help="CUDA: find the largest --num_frames that trains under this memory cap (GiB)")
    parser.add_argument("--max_frames_limit", type=int, default=1024, help="the search's upper end")
    parser.add_argument("--time_budget_s", type=float, default=0.0,
                        help="seconds from the start after which the max-frames search starts no probe (0: none)")
    parser.add_argument("--threads", type=int, default=0,
                        help="intra-op CPU threads (torch, BLAS, OpenMP); 0: torch's default")
    parser.add_argument("--stages", action="store_true",
                        help="only the per-stage profile of the optimised model at --frames (the default run ends "
                             "with it)")
    parser.add_argument("--stage_repeats", type=int, default=5,
                        help="interleaved repeats of the whole inference and of its own backbone in the profile")
    parser.add_argument("--loader", action="store_true",
                        help="only the training loader's clips/s at the official frame size against the training step")
    parser.add_argument("--loader_frames", type=int, default=36, help="frames per clip of the loader")
    parser.add_argument("--loader_size", default="x".join(map(str, OFFICIAL_FRAME_SIZE)),
                        help="HxW of the JPEG frames the loader reads (official Ref-YouTube-VOS: 720x1280)")
    parser.add_argument("--loader_workers", type=int, nargs="+", default=[0, 1, 2, 4], help="DataLoader workers")
    parser.add_argument("--loader_clips", type=int, default=6, help="timed clips per worker count")
    parser.add_argument("--loader_videos", type=int, default=2, help="videos in the loader's data")
    parser.add_argument("--scaling", action="store_true",
                        help="only how time and peak memory grow (clip length, frame size, video length, training)")
    parser.add_argument("--scaling_sweeps", nargs="+", default=list(SCALING_SWEEPS), choices=SCALING_SWEEPS)
    parser.add_argument("--scaling_clip_lengths", type=int, nargs="+", default=list(CLIP_LENGTHS))
    parser.add_argument("--scaling_frame_scales", type=float, nargs="+", default=list(FRAME_SCALES),
                        help="of --size, at --frames per clip")
    parser.add_argument("--scaling_video_lengths", type=int, nargs="+", default=list(VIDEO_LENGTHS_MEASURED),
                        help="video frames, inferred in clips of --frames")
    parser.add_argument("--scaling_train_lengths", type=int, nargs="+", default=list(TRAIN_LENGTHS))
    parser.add_argument("--scaling_plot", type=Path, default=None, help="draw the picture here (PNG)")
    parser.add_argument("--memory_worker", default="", help=argparse.SUPPRESS)  # internal: one case, fresh process
    parser.add_argument("--scaling_worker", default="", help=argparse.SUPPRESS)  # internal: one point, fresh process
    parsed = parser.parse_args(argv)
    args = freeze(parsed, **(QUICK if parsed.quick else {}))
    try:
        height, width = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size: expected HxW such as 300x540, got {args.size!r}")
    try:
        loader_size = tuple(int(v) for v in args.loader_size.lower().split("x"))
    except ValueError:
        parser.error(f"--loader_size: expected HxW such as 720x1280, got {args.loader_size!r}")
    args = freeze(args, height=height, width=width, loader_frame_size=loader_size)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.max_frames_gib > 0 and args.device != "cuda":
        parser.error("--max_frames_gib needs --device cuda (the cap is the CUDA allocator's)")
    return args


# ---------------------------------------------------------------------------------------------- cases
def model_args(args: argparse.Namespace, frames: int, extra: Sequence[str] = ()) -> argparse.Namespace:
    argv = ["--backbone", args.backbone, "--hidden_dim", str(args.hidden_dim), "--num_frames", str(frames),
            "--num_queries", str(frames), "--masks", "--device", args.device, *extra]
    return parse_model_args(get_args_parser(), argv)


def make_clip(args: argparse.Namespace, frames: int, device: torch.device) -> Tuple[Tensor, Tensor]:
    # drawn on the device: the max-frames search makes clips of hundreds of frames
    generator = torch.Generator(device).manual_seed(0)
    clip = torch.randn(frames, 3, args.height, args.width, generator=generator, device=device)
    audio = torch.randn(1, 39, args.audio_len, generator=generator, device=device)
    return clip, audio


@contextlib.contextmanager
def precision(mode: str, device: torch.device) -> Iterator[None]:
    """fp32 (TF32 off), tf32 (TF32 matmuls and cuDNN convolutions) or bf16 (bfloat16 autocast, TF32 off);
    the TF32 switches are restored afterwards. They only matter on CUDA."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode == "tf32"
    try:
        with autocast_context(device, mode == "bf16", torch.bfloat16):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


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
    mode = PRECISIONS[name]
    if name != "baseline":
        model, _, _ = build_model(model_args(args, args.frames))
        model = optimize_for_inference(model.to(device))

        def model_step() -> object:
            with precision(mode, device):
                return model(clip, audio)
        return model_step
    body = resnet_body(args.backbone, frozen_bn=False).to(device).eval()

    def baseline_step() -> object:
        with precision(mode, device):
            return body(clip)
    return baseline_step


def train_case(name: str, args: argparse.Namespace, device: torch.device, frames: int) -> Callable[[], object]:
    torch.manual_seed(0)
    clip, audio = make_clip(args, frames, device)
    if name == "baseline":
        body = resnet_body(args.backbone, frozen_bn=True).to(device).train()
        for param_name, param in body.named_parameters():
            param.requires_grad_(not param_name.startswith(FROZEN_CHILDREN))

        def baseline_step() -> None:
            body(clip).mean().backward()
            body.zero_grad(set_to_none=True)
        return baseline_step

    margs = model_args(args, frames, TRAIN_OPTIONS[name])
    model, criterion, _ = build_model(margs)
    model.to(device).train()
    optimizer = build_optimizer(model, margs)
    targets = make_targets(args, frames, device)
    amp_dtype = torch.bfloat16  # bfloat16 autocast on CPU and CUDA (as main.py without --amp_dtype float16)

    def model_step() -> None:
        with autocast_context(device, margs.amp, amp_dtype):
            outputs = model(clip, audio)
        outputs = outputs_to_float(outputs) if margs.amp else outputs
        losses = criterion(outputs, targets)
        total = sum(criterion.weight_dict[k] * v for k, v in losses.items() if k in criterion.weight_dict)
        total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # between steps only parameters and AdamW's state stay
    return model_step


def build_case(kind: str, name: str, args: argparse.Namespace, device: torch.device,
               frames: int = 0) -> Callable[[], object]:
    """kind "inference" (at --frames) or "train" (at `frames`)."""
    if kind == "inference":
        step = inference_case(name, args, device)

        def no_grad_step() -> object:
            with torch.no_grad():
                return step()
        return no_grad_step
    return train_case(name, args, device, frames)


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


def release_cuda_memory(device: torch.device) -> None:
    """Free what dropped tensors left in the caching allocator, so the next case starts clean."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_memory_here(kind: str, name: str, args: argparse.Namespace, device: torch.device,
                        frames: int = 0) -> Dict[str, float]:
    """Peak memory of one pass of one case in this process, in MiB above the memory before it."""
    release_cuda_memory(device)
    base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    step = build_case(kind, name, args, device, frames)
    if kind == "train":
        step()  # the first step makes AdamW's state, which every later step keeps
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        del step
        release_cuda_memory(device)
        return {"peak_mib": (peak - before) / MIB, "before_mib": (before - base) / MIB,
                "total_peak_mib": (peak - base) / MIB}
    before = resident_bytes()
    with ResidentPeak() as sampler:
        step()
    # (getrusage's ru_maxrss is no help here: Linux carries it over from the parent process)
    return {"peak_mib": (sampler.peak - before) / MIB, "before_mib": before / MIB,
            "process_peak_mib": sampler.peak / MIB}


def measure_memory(kind: str, name: str, args: argparse.Namespace, argv: Sequence[str],
                   frames: int = 0) -> Dict[str, float]:
    """`measure_memory_here` in a fresh process (so earlier cases leave nothing behind); on CUDA in this
    process, where the allocator's own statistics count only this case."""
    if args.device == "cuda":
        return measure_memory_here(kind, name, args, torch.device(args.device), frames)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD), MALLOC_TRIM_THRESHOLD_=str(MMAP_THRESHOLD))
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--memory_worker", f"{kind}:{name}:{frames}"]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"memory measurement of {kind}:{name} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- max frames
def search_largest(probe: Callable[[int], Optional[float]], start: int, limit: int, deadline: float,
                   clock: Callable[[], float] = time.monotonic,
                   resolution: float = MAX_FRAMES_RESOLUTION) -> Dict[str, object]:
    """The largest n in 1..limit for which `probe(n)` fits (returns a figure, None: does not fit),
    assuming fitting is monotone in n: doubling from `start` until a probe fails (or `limit` fits), then
    bisection until the bracket is within `resolution` of its upper end. No probe starts after
    `deadline` (on `clock`); `complete` says whether the search got that far.

    Returns {"largest_fitting": n or 0 (none known), "smallest_failing": n or None, "complete", "probes":
    [{"frames", "fits", "figure"}]}."""
    largest, smallest_failing = 0, None
    probes: List[Dict[str, object]] = []
    frames, complete = min(start, limit), False
    while clock() < deadline:
        figure = probe(frames)
        probes.append({"frames": frames, "fits": figure is not None, "figure": figure})
        if figure is not None:
            largest = frames
        else:
            smallest_failing = frames
        if smallest_failing is None:
            if frames >= limit:
                complete = True
                break
            frames = min(2 * frames, limit)
        else:
            if smallest_failing - largest <= max(1, int(smallest_failing * resolution)):
                complete = True
                break
            frames = (largest + smallest_failing) // 2
    return {"largest_fitting": largest, "smallest_failing": smallest_failing, "complete": complete,
            "probes": probes}


def is_out_of_memory(error: BaseException) -> bool:
    """PyTorch's allocator raises OutOfMemoryError; cuBLAS and cuDNN report a failed allocation of their
    own as a RuntimeError."""
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and any(sign in str(error) for sign in OUT_OF_MEMORY_SIGNS))


def train_peak_under_cap(option: str, frames: int, args: argparse.Namespace, device: torch.device
                         ) -> Optional[float]:
    """Total peak MiB of PROBE_STEPS training steps at `frames` (weights, gradients and AdamW state
    included), None when the capped allocator runs out of memory."""
    release_cuda_memory(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out_of_memory = False
    step: Optional[Callable[[], object]] = None
    try:
        step = train_case(option, args, device, frames)
        for _ in range(PROBE_STEPS):
            step()
        synchronize(device)
    except RuntimeError as error:  # (OutOfMemoryError is one)
        if not is_out_of_memory(error):
            raise
        out_of_memory = True  # the traceback (and the tensors its frames hold) is dropped with this block
    peak = torch.cuda.max_memory_allocated(device)
    del step
    release_cuda_memory(device)
    return None if out_of_memory else (peak - base) / MIB


def max_frames(args: argparse.Namespace, device: torch.device, start_time: float,
               on_progress: Callable[[Dict[str, object]], None] = lambda found: None) -> Dict[str, object]:
    """Per training option, the largest --num_frames that trains under the --max_frames_gib cap;
    `on_progress` gets the figures so far after every option."""
    total = torch.cuda.get_device_properties(device).total_memory
    cap = args.max_frames_gib * GIB
    # the cap counts what PyTorch's allocator holds; a real card also holds the CUDA context
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total), device)
    end = start_time + args.time_budget_s if args.time_budget_s > 0 else float("inf")
    options = list(TRAIN_OPTIONS)
    found: Dict[str, object] = {}
    figures = {"cap_gib": args.max_frames_gib, "device_total_gib": total / GIB, "capped": cap < total,
               "limit": args.max_frames_limit, "options": found}
    try:
        for index, option in enumerate(options):
            # an equal share of the time left for each option still to search
            deadline = time.monotonic() + (end - time.monotonic()) / (len(options) - index)
            probe = functools.partial(train_peak_under_cap, option, args=args, device=device)
            try:
                found[option] = search_largest(probe, MAX_FRAMES_START, args.max_frames_limit, deadline)
            except RuntimeError as error:  # not a lack of memory: say so, and search the next option
                found[option] = {"largest_fitting": 0, "smallest_failing": None, "complete": False, "probes": [],
                                 "error": f"{type(error).__name__}: {str(error)[:ERROR_CHARS]}"}
            print(f"max frames, {option}: {found[option]['largest_fitting']} ({uptime()})", file=sys.stderr)
            on_progress(figures)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
    return figures


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
          f"device {results['machine']['device']} {results['machine']['cuda_device'] or ''}, "
          f"DCN backend {results['machine']['dcn_backend']}")
    print(f"load: before {results['load_before']}, after {results.get('load_after', '-')}")
    header = (f"{'case':<26}{'median s':>10}{'ratio':>8}{'paired':>8}{'frames/s':>10}{'step peak MiB':>15}"
              f"{'total MiB':>11}{'RSS peak MiB':>14}")
    cfg = results["config"]
    for section, frames in cfg["section_frames"].items():
        if section not in results:
            continue
        print(f"\n{section} ({frames} frames {cfg['size']}, ratio to the bare {cfg['backbone']} body 'baseline')")
        print(header)
        for name, row in results[section].items():
            memory = row.get("memory", {})
            peaks = "".join(f"{memory[key]:{width}.0f}" if key in memory else f"{'-':>{width}}"
                            for key, width in (("peak_mib", 15), ("total_peak_mib", 11), ("process_peak_mib", 14)))
            rate = f"{row['frames_per_s']:10.1f}" if "frames_per_s" in row else f"{'-':>10}"
            print(f"{name:<26}{row['median_s']:10.3f}{row['ratio']:8.2f}{row['paired_ratio']:8.2f}{rate}{peaks}")
    if "checkpoint_memory_reduction" in results:
        print(f"\n--checkpoint_activations lowers the training step's peak memory by "
              f"{100 * results['checkpoint_memory_reduction']:.0f}%")
    if "stages" in results:
        print(f"\nstages of the optimised model's inference ({results['stages']['frames']} frames {cfg['size']}, "
              f"{results['machine']['threads']} threads)")
        print(format_stage_table(results["stages"]))
    if "scaling" in results:
        print(format_scaling_table(results["scaling"]))
    if "loader" in results:
        step = results["loader"]["training_step"]
        print(f"\ntraining step (default options) {step['median_s']:.2f} s at {step['frames']} frames {step['size']}, "
              f"{step['step_s_at_loader_frames']:.2f} s scaled to {results['loader']['frames']} frames; "
              f"'clip / step': the loader's time per clip over that step")
        print(format_loader_table(results["loader"], step["step_s_at_loader_frames"]))
    if "max_frames" in results:
        search = results["max_frames"]
        print(f"\nlargest --num_frames that trains under {search['cap_gib']:g} GiB:")
        for option, found in search["options"].items():
            failing = found["smallest_failing"]
            print(f"  {option:<24}{found['largest_fitting']:>6} (fails at {failing if failing else '-'}"
                  f"{'' if found['complete'] else ', search cut short'}) {found.get('error', '')}")


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
    start_time = time.monotonic()
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads > 0:
        set_cpu_threads(args.threads)
    if args.scaling_worker:
        print(json.dumps(scaling_point_here(Point(**json.loads(args.scaling_worker)), args, device)))
        return 0
    if args.memory_worker:
        kind, name, frames = args.memory_worker.split(":")
        print(json.dumps(measure_memory_here(kind, name, args, device, int(frames))))
        return 0

    worker_argv = strip_option(argv, "--json")
    cuda = device.type == "cuda"
    sections = [("inference", "inference", CUDA_INFERENCE_CASES if cuda else INFERENCE_CASES, args.frames)]
    sections += [("training" if index == 0 else f"training_{frames}", "train", TRAIN_CASES, frames)
                 for index, frames in enumerate(args.train_frames)]
    results: Dict[str, object] = {
        "machine": {"cpu": cpu_name(), "threads": torch.get_num_threads(), "device": args.device,
                    "cuda_device": torch.cuda.get_device_name() if cuda else None,
                    "torch": torch.__version__, "dcn_backend": selected_backend()},
        "config": {"frames": args.frames, "train_frames": args.train_frames[0], "size": f"{args.height}x{args.width}",
                   "audio_len": args.audio_len, "repeats": args.repeats, "backbone": args.backbone,
                   "hidden_dim": args.hidden_dim,
                   "section_frames": {section: frames for section, _, _, frames in sections}},
        "load_before": uptime(),
    }
    if cuda:
        properties = torch.cuda.get_device_properties(device)
        results["machine"].update({
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "capability": f"{properties.major}.{properties.minor}", "memory_gib": properties.total_memory / GIB,
            "tf32_defaults": {"matmul": torch.backends.cuda.matmul.allow_tf32,
                              "cudnn": torch.backends.cudnn.allow_tf32}})

    def save() -> None:  # after every section: a run cut short keeps what it finished
        if args.json is not None:
            atomic_json_dump(results, args.json, indent=1)

    if args.stages or args.loader or args.scaling:
        sections = []
    if args.scaling:
        results["scaling"] = scaling_section(args, worker_argv, save_partial=lambda part: (
            results.__setitem__("scaling", part), save()))
        save()
        print_table(results)
        return 0
    if args.loader:
        results["loader"] = loader_section(args, device)
        save()
        print_table(results)
        return 0
    for section, kind, cases, frames in sections:
        steps = {name: build_case(kind, name, args, device, frames) for name in cases}
        summary = summarise(interleaved_times(steps, args.repeats, device), baseline="baseline")
        del steps
        release_cuda_memory(device)
        if kind == "inference":
            for row in summary.values():
                row["clips_per_s"] = 1 / row["median_s"]
                row["frames_per_s"] = frames / row["median_s"]
        if not args.no_memory:
            for name in cases:
                summary[name]["memory"] = measure_memory(kind, name, args, worker_argv, frames)
        results[section] = summary
        save()
        print(f"{section} done ({uptime()})", file=sys.stderr)
    if not args.no_memory and "training" in results:
        training = results["training"]
        results["checkpoint_memory_reduction"] = 1 - (training["checkpoint_activations"]["memory"]["peak_mib"]
                                                      / training["default"]["memory"]["peak_mib"])
    if args.max_frames_gib > 0:
        def progress(figures: Dict[str, object]) -> None:
            results["max_frames"] = figures
            save()
        results["max_frames"] = max_frames(args, device, start_time, progress)
    results["stages"] = stage_profile(args, device)
    results["stages"]["frames"] = args.frames
    results["load_after"] = uptime()
    save()
    print_table(results)
    return 0


def loader_section(args: argparse.Namespace, device: torch.device) -> Dict[str, object]:
    """The loader's figures and the default training step it feeds: the step is timed at --train_frames[0]
    (after one untimed step) and scaled linearly to the loader's --loader_frames (`step_s_at_loader_frames`)."""
    figures = benchmark_loader(args.loader_frames, args.loader_workers, args.loader_clips, args.loader_videos,
                               args.loader_frame_size)
    print(f"loader done ({uptime()})", file=sys.stderr)
    step_frames = args.train_frames[0]
    step = train_case("default", args, device, step_frames)
    step()
    times = [timed(step, device) for _ in range(args.repeats)]
    figures["training_step"] = {"frames": step_frames, "size": f"{args.height}x{args.width}", "times_s": times,
                                "median_s": statistics.median(times),
                                "step_s_at_loader_frames": statistics.median(times) * args.loader_frames / step_frames}
    return figures


def feature_tokens(model: nn.Module, run: Callable[[], object]) -> int:
    """The encoder's visual tokens (T*h*w) in one `run`: the length of the input projection's output."""
    shapes: List[torch.Size] = []
    handle = model.wnet.input_proj.register_forward_hook(lambda module, inputs, output: shapes.append(output.shape))
    try:
        run()
    finally:
        handle.remove()
    frames, _, height, width = shapes[0]
    return frames * height * width


def scaling_point_here(point: Point, args: argparse.Namespace, device: torch.device) -> Dict[str, object]:
    """One point of --scaling in this process (a fresh one, see `measure_scaling_point`): the time of one
    measured pass after an untimed one (for training: the second step, after AdamW has made its state), its peak
    resident memory above the memory before it (`peak_mib`) and the whole process's (`process_peak_mib`); for
    inference also the encoder's, its attention's and the decoder's time and the visual tokens."""
    sized = freeze(args, height=point.height, width=point.width)
    row: Dict[str, object] = point.as_dict()
    if point.kind == "train":
        step = train_case(point.option, sized, device, point.frames)
        warm_up = run = step
        clock = None
    else:
        torch.manual_seed(0)
        model, _, postprocessors = build_model(model_args(sized, point.frames))
        model = optimize_for_inference(model.to(device))
        frames, audio = make_clip(sized, point.video_frames or point.frames, device)
        postprocess, out_size = postprocessors["segm"], (point.height, point.width)

        def warm_up() -> object:
            with torch.no_grad():
                return predict_clip_masks(model, postprocess, frames[:point.frames], audio[0], out_size)

        def run() -> object:
            with torch.no_grad():
                if point.kind == "video":
                    return predict_video_masks(model, postprocess, frames, audio[0], point.frames, out_size)
                return predict_clip_masks(model, postprocess, frames, audio[0], out_size)
        layers = len(model.wnet.transformer.encoder.layers)
        attention = tuple(f"wnet.transformer.encoder.layers.{i}.self_attn" for i in range(layers))
        clock = StageClock(model, functools.partial(synchronize, device), (
            Stage("encoder", ("wnet.transformer.encoder",)), Stage("encoder_attention", attention),
            Stage("decoder", ("wnet.transformer.decoder",))))
        with torch.no_grad():
            row["tokens"] = feature_tokens(model, lambda: model(frames[:point.frames], audio))
        row["clips"] = -(-max(point.video_frames, point.frames) // point.frames)
    warm_up()
    if clock is not None:
        clock.reset()
    gc.collect()
    before = resident_bytes()
    with ResidentPeak() as sampler:
        row["time_s"] = timed(run, device)
    row.update({"peak_mib": (sampler.peak - before) / MIB, "before_mib": before / MIB,
                "process_peak_mib": sampler.peak / MIB})
    if clock is not None:
        row.update({f"{name}_s": seconds for name, seconds in clock.seconds.items()})
    return row


def measure_scaling_point(point: Point, argv: Sequence[str]) -> Dict[str, object]:
    """`scaling_point_here` in a fresh process, glibc's mmap threshold fixed as for the memory cases."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD), MALLOC_TRIM_THRESHOLD_=str(MMAP_THRESHOLD))
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--scaling_worker", json.dumps(point.as_dict())]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"scaling point {point} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def scaling_section(args: argparse.Namespace, worker_argv: Sequence[str],
                    save_partial: Callable[[Dict[str, object]], None]) -> Dict[str, object]:
    """Every point of the chosen sweeps, each in a fresh process; then the fits and, with --scaling_plot, the
    picture."""
    points = scaling_points(args.height, args.width, args.scaling_clip_lengths, args.scaling_frame_scales,
                            args.scaling_video_lengths, args.frames, args.scaling_train_lengths)
    model = f"{args.backbone}, hidden {args.hidden_dim}, {args.audio_len} audio frames"
    figures: Dict[str, object] = {
        "sweeps": {}, "models": {sweep: model for sweep in args.scaling_sweeps},
        "title": f"Wnet ({model}), {torch.get_num_threads()} CPU thread(s); peaks are resident memory above the "
                 f"start of the pass"}
    argv = strip_option(worker_argv, "--scaling_plot")
    for sweep in args.scaling_sweeps:
        figures["sweeps"][sweep] = []
        for point in points[sweep]:
            figures["sweeps"][sweep].append(measure_scaling_point(point, argv))
            print(f"scaling {sweep} {point} done ({uptime()})", file=sys.stderr)
            save_partial(figures)
    figures["summary"] = summarise_scaling(figures)
    if "video_fit" in figures["summary"]:
        figures["video_fit"] = figures["summary"]["video_fit"]
    if args.scaling_plot is not None:
        plot_scaling(figures, args.scaling_plot)
    return figures


def stage_profile(args: argparse.Namespace, device: torch.device) -> Dict[str, object]:
    """`benchmark_stages.profile_stages` of the optimised default mask model on one clip of --frames."""
    torch.manual_seed(0)
    model, _, postprocessors = build_model(model_args(args, args.frames))
    model = optimize_for_inference(model.to(device))
    clip, audio = make_clip(args, args.frames, device)
    profile = profile_stages(model, postprocessors["segm"], clip, audio, args.stage_repeats,
                             functools.partial(synchronize, device))
    print(f"stages done ({uptime()})", file=sys.stderr)
    return profile


if __name__ == "__main__":
    sys.exit(run_main(main))
