"""The model's argument groups: `add_model_args(parser)` adds the options that decide the model and its
predictions (backbone, transformer, audio encoder), for training and inference; `add_model_training_args(parser)`
those only training reads (initial weights, auxiliary losses, memory and speed of the backward pass, loss
coefficients). The choice lists are the registries (`RESNET_NAMES`, `AUDIO_ENCODERS`) and the defaults the official
ones, each defined once, here or beside its module's constant."""
import argparse
from typing import Dict

from util.config import add_official_unused, non_negative_float, positive_int, probability

from .audio_encoder import AUDIO_ENCODERS, DEFAULT_AUDIO_ENCODER
from .backbone import RESNET_NAMES
from .encoder import THRESHOLD_RATIO

DEFAULT_BACKBONE = "resnet50"
# What a checkpoint's own args decide at inference (engine.inference.with_checkpoint_args): the options that shape
# the weights or what they mean must match the checkpoint (a command line that contradicts it is refused) ...
ARCHITECTURE_OPTIONS = ("backbone", "dilation", "enc_layers", "dec_layers", "dim_feedforward", "hidden_dim", "nheads",
                        "num_queries", "num_frames", "pre_norm", "masks", "audio_encoder")
# ... those that change the predictions but not the weights default to the checkpoint's (the command line wins,
# with a note).
TRAINED_WITH_OPTIONS = ("wavelet_threshold", "audio_cmvn", "dropout")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The options that decide the model and its predictions, in the groups 'model' and 'audio encoder'."""
    group = parser.add_argument_group("model")
    group.add_argument("--backbone", default=DEFAULT_BACKBONE, type=str, choices=RESNET_NAMES)
    group.add_argument("--dilation", action="store_true",
                       help="replace the stride of the last ResNet stage by dilation (DC5)")
    add_official_unused(group, "position_embedding", "'sine' is the official default and the only position "
                                                     "encoding Wnet's decoder uses", type=str, choices=("sine",))
    group.add_argument("--enc_layers", default=4, type=positive_int)
    group.add_argument("--dec_layers", default=4, type=positive_int)
    group.add_argument("--dim_feedforward", default=2048, type=positive_int)
    group.add_argument("--hidden_dim", default=384, type=positive_int)
    group.add_argument("--dropout", default=0.1, type=probability)
    group.add_argument("--nheads", default=8, type=positive_int)
    group.add_argument("--num_frames", default=36, type=positive_int)
    group.add_argument("--num_queries", default=36, type=positive_int)
    group.add_argument("--pre_norm", action="store_true")
    group.add_argument("--masks", action="store_true", help="build the mask model (required for training)")
    group.add_argument("--wavelet_threshold", default=THRESHOLD_RATIO, type=float,
                       help="soft threshold of the encoder's wavelet detail bands as a fraction of their largest "
                            "magnitude per sample (official 0.008); 0 turns the denoising off. Not part of the "
                            "weights: infer with the value the model was trained with")

    group = parser.add_argument_group("audio encoder")
    group.add_argument("--audio_encoder", default=DEFAULT_AUDIO_ENCODER, choices=tuple(AUDIO_ENCODERS),
                       help="the audio front end (models/audio_encoder.py): 'mfcc39', the official projection of "
                            "MFCC-39 features, the only one the released checkpoints hold; 'conv' (not official), "
                            "a small temporal convolution stack, one token per frame seeing 0.35 s around it")
    group.add_argument("--audio_cmvn", action="store_true",
                       help="not official: normalise each recording's features to zero mean and unit variance "
                            "over its frames before the audio encoder (removes its gain and channel colouring)")


def add_model_training_args(parser: argparse.ArgumentParser) -> None:
    """The options of the model that only training reads, in the groups 'model training' and 'loss coefficients'
    (the inference scripts build the model without them: `model_training_defaults`)."""
    group = parser.add_argument_group("model training")
    group.add_argument("--backbone_weights", default="", type=str,
                       help="ImageNet ResNet weights (torchvision state_dict); empty = torchvision cache or random; "
                            "none = random without a note")
    group.add_argument("--no_aux_loss", dest="aux_loss", action="store_false",
                       help="disable the auxiliary decoder-layer losses")
    group.add_argument("--checkpoint_activations", action="store_true",
                       help="recompute backbone and transformer activations in backward")
    group.add_argument("--channels_last", action="store_true",
                       help="keep the backbone's convolution weights (and so its activations) in channels-last "
                            "memory format: faster convolutions on CPU (about 15%% of a CPU demo step) and with "
                            "--amp on GPU; same parameters and state dict, only the rounding order differs")

    group = parser.add_argument_group("loss coefficients (the official main.py values; its inference copies drifted)")
    group.add_argument("--mask_loss_coef", default=1, type=non_negative_float)
    group.add_argument("--dice_loss_coef", default=1, type=non_negative_float)
    group.add_argument("--bbox_loss_coef", default=7.5, type=non_negative_float)
    group.add_argument("--giou_loss_coef", default=3, type=non_negative_float)
    group.add_argument("--kl_loss_coef", default=500, type=non_negative_float)


def model_training_defaults() -> Dict[str, object]:
    """The defaults of `add_model_training_args`' options: what the builders read of them when no training is
    done (the inference scripts and the hub entry points, whose parsers do not offer them)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_model_training_args(parser)
    return vars(parser.parse_args([]))
