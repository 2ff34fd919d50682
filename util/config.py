"""One argument parser for every entry point, with YAML files that only set its defaults.

`get_args_parser(dataset_files=...)` holds every official option (docs/protocol.md §1) plus the data-path,
inference and performance options of this project. The `--dataset_file` choices come from the caller
(`main.get_args_parser()` passes the names of the dataset registry `datasets.DATASETS`), so that `util/`
imports nothing from `datasets/`. `parse_args(parser, argv)` applies `--config FILE` first: the YAML's keys
become the parser's defaults, command-line flags override them, and a key the parser does not know is an
error.
"""
import argparse
import copy
import math
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import yaml

from util.errors import DEBUG_FLAG, EXIT_OPTION, OptionError

# The value that turns a path option with an official default off (`--pretrained_weights none`,
# `--ytvos_ann_file none`, `--split_file none`).
NONE = "none"

# The official data layout (docs/protocol.md §1): every path option defaults to it.
OFFICIAL_YTVOS_PATH = "data/rvos"
OFFICIAL_RVOS_AUDIO_PATH = "data/rvos_audio_feature"
OFFICIAL_A2D_PATH = "data/a2d"
OFFICIAL_A2D_AUDIO_PATH = "data/a2d_j_audio_feature"
OFFICIAL_JHMDB_PATH = "data/JHMDB"
OFFICIAL_PRETRAINED_WEIGHTS = "coco_pretrained_weights/384_coco_r50.pth"
FRAMES_FOLDER = "JPEGImages"  # <ytvos_path>/<split>/JPEGImages: what the official --img_path names
DEFAULT_DATASET_FILE = "avos"  # the official training set: Ref-YouTube-VOS followed by A2D-Sentences


def is_none(value: Optional[str]) -> bool:
    """Whether a path option is switched off: empty, or `none` (any case)."""
    return not value or str(value).strip().lower() == NONE


def split_img_path(value: str) -> dict:
    """The official `--img_path <root>/<split>/JPEGImages` as our `{"ytvos_path": root, "ytvos_split": split}`."""
    path = Path(value)
    if path.name != FRAMES_FOLDER or not path.parent.name:
        raise ValueError(f"--img_path {value}: expected <ytvos_path>/<split>/{FRAMES_FOLDER} "
                         f"(or use --ytvos_path and --ytvos_split)")
    return {"ytvos_path": str(path.parent.parent), "ytvos_split": path.parent.name}


class ImgPathAction(argparse.Action):
    """The official inference scripts' `--img_path`: sets `--ytvos_path` and `--ytvos_split` (our options name
    the release root and split, from which every path follows)."""

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            for key, value in split_img_path(values).items():
                setattr(namespace, key, value)
        except ValueError as error:
            parser.error(str(error))


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` shows every option's default (the official ones, docs/protocol.md §1), described or not."""

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and action.option_strings and action.default is not argparse.SUPPRESS:
            action = copy.copy(action)
            action.help = "default: %(default)s"
        return super()._format_action(action)


# Official option names that are aliases of ours, as YAML keys too.
CONFIG_ALIASES = {"ann_path": "split_file"}

PARTIAL_SUFFIX = ".partial"  # what an interrupted inference run keeps beside its output


DEFAULT_AUDIO_ENCODER = "mfcc39"  # the official front end (models/audio_encoder.py)


def get_args_parser(*, dataset_files: Optional[Sequence[str]] = None,
                    audio_encoders: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    """Every option; `--dataset_file` accepts the names `dataset_files` and `--audio_encoder` the names
    `audio_encoders`. Without them any name parses and `datasets.build_dataset` / `models.build_audio_encoder`
    refuse an unknown one; entry points use `main.get_args_parser()`, which passes the registries
    (`datasets.DATASETS`, `models.audio_encoder.AUDIO_ENCODERS`: util does not import them)."""
    parser = ArgumentParser("Wnet", add_help=False)
    parser.add_argument("--config", default="", type=str,
                        help="YAML file whose keys set this parser's defaults (flags still override)")

    # Optimisation (docs/protocol.md §4)
    parser.add_argument("--lr", default=1e-4, type=non_negative_float)
    parser.add_argument("--lr_backbone", default=1e-5, type=non_negative_float)
    parser.add_argument("--batch_size", default=1, type=positive_int)
    parser.add_argument("--weight_decay", default=1e-4, type=non_negative_float)
    parser.add_argument("--epochs", default=18, type=positive_int)
    parser.add_argument("--lr_drop", default=12, type=positive_int)
    parser.add_argument("--clip_max_norm", default=0.1, type=non_negative_float, help="gradient clipping max norm")

    # Model
    parser.add_argument("--pretrained_weights", default=OFFICIAL_PRETRAINED_WEIGHTS, type=str,
                        help="DETR-style weights (keys 'detr.*' or 'wnet.*') to initialise from (VisTR's "
                             "384_coco_r50.pth, the official default); 'none' trains from scratch")
    parser.add_argument("--backbone_weights", default="", type=str,
                        help="ImageNet ResNet weights (torchvision state_dict); empty = torchvision cache or random")
    parser.add_argument("--backbone", default="resnet50", type=str,
                        choices=("resnet18", "resnet34", "resnet50", "resnet101"))
    parser.add_argument("--dilation", action="store_true",
                        help="replace the stride of the last ResNet stage by dilation (DC5)")
    parser.add_argument("--position_embedding", default="sine", type=str, choices=("sine",),
                        help="'sine', the official default and the only encoding Wnet's decoder uses")
    parser.add_argument("--enc_layers", default=4, type=positive_int)
    parser.add_argument("--dec_layers", default=4, type=positive_int)
    parser.add_argument("--dim_feedforward", default=2048, type=positive_int)
    parser.add_argument("--hidden_dim", default=384, type=positive_int)
    parser.add_argument("--dropout", default=0.1, type=probability)
    parser.add_argument("--nheads", default=8, type=positive_int)
    parser.add_argument("--num_frames", default=36, type=positive_int)
    parser.add_argument("--num_queries", default=36, type=positive_int)
    parser.add_argument("--pre_norm", action="store_true")
    parser.add_argument("--masks", action="store_true", help="build the mask model (required for training)")
    parser.add_argument("--no_aux_loss", dest="aux_loss", action="store_false",
                        help="disable the auxiliary decoder-layer losses")
    parser.add_argument("--audio_encoder", default=DEFAULT_AUDIO_ENCODER,
                        choices=tuple(audio_encoders) if audio_encoders else None,
                        help="the audio front end (models/audio_encoder.py): 'mfcc39', the official projection of "
                             "MFCC-39 features, the only one the released checkpoints hold; 'conv' (not official), "
                             "a small temporal convolution stack, one token per frame seeing 0.35 s around it")
    parser.add_argument("--audio_cmvn", action="store_true",
                        help="not official: normalise each recording's features to zero mean and unit variance "
                             "over its frames before the audio encoder (removes its gain and channel colouring)")
    # = models.encoder.THRESHOLD_RATIO (not imported: this module stays free of torch)
    parser.add_argument("--wavelet_threshold", default=0.008, type=float,
                        help="soft threshold of the encoder's wavelet detail bands as a fraction of their largest "
                             "magnitude per sample (official 0.008); 0 turns the denoising off. Not part of the "
                             "weights: infer with the value the model was trained with")

    # Loss coefficients (the official main.py values; its inference copies drifted)
    parser.add_argument("--mask_loss_coef", default=1, type=non_negative_float)
    parser.add_argument("--dice_loss_coef", default=1, type=non_negative_float)
    parser.add_argument("--bbox_loss_coef", default=7.5, type=non_negative_float)
    parser.add_argument("--giou_loss_coef", default=3, type=non_negative_float)
    parser.add_argument("--kl_loss_coef", default=500, type=non_negative_float)

    # Data (defaults follow the official data/ layout; every path is an option)
    parser.add_argument("--dataset_file", default=DEFAULT_DATASET_FILE,
                        choices=tuple(dataset_files) if dataset_files else None,
                        help="the dataset to train or validate on (datasets.DATASETS)")
    parser.add_argument("--ytvos_path", default=OFFICIAL_YTVOS_PATH, type=str,
                        help="Ref-YouTube-VOS root (train/JPEGImages, train/Annotations, meta_expressions/, ann/)")
    parser.add_argument("--ytvos_split", default="train", type=str)
    parser.add_argument("--ytvos_ann_file", default="", type=str,
                        help="YouTube-VIS style instances json that defines the videos and targets; default: the "
                             "official <ytvos_path>/ann/instances_train_sub.json (instances_test_sub.json for "
                             "--eval) when it exists; 'none': every video of meta_expressions.json")
    parser.add_argument("--a2d_path", default=OFFICIAL_A2D_PATH, type=str, help="A2D-Sentences root")
    parser.add_argument("--jhmdb_path", default=OFFICIAL_JHMDB_PATH, type=str, help="JHMDB-Sentences root")
    parser.add_argument("--rvos_audio_path", default=OFFICIAL_RVOS_AUDIO_PATH, type=str,
                        help="MFCC-39 .npy files <video>_<exp_id>.npy")
    parser.add_argument("--a2d_audio_path", default=OFFICIAL_A2D_AUDIO_PATH, type=str,
                        help="MFCC-39 .npy files <video>_<instance_id>.npy (A2D) and <video>.npy (JHMDB)")
    parser.add_argument("--remove_difficult", action="store_true",
                        help="accepted for the official command lines; unused, as in the official (a DETR leftover)")
    parser.add_argument("--rvos_wav_path", default="", type=str,
                        help="recordings <video>_<exp_id>.wav: MFCC-39 computed from them on the fly (instead of "
                             "--rvos_audio_path)")
    parser.add_argument("--a2d_wav_path", default="", type=str,
                        help="recordings <video>_<instance_id>.wav (A2D) and <video>.wav (JHMDB): MFCC-39 computed "
                             "from them on the fly (instead of --a2d_audio_path)")
    parser.add_argument("--skip_bad_samples", action="store_true",
                        help="warn about and drop broken samples instead of stopping")
    parser.add_argument("--data_scale", default=1.0, type=positive_float,
                        help="multiplies every resize/crop size of the clip transforms and the inference short side "
                             "(1 = the official sizes; "
                             "tiny test or demo runs use less, never below 32 pixels)")
    parser.add_argument("--inference_data_scale", default=0.0, type=non_negative_float, metavar="SCALE",
                        help="the --data_scale of inference alone (0 = --data_scale): a model trained on small "
                             "frames can segment them upsampled, which gives its stride-4 masks finer pixels "
                             "(the CPU demo trains at 0.24 and infers at 0.32)")
    parser.add_argument("--subset", default=0, type=non_negative_int, metavar="N",
                        help="train on the first N videos of the training set only (every clip and expression of "
                             "them; 0 = all): overfit a few videos first to debug a dataset or a model change")
    parser.add_argument("--warmup_epochs", default=0, type=non_negative_int, metavar="E",
                        help="warm start: before the --epochs on the whole training set, train E epochs on its "
                             "first --warmup_subset videos (fresh optimizer afterwards); 0 = off (official)")
    parser.add_argument("--warmup_subset", default=4, type=positive_int, metavar="N",
                        help="videos of the --warmup_epochs stage (a curriculum that ties each recording to its "
                             "object before the whole set is seen, see the README's demo section)")
    parser.add_argument("--curriculum_stages", default=[], type=videos_epochs, nargs="*", metavar="N:E",
                        help="after the --warmup_epochs stage, E epochs on the first N training videos, stage by "
                             "stage (e.g. 16:8 32:4), before the main epochs")
    parser.add_argument("--group_expressions", action="store_true",
                        help="not official: training batches hold every expression of a clip together (the same "
                             "frames with each recording), so the gradient that teaches listening is not crowded out")
    parser.add_argument("--warmup_shares_optimizer", action="store_true",
                        help="the warm-up stage trains with the main stage's optimizer, so its Adam moments carry over "
                             "into the main epochs (default: an optimizer of its own, the main stage starts fresh)")
    parser.add_argument("--no_hflip", action="store_true",
                        help="leave out the random horizontal flip of the training clips (official: flip; "
                             "the CPU demo's expressions say 'moving left/right')")
    parser.add_argument("--no_photometric", action="store_true",
                        help="leave out the photometric distortion of the training clips (official: on; it "
                             "shifts hues and permutes colour channels, which the demo's colour words cannot survive)")

    # Run
    parser.add_argument("--output_dir", default="output", help="where to save; empty for no saving")
    parser.add_argument("--device", default="cuda", help="cuda or cpu")
    parser.add_argument("--seed", default=42, type=non_negative_int)
    parser.add_argument("--resume", default="", help="resume from checkpoint")
    parser.add_argument("--start_epoch", default=0, type=non_negative_int, metavar="N")
    parser.add_argument("--eval", action="store_true", help="only run the validation-loss loop")
    parser.add_argument("--num_workers", default=4, type=non_negative_int)
    parser.add_argument("--world_size", default=1, type=positive_int, help="number of distributed processes")
    parser.add_argument("--dist_url", default="env://", help="url used to set up distributed training")

    # Performance and memory
    parser.add_argument("--amp", action="store_true",
                        help="mixed precision: bfloat16 autocast (CPU/CUDA), float16 + grad scaler on CUDA")
    parser.add_argument("--amp_dtype", default="bfloat16", choices=("bfloat16", "float16"))
    parser.add_argument("--checkpoint_activations", action="store_true",
                        help="recompute backbone and transformer activations in backward")
    parser.add_argument("--channels_last", action="store_true",
                        help="keep the backbone's convolution weights (and so its activations) in channels-last "
                             "memory format: faster convolutions on CPU (about 15%% of a CPU demo step) and with "
                             "--amp on GPU; same parameters and state dict, only the rounding order differs")

    # Inference and evaluation
    parser.add_argument("--model_path", default="", type=str, help="checkpoint to evaluate ({'model': state_dict})")
    parser.add_argument("--save_path", default="result.json", type=str)
    parser.add_argument("--num_ins", default=1, type=int, choices=(1,),
                        help="the official inference scripts' instances per frame (from VisTR), always 1 in Wnet's "
                             "one query per frame; accepted for the official command lines, no other value")
    parser.add_argument("--split_file", "--ann_path", default="", type=str,
                        help="videos to infer and score: a VIS-style json or a text file of ids; default: the "
                             "official <ytvos_path>/ann/instances_test_sub.json when it exists; 'none': every video "
                             "of the split (--ann_path: the official inference name)")
    parser.add_argument("--img_path", action=ImgPathAction, default=argparse.SUPPRESS, metavar="ROOT/SPLIT/JPEGImages",
                        help="the official inference scripts' frame folder: sets --ytvos_path ROOT and --ytvos_split SPLIT")
    parser.add_argument("--png_dir", default="", type=str, help="write the Ref-YouTube-VOS submission PNGs here")
    parser.add_argument("--visualize", default="", type=str, help="write overlay images here")
    parser.add_argument("--audio", default="", type=str, help="one raw recording (wav/flac/ogg) to run")
    parser.add_argument("--video_dir", default="", type=str, help="one folder of frames to run --audio on")
    parser.add_argument("--audio_feature", default="wnet", choices=("wnet", "librosa"),
                        help="feature type for raw recordings (only 'wnet' matches the released checkpoint)")
    parser.add_argument("--inference_dropout", action="store_true",
                        help="infer in training mode like the official scripts (they forget model.eval())")
    parser.add_argument("--metrics_path", default="", type=str, help="write the A2D/JHMDB metrics JSON here")
    # Listening conditions (need recordings: --rvos_wav_path / --a2d_wav_path), applied in this order:
    # speed, room, noise, band; their random parts are seeded by --seed and each recording's name
    parser.add_argument("--audio_speed", default=None, type=float,
                        help="play every recording this many times faster (0.8: slower) before its MFCC; pitch "
                             "and formants move with it")
    parser.add_argument("--audio_rt60", default=None, type=float,
                        help="play every recording in a simulated room with this reverberation time (seconds)")
    parser.add_argument("--audio_noise", default="", choices=("white", "pink", "babble"),
                        help="add noise to every recording before its MFCC: white or pink (1/f) Gaussian noise, or "
                             "babble, a mix of other recordings of the split")
    parser.add_argument("--audio_snr_db", default=None, type=float,
                        help="signal-to-noise ratio of --audio_noise in dB, over each whole recording; -inf: the "
                             "noise alone at the recording's power (no speech left)")
    parser.add_argument("--audio_band", default="", type=str,
                        help="band-limit every recording: 'telephone' (300-3400 Hz) or LOW-HIGH in Hz")
    parser.add_argument("--audio_augment", action="store_true",
                        help="not official: training recordings changed at random per sample and epoch (speed, "
                             "pitch, vocal-tract length, silence, room, noise, telephone band, gain; "
                             "datasets/audio/perturb.py); needs the recordings (--rvos_wav_path)")
    parser.add_argument("--audio_augment_prob", default=1.0, type=probability, metavar="P",
                        help="with --audio_augment: the share of training samples changed at all (the others are "
                             "heard as recorded, so the words stay clear in part of every epoch)")
    parser.add_argument("--audio_augment_from", default=0, type=non_negative_int, metavar="E",
                        help="with --audio_augment: the first main epoch (counted from 0) whose recordings are "
                             "changed; the earlier ones hear them as recorded, so the model learns to listen "
                             "before it learns to listen through noise")

    # Bad inputs and faults (README "When something goes wrong")
    parser.add_argument("--check_data", action="store_true",
                        help="decode every frame, mask and audio feature once, report every problem and exit "
                             "(exit code 0: none, 1: some)")
    parser.add_argument("--overwrite", action="store_true",
                        help="training: start again in an --output_dir that holds an earlier run (deletes its "
                             "checkpoints and log.txt)")
    parser.add_argument("--resume_results", action="store_true",
                        help="inference: keep what an interrupted run finished (<save_path or metrics_path>"
                             f"{PARTIAL_SUFFIX}) and do the rest")
    parser.add_argument("--audio_sample_rate", default=0, type=non_negative_int,
                        help="resample recordings to this rate (Hz) before their MFCC; 0 keeps each file's rate")
    return parser


def inference_scale(args: argparse.Namespace) -> float:
    """The size scale of the inference transform: `--inference_data_scale`, else `--data_scale`."""
    return args.inference_data_scale or args.data_scale


def videos_epochs(text: str) -> Tuple[int, int]:
    """'16:8' -> (16 videos, 8 epochs), both positive (an argparse `type`)."""
    try:
        videos, epochs = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected VIDEOS:EPOCHS such as 16:8, got {text!r}") from None
    if videos < 1 or epochs < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: videos and epochs must be >= 1")
    return videos, epochs


def parse_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse `argv`, taking defaults from `--config FILE` when given."""
    pre, _ = parser.parse_known_args(argv)
    if pre.config:
        parser.set_defaults(**load_config(pre.config, parser))
    return parser.parse_args(argv)


def load_config(path: str, parser: argparse.ArgumentParser) -> dict:
    """Read a YAML mapping of option names to values, checked as the command line would check them;
    a missing or malformed file, an unknown name or a bad value is an OptionError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise OptionError(f"--config {path}: the file does not exist")
    try:
        with open(path) as f:
            values = yaml.safe_load(f) or {}
    except yaml.YAMLError as error:
        raise OptionError(f"config file {path}: not valid YAML ({' '.join(str(error).split())})") from None
    if not isinstance(values, dict):
        raise OptionError(f"config file {path}: expected a mapping of option names to values")
    for alias, name in CONFIG_ALIASES.items():
        if alias in values:
            if name in values:
                raise OptionError(f"config file {path}: sets both {alias!r} and {name!r} (the same option)")
            values[name] = values.pop(alias)
    if "img_path" in values:
        try:
            values.update(split_img_path(values.pop("img_path")))
        except ValueError as error:
            raise OptionError(f"config file {path}: {error}") from None
    actions = {a.dest: a for a in parser._actions}
    unknown = sorted(set(values) - set(actions))
    if unknown:
        raise OptionError(f"config file {path}: unknown option(s) {unknown}")
    if "config" in values:
        raise OptionError(f"config file {path}: 'config' cannot be set from a config file")
    for key, value in values.items():
        action = actions[key]
        # set_defaults() bypasses argparse's checks: apply the option's type and choices here.
        if action.type is not None and value is not None:
            try:
                if isinstance(value, list) and action.nargs in ("*", "+"):  # a YAML list: each item as on the line
                    value = values[key] = [action.type(v if isinstance(v, str) else str(v)) for v in value]
                else:
                    value = values[key] = action.type(value if isinstance(value, str) else str(value))
            except (argparse.ArgumentTypeError, ValueError) as error:
                raise OptionError(f"config file {path}: {key}: {error}") from None
        if action.choices is not None and value not in action.choices:
            raise OptionError(f"config file {path}: {key}: {value!r} is not one of {list(action.choices)}")
    return values


# ----------------------------------------------------------------------------- option types
def _number(text, kind: type, expected: str, accept: Callable[[float], bool]):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not (math.isfinite(value) and accept(value)):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text) -> int:
    return _number(text, int, "a positive integer", lambda v: v > 0)


def non_negative_int(text) -> int:
    return _number(text, int, "an integer >= 0", lambda v: v >= 0)


def positive_float(text) -> float:
    return _number(text, float, "a finite number > 0", lambda v: v > 0)


def non_negative_float(text) -> float:
    return _number(text, float, "a finite number >= 0", lambda v: v >= 0)


def probability(text) -> float:
    return _number(text, float, "a probability in [0, 1)", lambda v: 0 <= v < 1)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors on one line (`error: argument --x: ...`, exit code 2) instead of the usage,
    and `--debug` (`util.errors.run_main` then shows the traceback of user errors too)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if DEBUG_FLAG not in self._option_string_actions:  # not inherited from a parent parser
            self.add_argument(DEBUG_FLAG, action="store_true", help="show the traceback of user errors too")

    def error(self, message: str):
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(EXIT_OPTION)
