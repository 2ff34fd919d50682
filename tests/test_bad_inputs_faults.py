"""The second bad-input matrix (issue 23), its faults part: inference builds the model from the checkpoint's own
options, outputs never replace inputs, a training `--output_dir` is checked writable and locked at start, the ranks
of a distributed training run agree or stop together.

One test per item of the issue (`test_NN_...`), each failing when its fix is reverted; the data is written in the
real on-disk formats by `data_factory`, the checkpoints by `model_helpers`. User errors are checked as the user
meets them: `util.errors.run_main` around the script's `main`, exactly one `error:` line naming the option.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
from pathlib import Path
from typing import Callable, List, Sequence, Tuple

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

import inference_rvos
import main
from cli_helpers import assert_user_error
from data_factory import make_ytvos
from datasets import build_dataset
from engine.checkpoint import OutputDirLock
from model_helpers import save_untrained_checkpoint
from scripts import evaluate_rvos
from util.errors import EXIT_DATA, EXIT_OPTION, UserError, run_main
from util.weights import DDP_PREFIX

MODEL_OPTIONS = ["--backbone", "resnet18", "--hidden_dim", "48", "--nheads", "4", "--dim_feedforward", "64",
                 "--enc_layers", "1", "--dec_layers", "1", "--num_frames", "2", "--num_queries", "2", "--masks",
                 "--data_scale", "0.1"]
RUN_OPTIONS = ["--device", "cpu", "--num_workers", "0", "--pretrained_weights", "none"]
LONGEST_ERROR = 1000  # characters: a summary of missing keys, never a dump of them


# ----------------------------------------------------------------------------- helpers
def succeeds(capsys, main: Callable, argv: Sequence) -> str:
    """`main` exits 0; returns its stderr."""
    capsys.readouterr()
    exit_code = run_main(main, [str(a) for a in argv])
    err = capsys.readouterr().err
    assert exit_code == 0 and "error:" not in err, err
    return err


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint that records the options it was trained with, as main.py writes them (`vars(args)`)."""
    path = save_untrained_checkpoint(tmp_path_factory.mktemp("ckpt"), MODEL_OPTIONS + RUN_OPTIONS)
    args = inference_rvos.parse([str(a) for a in MODEL_OPTIONS + RUN_OPTIONS])
    torch.save({**torch.load(path, weights_only=True), "args": vars(args).copy()}, path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    return make_ytvos(tmp_path_factory.mktemp("data") / "ytvos", num_videos=1, num_frames=2)


def rvos_argv(data: dict, checkpoint: Path, tmp_path: Path, *extra) -> List:
    return ["--model_path", checkpoint, "--ytvos_path", data["root"], "--ytvos_split", "train", "--rvos_audio_path",
            data["audio_root"], "--split_file", "none", "--save_path", tmp_path / "results.json", "--device", "cpu",
            *extra]


# ----------------------------------------------------------------------------- the checkpoint's own options
def test_20_inference_builds_the_model_from_the_checkpoints_own_options(trained_checkpoint, data, tmp_path, capsys):
    succeeds(capsys, inference_rvos.main, rvos_argv(data, trained_checkpoint, tmp_path))  # no model option given
    assert (tmp_path / "results.json").is_file()
    # an option that contradicts the checkpoint is named in one line, with what it was trained with
    assert_user_error(capsys, inference_rvos.main, rvos_argv(data, trained_checkpoint, tmp_path, "--hidden_dim", "96"),
                      EXIT_OPTION, "--hidden_dim 96: the checkpoint was trained with 48", str(trained_checkpoint))



def test_17_a_wavelet_threshold_other_than_the_trained_one_is_noted(trained_checkpoint, data, tmp_path, capsys):
    # an option that changes predictions but not the weights: the command line's is used, with a note
    err = succeeds(capsys, inference_rvos.main, rvos_argv(data, trained_checkpoint, tmp_path, "--wavelet_threshold",
                                                          "0"))
    assert "--wavelet_threshold 0.0: the checkpoint" in err and "trained with 0.008" in err


def test_20_a_ddp_prefix_is_stripped_with_a_note(trained_checkpoint, data, tmp_path, capsys):
    checkpoint = torch.load(trained_checkpoint, weights_only=True)
    checkpoint["model"] = {DDP_PREFIX + key: value for key, value in checkpoint["model"].items()}
    path = tmp_path / "ddp.pth"
    torch.save(checkpoint, path)
    err = succeeds(capsys, inference_rvos.main, rvos_argv(data, path, tmp_path))
    assert f"note: {path}" in err and repr(DDP_PREFIX) in err


def test_20_missing_keys_are_summarised(data, tmp_path, capsys):
    # a checkpoint that records no options (the released one) and a command line without them
    path = save_untrained_checkpoint(tmp_path, MODEL_OPTIONS + RUN_OPTIONS)
    line = assert_user_error(capsys, inference_rvos.main, rvos_argv(data, path, tmp_path, "--masks"), EXIT_DATA,
                             str(path), "missing key(s)", "more)", "records no training options")
    assert len(line) < LONGEST_ERROR, line


def test_18_a_checkpoint_whose_args_are_not_options_is_named(trained_checkpoint, data, tmp_path, capsys):
    checkpoint = torch.load(trained_checkpoint, weights_only=True)
    recorded = checkpoint["args"]
    for changed, named in (({"args": "resnet18"}, "'args' is a str"),
                           ({"args": {**recorded, "hidden_dim": "48x"}}, "hidden_dim"),
                           ({"args": {**recorded, "audio_sample_rate": "22050Hz"}}, "audio_sample_rate"),
                           ({"train_videos": {"ytvos": [1, 2]}}, "train_videos")):
        path = tmp_path / "bad_args.pth"
        torch.save({**checkpoint, **changed}, path)
        assert_user_error(capsys, inference_rvos.main, rvos_argv(data, path, tmp_path), EXIT_DATA, str(path), named)


def test_18_text_that_is_not_utf8_is_named(trained_checkpoint, tmp_path, capsys):
    data = make_ytvos(tmp_path / "ytvos", num_videos=1, num_frames=2)
    meta = Path(data["root"]) / "meta_expressions" / "train" / "meta_expressions.json"
    meta.write_bytes(meta.read_bytes().replace(b'"videos"', b'"vid\xffeos"', 1))
    assert_user_error(capsys, inference_rvos.main, rvos_argv(data, trained_checkpoint, tmp_path), EXIT_DATA, str(meta),
                      "not UTF-8")
    results = tmp_path / "r.json"
    results.write_bytes(b'[{"video": "vid\xff"}]')
    assert_user_error(capsys, evaluate_rvos.main, [results, "--ytvos_path", data["root"], "--out", tmp_path / "m.json"],
                      EXIT_DATA, str(results), "not UTF-8")


def test_17_feature_files_that_are_not_numbers_are_refused(trained_checkpoint, tmp_path, capsys):
    data = make_ytvos(tmp_path / "ytvos", num_videos=1, num_frames=2)
    feature = Path(data["audio_root"]) / "vid000_0.npy"
    frames = len(np.load(feature))
    for values, named in ((np.ones((frames, 39), dtype=bool), "bool"), (np.full((frames, 39), "1"), "<U1")):
        np.save(feature, values)
        assert_user_error(capsys, inference_rvos.main, rvos_argv(data, trained_checkpoint, tmp_path), EXIT_DATA,
                          str(feature), named)


# ----------------------------------------------------------------------------- outputs never replace inputs
def files_under(folder: Path) -> dict:
    """Every file under `folder` with its bytes."""
    return {path: path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_04_overlays_never_replace_the_frames(trained_checkpoint, data, tmp_path, capsys):
    root = Path(data["root"])
    before = files_under(root)
    assert_user_error(capsys, inference_rvos.main, rvos_argv(data, trained_checkpoint, tmp_path, "--visualize",
                                                             root / "train" / "JPEGImages"),
                      EXIT_OPTION, "--visualize", "lies inside --ytvos_path")
    # one folder of frames: overlays into its parent would be written over the frames themselves
    video_dir = root / "train" / "JPEGImages" / "vid000"
    audio = next(Path(data["audio_root"]).rglob("*.npy"))
    assert_user_error(capsys, inference_rvos.main, ["--model_path", trained_checkpoint, "--audio", audio, "--video_dir",
                                                    video_dir, "--visualize", video_dir.parent, "--save_path",
                                                    tmp_path / "r.json", "--device", "cpu"],
                      EXIT_OPTION, "--visualize", "--video_dir")
    assert files_under(root) == before


def test_05_results_never_replace_the_checkpoint_or_what_is_scored(trained_checkpoint, data, tmp_path, capsys):
    before = trained_checkpoint.read_bytes()
    assert_user_error(capsys, inference_rvos.main, rvos_argv(data, trained_checkpoint, tmp_path)[:-4] + [
                      "--save_path", trained_checkpoint, "--device", "cpu"],
                      EXIT_OPTION, "--save_path", "is --model_path")
    assert trained_checkpoint.read_bytes() == before
    results = tmp_path / "r.json"
    results.write_text("[]")
    assert_user_error(capsys, evaluate_rvos.main, [results, "--ytvos_path", data["root"], "--out", results],
                      EXIT_OPTION, f"--out {results} is the results")
    assert results.read_text() == "[]"


# ----------------------------------------------------------------------------- a training run's --output_dir
def train_argv(data: dict, output_dir: Path) -> List:
    return MODEL_OPTIONS + RUN_OPTIONS + ["--dataset_file", "ytvos", "--ytvos_path", data["root"], "--rvos_audio_path",
                                          data["audio_root"], "--output_dir", output_dir, "--epochs", "1"]


def test_06_a_second_run_into_one_output_dir_is_refused(data, tmp_path, capsys):
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    held = OutputDirLock(output_dir)  # the first run, still training
    try:
        assert_user_error(capsys, main.cli, train_argv(data, output_dir), EXIT_OPTION, f"--output_dir {output_dir}",
                          "another training run")
    finally:
        held.release()
    assert not list(output_dir.glob("checkpoint*.pth"))


def test_07_an_unwritable_output_dir_is_found_at_start(data, capsys):
    # an existing folder where not even root can create a file (a read-only mount says the same at start)
    unwritable = Path("/proc/self")
    assert_user_error(capsys, main.cli, train_argv(data, unwritable), EXIT_OPTION, f"--output_dir {unwritable}",
                      "cannot write there")


# ----------------------------------------------------------------------------- resuming checks what changes results
def test_10_resume_results_refuses_other_features_or_audio_options(trained_checkpoint, tmp_path, capsys):
    data = make_ytvos(tmp_path / "ytvos", num_videos=2, num_frames=2)
    broken = Path(data["root"]) / "train" / "JPEGImages" / "vid001" / "00000.jpg"
    good_frame = broken.read_bytes()
    broken.write_bytes(b"\xff\xd8 not a whole JPEG")
    assert_user_error(capsys, inference_rvos.main, rvos_argv(data, trained_checkpoint, tmp_path), EXIT_DATA, "vid001")
    partial = tmp_path / "results.json.partial"
    assert partial.is_file()  # vid000 is kept
    broken.write_bytes(good_frame)
    other_features = tmp_path / "other_features"
    shutil.copytree(data["audio_root"], other_features)
    for changed in (["--rvos_audio_path", other_features], ["--audio_cmvn"]):
        argv = rvos_argv(data, trained_checkpoint, tmp_path, "--resume_results")
        argv[argv.index("--rvos_audio_path"):argv.index("--rvos_audio_path") + 2] = []
        assert_user_error(capsys, inference_rvos.main, argv + ["--rvos_audio_path", data["audio_root"], *changed],
                          EXIT_OPTION, "--resume_results", str(partial), changed[0][2:])
    assert run_main(inference_rvos.main, [str(a) for a in rvos_argv(data, trained_checkpoint, tmp_path,
                                                                    "--resume_results")]) == 0


def test_13_resume_names_the_options_that_differ_and_which_value_wins(data, tmp_path, capsys):
    output_dir = tmp_path / "run"
    succeeds(capsys, main.cli, train_argv(data, output_dir) + ["--lr", "0.001"])
    err = succeeds(capsys, main.cli, train_argv(data, output_dir) + [
        "--lr", "0.05", "--clip_max_norm", "0.5", "--epochs", "2", "--resume", output_dir / "checkpoint.pth"])
    notes = [line for line in err.splitlines() if line.startswith("note: --resume")]
    assert any("--lr 0.05, the checkpoint's 0.001: the checkpoint's wins" in line for line in notes), err
    assert any("--clip_max_norm 0.5, the checkpoint's 0.1: this run's wins" in line for line in notes), err
    assert len(notes) == 2, notes  # nothing else differs (--epochs and --resume are where and how long it runs)


# ----------------------------------------------------------------------------- stopping
class HandlerCalled(Exception):
    """What SIGTERM raises here when inference installs no handler of its own (the default would end pytest)."""


def test_22_sigterm_during_inference_says_how_to_continue(trained_checkpoint, tmp_path, capsys, monkeypatch):
    data = make_ytvos(tmp_path / "ytvos", num_videos=2, num_frames=2)
    infer_job, calls = inference_rvos.infer_job, []

    def terminated_at_the_second_video(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return infer_job(*args, **kwargs)

    def test_handler(signum, frame):
        raise HandlerCalled()

    monkeypatch.setattr(inference_rvos, "infer_job", terminated_at_the_second_video)
    previous = signal.signal(signal.SIGTERM, test_handler)
    try:
        assert_user_error(capsys, inference_rvos.main, rvos_argv(data, trained_checkpoint, tmp_path),
                          128 + signal.SIGTERM, "SIGTERM", str(tmp_path / "results.json.partial"), "--resume_results")
        assert signal.getsignal(signal.SIGTERM) is test_handler  # put back
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_22_inference_says_nothing_of_imagenet_weights_it_replaces(trained_checkpoint, data, tmp_path, capsys, caplog):
    succeeds(capsys, inference_rvos.main, rvos_argv(data, trained_checkpoint, tmp_path))
    assert "ImageNet" not in caplog.text + capsys.readouterr().err


# ----------------------------------------------------------------------------- messages that say what is wrong
def test_21_empty_frames_a_fifo_and_a_folder_are_named_as_such(trained_checkpoint, tmp_path, capsys):
    data = make_ytvos(tmp_path / "ytvos", num_videos=1, num_frames=2)
    folder = tmp_path / "a_folder"
    folder.mkdir()
    assert_user_error(capsys, inference_rvos.main, rvos_argv(data, trained_checkpoint, tmp_path)[:-6] + [
                      "--split_file", folder, "--save_path", tmp_path / "r.json", "--device", "cpu"], EXIT_OPTION,
                      f"--split_file {folder}", "is a folder")
    fifo = tmp_path / "phrase.wav"
    os.mkfifo(fifo)
    video_dir = Path(data["root"]) / "train" / "JPEGImages" / "vid000"
    assert_user_error(capsys, inference_rvos.main, ["--model_path", trained_checkpoint, "--audio", fifo, "--video_dir",
                                                    video_dir, "--save_path", tmp_path / "r.json", "--device", "cpu"],
                      EXIT_OPTION, f"--audio {fifo}", "not a regular file")
    meta = Path(data["root"]) / "meta_expressions" / "train" / "meta_expressions.json"
    videos = json.loads(meta.read_text())["videos"]
    videos["vid000"]["frames"] = []
    meta.write_text(json.dumps({"videos": videos}))
    assert_user_error(capsys, inference_rvos.main, rvos_argv(data, trained_checkpoint, tmp_path), EXIT_DATA, str(meta),
                      "'vid000' lists no frames")


# ----------------------------------------------------------------------------- torch.hub
def test_15_and_21_a_hub_url_is_cached_under_its_own_name_and_offline_is_named(tmp_path, monkeypatch,
                                                                                 trained_checkpoint):
    import hubconf

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    first, other = "https://host/v1/checkpoint.pth", "https://other-host/v2/checkpoint.pth"
    assert hubconf.cached_checkpoint_path(first) != hubconf.cached_checkpoint_path(other)
    # an earlier download of the first URL, where a cache keyed by file name would also look for the other
    for earlier in (hubconf.cached_checkpoint_path(first), tmp_path / "hub" / "checkpoints" / "checkpoint.pth"):
        earlier.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(trained_checkpoint, earlier)
    assert hubconf._checkpoint_file(first) == hubconf.cached_checkpoint_path(first)  # no download: cached

    def offline(url: str, destination: str) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(UserError, match=re.escape(f"checkpoint {other}: cannot download it (")):
        hubconf._checkpoint_file(other)


# ----------------------------------------------------------------------------- distributed runs
def count_dropped_on_rank(rank: int, init_file: str, out_dir: str) -> None:
    """One gloo rank of two: rank 0 met samples a and b, rank 1 b, c and d (b on both); 1 dropped before."""
    import torch.distributed as dist
    from datasets.common import BadSampleLog

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    log = BadSampleLog(dropped_before=1)
    log.names.update(["a", "b"] if rank == 0 else ["b", "c", "d"])
    Path(out_dir, f"rank{rank}.txt").write_text(str(log.count_over_ranks()))
    dist.destroy_process_group()


def test_14_dropped_samples_are_counted_over_ranks(tmp_path):
    torch.multiprocessing.spawn(count_dropped_on_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    assert [Path(tmp_path, f"rank{rank}.txt").read_text() for rank in (0, 1)] == ["5", "5"]  # 1 + a, b, c, d


ROOT = Path(__file__).resolve().parents[1]
RANKS_TIMEOUT = 60  # seconds: two ranks that wait for each other forever fail the test instead of hanging it
SIGNAL_STOPS_WITHIN = 15  # seconds: a step of the tiny model and the ranks' agreement to stop
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ranks(tmp_path: Path, argvs: Sequence[Sequence]) -> Tuple[List[subprocess.Popen], Path]:
    """`main.py` with each of `argvs` as one rank of a gloo run, started with the variables torchrun sets but
    without a launcher that would stop the others when one fails: their stderr goes to one file (returned), as to
    a shared terminal."""
    port, log = free_port(), tmp_path / "stderr.txt"
    base = {k: v for k, v in os.environ.items()
            if k not in LAUNCHER_VARIABLES and not k.startswith(("SLURM_", "TORCHELASTIC_"))}
    processes = []
    with open(log, "w") as stderr:
        for rank, argv in enumerate(argvs):
            env = {**base, "OMP_NUM_THREADS": "1", "RANK": str(rank), "LOCAL_RANK": str(rank),
                   "WORLD_SIZE": str(len(argvs)), "LOCAL_WORLD_SIZE": str(len(argvs)), "MASTER_ADDR": "127.0.0.1",
                   "MASTER_PORT": str(port)}
            processes.append(subprocess.Popen([sys.executable, "main.py", *map(str, argv)], cwd=ROOT, env=env,
                                              stdout=subprocess.DEVNULL, stderr=stderr))
    return processes, log


def wait_ranks(processes: Sequence[subprocess.Popen], log: Path, timeout: float = RANKS_TIMEOUT) -> Tuple[List[int], str]:
    """The exit codes of the ranks and their stderr; fails when a rank is still running after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    try:
        codes = [process.wait(timeout=max(deadline - time.monotonic(), 0)) for process in processes]
    except subprocess.TimeoutExpired:
        codes = None
    finally:
        for process in processes:
            process.kill()
            process.wait()
    err = log.read_text()
    assert codes is not None, f"the ranks were still running after {timeout} s:\n{err[-3000:]}"
    return codes, err


def run_ranks(tmp_path: Path, argvs: Sequence[Sequence]) -> Tuple[List[int], str]:
    return wait_ranks(*start_ranks(tmp_path, argvs))


def test_08_ranks_that_read_different_data_stop_before_training(tmp_path):
    fewer = make_ytvos(tmp_path / "one_video", num_videos=1, num_frames=2)
    more = make_ytvos(tmp_path / "two_videos", num_videos=2, num_frames=2)
    output_dir = tmp_path / "run"
    codes, err = run_ranks(tmp_path, [train_argv(fewer, output_dir), train_argv(more, output_dir)])
    errors = [line for line in err.splitlines() if "error:" in line]
    assert all(code != 0 for code in codes) and len(errors) == 1 and "Traceback" not in err, err
    assert re.fullmatch(r"error: rank 1 sees 8 train samples \(hash \w+\), rank 0 sees 4 \(hash \w+\): every rank "
                        r"must read the same data.*", errors[0]), errors[0]
    assert "rank 1 stopped: the ranks read different data" in err
    assert not list(output_dir.glob("checkpoint*.pth"))


def test_08_sigterm_to_one_rank_stops_every_rank_within_seconds(tmp_path):
    data = make_ytvos(tmp_path / "ytvos", num_videos=1, num_frames=2)
    argv = train_argv(data, tmp_path / "run") + ["--epochs", "1000"]
    processes, log = start_ranks(tmp_path, [argv] * 2)
    deadline = time.monotonic() + RANKS_TIMEOUT
    while "epoch 1:" not in log.read_text() and time.monotonic() < deadline:  # training, past a checkpoint
        time.sleep(0.5)
    processes[1].send_signal(signal.SIGTERM)
    codes, err = wait_ranks(processes, log, timeout=SIGNAL_STOPS_WITHIN)
    assert codes == [128 + signal.SIGTERM] * 2 and "Traceback" not in err, err
    assert re.search(r"stopped by SIGTERM (in|after) epoch \d+", err) and "stopped by a signal to another process" in err
    assert any(line.startswith("SIGTERM: stopping after the current step") for line in err.splitlines()), err


def seed_giving_all_of(samples: Sequence[int], count: int, rank: int) -> int:
    """A `--seed` whose shuffle (the training sampler's, epoch 0) gives every one of `samples` to `rank` of 2."""
    return next(seed for seed in range(1000)
                if set(samples) <= set(DistributedSampler(range(count), num_replicas=2, rank=rank, seed=seed)))


@pytest.mark.parametrize("failing", [1, 0])  # rank 0: outside torchrun the store lives in its process
def test_19_a_failing_rank_stops_the_others_with_one_line(tmp_path, failing):
    data = make_ytvos(tmp_path / "ytvos", num_videos=2, num_frames=2)
    feature = Path(data["audio_root"], "vid001_0.npy")
    broken = np.load(feature)
    broken[0, 0] = np.nan
    np.save(feature, broken)
    argv = train_argv(data, tmp_path / "run")
    dataset = build_dataset("train", main.parse([str(a) for a in argv]))
    meeting_it = [i for i in range(len(dataset)) if dataset.describe(i).startswith("video vid001 ")
                  and dataset.describe(i).endswith("expression 0")]
    seed = seed_giving_all_of(meeting_it, len(dataset), failing)

    codes, err = run_ranks(tmp_path, [argv + ["--seed", seed]] * 2)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert all(code != 0 for code in codes) and len(errors) == 1, err
    assert errors[0].startswith(f"error: rank {failing} failed: ytvos: video vid001 ") and str(feature) in errors[0]
    assert f"rank {1 - failing} stopped: rank {failing} failed" in err.splitlines()
    assert "Traceback" not in err and "Connection closed" not in err, err


def fail_or_wait_on_rank(rank: int, port: int) -> None:
    """Rank 1 of 2 fails; rank 0 waits as in an NCCL collective, which no error of the other rank interrupts."""
    import argparse
    from engine.ranks import StopTogether
    from util.misc import init_distributed_mode

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    init_distributed_mode(argparse.Namespace(device="cpu", dist_url="env://"))

    def work(argv: Sequence[str]) -> None:
        with StopTogether():
            if rank == 1:
                raise UserError("FILE: broken")
            time.sleep(RANKS_TIMEOUT)

    sys.exit(run_main(work, []))


def test_19_a_rank_waiting_where_no_error_reaches_it_is_stopped_within_seconds(capfd):
    context, port = torch.multiprocessing.get_context("spawn"), free_port()
    processes = [context.Process(target=fail_or_wait_on_rank, args=(rank, port)) for rank in range(2)]
    for process in processes:
        process.start()
    processes[1].join(RANKS_TIMEOUT)
    failed_at = time.monotonic()
    processes[0].join(RANKS_TIMEOUT)
    stopped_within = time.monotonic() - failed_at
    for process in processes:
        process.kill()
    err = capfd.readouterr().err
    assert [process.exitcode for process in processes] == [EXIT_DATA, EXIT_DATA], err
    assert stopped_within < RANKS_TIMEOUT / 4, err  # seconds (poll and grace), not the wait
    assert "error: rank 1 failed: FILE: broken" in err.splitlines() and "rank 0 stopped: rank 1 failed" in err, err
