"""The data's argument groups: `add_dataset_args` (where the files are, the frame size, the audio front end and
the listening conditions: every entry point) and `add_training_data_args` (which dataset and which of its videos
to train on, the training augmentation: main.py). The choice lists are the registries (`datasets.DATASETS`,
`FEATURE_TYPES`, `NOISE_TYPES`); the path defaults are the official `data/` layout."""
import argparse
from typing import Sequence

from util.config import add_official_unused, non_negative_int, positive_float, probability

from .audio.features import FEATURE_TYPES
from .audio.loader import OFFICIAL_FEATURE
from .audio.noise import NOISE_TYPES

# The official data layout: every path option defaults to it.
OFFICIAL_YTVOS_PATH = "data/rvos"
OFFICIAL_RVOS_AUDIO_PATH = "data/rvos_audio_feature"
OFFICIAL_A2D_PATH = "data/a2d"
OFFICIAL_A2D_AUDIO_PATH = "data/a2d_j_audio_feature"
OFFICIAL_JHMDB_PATH = "data/JHMDB"
# The data options a model was trained with that inference takes from its checkpoint by default
# (engine.inference.with_checkpoint_args; the command line wins, with a note).
TRAINED_WITH_DATA_OPTIONS = ("data_scale", "audio_feature")


# The datasets whose files each path option names (an inference script offers those of the dataset it evaluates).
PATH_OPTIONS_READ_BY = {"ytvos_path": ("ytvos",), "ytvos_split": ("ytvos",), "a2d_path": ("a2d",),
                        "jhmdb_path": ("jhmdb",), "rvos_audio_path": ("ytvos",), "a2d_audio_path": ("a2d", "jhmdb"),
                        "rvos_wav_path": ("ytvos",), "a2d_wav_path": ("a2d", "jhmdb")}
ALL_DATA = ("ytvos", "a2d", "jhmdb")
OFFICIAL_PATH_OPTIONS = ("ytvos_path",)  # the official scripts' only path option: every script accepts it


def add_dataset_args(parser: argparse.ArgumentParser, data: Sequence[str] = ALL_DATA) -> None:
    """Where the data is and how it is read and heard (training and inference). `data`: the datasets whose paths
    to offer ("ytvos", "a2d", "jhmdb"; training: all of them); an official path option of another dataset is
    accepted with a note that it is not read."""
    group = parser.add_argument_group("data (defaults: the official data/ layout)")

    def add_path(name: str, **kwargs) -> None:
        if set(PATH_OPTIONS_READ_BY[name]) & set(data):
            group.add_argument(f"--{name}", type=str, **kwargs)
        elif name in OFFICIAL_PATH_OPTIONS:
            add_official_unused(group, name, f"another dataset's files (this script reads {', '.join(data)})",
                                hidden=True)

    add_path("ytvos_path", default=OFFICIAL_YTVOS_PATH,
             help="Ref-YouTube-VOS root (train/JPEGImages, train/Annotations, meta_expressions/, ann/)")
    add_path("ytvos_split", default="train")
    add_path("a2d_path", default=OFFICIAL_A2D_PATH, help="A2D-Sentences root")
    add_path("jhmdb_path", default=OFFICIAL_JHMDB_PATH, help="JHMDB-Sentences root")
    add_path("rvos_audio_path", default=OFFICIAL_RVOS_AUDIO_PATH, help="MFCC-39 .npy files <video>_<exp_id>.npy")
    add_path("a2d_audio_path", default=OFFICIAL_A2D_AUDIO_PATH,
             help="MFCC-39 .npy files <video>_<instance_id>.npy (A2D) and <video>.npy (JHMDB)")
    add_path("rvos_wav_path", default="",
             help="recordings <video>_<exp_id>.wav: MFCC-39 computed from them on the fly (instead of "
                  "--rvos_audio_path)")
    add_path("a2d_wav_path", default="",
             help="recordings <video>_<instance_id>.wav (A2D) and <video>.wav (JHMDB): MFCC-39 computed from them "
                  "on the fly (instead of --a2d_audio_path)")
    group.add_argument("--data_scale", default=1.0, type=positive_float,
                       help="multiplies every resize/crop size of the clip transforms and the inference short side "
                            "(1 = the official sizes; tiny test or demo runs use less, never below 32 pixels)")

    group = parser.add_argument_group("audio front end")
    group.add_argument("--audio_feature", default=OFFICIAL_FEATURE, choices=FEATURE_TYPES,
                       help="feature type for raw recordings (only 'wnet' matches the released checkpoint)")
    group.add_argument("--audio_sample_rate", default=0, type=non_negative_int,
                       help="resample recordings to this rate (Hz) before their MFCC; 0 keeps each file's rate "
                            "(training: the rate the extracted features record)")

    # Need recordings (--rvos_wav_path / --a2d_wav_path), applied in this order: speed, room, noise, band; their
    # random parts are seeded by --seed and each recording's name.
    group = parser.add_argument_group("listening conditions")
    group.add_argument("--audio_speed", default=None, type=float,
                       help="play every recording this many times faster (0.8: slower) before its MFCC; pitch "
                            "and formants move with it")
    group.add_argument("--audio_rt60", default=None, type=float,
                       help="play every recording in a simulated room with this reverberation time (seconds)")
    group.add_argument("--audio_noise", default="", choices=NOISE_TYPES,
                       help="add noise to every recording before its MFCC: white or pink (1/f) Gaussian noise, or "
                            "babble, a mix of other recordings of the split")
    group.add_argument("--audio_snr_db", default=None, type=float,
                       help="signal-to-noise ratio of --audio_noise in dB, over each whole recording; -inf: the "
                            "noise alone at the recording's power (no speech left)")
    group.add_argument("--audio_band", default="", type=str,
                       help="band-limit every recording: 'telephone' (300-3400 Hz) or LOW-HIGH in Hz")


def add_training_data_args(parser: argparse.ArgumentParser, dataset_files: Sequence[str]) -> None:
    """The training set and its augmentation (main.py); `--dataset_file` chooses among `dataset_files` (the
    registry), the first the default (`datasets.add_training_data_args` passes `DATASETS`)."""
    group = parser.add_argument_group("training data")
    group.add_argument("--dataset_file", default=dataset_files[0], choices=tuple(dataset_files),
                       help="the dataset to train or validate on (datasets.DATASETS)")
    group.add_argument("--ytvos_ann_file", default="", type=str,
                       help="YouTube-VIS style instances json that defines the videos and targets; default: the "
                            "official <ytvos_path>/ann/instances_train_sub.json (instances_test_sub.json for "
                            "--eval) when it exists; 'none': every video of meta_expressions.json")
    add_official_unused(group, "remove_difficult", "the official main.py's DETR leftover (COCO's difficult boxes), "
                                                   "read by no official code either", flag=True)

    group = parser.add_argument_group("augmentation")
    group.add_argument("--no_hflip", action="store_true",
                       help="leave out the random horizontal flip of the training clips (official: flip; "
                            "the CPU demo's expressions say 'moving left/right')")
    group.add_argument("--no_photometric", action="store_true",
                       help="leave out the photometric distortion of the training clips (official: on; it "
                            "shifts hues and permutes colour channels, which the demo's colour words cannot survive)")
    group.add_argument("--audio_augment", action="store_true",
                       help="not official: training recordings changed at random per sample and epoch (speed, "
                            "pitch, vocal-tract length, silence, room, noise, telephone band, gain; "
                            "datasets/audio/perturb.py); needs the recordings (--rvos_wav_path)")
    group.add_argument("--audio_augment_prob", default=1.0, type=probability, metavar="P",
                       help="with --audio_augment: the share of training samples changed at all (the others are "
                            "heard as recorded, so the words stay clear in part of every epoch)")
    group.add_argument("--audio_augment_from", default=0, type=non_negative_int, metavar="E",
                       help="with --audio_augment: the first main epoch (counted from 0) whose recordings are "
                            "changed; the earlier ones hear them as recorded, so the model learns to listen "
                            "before it learns to listen through noise")
