"""Inference in float32 against `--amp` (bfloat16 autocast) and `--compile` (torch.compile): time and agreement.

    python scripts/benchmark_precision.py [--frames 8] [--size 300x540] [--repeats 5] [--threads 1]
                                          [--modes fp32 amp compile compile_amp] [--json OUT]

The default mask model (ResNet-50, hidden 384, random weights of `--seed`, num_frames = num_queries = --frames)
after `models.optimize_for_inference`, as `engine.inference.load_model_for_inference` prepares it for each mode,
on one random clip and recording. Every repeat runs all modes back to back, starting with a different one each
time, so that load from other processes hits them alike; reported: the median, min and max seconds per clip, the
speed-up of the median against fp32 and the median of the speed-ups within a repeat (paired), the time of the first call (torch.compile compiles there), and against fp32's
outputs the share of mask logits of the same sign and the share of mask pixels (at the frame size, after the
postprocessor) that agree, with the masks' IoU.
"""
import argparse
import json
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

import inference_rvos
from engine.inference import AutocastInference
from models import build_inference_model, optimize_for_inference
from models.dcn import selected_backend
from util.config import ArgumentParser, HelpFormatter
from util.errors import run_main
from util.misc import atomic_json_dump, set_cpu_threads

MODES = ("fp32", "amp", "compile", "compile_amp")
AUDIO_FRAMES = 120  # the length of a typical recording's MFCC (about 1.2 s)


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser("Wnet inference precision benchmark", formatter_class=HelpFormatter)
    parser.add_argument("--frames", default=8, type=int, help="frames per clip (= queries)")
    parser.add_argument("--size", default="300x540", help="frame size HxW")
    parser.add_argument("--repeats", default=5, type=int)
    parser.add_argument("--threads", default=1, type=int, help="intra-op threads")
    parser.add_argument("--modes", default=list(MODES), nargs="+", choices=MODES)
    parser.add_argument("--seed", default=0, type=int)
    parser.add_argument("--json", default="", help="write the figures here")
    return parser


def parse(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return get_parser().parse_args(argv)


def build_modes(frames: int, modes: Sequence[str], seed: int) -> Dict[str, nn.Module]:
    """Each mode's model, all from the same float32 weights, prepared as `load_model_for_inference` does."""
    args = inference_rvos.parse(["--masks", "--device", "cpu", "--num_frames", str(frames),
                                 "--num_queries", str(frames), "--seed", str(seed)])
    torch.manual_seed(seed)
    model, postprocessors = build_inference_model(args)
    model = optimize_for_inference(model)
    built = {"fp32": model, "amp": AutocastInference(model, torch.bfloat16)}
    if "compile" in modes:
        built["compile"] = torch.compile(model)
    if "compile_amp" in modes:
        built["compile_amp"] = torch.compile(AutocastInference(model, torch.bfloat16))
    return {mode: built[mode] for mode in modes}, postprocessors["segm"]


def agreement(logits: Tensor, reference: Tensor, postprocess: nn.Module, size: List[int]) -> Dict[str, float]:
    """Against float32: the share of logits of the same sign, and of mask pixels at the frame size that agree, with
    the IoU of the masks."""
    def masks(values: Tensor) -> Tensor:
        return postprocess({"pred_masks": values}, torch.tensor([size]))[0]["masks"]
    ours, theirs = masks(logits), masks(reference)
    union = (ours | theirs).sum().item()
    return {"logit_sign_agreement": ((logits > 0) == (reference > 0)).float().mean().item(),
            "mask_pixel_agreement": (ours == theirs).float().mean().item(),
            "mask_iou": (ours & theirs).sum().item() / union if union else 1.0}


def main(argv: Optional[Sequence[str]] = None) -> int:
    options = parse(argv)
    set_cpu_threads(options.threads)
    height, width = (int(v) for v in options.size.lower().split("x"))
    models, postprocess = build_modes(options.frames, options.modes, options.seed)
    generator = torch.Generator().manual_seed(options.seed)
    clip = torch.randn(options.frames, 3, height, width, generator=generator)
    audio = torch.randn(1, 39, AUDIO_FRAMES, generator=generator)

    def step(model: nn.Module) -> Callable[[], Tensor]:
        return lambda: model(clip, audio)["pred_masks"].float()

    steps = {mode: step(model) for mode, model in models.items()}
    outputs, first_call, times = {}, {}, {mode: [] for mode in steps}
    with torch.no_grad():
        for mode, run in steps.items():  # the first call: warm-up (and torch.compile's compilation)
            start = time.perf_counter()
            outputs[mode] = run()
            first_call[mode] = time.perf_counter() - start
            print(json.dumps({"mode": mode, "first_call_s": round(first_call[mode], 2)}), flush=True)
        order = list(steps)
        for repeat in range(options.repeats):
            for mode in order[repeat % len(order):] + order[:repeat % len(order)]:
                start = time.perf_counter()
                steps[mode]()
                times[mode].append(time.perf_counter() - start)
    reference = outputs["fp32"] if "fp32" in outputs else None
    fp32_median = statistics.median(times["fp32"]) if "fp32" in times else None
    results = {"machine": {"threads": options.threads, "torch": torch.__version__, "dcn": selected_backend(),
                           "frames": options.frames, "size": [height, width], "repeats": options.repeats}, "modes": {}}
    for mode in steps:
        median = statistics.median(times[mode])
        row = {"median_s": round(median, 3), "min_s": round(min(times[mode]), 3), "max_s": round(max(times[mode]), 3),
               "first_call_s": round(first_call[mode], 2),
               "speedup": round(fp32_median / median, 2) if fp32_median else None,
               "paired_speedup": round(statistics.median(f / t for f, t in zip(times["fp32"], times[mode])), 2)
               if fp32_median else None}
        if reference is not None and mode != "fp32":
            row.update({k: round(v, 4) for k, v in agreement(outputs[mode], reference, postprocess,
                                                              [height, width]).items()})
        results["modes"][mode] = row
        print(json.dumps({"mode": mode, **row}), flush=True)
    if options.json:
        atomic_json_dump(results, options.json, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
