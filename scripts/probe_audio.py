"""The listening probe: where does the audio signal die inside a trained Wnet?

    python scripts/probe_audio.py --config configs/demo.yaml --model_path output/demo/checkpoint.pth \
        --ytvos_path data/demo --rvos_audio_path data/demo/audio_feature --split_file data/demo/test_videos.txt
    python scripts/probe_audio.py ... --json probe.json --max_videos 20

Every expression of every video (with at least two expressions) runs on the video's clips twice: with its own
recording and with the recording of another expression of the same video (the next one, cyclically). For each
stage of the model the probe reports how much the output changes, as the relative L2 distance
`|own - other| / |own|` averaged over expressions and clips:

    fusion          audio-visual tokens of the cross-modal encoder      (L_v, B, C)
    memory          encoder output (after the wavelet denoising step)   (L_v, B, C)
    queries         the last decoder layer's queries                    (B, Q, C)
    bbox_attention  attention maps of the queries over the memory       [B*T, 1, heads, h, w]
    mask_logits     the mask head's logits                              (B, Q, H/4, W/4)

and `mask_iou`, the IoU of the two predicted masks (the model's `segm` postprocessor, at the mask head's
resolution): 1 when the recording changes nothing, low when the model follows the words to another object. A stage
with a large change followed by one with almost none is where the audio stops mattering. Model, data and inference
options are those of inference_rvos.py.
"""
import argparse
import sys
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

import inference_rvos
from datasets.audio import AudioLoader
from engine.inference import load_frame, load_model_for_inference
from inference_rvos import split_jobs
from models.postprocess import PostProcessSegm
from util.clips import cyclic_clips
from util.config import inference_scale
from util.errors import OptionError, run_main
from util.misc import atomic_json_dump

STAGES = ("fusion", "memory", "queries", "bbox_attention", "mask_logits")
NORM_FLOOR = 1e-12  # a stage whose output is all zeros has no relative change to report


def get_parser() -> argparse.ArgumentParser:
    parser = inference_rvos.get_parser("Wnet listening probe")
    parser.add_argument("--json", default="", type=str, help="also write the figures (and per-expression rows) here")
    parser.add_argument("--max_videos", default=0, type=int, help="probe only the first N videos (0 = all)")
    return parser


def relative_change(own: Tensor, other: Tensor) -> float:
    """|own - other| / |own| (L2 over every element)."""
    own, other = own.detach().float(), other.detach().float()
    return float((own - other).norm() / own.norm().clamp_min(NORM_FLOOR))


def mask_iou(a: Tensor, b: Tensor) -> float:
    """IoU of two binary masks; 1 when both are empty (nothing changed)."""
    union = (a | b).sum()
    return float((a & b).sum() / union) if union > 0 else 1.0


def predicted_masks(postprocess: PostProcessSegm, outputs: Dict[str, Tensor]) -> Tensor:
    """The postprocessed masks `[T, h/4, w/4]` of one clip's outputs, kept at the mask head's resolution (the one
    the README's probe figures were measured at)."""
    size = torch.tensor([outputs["mask_logits"].shape[-2:]])
    return postprocess({"pred_masks": outputs["mask_logits"]}, size)[0]["masks"]


class StageRecorder:
    """Forward hooks that keep the outputs of the probed stages of a `WnetSegm`."""

    def __init__(self, model: nn.Module):
        self.outputs: Dict[str, Tensor] = {}
        self._handles = [
            model.wnet.transformer.register_forward_hook(self._keep_queries),
            model.bbox_attention.register_forward_hook(self._keep("bbox_attention")),
        ]

    def _keep(self, name: str):
        def hook(module, inputs, output):
            self.outputs[name] = output
        return hook

    def _keep_queries(self, module, inputs, output):
        hs = output[0]  # (L_dec, B, Q, C): the transformer returns (hs, memory, fusion)
        self.outputs["queries"] = hs[-1]

    def run(self, model: nn.Module, clip: Tensor, audio: Tensor) -> Dict[str, Tensor]:
        self.outputs = {}
        out = model(clip, audio[None])
        return {"fusion": out["fusion"], "memory": out["memory"], "mask_logits": out["pred_masks"], **self.outputs}

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


@torch.no_grad()
def probe(model: nn.Module, postprocess: PostProcessSegm, jobs, num_frames: int, scale: float = 1.0,
          device: str = "cpu") -> Dict[str, object]:
    """Run the probe over `jobs` (inference_rvos.VideoJob) with `model` and its mask postprocessor; returns the
    summary and the per-expression rows."""
    recorder = StageRecorder(model)
    load_audio = AudioLoader()
    rows: List[Dict[str, object]] = []
    try:
        for job in tqdm(jobs, desc="probe", dynamic_ncols=True):
            if len(job.expressions) < 2:
                continue
            clips = [torch.stack([load_frame(job.frame_paths[i], scale)[0] for i in indices]).to(device)
                     for indices, _ in cyclic_clips(len(job.frame_paths), num_frames)]
            audios = [load_audio(e.audio_path).to(device) for e in job.expressions]
            for k, expression in enumerate(job.expressions):
                other = (k + 1) % len(job.expressions)
                changes = defaultdict(list)
                ious = []
                for clip in clips:
                    own = recorder.run(model, clip, audios[k])
                    swapped = recorder.run(model, clip, audios[other])
                    for stage in STAGES:
                        changes[stage].append(relative_change(own[stage], swapped[stage]))
                    ious.append(mask_iou(predicted_masks(postprocess, own), predicted_masks(postprocess, swapped)))
                rows.append({"video": job.name, "exp_id": expression.exp_id,
                             "other_exp_id": job.expressions[other].exp_id,
                             **{stage: float(np.mean(v)) for stage, v in changes.items()},
                             "mask_iou": float(np.mean(ious))})
    finally:
        recorder.close()
    if not rows:
        raise ValueError("no video with at least two expressions to probe")
    summary = {key: float(np.mean([r[key] for r in rows])) for key in (*STAGES, "mask_iou")}
    return {"summary": summary, "num_expressions": len(rows), "num_videos": len({r["video"] for r in rows}),
            "rows": rows}


def format_table(result: Dict[str, object]) -> str:
    summary = result["summary"]
    lines = [f"{result['num_expressions']} expressions of {result['num_videos']} videos: own vs another "
             f"expression's recording", f"{'stage':<16}{'relative change':>16}"]
    lines += [f"{stage:<16}{summary[stage]:>16.4f}" for stage in STAGES]
    lines.append(f"{'mask IoU':<16}{summary['mask_iou']:>16.4f}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, object]:
    args = inference_rvos.parse(argv, get_parser())
    if args.max_videos < 0:
        raise OptionError(f"--max_videos must be >= 0, got {args.max_videos}")
    model, postprocessors, _, _ = load_model_for_inference(args)
    jobs = split_jobs(args)
    if args.max_videos:
        jobs = jobs[:args.max_videos]
    result = probe(model, postprocessors["segm"], jobs, args.num_frames, inference_scale(args), args.device)
    print(format_table(result))
    if args.json:
        atomic_json_dump({**result, "model_path": args.model_path}, args.json, indent=1)
    return result


if __name__ == "__main__":
    sys.exit(run_main(main))
