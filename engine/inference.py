"""The inference side of the engine, shared by the inference scripts and tools: the model loaded for inference,
frames read as the official scripts read them, and masks over one clip or the clips of a whole video.

The official scripts build the model, load `{'model': state_dict}`, resize every frame to short side
300 (torchvision `Resize(300)`, no cap on the long side), normalise with the ImageNet statistics, run
one clip of `--num_frames` frames with one recording, upsample the mask logits bilinearly to the
original frame size and threshold the sigmoid at 0.5 (docs/protocol.md §7): `build_model`'s `segm` postprocessor.
"""
import argparse
import functools
import sys
from pathlib import Path
from typing import Collection, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

import util.misc as utils
from engine.train import amp_settings, autocast_context, outputs_to_float
from datasets import add_dataset_args, add_training_data_args
from datasets.formats import read_rgb
from datasets.options import TRAINED_WITH_DATA_OPTIONS
from datasets.transforms import make_inference_transforms
from models import add_model_args, add_model_training_args, build_inference_model, optimize_for_inference
from models.options import ARCHITECTURE_OPTIONS, TRAINED_WITH_OPTIONS
from models.postprocess import PostProcessSegm
from util.clips import cyclic_clips
from util.config import (ArgumentParser, FrozenNamespace, HelpFormatter, freeze, given_options, inference_scale,
                         option_names, parse_args)
from util.errors import OptionError, check_device
from util.names import natural_sorted
from util.options import (ENTRY_POINT_GROUPS, TRAINED_WITH_INFERENCE_OPTIONS, add_inference_args, add_run_args,
                          inference_args)
from util.reporting import log_json
from util.weights import (WeightsFileError, checkpoint_args, checkpoint_train_videos, load_weights_file,
                          load_wnet_checkpoint)

PathLike = Union[str, Path]

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")


# ----------------------------------------------------------------------------- the model for inference
class AutocastInference(nn.Module):
    """`model` run under autocast to `dtype` on its parameters' device (`--amp` at inference), its outputs in
    float32 for the postprocessor (the sigmoid and the upsampling to the frame size, as the official)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, *inputs: Tensor) -> Dict[str, Tensor]:
        """The wrapped model's outputs (same keys and shapes), floating tensors in float32."""
        with autocast_context(next(self.model.parameters()).device, True, self.dtype):
            outputs = self.model(*inputs)
        return outputs_to_float(outputs)


def inference_parser(prog: str, data: str, *dataset_groups) -> argparse.ArgumentParser:
    """The options of an inference script: the run's, the model's, the data's (the paths of the dataset `data`
    alone: "ytvos", "a2d" or "jhmdb") and the inference groups, then its dataset's own (`dataset_groups`: functions
    that add an argument group)."""
    parser = ArgumentParser(prog, formatter_class=HelpFormatter)
    for add_group in (add_run_args, add_model_args, functools.partial(add_dataset_args, data=(data,)),
                      add_inference_args, *dataset_groups):
        add_group(parser)
    return parser


def parse_inference(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> FrozenNamespace:
    """The options of `argv` by an inference script's `parser` after the post-parse step
    (`util.options.inference_args`), with the model options that `argv` leaves out taken from `--model_path`'s own
    (`with_checkpoint_args`), frozen. A config's keys of other entry points (training) are ignored."""
    other_options = option_names(*ENTRY_POINT_GROUPS, add_model_training_args, add_dataset_args, add_training_data_args)
    args = inference_args(parse_args(parser, argv, other_options=other_options))
    return with_checkpoint_args(args, given_options(parser, argv, other_options), parser)


def with_checkpoint_args(args: FrozenNamespace, given: Collection[str],
                         parser: argparse.ArgumentParser) -> FrozenNamespace:
    """`args` with the options `--model_path` was trained with (its checkpoint's `args`, checked by `parser`'s
    types) in place of those the command line and its config left at their defaults (not in `given`): a checkpoint
    alone builds its model, as VisTR/DETR users expect. A given option of `ARCHITECTURE_OPTIONS` that differs from
    the checkpoint's is an OptionError naming it; one of the trained-with options is used, with a note on stderr.
    A checkpoint that records no options (the released one) leaves `args` as they are."""
    path = Path(args.model_path) if args.model_path else None
    if path is None or not path.is_file():
        return args  # load_model_for_inference names the problem
    recorded = checkpoint_args(load_weights_file(path), path)
    actions = {action.dest: action for action in parser._actions}
    taken, contradicted = {}, []
    for name in ARCHITECTURE_OPTIONS + TRAINED_WITH_OPTIONS + TRAINED_WITH_DATA_OPTIONS + TRAINED_WITH_INFERENCE_OPTIONS:
        if name not in recorded or name not in actions:
            continue
        trained = recorded_value(actions[name], recorded[name], path)
        if name not in given:
            taken[name] = trained
        elif getattr(args, name) != trained and name in ARCHITECTURE_OPTIONS:
            contradicted.append(f"--{name} {getattr(args, name)}: the checkpoint was trained with {trained}")
        elif getattr(args, name) != trained:
            print(f"note: --{name} {getattr(args, name)}: the checkpoint {path} was trained with {trained}; "
                  f"inferring with {getattr(args, name)} (the command line's)", file=sys.stderr)
    if contradicted:
        raise OptionError("; ".join(contradicted) + f" ({path}; leave these options out: the model is built from "
                                                    f"the checkpoint's own)")
    changed = {name: value for name, value in taken.items() if getattr(args, name) != value}
    if changed:
        log_json({"event": "checkpoint_args", "model_path": str(path), "options": changed})
    return freeze(args, **taken)


def recorded_value(action: argparse.Action, value: object, path: Path) -> object:
    """A checkpoint's recorded `value` of `action`'s option, checked as the command line would check it; a value
    the option cannot take is a WeightsFileError naming `path` and the option."""
    try:
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            if not isinstance(value, bool):
                raise ValueError(f"{value!r} is not true or false")
        elif action.type is not None:
            value = action.type(value if isinstance(value, str) else str(value))
        if action.choices is not None and value not in action.choices:
            raise ValueError(f"{value!r} is not one of {list(action.choices)}")
    except (argparse.ArgumentTypeError, ValueError) as error:
        raise WeightsFileError(f"{path}: its recorded option {action.dest}: {error}") from None
    return value


def load_model_for_inference(args) -> Tuple[nn.Module, Dict[str, nn.Module], Optional[Dict[str, List[str]]], int]:
    """Build the mask model of `args` and its postprocessors, load `--model_path` strictly, and make the model
    ready for inference. Returns (model, postprocessors, the `{part: [video names]}` the checkpoint records as
    trained on or None when it records none, the rate of the features the model was trained on).

    Eval mode unless `--inference_dropout` (the official scripts forget `model.eval()`, so their
    numbers come from the model in training mode); `models.optimize_for_inference` otherwise. `--amp` runs it
    under autocast (`AutocastInference`: bfloat16 on the CPU, `--amp_dtype` on CUDA), `--compile` through
    `torch.compile`; both depart from the official float32 protocol and are off by default. The training
    features' rate is the one the checkpoint's args record (0: unknown, e.g. the released checkpoint).
    """
    if not args.model_path:
        raise OptionError("--model_path is required: a checkpoint {'model': state_dict} (e.g. output/checkpoint.pth)")
    if not Path(args.model_path).is_file():
        raise OptionError(f"--model_path {args.model_path}: the file does not exist")
    if not args.masks:
        raise OptionError("inference predicts masks: pass --masks (the mask model), or a config that sets it")
    device = check_device(args.device)
    scale = inference_scale(args)
    if scale != args.data_scale:  # a departure from the official protocol: say so
        log_json({"event": "inference_size", "data_scale": args.data_scale, "inference_data_scale": scale,
                  "note": "--inference_data_scale: the frames are resized for inference to another scale than "
                          "--data_scale (the official infers at the training sizes)"})
    utils.seed_everything(args.seed)
    model, postprocessors = build_inference_model(args)
    checkpoint = load_wnet_checkpoint(model, args.model_path)
    saved_rate = checkpoint_args(checkpoint, args.model_path).get("audio_sample_rate") or 0
    if isinstance(saved_rate, bool) or not isinstance(saved_rate, int):
        raise WeightsFileError(f"{args.model_path}: its recorded option audio_sample_rate: {saved_rate!r} is not a "
                               f"whole number of samples per second")
    model_audio_sample_rate = saved_rate
    model.to(device)
    if args.inference_dropout:
        model.train()  # reproduce the official numbers (dropout active)
    else:
        model.eval()
        model = optimize_for_inference(model)
    if args.amp:
        dtype, _ = amp_settings(args, torch.device(device))
        log_json({"event": "amp", "dtype": str(dtype).replace("torch.", ""),
                  "note": "--amp: inference under autocast departs from the official float32 protocol (masks may "
                          "differ from float32 in a few pixels; docs/benchmark.md)"})
        model = AutocastInference(model, dtype)
    if args.compile:
        log_json({"event": "compile", "note": "--compile: torch.compile; the first clip of each frame size compiles"})
        model = torch.compile(model)
    return model, postprocessors, checkpoint_train_videos(checkpoint, args.model_path), model_audio_sample_rate


# ----------------------------------------------------------------------------- frames and recordings
@functools.lru_cache(maxsize=None)
def frame_transform(scale: float = 1.0):
    """The official inference transform (short side 300, ImageNet normalisation), sizes times `scale`
    (`util.config.inference_scale`: `--inference_data_scale`, else `--data_scale`; below 1 for small demo models)."""
    return make_inference_transforms(scale)


def list_frames(folder: PathLike) -> List[Path]:
    """Image files of a folder in the natural order of their names (`frame_2` before `frame_10`); names that order
    cannot tell apart (`1.jpg`, `01.jpg`) are refused."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"frame folder not found: {folder}")
    frames = [p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS and not p.name.startswith(".")]
    if not frames:
        raise FileNotFoundError(f"no frames ({', '.join(FRAME_EXTENSIONS)}) in {folder}")
    return natural_sorted(frames, folder)


def frame_tensor(image: Image.Image, scale: float = 1.0) -> Tensor:
    """An RGB frame -> the normalised tensor `[3, h, w]` at short side 300 x `scale`."""
    (tensor,), _ = frame_transform(scale)([image], {})
    return tensor


def load_frame(path: PathLike, scale: float = 1.0) -> Tuple[Tensor, Image.Image]:
    """A frame file -> (normalised tensor `[3, h, w]` at short side 300 x `scale`, the RGB image)."""
    image = read_rgb(path)
    return frame_tensor(image, scale), image


# ----------------------------------------------------------------------------- masks of a clip, of a video
@torch.no_grad()
def predict_clip_masks(model: nn.Module, postprocess: PostProcessSegm, clip: Tensor, audio: Tensor,
                       out_size: Tuple[int, int]) -> Dict[str, Tensor]:
    """One clip `[T, 3, h, w]` and one recording `[39, L]` -> the postprocessor's `masks [T, H, W]` (bool) at
    `out_size` (H, W) and their `scores [T]`, on the CPU."""
    device = next(model.parameters()).device
    outputs = model(clip.to(device), audio.to(device)[None])
    (result,) = postprocess(outputs, torch.tensor([out_size]))
    return {key: value.cpu() for key, value in result.items()}


def predict_video_masks(model: nn.Module, postprocess: PostProcessSegm, frames: Tensor, audio: Tensor,
                        num_frames: int, out_size: Tuple[int, int]) -> np.ndarray:
    """Every frame `[n, 3, h, w]` of a video and one recording `[39, L]` -> masks `[n, H, W]` (bool) at `out_size`,
    from consecutive clips of `num_frames` (`util.clips.cyclic_clips`: the last one filled cyclically)."""
    parts = []
    for indices, count in cyclic_clips(len(frames), num_frames):
        masks = predict_clip_masks(model, postprocess, frames[indices], audio, out_size)["masks"]  # [T, H, W]
        parts.append(masks[:count].numpy())
    return np.concatenate(parts)
