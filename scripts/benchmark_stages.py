"""The optimised mask model stage by stage: time (forward hooks), FLOPs (FlopCounterMode) and the ratio of the
whole inference to the model's own optimised backbone on the same frames.

Stages are the model's own modules (`STAGES`); `postprocessing` is the `segm` postprocessor (logits upsampled to
the frame size, threshold, scores); `other` is what lies between the stages (the clip batch, reshapes, the
padding masks of the levels). On the CPU every operator returns when its work is done, so a hook's clock reads
the stage's own time; on CUDA the hooks synchronise first.
"""
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from models import WnetSegm
from models.dcn import DeformConv
from models.wnet import as_clip_batch


@dataclass(frozen=True)
class Stage:
    name: str
    modules: Tuple[str, ...]  # submodule paths of `WnetSegm`


MASK_HEAD = "FPN mask head + DCN"  # the deformable convolution's FLOPs are added to it
STAGES = (
    Stage("backbone", ("wnet.backbone",)),
    Stage("input projection", ("wnet.input_proj", "wnet.proj_a")),
    Stage("encoder + wavelet", ("wnet.transformer.encoder",)),
    Stage("Fourier decoder", ("wnet.transformer.decoder",)),
    Stage("box head", ("wnet.bbox_embed",)),
    Stage("attention maps", ("bbox_attention",)),
    Stage(MASK_HEAD, ("mask_head",)),
    Stage("3-D instance head", ("insmask_head",)),
)
POSTPROCESSING = "postprocessing"
OTHER = "other"
ROW_NAMES = tuple(stage.name for stage in STAGES) + (POSTPROCESSING, OTHER)
GIGA = 1e9
MS = 1e3
MULTIPLY_ADD_FLOPS = 2
# CPU flash attention has no formula in FlopCounterMode; it does the work of the other SDPA kernels
CPU_SDPA_OPS = [getattr(torch.ops.aten, name) for name in ("_scaled_dot_product_flash_attention_for_cpu",)
                if hasattr(torch.ops.aten, name)]


class StageClock:
    """Forward pre/post hooks on the modules of `stages`; `seconds` holds each stage's time in the passes since
    the last `reset`."""

    def __init__(self, model: WnetSegm, synchronize: Callable[[], None], stages: Sequence[Stage] = STAGES) -> None:
        self.seconds: Dict[str, float] = {}
        self._stages = stages
        self._started: Dict[str, float] = {}
        self._synchronize = synchronize
        self._handles = []
        for stage in stages:
            for path in stage.modules:
                module = model.get_submodule(path)
                self._handles.append(module.register_forward_pre_hook(self._start(path)))
                self._handles.append(module.register_forward_hook(self._stop(path, stage.name)))
        self.reset()

    def reset(self) -> None:
        self.seconds = {stage.name: 0.0 for stage in self._stages}

    def _start(self, path: str) -> Callable:
        def hook(module: nn.Module, inputs: object) -> None:
            self._synchronize()
            self._started[path] = time.perf_counter()
        return hook

    def _stop(self, path: str, stage: str) -> Callable:
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            self._synchronize()
            self.seconds[stage] += time.perf_counter() - self._started.pop(path)
        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def deform_conv_flops(model: WnetSegm, run: Callable[[], object]) -> int:
    """Multiply-adds (x2) of the deformable convolutions in one `run` (the compiled extension is no aten operator,
    so FlopCounterMode cannot see it): those of a dense convolution of the same shape."""
    total = 0

    def count(module: DeformConv, inputs: Tuple[Tensor, Tensor], output: Tensor) -> None:
        nonlocal total
        kernel_h, kernel_w = module.kernel_size
        per_output = module.in_channels // module.groups * kernel_h * kernel_w
        total += MULTIPLY_ADD_FLOPS * output.numel() * per_output
    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, DeformConv)]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return total


def cpu_sdpa_flops(query_shape: torch.Size, key_shape: torch.Size, value_shape: torch.Size, *args: object,
                   out_shape: object = None, **kwargs: object) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def stage_flops(model: WnetSegm, run: Callable[[], object]) -> Dict[str, float]:
    """GFLOP of each stage in one `run` of the whole inference (postprocessing's interpolation counts none)."""
    # FlopCounterMode's module tracker fails on views of parameters that require grad made under no_grad
    wanted = [p for p in model.parameters() if p.requires_grad]
    for param in wanted:
        param.requires_grad_(False)
    try:
        with FlopCounterMode(display=False, custom_mapping={op: cpu_sdpa_flops for op in CPU_SDPA_OPS}) as counter:
            run()
    finally:
        for param in wanted:
            param.requires_grad_(True)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    flops = {name: 0.0 for name in ROW_NAMES}
    for stage in STAGES:
        flops[stage.name] = sum(sum(counts.get(f"{root}.{path}", {}).values()) for path in stage.modules) / GIGA
    flops[OTHER] = max(0.0, counter.get_total_flops() / GIGA - sum(flops.values()))  # between the stages
    flops[MASK_HEAD] += deform_conv_flops(model, run) / GIGA
    return flops


def profile_stages(model: WnetSegm, postprocess: nn.Module, clip: Tensor, audio: Tensor, repeats: int,
                   synchronize: Callable[[], None] = lambda: None) -> Dict[str, object]:
    """`repeats` interleaved rounds (after one warm-up) of the whole inference (model and postprocessor, clip
    `[T, 3, H, W]`, audio `[1, 39, L]`) and of the model's own backbone on the same frames, rotating which
    goes first. `model` is already optimised for inference.

    Returns `stages` (one row per stage of `ROW_NAMES`: `times_ms`, `median_ms`, `share` of the whole median,
    `gflop`, `ms_per_gflop_vs_backbone`), `total` and `backbone_alone` (`times_ms`, `median_ms`, `min_ms`,
    `max_ms`), `ratio` (median whole / median backbone), `paired_ratio` (median over rounds of the ratio within
    a round), `ratio_range` (lowest and highest ratio within a round)."""
    frames = as_clip_batch(clip, model.wnet.num_frames)
    size = torch.tensor([list(clip.shape[-2:])])
    clock = StageClock(model, synchronize)
    post_seconds = [0.0]

    def whole() -> None:
        outputs = model(clip, audio)
        synchronize()
        start = time.perf_counter()
        postprocess(outputs, size)
        post_seconds[0] = time.perf_counter() - start

    def backbone() -> None:
        model.wnet.backbone(frames)

    stage_ms: Dict[str, List[float]] = {name: [] for name in ROW_NAMES}
    total_ms: List[float] = []
    backbone_ms: List[float] = []
    steps: Sequence[Tuple[str, Callable[[], None]]] = (("whole", whole), ("backbone", backbone))
    try:
        with torch.no_grad():
            for _, step in steps:
                step()
            for repeat in range(repeats):
                for name, step in steps[repeat % 2:] + steps[:repeat % 2]:
                    clock.reset()
                    synchronize()
                    start = time.perf_counter()
                    step()
                    synchronize()
                    elapsed = (time.perf_counter() - start) * MS
                    if name == "backbone":
                        backbone_ms.append(elapsed)
                        continue
                    total_ms.append(elapsed)
                    for stage, seconds in clock.seconds.items():
                        stage_ms[stage].append(seconds * MS)
                    stage_ms[POSTPROCESSING].append(post_seconds[0] * MS)
                    stage_ms[OTHER].append(elapsed - sum(stage_ms[n][-1] for n in ROW_NAMES if n != OTHER))
    finally:
        clock.remove()
    with torch.no_grad():
        flops = stage_flops(model, whole)
    total_median = statistics.median(total_ms)
    backbone_row_ms = statistics.median(stage_ms["backbone"])
    backbone_rate = backbone_row_ms / flops["backbone"] if flops["backbone"] else None
    rows = []
    for name in ROW_NAMES:
        median = statistics.median(stage_ms[name])
        relative: Optional[float] = None
        if flops[name] > 0 and backbone_rate:
            relative = median / flops[name] / backbone_rate
        rows.append({"stage": name, "times_ms": stage_ms[name], "median_ms": median,
                     "share": median / total_median, "gflop": flops[name], "ms_per_gflop_vs_backbone": relative})
    ratios = [t / b for t, b in zip(total_ms, backbone_ms)]

    def summary(values: List[float]) -> Dict[str, object]:
        return {"times_ms": values, "median_ms": statistics.median(values), "min_ms": min(values),
                "max_ms": max(values)}
    return {"stages": rows, "total": summary(total_ms), "backbone_alone": summary(backbone_ms),
            "ratio": total_median / statistics.median(backbone_ms), "paired_ratio": statistics.median(ratios),
            "ratio_range": [min(ratios), max(ratios)], "total_gflop": sum(flops.values()),
            "flop_ratio": sum(flops.values()) / flops["backbone"] if flops["backbone"] else None}


def format_stage_table(profile: Dict[str, object]) -> str:
    """The per-stage table and the ratio line."""
    lines = [f"{'stage':<22}{'ms median':>11}{'min-max ms':>14}{'share':>8}{'GFLOP':>9}{'ms/GFLOP vs backbone':>22}"]

    def line(name: str, row: Dict[str, object], share: str, gflop: float, relative: Optional[float]) -> str:
        spread = f"{row['min_ms']:.0f}-{row['max_ms']:.0f}"
        rate = f"{relative:22.2f}" if relative is not None else f"{'-':>22}"
        return f"{name:<22}{row['median_ms']:11.1f}{spread:>14}{share:>8}{gflop:9.2f}{rate}"

    for row in profile["stages"]:
        spread = {"median_ms": row["median_ms"], "min_ms": min(row["times_ms"]), "max_ms": max(row["times_ms"])}
        lines.append(line(row["stage"], spread, f"{100 * row['share']:.1f}%", row["gflop"],
                          row["ms_per_gflop_vs_backbone"]))
    lines.append(line("whole inference", profile["total"], "100%", profile["total_gflop"], None))
    backbone_gflop = next(row["gflop"] for row in profile["stages"] if row["stage"] == "backbone")
    lines.append(line("own backbone alone", profile["backbone_alone"], "", backbone_gflop, None))
    low, high = profile["ratio_range"]
    flop_ratio = profile["flop_ratio"]
    lines.append(f"whole inference / own optimised backbone: {profile['ratio']:.2f}x (paired {profile['paired_ratio']:.2f}x,"
                 f" range {low:.2f}-{high:.2f}, {len(profile['total']['times_ms'])} interleaved repeats)"
                 + (f"; by FLOPs {flop_ratio:.2f}x" if flop_ratio else ""))
    return "\n".join(lines)
