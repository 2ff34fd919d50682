"""Sharded inference (engine/shard.py): `torchrun --nproc_per_node 2 inference_rvos.py` (gloo, one intra-op thread
per process) writes the results.json of one process byte for byte; a rank that fails or is killed fails the run
naming it and leaves no merged file; `--resume_results` continues a stopped sharded run."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest

from data_factory import make_a2d, make_ytvos
from datasets.a2d_format import A2D_TEST_SPLIT
from engine.shard import Shard
from model_helpers import save_untrained_checkpoint
from util.errors import OptionError

REPO = Path(__file__).resolve().parent.parent
TORCHRUN = Path(sys.executable).with_name("torchrun")
NUM_FRAMES = 3
MODEL_ARGV = ["--backbone", "resnet18", "--hidden_dim", "48", "--nheads", "4", "--dim_feedforward", "64",
              "--enc_layers", "1", "--dec_layers", "1", "--num_frames", str(NUM_FRAMES),
              "--num_queries", str(NUM_FRAMES), "--masks", "--device", "cpu", "--seed", "0"]
RUN_TIMEOUT_S = 120
POLL_S = 0.2
RANKS = 2
MARKER_ENV = "WNET_SHARD_TEST"  # finds this test's rank processes among the machine's


def environment(marker: str = "") -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            MARKER_ENV: marker}


def inference_command(argv: List[str], ranks: int) -> List[str]:
    if ranks == 1:
        return [sys.executable, "inference_rvos.py", *argv]
    return [str(TORCHRUN), "--standalone", "--nproc_per_node", str(ranks), "inference_rvos.py", *argv]


def infer(argv: List[str], ranks: int) -> subprocess.CompletedProcess:
    return subprocess.run(inference_command(argv, ranks), cwd=REPO, env=environment(), capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """Four videos (rank 0 takes the first and the third, rank 1 the second and the fourth) and the results of one
    process."""
    folder = tmp_path_factory.mktemp("shard")
    checkpoint = save_untrained_checkpoint(folder, MODEL_ARGV)
    data = make_ytvos(folder / "ytvos", num_videos=4, num_frames=[4, 2, 3, 2])
    argv = MODEL_ARGV + ["--model_path", str(checkpoint), "--ytvos_path", data["root"],
                         "--rvos_audio_path", data["audio_root"]]
    reference = folder / "one_process.json"
    done = infer(argv + ["--save_path", str(reference)], 1)
    assert done.returncode == 0, done.stderr
    return {"argv": argv, "data": data, "reference": reference.read_bytes()}


def rank1_frame(setup: dict, video: str) -> Path:
    """A frame of `video` (rank 1 infers vid001, then vid003)."""
    return Path(setup["data"]["root"]) / "train" / "JPEGImages" / video / "00000.jpg"


def leftovers(results: Path) -> List[str]:
    return sorted(p.name for p in results.parent.iterdir() if p.name.startswith(results.name + "."))


def test_shares() -> None:
    assert [Shard(rank, 3).take(range(7)) for rank in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]
    assert Shard().take([4, 5]) == [4, 5] and Shard().part_path("r.json") == Path("r.json")
    assert Shard(1, 2).part_path("r.json") == Path("r.json.rank1of2")


def test_journals_of_another_process_count_are_refused(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    Path(f"{output}.rank0of2.partial").write_text("{}\n")
    Shard(0, 2).check_layout(output)
    for shard in (Shard(), Shard(1, 3)):
        with pytest.raises(OptionError, match="2 process"):
            shard.check_layout(output)


def test_two_ranks_write_the_results_of_one(setup: dict, tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    done = infer(setup["argv"] + ["--save_path", str(results)], RANKS)
    assert done.returncode == 0, done.stderr
    assert results.read_bytes() == setup["reference"]
    assert leftovers(results) == []  # the parts and the journals are gone


@pytest.mark.slow  # two sharded runs (about 35 s here)
def test_failed_rank_named_no_merge_then_resumed(setup: dict, tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    frame = rank1_frame(setup, "vid003")
    good = frame.read_bytes()
    try:
        frame.write_bytes(b"not a JPEG")
        failed = infer(setup["argv"] + ["--save_path", str(results)], RANKS)
    finally:
        frame.write_bytes(good)
    assert failed.returncode != 0
    assert "rank 1 of 2 failed" in failed.stderr and "vid003" in failed.stderr
    assert not results.exists()
    assert f"{results.name}.rank1of2.partial" in leftovers(results)  # rank 1's finished video (vid001) is kept
    resumed = infer(setup["argv"] + ["--save_path", str(results), "--resume_results"], RANKS)
    assert resumed.returncode == 0, resumed.stderr
    assert results.read_bytes() == setup["reference"]
    assert leftovers(results) == []


def rank_pids(marker: str, rank: int) -> List[int]:
    """The processes of this test's run (`marker` in their environment) with RANK `rank`."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            variables = set((entry / "environ").read_bytes().split(b"\0"))
        except (OSError, ValueError):
            continue
        if f"{MARKER_ENV}={marker}".encode() in variables and f"RANK={rank}".encode() in variables:
            pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the rank's process through /proc")
def test_killed_rank_fails_the_run(setup: dict, tmp_path: Path) -> None:
    """Rank 1 waits on a frame that is a named pipe while rank 0 finishes its share; rank 1 is then killed."""
    results = tmp_path / "results.json"
    frame = rank1_frame(setup, "vid001")
    good = frame.read_bytes()
    frame.unlink()
    os.mkfifo(frame)
    marker = str(tmp_path)
    try:
        process = subprocess.Popen(inference_command(setup["argv"] + ["--save_path", str(results)], RANKS), cwd=REPO,
                                   env=environment(marker), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + RUN_TIMEOUT_S
        while not Path(f"{results}.rank0of2").exists() and process.poll() is None and time.time() < deadline:
            time.sleep(POLL_S)  # rank 0's part is written: it waits for rank 1
        victims = rank_pids(marker, 1)
        assert victims, "rank 1 not found"
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        output, _ = process.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        frame.unlink()
        frame.write_bytes(good)
    assert process.returncode != 0
    assert "rank: 1" in output or "rank 1" in output, output[-2000:]
    assert not results.exists()


@pytest.mark.slow  # a one-process and a two-process A2D evaluation (about 25 s here)
def test_two_ranks_write_the_a2d_metrics_of_one(tmp_path: Path) -> None:
    checkpoint = save_untrained_checkpoint(tmp_path, MODEL_ARGV)
    data = make_a2d(tmp_path / "a2d", num_frames=9, splits=(A2D_TEST_SPLIT,) * 3)
    argv = MODEL_ARGV + ["--model_path", str(checkpoint), "--a2d_path", data["root"],
                         "--a2d_audio_path", data["audio_root"]]
    reports = []
    for ranks in (1, RANKS):
        path = tmp_path / f"metrics_{ranks}.json"
        command = inference_command(argv + ["--metrics_path", str(path)], ranks)
        command[command.index("inference_rvos.py")] = "inference_a2d.py"
        done = subprocess.run(command, cwd=REPO, env=environment(), capture_output=True, text=True,
                              timeout=RUN_TIMEOUT_S)
        assert done.returncode == 0, done.stderr
        report = json.loads(path.read_text())
        report["metrics"].pop("seconds")  # the one figure that differs
        reports.append(report)
        assert leftovers(path) == []
    assert reports[0]["metrics"]["num_samples"] == len(reports[0]["samples"]) > RANKS
    assert reports[0] == reports[1]


FAKE_SRUN = """#!/usr/bin/env bash
# srun for one node: SLURM_NTASKS tasks with their SLURM_PROCID and SLURM_LOCALID; the exit code of the worst
while [[ "$1" == --* ]]; do shift; done
pids=()
for ((task = 0; task < SLURM_NTASKS; task++)); do
    SLURM_PROCID=$task SLURM_LOCALID=$task "$@" & pids+=($!)
done
code=0
for pid in "${pids[@]}"; do wait "$pid" || code=$?; done
exit $code
"""


@pytest.mark.slow  # a two-task run through scripts/slurm_infer.sh (about 15 s here)
def test_slurm_script_runs_the_ranks(setup: dict, tmp_path: Path) -> None:
    """scripts/slurm_infer.sh with stand-ins for `scontrol` (the node list) and `srun` (the tasks of one node)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "scontrol").write_text("#!/usr/bin/env bash\necho localhost\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    results = tmp_path / "results.json"
    env = {**environment(), "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "SLURM_JOB_NODELIST": "localhost", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": str(RANKS),
           "SLURM_CPUS_PER_TASK": "1", "MASTER_PORT": str(free_port())}
    done = subprocess.run(["bash", "scripts/slurm_infer.sh", "inference_rvos.py", *setup["argv"],
                           "--save_path", str(results)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert results.read_bytes() == setup["reference"]
    assert leftovers(results) == []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]
