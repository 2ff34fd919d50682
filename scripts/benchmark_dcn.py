"""Time deformable convolution forward+backward: the compiled extension models/dcn/_C against torchvision.

    python scripts/benchmark_dcn.py [--frames 36] [--height 75] [--width 135] [--repeats 7] [--json OUT.json]

The default input is the mask head's deformable conv (48 -> 24 channels, 3x3, padding 1) on 36 frames of
75x135, with offsets of a few pixels. Each repeat times both backends back to back (alternating which goes
first) so that load from other processes hits both alike; the medians and their ratio are printed. The
backends must agree (relative error <= 1e-4 in float32). Exits with 1 when the extension's median exceeds
`--limit` times torchvision's (the target: at most 1.5x).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import Tensor

from models.dcn import deform_conv, extension_available
from util.config import ArgumentParser
from util.errors import run_main
from util.misc import atomic_json_dump

BACKENDS = ("extension", "torchvision")
OFFSET_SCALE = 2.0  # pixels; typical of a trained offset head
AGREEMENT_TOLERANCE = 1e-4  # relative error between the backends in float32


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=36, help="batch of frames (B*T)")
    parser.add_argument("--in-channels", type=int, default=48)
    parser.add_argument("--out-channels", type=int, default=24)
    parser.add_argument("--height", type=int, default=75)
    parser.add_argument("--width", type=int, default=135)
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per backend")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per backend first")
    parser.add_argument("--threads", type=int, default=0, help="torch/OpenMP threads (0: leave as is)")
    parser.add_argument("--limit", type=float, default=1.5, help="fail above this extension/torchvision ratio")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    return parser.parse_args(argv)


def make_inputs(args: argparse.Namespace) -> Tuple[Tensor, Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    padding = args.kernel // 2
    x = torch.randn(args.frames, args.in_channels, args.height, args.width, generator=generator)
    # The output keeps the input size (stride 1, "same" padding): [frames, 2*k*k, H, W]
    offset = OFFSET_SCALE * torch.randn(args.frames, 2 * args.kernel ** 2, args.height, args.width,
                                        generator=generator)
    weight = torch.randn(args.out_channels, args.in_channels, args.kernel, args.kernel, generator=generator)
    return x.requires_grad_(), offset.requires_grad_(), weight.requires_grad_()


def forward_backward(backend: str, x: Tensor, offset: Tensor, weight: Tensor, padding: int) -> List[Tensor]:
    """One training step of the layer: forward, then the gradients of input, offset and weight."""
    output = deform_conv(x, offset, weight, padding=padding, backend=backend)
    grad_output = torch.ones_like(output)
    return [output.detach(), *torch.autograd.grad(output, (x, offset, weight), grad_output)]


def timed(step: Callable[[], object]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if not extension_available():
        print("models/dcn/_C is not built: run `make build-ext` (or `cd models/dcn && python setup.py "
              "build_ext --inplace`)", file=sys.stderr)
        return 2
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    x, offset, weight = make_inputs(args)
    padding = args.kernel // 2
    steps = {name: (lambda name=name: forward_backward(name, x, offset, weight, padding)) for name in BACKENDS}

    results = {name: step() for name, step in steps.items()}
    errors = [((a - b).norm() / b.norm()).item() for a, b in zip(results["extension"], results["torchvision"])]
    if max(errors) > AGREEMENT_TOLERANCE:
        print(f"the backends disagree: relative errors (output, input, offset, weight grads) {errors}",
              file=sys.stderr)
        return 1
    del results
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    times: Dict[str, List[float]] = {name: [] for name in BACKENDS}
    for repeat in range(args.repeats):
        order = BACKENDS if repeat % 2 == 0 else BACKENDS[::-1]
        for name in order:
            times[name].append(timed(steps[name]))

    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["extension"] / medians["torchvision"]
    shape = f"{args.frames}x{args.in_channels}x{args.height}x{args.width} -> {args.out_channels} channels"
    print(f"deformable conv {args.kernel}x{args.kernel} forward+backward, {shape}, float32, "
          f"{torch.get_num_threads()} threads, {args.repeats} interleaved repeats")
    for name in BACKENDS:
        spread = ", ".join(f"{t:.3f}" for t in sorted(times[name]))
        print(f"  {name:12s} median {medians[name]:.3f} s  (all: {spread})")
    print(f"  extension / torchvision = {ratio:.2f}  (limit {args.limit})")
    if args.json is not None:
        atomic_json_dump(dict(shape=shape, threads=torch.get_num_threads(), repeats=args.repeats,
                              times=times, medians=medians, ratio=ratio, max_relative_error=max(errors)),
                         args.json)
    return 0 if ratio <= args.limit else 1


if __name__ == "__main__":
    sys.exit(run_main(main))
