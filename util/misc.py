"""Nested tensors, collation, distributed helpers (no-ops in one process) and atomic file writes."""
import hashlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist
from threadpoolctl import threadpool_limits
from torch import Tensor

from util.errors import WriteError, write_error

TEMPORARY_SUFFIX = ".tmp"


# ----------------------------------------------------------------------------- nested tensors
class NestedTensor:
    """A padded batch `tensors` with a boolean `mask` that is True on padding."""

    def __init__(self, tensors: Tensor, mask: Optional[Tensor]):
        self.tensors = tensors
        self.mask = mask

    def to(self, device, non_blocking: bool = False) -> "NestedTensor":
        mask = self.mask.to(device, non_blocking=non_blocking) if self.mask is not None else None
        return NestedTensor(self.tensors.to(device, non_blocking=non_blocking), mask)

    def decompose(self) -> Tuple[Tensor, Optional[Tensor]]:
        return self.tensors, self.mask

    def __repr__(self) -> str:
        return f"NestedTensor(tensors={tuple(self.tensors.shape)}, mask={None if self.mask is None else tuple(self.mask.shape)})"


def _max_by_axis(shapes: Sequence[Sequence[int]]) -> List[int]:
    return [max(sizes) for sizes in zip(*shapes)]


def nested_tensor_from_videos_list(videos: Sequence[Tensor]) -> NestedTensor:
    """Clips `[T, 3, H_i, W_i]` (same T) -> frames `[B*T, 3, H, W]` padded to the largest size.

    Frames are stacked clip-major on the batch axis, as the backbone expects; the mask is True on
    padding and has shape `[B*T, H, W]`.
    """
    if not videos:
        raise ValueError("expected at least one clip")
    num_frames = videos[0].shape[0]
    for v in videos:
        if v.dim() != 4 or v.shape[1] != 3:
            raise ValueError(f"expected clips of shape [T, 3, H, W], got {tuple(v.shape)}")
        if v.shape[0] != num_frames:
            raise ValueError(f"clips in one batch must have the same frame count, got {v.shape[0]} and {num_frames}")
    height, width = _max_by_axis([v.shape[-2:] for v in videos])
    if all(tuple(v.shape[-2:]) == (height, width) for v in videos):
        # nothing to pad (one clip, or clips of one size): the frames as they are, no zero-filled copy
        frames = videos[0] if len(videos) == 1 else torch.cat(list(videos))  # [B*T, 3, H, W]
        return NestedTensor(frames, torch.zeros((frames.shape[0], height, width), dtype=torch.bool,
                                                device=frames.device))
    tensor = videos[0].new_zeros((len(videos) * num_frames, 3, height, width))
    mask = torch.ones((len(videos) * num_frames, height, width), dtype=torch.bool, device=videos[0].device)
    for i, v in enumerate(videos):
        frames = slice(i * num_frames, (i + 1) * num_frames)
        tensor[frames, :, : v.shape[-2], : v.shape[-1]].copy_(v)
        mask[frames, : v.shape[-2], : v.shape[-1]] = False
    return NestedTensor(tensor, mask)


def downsample_mask(mask: Tensor, size: Sequence[int]) -> Tensor:
    """A padding mask `[N, H, W]` at `size` `(h, w)`, as `F.interpolate(mask[None].float(), size)` (mode
    'nearest', DETR's backbone) returns it, without its float copy of the whole mask: the same source rows and
    columns, `min(floor(i * (H / h)), H - 1)` in float32 as PyTorch's kernels compute them."""
    rows, columns = (_nearest_source_index(source, target, mask.device)
                     for source, target in zip(mask.shape[-2:], size))
    return mask.index_select(-2, rows).index_select(-1, columns)  # [N, h, w]


def _nearest_source_index(source: int, target: int, device: torch.device) -> Tensor:
    scale = torch.tensor(np.float32(source) / np.float32(target), dtype=torch.float32, device=device)
    index = (torch.arange(target, dtype=torch.float32, device=device) * scale).floor().long()
    return index.clamp_(max=source - 1)


def nested_tensor_from_audio_list(features: Sequence[Tensor]) -> NestedTensor:
    """Audio features `[39, L_i]` -> `[B, 39, L]` zero-padded at the end; mask `[B, L]` True on padding."""
    if not features:
        raise ValueError("expected at least one audio feature")
    dims = {f.shape[0] for f in features}
    if any(f.dim() != 2 for f in features) or len(dims) != 1:
        raise ValueError(f"expected audio features of shape [D, L] with one D, got {[tuple(f.shape) for f in features]}")
    length = max(f.shape[1] for f in features)
    tensor = features[0].new_zeros((len(features), features[0].shape[0], length))
    mask = torch.ones((len(features), length), dtype=torch.bool, device=features[0].device)
    for i, f in enumerate(features):
        tensor[i, :, : f.shape[1]].copy_(f)
        mask[i, : f.shape[1]] = False
    return NestedTensor(tensor, mask)


def collate_fn(batch: Sequence[Tuple[Tensor, Tensor, Dict[str, Any]]]):
    """Dataset items `(clip [T,3,H,W], audio [39,L], target)` -> `(NestedTensor, NestedTensor, [target])`."""
    clips, audios, targets = zip(*batch)
    return nested_tensor_from_videos_list(clips), nested_tensor_from_audio_list(audios), list(targets)


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's `random` (what the training and inference draws use)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def set_cpu_threads(threads: int) -> None:
    """Use `threads` CPU threads in torch and in the BLAS and OpenMP pools that numpy, scipy and the extension
    use: their idle threads otherwise spin on the other cores, which slows a job that shares the machine."""
    torch.set_num_threads(threads)
    threadpool_limits(threads)


# ----------------------------------------------------------------------------- distributed
DEFAULT_GROUP_PREFIX = "default_pg"  # init_process_group's own prefix for the keys of the default group
_run_store: Optional[dist.Store] = None  # set by init_distributed_mode, read through run_store()


def is_dist_avail_and_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist_avail_and_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist_avail_and_initialized() else 0


def get_backend() -> Optional[str]:
    """The process group's backend ("nccl", "gloo"), None in a single process without one."""
    return str(dist.get_backend()) if is_dist_avail_and_initialized() else None


def is_main_process() -> bool:
    return get_rank() == 0


def distributed_environment(environ: Dict[str, str]) -> Optional[Tuple[int, int, Optional[int], str]]:
    """(rank, world size, local rank or None, launcher) from the launcher's variables, or None for one process.

    `torch.distributed.launch --use_env` and `torchrun` set RANK, WORLD_SIZE and LOCAL_RANK; SLURM (`srun`)
    sets SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID, the official's (DETR's) other way to start.
    """
    if "RANK" in environ and "WORLD_SIZE" in environ:
        local = environ.get("LOCAL_RANK")
        return int(environ["RANK"]), int(environ["WORLD_SIZE"]), None if local is None else int(local), "env"
    if "SLURM_PROCID" in environ and "SLURM_NTASKS" in environ:
        local = environ.get("SLURM_LOCALID")
        return (int(environ["SLURM_PROCID"]), int(environ["SLURM_NTASKS"]), None if local is None else int(local),
                "slurm")
    return None


def init_distributed_mode(args) -> Dict[str, object]:
    """The distributed settings of this process from the launcher's environment, set up: `{"distributed",
    "rank", "world_size", "gpu", "device"}` (`device` the process's GPU under CUDA, else `args.device`).

    Works with `torch.distributed.launch --use_env` and `torchrun` (RANK, WORLD_SIZE, LOCAL_RANK) and with
    SLURM (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID; the GPU is the local id, else `rank % device count`
    as in DETR). The rendezvous is `--dist_url`: `env://` (the default) needs MASTER_ADDR and MASTER_PORT,
    which torchrun sets and a SLURM script exports (scripts/slurm_train.sh). NCCL on CUDA, gloo on the CPU.
    Without those variables this is one process and nothing is set up. Under torchrun the process group is
    set up even for one process (as DETR does), so that `torchrun --nproc_per_node=1` exercises the same
    NCCL/DDP path as a multi-GPU run; a single SLURM task (a plain `python main.py` inside a job) stays one
    process.
    """
    found = distributed_environment(os.environ)
    if found is None or (found[3] == "slurm" and found[1] <= 1):
        return {"distributed": False, "rank": 0, "world_size": 1, "gpu": 0, "device": args.device}
    rank, world_size, local_rank, launcher = found
    use_cuda = str(args.device).startswith("cuda")
    if local_rank is None:
        local_rank = rank % max(1, torch.cuda.device_count()) if use_cuda else 0
    if args.dist_url == "env://":
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
        if missing:
            raise SystemExit(f"distributed start ({launcher}, rank {rank} of {world_size}): --dist_url env:// "
                             f"needs {' and '.join(missing)} (export the first node's address and a free port, as "
                             f"scripts/slurm_train.sh does, or pass --dist_url tcp://HOST:PORT)")
    device = args.device
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    backend = "nccl" if use_cuda else "gloo"
    # The rendezvous made here rather than inside init_process_group, so that the processes keep its store
    # (`run_store`): the one channel left to them when a collective waits for a process that has failed.
    global _run_store
    store, rank, world_size = next(dist.rendezvous(args.dist_url, rank, world_size))
    _run_store = store
    dist.init_process_group(backend=backend, store=dist.PrefixStore(DEFAULT_GROUP_PREFIX, store), world_size=world_size,
                            rank=rank)
    dist.barrier()
    return {"distributed": True, "rank": rank, "world_size": world_size, "gpu": local_rank, "device": device}


def run_store() -> Optional[dist.Store]:
    """The key-value store (TCPStore, FileStore) the processes of this run met through; None in one process."""
    return _run_store if is_dist_avail_and_initialized() else None


def state_digest(module: torch.nn.Module) -> str:
    """SHA-1 of every parameter's and buffer's bytes: equal digests mean bitwise-equal states."""
    digest = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def ranks_in_sync(module: torch.nn.Module) -> bool:
    """Whether every process holds bitwise the same model state (True in one process)."""
    if get_world_size() == 1:
        return True
    digests: List[Optional[str]] = [None] * get_world_size()
    dist.all_gather_object(digests, state_digest(module))
    return len(set(digests)) == 1


def all_gather_object(value: Any) -> List[Any]:
    """`value` of every process, in rank order (`[value]` in one process)."""
    if get_world_size() == 1:
        return [value]
    gathered: List[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def all_reduce_mean(value: Tensor) -> Tensor:
    """Mean of a tensor over processes (identity in one process)."""
    if get_world_size() == 1:
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value / get_world_size()


def reduce_dict(values: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Average every value of a dict of scalar tensors over processes."""
    if get_world_size() == 1 or not values:
        return values
    names = sorted(values)
    stacked = torch.stack([values[k].detach().float() for k in names])  # [K]
    dist.all_reduce(stacked)
    stacked /= get_world_size()
    return dict(zip(names, stacked))


# ----------------------------------------------------------------------------- atomic writes
def _umask() -> int:
    umask = os.umask(0)  # reading the umask means setting it; put it back at once
    os.umask(umask)
    return umask


def _default_file_mode() -> int:
    return 0o666 & ~_umask()


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def atomic_write(path: Union[str, Path], write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)`, then rename onto `path`: readers never see a half-written file.

    An OSError while writing (a full disk, no permission) becomes a `WriteError` naming `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=TEMPORARY_SUFFIX, dir=path.parent)
    except OSError as error:
        raise write_error(path, error) from error
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _default_file_mode())  # mkstemp creates rw------- files
        os.replace(tmp, path)
    except BaseException as error:
        # the error is described before the temporary file goes, while the disk is as full as the write found it
        described = write_error(path, error) if isinstance(error, OSError) and not isinstance(error, WriteError) else None
        if os.path.exists(tmp):
            os.unlink(tmp)
        if described is not None:
            raise described from error
        raise


def remove_stale_temporaries(folder: Union[str, Path], name_pattern: str) -> List[Path]:
    """Delete the temporary files that `atomic_write` of files named like `name_pattern` (a glob, e.g.
    'checkpoint*.pth') in `folder` left behind when its process was killed; returns them."""
    stale = sorted(Path(folder).glob(_temporary_prefix(Path(name_pattern)) + "*" + TEMPORARY_SUFFIX))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def atomic_directory(path: Union[str, Path], write: Callable[[Path], Any], prefix: str = "") -> Any:
    """Call `write(tmp_dir)` on a fresh hidden folder beside `path`, then put it in place of `path`
    (replacing an old one only once the new one is complete). Returns what `write` returns."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix or f".{path.name}.tmp-", dir=path.parent))
    try:
        result = write(tmp)
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
        return result
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def atomic_torch_save(obj: Any, path: Union[str, Path]) -> None:
    def write(tmp: str) -> None:
        # Through a Python file object: a full disk then raises OSError(ENOSPC); torch's own file writer
        # reports it as "basic_ios::clear: iostream error" without the path.
        with open(tmp, "wb") as f:
            try:
                torch.save(obj, f)
            except RuntimeError as error:
                # torch's zip writer fails again while closing the archive, hiding the OSError that stopped it
                if isinstance(error.__context__, OSError):
                    raise error.__context__ from None
                raise
    atomic_write(path, write)


def atomic_json_dump(obj: Any, path: Union[str, Path], **kwargs) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, **kwargs)
    atomic_write(path, write)


def save_on_master(obj: Any, path: Union[str, Path]) -> None:
    if is_main_process():
        atomic_torch_save(obj, path)
