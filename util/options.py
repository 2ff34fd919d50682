"""The argument groups of a run, of training and of inference (the model's and the data's are defined by
`models.add_model_args` and `datasets.add_dataset_args` / `datasets.add_training_data_args`).

Each entry point builds its parser from the groups it needs (`engine.run.get_args_parser`,
`engine.inference.inference_parser`, ...); `ENTRY_POINT_GROUPS` lists the groups of this module, whose keys a
shared YAML config may hold (an entry point ignores those its parser lacks). The defaults are the official ones
(the official main.py).
"""
import argparse
import os

from util.config import (PARTIAL_SUFFIX, FrozenNamespace, ImgPathAction, add_official_unused, freeze,
                         non_negative_float, non_negative_int, positive_int, videos_epochs)
from util.errors import check_device
from util.misc import distributed_environment, init_distributed_mode

# The inference options a training run records that inference takes from its checkpoint by default
# (engine.inference.with_checkpoint_args; the command line wins, with a note).
TRAINED_WITH_INFERENCE_OPTIONS = ("inference_data_scale",)
OFFICIAL_PRETRAINED_WEIGHTS = "coco_pretrained_weights/384_coco_r50.pth"
DEFAULT_AMP_DTYPE = "bfloat16"
AMP_DTYPES = ("bfloat16", "float16")
DEFAULT_MAX_FRAMES = 900  # 30 s at 30 fps: about 2.5 GB of 720p frames decoded


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """What every run has: its config file, device, seed, the handling of broken inputs, mixed precision and the
    rendezvous of several processes."""
    group = parser.add_argument_group("run")
    group.add_argument("--config", default="", type=str,
                       help="YAML file whose keys set this parser's defaults (flags still override)")
    group.add_argument("--device", default="cuda", help="cuda or cpu")
    group.add_argument("--seed", default=42, type=non_negative_int)
    group.add_argument("--skip_bad_samples", action="store_true",
                       help="warn about and drop broken samples instead of stopping")
    group.add_argument("--check_data", action="store_true",
                       help="decode every frame, mask and audio feature once, report every problem and exit "
                            "(exit code 0: none, 1: some)")
    group.add_argument("--amp", action="store_true",
                       help="mixed precision: bfloat16 autocast (CPU/CUDA), float16 (in training with a grad scaler) "
                            "on CUDA with --amp_dtype float16; at inference not official (about 2x faster on the "
                            "CPU, masks within a few pixels of float32: docs/benchmark.md)")
    group.add_argument("--amp_dtype", default=DEFAULT_AMP_DTYPE, choices=AMP_DTYPES,
                       help="the autocast dtype of --amp on CUDA (the CPU uses bfloat16)")
    group.add_argument("--dist_url", default="env://",
                       help="url used to set up distributed training, or sharded inference (engine/shard.py), "
                            "under a launcher (torchrun, SLURM)")


def add_training_args(parser: argparse.ArgumentParser) -> None:
    """The optimiser, its schedule, the warm-up stages, checkpoints and distributed training (main.py)."""
    group = parser.add_argument_group("optimisation (the official recipe)")
    group.add_argument("--lr", default=1e-4, type=non_negative_float)
    group.add_argument("--lr_backbone", default=1e-5, type=non_negative_float,
                       help="learning rate of the backbone's trainable stages; 0 freezes the backbone")
    group.add_argument("--batch_size", default=1, type=positive_int)
    group.add_argument("--weight_decay", default=1e-4, type=non_negative_float)
    group.add_argument("--epochs", default=18, type=positive_int)
    group.add_argument("--lr_drop", default=12, type=positive_int)
    group.add_argument("--clip_max_norm", default=0.1, type=non_negative_float, help="gradient clipping max norm")
    group.add_argument("--pretrained_weights", default=OFFICIAL_PRETRAINED_WEIGHTS, type=str,
                       help="DETR-style weights (keys 'detr.*' or 'wnet.*') to initialise from (VisTR's "
                            "384_coco_r50.pth, the official default); 'none' trains from scratch")

    group = parser.add_argument_group("training set and stages")
    group.add_argument("--subset", default=0, type=non_negative_int, metavar="N",
                       help="train on the first N videos of the training set only (every clip and expression of "
                            "them; 0 = all): overfit a few videos first to debug a dataset or a model change")
    group.add_argument("--warmup_epochs", default=0, type=non_negative_int, metavar="E",
                       help="warm start: before the --epochs on the whole training set, train E epochs on its "
                            "first --warmup_subset videos (fresh optimizer afterwards); 0 = off (official)")
    group.add_argument("--warmup_subset", default=4, type=positive_int, metavar="N",
                       help="videos of the --warmup_epochs stage (a curriculum that ties each recording to its "
                            "object before the whole set is seen, see the README's demo section)")
    group.add_argument("--curriculum_stages", default=[], type=videos_epochs, nargs="*", metavar="N:E",
                       help="after the --warmup_epochs stage, E epochs on the first N training videos, stage by "
                            "stage (e.g. 16:8 32:4), before the main epochs")
    group.add_argument("--group_expressions", action="store_true",
                       help="not official: training batches hold every expression of a clip together (the same "
                            "frames with each recording), so the gradient that teaches listening is not crowded out")
    group.add_argument("--warmup_shares_optimizer", action="store_true",
                       help="the warm-up stage trains with the main stage's optimizer, so its Adam moments carry "
                            "over into the main epochs (default: an optimizer of its own, the main stage starts "
                            "fresh)")

    group = parser.add_argument_group("checkpoints and processes")
    group.add_argument("--output_dir", default="output", help="where to save; empty for no saving")
    group.add_argument("--overwrite", action="store_true",
                       help="start again in an --output_dir that holds an earlier run (deletes its checkpoints and "
                            "log.txt)")
    group.add_argument("--resume", default="", help="resume from checkpoint")
    group.add_argument("--start_epoch", default=0, type=non_negative_int, metavar="N",
                       help="the first epoch to train (a resumed checkpoint's next epoch takes its place)")
    group.add_argument("--eval", action="store_true", help="only run the validation-loss loop")
    group.add_argument("--num_workers", default=4, type=non_negative_int)
    add_official_unused(group, "world_size", "the number of processes is the launcher's (torchrun's WORLD_SIZE, "
                                             "SLURM_NTASKS), as in the official (DETR) code", type=positive_int)


def add_inference_args(parser: argparse.ArgumentParser) -> None:
    """What every inference script reads: the checkpoint, the inference frame size, its mode, resuming."""
    group = parser.add_argument_group("inference")
    group.add_argument("--model_path", default="", type=str,
                       help="checkpoint to evaluate ({'model': state_dict})")
    group.add_argument("--inference_data_scale", default=0.0, type=non_negative_float, metavar="SCALE",
                       help="the --data_scale of inference alone (0 = --data_scale): a model trained on small "
                            "frames can segment them upsampled, which gives its stride-4 masks finer pixels "
                            "(the CPU demo trains at 0.24 and infers at 0.32)")
    group.add_argument("--inference_dropout", action="store_true",
                       help="infer in training mode like the official scripts (they forget model.eval())")
    group.add_argument("--compile", action="store_true",
                       help="not official: run the model through torch.compile (each new frame size compiles "
                            "first; docs/benchmark.md says when it pays)")
    group.add_argument("--resume_results", action="store_true",
                       help="keep what an interrupted run finished (<save_path or metrics_path>"
                            f"{PARTIAL_SUFFIX}) and do the rest")
    add_official_unused(group, "num_ins", "the official inference scripts' instances per frame (from VisTR) is "
                                           "always 1 in Wnet's one query per frame", type=int, choices=(1,))
    # The official inference scripts parse the official training options too; they mean nothing here.
    for name in OFFICIAL_TRAINING_OPTIONS:
        add_official_unused(group, name, "a training option (the official inference scripts accept it)",
                            flag=name in OFFICIAL_TRAINING_FLAGS, hidden=True)


# The official main.py's training options (its inference scripts accept them, unused; each inference script
# reads the dataset it is named after).
OFFICIAL_TRAINING_OPTIONS = ("lr", "lr_backbone", "batch_size", "weight_decay", "epochs", "lr_drop", "clip_max_norm",
                             "pretrained_weights", "output_dir", "resume", "start_epoch", "eval", "num_workers",
                             "world_size", "dataset_file", "remove_difficult", "no_aux_loss", "mask_loss_coef",
                             "dice_loss_coef", "bbox_loss_coef", "giou_loss_coef", "kl_loss_coef")
OFFICIAL_TRAINING_FLAGS = ("eval", "remove_difficult", "no_aux_loss")


def add_rvos_inference_args(parser: argparse.ArgumentParser) -> None:
    """Ref-YouTube-VOS inference (inference_rvos.py): which videos, the outputs, one recording on one folder."""
    group = parser.add_argument_group("Ref-YouTube-VOS inference")
    group.add_argument("--save_path", default="result.json", type=str)
    group.add_argument("--split_file", "--ann_path", default="", type=str,
                       help="videos to infer and score: a VIS-style json or a text file of ids; default: the "
                            "official <ytvos_path>/ann/instances_test_sub.json when it exists; 'none': every video "
                            "of the split (--ann_path: the official inference name)")
    group.add_argument("--img_path", action=ImgPathAction, default=argparse.SUPPRESS,
                       metavar="ROOT/SPLIT/JPEGImages",
                       help="the official inference scripts' frame folder: sets --ytvos_path ROOT and "
                            "--ytvos_split SPLIT")
    group.add_argument("--png_dir", default="", type=str, help="write the Ref-YouTube-VOS submission PNGs here")
    group.add_argument("--visualize", default="", type=str, help="write overlay images here")
    group.add_argument("--audio", default="", type=str,
                       help="one recording to run (wav, flac, ogg, mp3, m4a, ... or a video file's audio track), "
                            "resampled to the rate the checkpoint's training features had")
    group.add_argument("--video_dir", default="", type=str, help="one folder of frames to run --audio on")
    group.add_argument("--video", default="", type=str,
                       help="one video file (any container FFmpeg reads: mp4, mkv, webm, ...) to run --audio on")
    group.add_argument("--fps", default=0.0, type=non_negative_float, metavar="F",
                       help="--video: keep about F frames per second (0: every frame); --save_video of frame "
                            "folders: their rate (0: 6, the Ref-YouTube-VOS frames')")
    group.add_argument("--max_frames", default=DEFAULT_MAX_FRAMES, type=positive_int, metavar="N",
                       help="--video: refuse a video of more than N frames (after --fps), before it fills the memory")
    group.add_argument("--save_video", default="", type=str, metavar="PATH",
                       help="the overlay video (masks, boxes, words; the recording as its sound; H.264): with "
                            "--video/--video_dir the file PATH (.mp4), else a folder of <video>.mp4")


def add_middle_frame_args(parser: argparse.ArgumentParser) -> None:
    """A2D-Sentences / JHMDB-Sentences evaluation (inference_a2d.py, inference_jhmdb.py)."""
    group = parser.add_argument_group("A2D / JHMDB evaluation")
    group.add_argument("--metrics_path", default="", type=str, help="write the A2D/JHMDB metrics JSON here")


# Every group of this module (training and each inference script's): the keys a shared YAML config may hold.
ENTRY_POINT_GROUPS = (add_run_args, add_training_args, add_inference_args, add_rvos_inference_args,
                      add_middle_frame_args)


def inference_args(parsed: argparse.Namespace) -> FrozenNamespace:
    """The post-parse step of the inference scripts: `--check_data` lists every broken sample (as
    `--skip_bad_samples`), and nothing is trained (the backbone built frozen, `lr_backbone` 0). Under a launcher
    (torchrun, SLURM) the distributed settings of this process (`distributed`, `rank`, `world_size`, `gpu`, the
    `device` of its GPU; `util.misc.init_distributed_mode`): the inference is sharded (engine/shard.py); a data
    check runs in each process alone."""
    if parsed.check_data or distributed_environment(os.environ) is None:
        distributed = {"distributed": False, "rank": 0, "world_size": 1, "gpu": 0, "device": parsed.device}
    else:
        check_device(parsed.device)
        distributed = init_distributed_mode(parsed)
    return freeze(parsed, skip_bad_samples=parsed.skip_bad_samples or parsed.check_data, lr_backbone=0.0,
                  **distributed)
