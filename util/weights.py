"""Loading weights: the released Wnet checkpoint, VisTR-style DETR weights and ImageNet ResNets.

Every file is read with `torch.load(weights_only=True)` on the CPU, and nothing is ever downloaded:
ResNet weights come from a path the user gives or from torchvision's local cache.
"""
import argparse
import hashlib
import json
import logging
import pickle
import struct
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import safetensors
import safetensors.torch
import torch
import torchvision
from torch import Tensor, nn

from util.config import is_none
from util.errors import UserError
from util.misc import atomic_write

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]

# VisTR-style DETR weights name the inner detector `detr.`; ours is `wnet.`.
DETR_PREFIX = "detr."
WNET_PREFIX = "wnet."
# DETR parts that Wnet has no use for: the class head, and the query embedding (Q differs).
DROPPED_DETR_PREFIXES = ("wnet.class_embed.",)
DROPPED_DETR_KEYS = ("wnet.query_embed.weight",)
# torchvision ResNet entries that the backbone body does not hold.
RESNET_HEAD_PREFIX = "fc."
BN_COUNTER_SUFFIX = "num_batches_tracked"
# The ImageNet weights whose file name torchvision's cache uses.
IMAGENET_WEIGHTS = "IMAGENET1K_V1"
# How torch.save files start: a zip archive (torch >= 1.6), or a pickle of protocol 2 or later (legacy).
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_MAGIC = b"\x80"
MAGIC_LENGTH = 8  # bytes of an unreadable file shown in its error
# safetensors files (weights for sharing, scripts/export_weights.py): an 8-byte little-endian header length, then
# the header, a JSON object; no pickle. Ours carry the model's args, the training videos and a hash of the tensors.
SAFETENSORS_SUFFIX = ".safetensors"
SAFETENSORS_LENGTH = struct.Struct("<Q")
SAFETENSORS_HEADER_START = b"{"
METADATA_KEY = "__metadata__"
ARGS_METADATA = "wnet_args"  # JSON of the training args
TRAIN_VIDEOS_METADATA = "wnet_train_videos"  # JSON of `{part: [video names]}`
DIGEST_METADATA = "wnet_sha256"  # of the bytes after the header: a changed or cut file is refused
KEYS_SHOWN = 3  # keys of each kind named in a StateDictMismatchError
# torch.nn.parallel.DistributedDataParallel's name for the model it wraps: a checkpoint saved from the wrapper
DDP_PREFIX = "module."
# Training checkpoints record their options under this key (main.py: `vars(args)`; DETR's: a Namespace).
ARGS_KEY = "args"


class WeightsFileError(UserError, ValueError):
    """A file that is not a readable torch checkpoint of the expected form; the message names it."""


class StateDictMismatchError(UserError, RuntimeError):
    """A state dict that does not fit a model; the message counts the offending keys of each kind and names the
    first few (the attributes hold them all)."""

    def __init__(self, source: str, missing: List[str], unexpected: List[str],
                 mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]], hint: str = ""):
        self.source = source
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {first_few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {first_few(unexpected)}")
        if mismatched:
            shapes = [f"{k} (file {list(f)}, model {list(m)})" for k, f, m in mismatched]
            parts.append(f"{len(mismatched)} key(s) with mismatched shapes: {first_few(shapes)}")
        super().__init__(f"{source} does not fit the model: {'; '.join(parts)}{hint}")


def first_few(items: Sequence[str]) -> str:
    """The first `KEYS_SHOWN` of `items`, comma-separated, and how many more: a summary, never a dump."""
    more = len(items) - KEYS_SHOWN
    return ", ".join(items[:KEYS_SHOWN]) + (f", ... ({more} more)" if more > 0 else "")


# ----------------------------------------------------------------------------- safetensors
def is_safetensors(path: PathLike) -> bool:
    """Whether `path` is (meant to be) a safetensors file: by its suffix, or a header length then a JSON object."""
    if Path(path).suffix.lower() == SAFETENSORS_SUFFIX:
        return True
    with open(path, "rb") as f:
        start = f.read(SAFETENSORS_LENGTH.size + len(SAFETENSORS_HEADER_START))
    return len(start) > SAFETENSORS_LENGTH.size and start[SAFETENSORS_LENGTH.size:] == SAFETENSORS_HEADER_START


def _split_safetensors(data: bytes, path: PathLike) -> Tuple[dict, bytes]:
    """(the header as JSON, the tensors' bytes) of a safetensors file's contents."""
    if len(data) < SAFETENSORS_LENGTH.size:
        raise WeightsFileError(f"{path} is not a readable safetensors file (it holds {len(data)} bytes)")
    (length,) = SAFETENSORS_LENGTH.unpack_from(data)
    end = SAFETENSORS_LENGTH.size + length
    try:
        header = json.loads(data[SAFETENSORS_LENGTH.size:end].decode("utf-8")) if end <= len(data) else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict):
        raise WeightsFileError(f"{path} is not a readable safetensors file (its header is not a JSON object of "
                               f"{length} bytes)")
    return header, data[end:]


def save_safetensors(path: PathLike, state_dict: Mapping[str, Tensor], args: Mapping[str, object],
                     train_videos: Optional[Mapping[str, List[str]]] = None) -> None:
    """Write `state_dict` as a weights-only safetensors file, atomically, with the model's `args` and the training
    videos (JSON strings) and the SHA-256 of its tensors as metadata."""
    tensors = {key: value.detach().cpu().contiguous().clone() for key, value in state_dict.items()}
    metadata = {"format": "pt", ARGS_METADATA: json.dumps(dict(args), default=str, sort_keys=True)}
    if train_videos is not None:
        metadata[TRAIN_VIDEOS_METADATA] = json.dumps(dict(train_videos))
    _, body = _split_safetensors(safetensors.torch.save(tensors, metadata), path)  # the bytes do not depend on it
    metadata[DIGEST_METADATA] = hashlib.sha256(body).hexdigest()
    data = safetensors.torch.save(tensors, metadata)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
    atomic_write(path, write)


def load_safetensors(path: PathLike) -> Dict[str, object]:
    """A safetensors file as a checkpoint: `{'model': state_dict, 'args': dict, 'train_videos': ...}` (the last two
    when its metadata holds them). A file whose tensors do not match the hash it records is refused."""
    data = Path(path).read_bytes()
    header, body = _split_safetensors(data, path)
    metadata = header.get(METADATA_KEY) or {}
    digest = metadata.get(DIGEST_METADATA)
    if digest is not None and hashlib.sha256(body).hexdigest() != digest:
        raise WeightsFileError(f"{path}: its tensors do not match the SHA-256 its header records (changed or cut "
                               f"after export)")
    try:
        state_dict = safetensors.torch.load(data)
    except safetensors.SafetensorError as error:
        raise WeightsFileError(f"{path} is not a readable safetensors file ({error})") from None
    checkpoint: Dict[str, object] = {"model": state_dict}
    for key, name in ((ARGS_METADATA, "args"), (TRAIN_VIDEOS_METADATA, TRAIN_VIDEOS_KEY)):
        if key in metadata:
            try:
                checkpoint[name] = json.loads(metadata[key])
            except json.JSONDecodeError:
                raise WeightsFileError(f"{path}: its metadata {key!r} is not JSON") from None
    return checkpoint


# ----------------------------------------------------------------------------- reading files
def load_weights_file(path: PathLike) -> object:
    """`torch.load(path, weights_only=True, map_location='cpu')` with errors that name the file; a safetensors
    file (`is_safetensors`) as the checkpoint `load_safetensors` makes of it.

    `argparse.Namespace` is allowed too: training checkpoints (ours and DETR's) store their args.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if is_safetensors(path):
        return load_safetensors(path)
    with open(path, "rb") as f:
        start = f.read(MAGIC_LENGTH)
    if not (start.startswith(ZIP_MAGIC) or start.startswith(PICKLE_MAGIC)):
        found = "it is empty" if not start else f"it starts with {start!r}"
        raise WeightsFileError(f"{path} is not a readable torch checkpoint ({found}; torch.save writes a zip "
                               f"archive)")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    # a truncated or corrupt file breaks the unpickler in many ways (KeyError for an unknown opcode, ...)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError, IndexError) as error:
        message = " ".join(str(error).split())
        raise WeightsFileError(f"{path} is not a readable torch checkpoint (weights_only load failed): "
                               f"{message}") from error


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def _model_state_dict_from_checkpoint(obj: object, path: PathLike) -> Dict[str, Tensor]:
    """The `model` entry of a `{'model': state_dict, ...}` checkpoint, checked."""
    if not isinstance(obj, Mapping) or "model" not in obj:
        found = sorted(map(str, obj.keys()))[:10] if isinstance(obj, Mapping) else type(obj).__name__
        raise WeightsFileError(f"{path} is not a checkpoint of the form {{'model': state_dict}} (found {found})")
    state_dict = obj["model"]
    if not _is_state_dict(state_dict):
        raise WeightsFileError(f"{path}: 'model' is not a state dict of named tensors")
    return dict(state_dict)


def compare_state_dicts(expected: Mapping[str, Tensor], given: Mapping[str, Tensor]
                        ) -> Tuple[List[str], List[str], List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]]]:
    """(missing, unexpected, mismatched) keys of `given` relative to `expected`.

    mismatched: `(key, given shape, expected shape)` for keys in both with different shapes.
    """
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    mismatched = [(k, tuple(given[k].shape), tuple(expected[k].shape))
                  for k in expected if k in given and given[k].shape != expected[k].shape]
    return missing, unexpected, mismatched


def read_state_dict(path: PathLike) -> Dict[str, Tensor]:
    """The state dict in `path`: a checkpoint `{'model': state_dict, ...}` or a bare state dict."""
    obj = load_weights_file(path)
    return dict(obj) if _is_state_dict(obj) else _model_state_dict_from_checkpoint(obj, path)


# ----------------------------------------------------------------------------- Wnet checkpoint
def load_wnet_checkpoint(model: nn.Module, path: PathLike) -> Dict[str, object]:
    """Load a Wnet checkpoint `{'model': state_dict, ...}` into `model`, strictly.

    Any missing, unexpected or mis-shaped key raises a StateDictMismatchError listing them all.
    Returns the whole checkpoint (optimizer, epoch, ... when it holds them).
    """
    checkpoint = load_weights_file(path)
    state_dict = _model_state_dict_from_checkpoint(checkpoint, path)
    if state_dict and all(key.startswith(DDP_PREFIX) for key in state_dict):
        print(f"note: {path}: its keys start with {DDP_PREFIX!r} (saved from a DistributedDataParallel wrapper); "
              f"loaded without it", file=sys.stderr)
        state_dict = {key[len(DDP_PREFIX):]: value for key, value in state_dict.items()}
    missing, unexpected, mismatched = compare_state_dicts(model.state_dict(), state_dict)
    if missing or unexpected or mismatched:
        hint = "" if checkpoint.get(ARGS_KEY) else (
            " (it records no training options: pass those it was trained with, e.g. its --config)")
        raise StateDictMismatchError(f"checkpoint {path}", missing, unexpected, mismatched, hint)
    model.load_state_dict(state_dict, strict=True)
    return dict(checkpoint)


def checkpoint_args(checkpoint: Mapping, path: PathLike) -> Dict[str, object]:
    """The options a checkpoint was trained with (`{}` when it records none, e.g. the released checkpoint); a
    record that is not a mapping of option names is a WeightsFileError naming `path`."""
    recorded = checkpoint.get(ARGS_KEY)
    if recorded is None:
        return {}
    recorded = vars(recorded) if isinstance(recorded, argparse.Namespace) else recorded
    if not (isinstance(recorded, Mapping) and all(isinstance(key, str) for key in recorded)):
        raise WeightsFileError(f"{path}: '{ARGS_KEY}' is a {type(recorded).__name__}, not the mapping of option "
                               f"names to values that training records")
    return dict(recorded)


# ----------------------------------------------------------------------------- leakage guard
# Training checkpoints record `{dataset part: [video names]}` under this key (main.py).
TRAIN_VIDEOS_KEY = "train_videos"
LEAKED_EXAMPLES = 5  # video names quoted in the warning


def checkpoint_train_videos(checkpoint: Mapping, path: PathLike) -> Optional[Dict[str, List[str]]]:
    """The `{part: [video names]}` a checkpoint was trained on, or None when it does not record them (the
    released checkpoint, or one written before the record existed)."""
    videos = checkpoint.get(TRAIN_VIDEOS_KEY)
    if videos is None:
        return None
    if not (isinstance(videos, Mapping) and all(isinstance(k, str) and isinstance(v, (list, tuple))
                                                and all(isinstance(n, str) for n in v) for k, v in videos.items())):
        raise WeightsFileError(f"{path}: '{TRAIN_VIDEOS_KEY}' is not a mapping of dataset names to lists of video names")
    return {part: list(names) for part, names in videos.items()}


def read_train_videos(path: PathLike) -> Optional[Dict[str, List[str]]]:
    """`checkpoint_train_videos` of the checkpoint file `path`."""
    checkpoint = load_weights_file(path)
    if not isinstance(checkpoint, Mapping):
        raise WeightsFileError(f"{path} is not a checkpoint of the form {{'model': state_dict, ...}}")
    return checkpoint_train_videos(checkpoint, path)


def count_trained_on(evaluated: Sequence[str], train_videos: Optional[Sequence[str]], source: PathLike,
                     what: str = "Ref-YouTube-VOS") -> Optional[int]:
    """How many of the `evaluated` videos the model was trained on (None when unknown). Warns on stderr when
    any: scores on training videos are not test results (the official holds out ann/instances_test_sub.json)."""
    if train_videos is None:
        print(f"note: {source} does not record the videos it was trained on; cannot check that the evaluated "
              f"videos were held out", file=sys.stderr)
        return None
    trained = set(train_videos)
    leaked = [name for name in dict.fromkeys(evaluated) if name in trained]
    if leaked:
        print(f"warning: {len(leaked)} of the {len(set(evaluated))} evaluated {what} videos were in the training "
              f"set of {source} (e.g. {', '.join(leaked[:LEAKED_EXAMPLES])}): these scores are not test results",
              file=sys.stderr)
    return len(leaked)


# ----------------------------------------------------------------------------- DETR weights
def plan_detr_conversion(keys: List[str]) -> Tuple[Dict[str, str], List[str]]:
    """For VisTR-style DETR keys: (renames `detr.* -> wnet.*`, dropped keys after renaming)."""
    renames = {k: WNET_PREFIX + k[len(DETR_PREFIX):] for k in keys if k.startswith(DETR_PREFIX)}
    dropped = []
    for key in keys:
        new_key = renames.get(key, key)
        if new_key.startswith(DROPPED_DETR_PREFIXES) or new_key in DROPPED_DETR_KEYS:
            dropped.append(new_key)
    return renames, dropped


def convert_detr_state_dict(state_dict: Mapping[str, Tensor]) -> "OrderedDict[str, Tensor]":
    """Rename `detr.` to `wnet.` and drop `wnet.class_embed.*` and `wnet.query_embed.weight`."""
    renames, dropped = plan_detr_conversion(list(state_dict))
    dropped_set = set(dropped)
    converted = OrderedDict()
    for key, value in state_dict.items():
        new_key = renames.get(key, key)
        if new_key in dropped_set:
            continue
        if new_key in converted:
            raise ValueError(f"converting DETR weights: two tensors map to the key {new_key}")
        converted[new_key] = value
    return converted


def load_pretrained_weights(model: nn.Module, path: PathLike) -> Tuple[List[str], List[str]]:
    """Initialise `model` from DETR-style weights (keys `detr.*` or `wnet.*`), non-strictly.

    The file is a checkpoint `{'model': state_dict}` or a bare state dict. Keys are converted with
    `convert_detr_state_dict`; keys present in both with different shapes raise a
    StateDictMismatchError. Returns (missing, unexpected) keys, which are also logged.
    """
    state_dict = convert_detr_state_dict(read_state_dict(path))
    model_state = model.state_dict()
    _, _, mismatched = compare_state_dicts(model_state, state_dict)
    if mismatched:
        raise StateDictMismatchError(f"pretrained weights {path}", [], [], mismatched)
    if not any(k in model_state for k in state_dict):
        raise WeightsFileError(f"pretrained weights {path}: none of its {len(state_dict)} tensors matches a model key "
                         f"(expected keys 'detr.*' or 'wnet.*', found e.g. {list(state_dict)[:3]})")
    result = model.load_state_dict(state_dict, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    logger.info("loaded pretrained weights %s: %d tensors loaded", path, len(state_dict) - len(unexpected))
    if missing:
        logger.info("pretrained weights %s: %d missing key(s) keep their initialisation: %s",
                    path, len(missing), ", ".join(missing))
    if unexpected:
        logger.info("pretrained weights %s: %d unexpected key(s) ignored: %s",
                    path, len(unexpected), ", ".join(unexpected))
    return missing, unexpected


# ----------------------------------------------------------------------------- ResNet weights
def torchvision_cache_path(name: str) -> Path:
    """Where torchvision keeps the ImageNet weights of ResNet `name` (e.g. resnet50); never downloads."""
    try:
        weights_enum = torchvision.models.get_model_weights(name)
    except ValueError as error:
        raise ValueError(f"unknown backbone {name!r}: {error}") from error
    file_name = Path(getattr(weights_enum, IMAGENET_WEIGHTS).url).name
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def load_backbone_weights(body: nn.Module, name: str, path: PathLike = "") -> None:
    """Load ImageNet weights of torchvision ResNet `name` into the backbone `body`.

    From `path` (a torchvision state dict) when given, else from torchvision's local cache. With
    neither, the body keeps its random initialisation and a warning is logged; with `path` 'none' it keeps it
    without a word (what a model that a checkpoint fills next needs). `fc.*` and the BN
    `num_batches_tracked` counters are dropped; every other key must fit the body exactly.
    """
    if path and is_none(path):
        return  # the caller loads every weight afterwards (a checkpoint at inference)
    if path:
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"backbone weights file {source} does not exist")
    else:
        source = torchvision_cache_path(name)
        if not source.is_file():
            logger.warning("no ImageNet weights for %s: %s is absent and --backbone_weights is not set; "
                           "the backbone keeps its random initialisation", name, source)
            return
    state_dict = {k: v for k, v in read_state_dict(source).items()
                  if not k.startswith(RESNET_HEAD_PREFIX) and not k.endswith(BN_COUNTER_SUFFIX)}
    expected = {k: v for k, v in body.state_dict().items()
                if not k.startswith(RESNET_HEAD_PREFIX) and not k.endswith(BN_COUNTER_SUFFIX)}
    missing, unexpected, mismatched = compare_state_dicts(expected, state_dict)
    if missing or unexpected or mismatched:
        raise StateDictMismatchError(f"{name} backbone weights {source}", missing, unexpected, mismatched)
    body.load_state_dict(state_dict, strict=False)
    logger.info("loaded ImageNet weights for %s from %s", name, source)
