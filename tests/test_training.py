"""Training: distributed (torchrun, gloo, 2 processes), exact resume, safe checkpoints, DETR init."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

import main as train
from data_factory import make_ytvos
from engine.checkpoint import WARMUP_CHECKPOINT
from engine.train import NonFiniteLossError, build_lr_scheduler, build_optimizer
from main import get_args_parser
from util.config import parse_args
from util.errors import OptionError
from util.misc import set_cpu_threads

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = ["--backbone", "resnet18", "--hidden_dim", "48", "--nheads", "4", "--dim_feedforward", "64",
              "--enc_layers", "1", "--dec_layers", "2", "--num_frames", "2", "--num_queries", "2", "--masks"]


def train_argv(data: dict, output_dir: Path, *extra: str) -> list:
    return TINY_MODEL + ["--dataset_file", "ytvos", "--ytvos_path", data["root"], "--rvos_audio_path",
                         data["audio_root"], "--device", "cpu", "--num_workers", "0", "--data_scale", "0.1",
                         "--output_dir", str(output_dir), "--epochs", "1", "--pretrained_weights", "none", *extra]


def run_main(argv: list) -> torch.nn.Module:
    return train.main(parse_args(get_args_parser(), argv))


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def tiny_ytvos(tmp_path_factory) -> dict:
    return make_ytvos(tmp_path_factory.mktemp("ytvos"), num_videos=1, num_frames=2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_epochs_equal_one_epoch_plus_resume(tmp_path: Path, tiny_ytvos: dict):
    straight = tmp_path / "straight"
    run_main(train_argv(tiny_ytvos, straight, "--epochs", "2"))
    resumed = tmp_path / "resumed"
    run_main(train_argv(tiny_ytvos, resumed, "--epochs", "1"))
    first = load(resumed / "checkpoint.pth")
    assert first["epoch"] == 0 and isinstance(first["args"], dict)
    run_main(train_argv(tiny_ytvos, resumed, "--epochs", "2", "--resume", str(resumed / "checkpoint.pth")))

    a, b = load(straight / "checkpoint.pth"), load(resumed / "checkpoint.pth")
    assert a["epoch"] == b["epoch"] == 1
    assert_same_state(a["model"], b["model"])
    assert not torch.equal(first["model"]["wnet.bbox_embed.layers.0.weight"], b["model"]["wnet.bbox_embed.layers.0.weight"])
    assert a["lr_scheduler"] == b["lr_scheduler"]
    logs = [json.loads(line) for line in (resumed / "log.txt").read_text().splitlines()]
    assert [record["epoch"] for record in logs] == [0, 1]
    assert {"train_loss", "train_loss_kl", "train_loss_mask", "train_loss_bbox_0", "epoch"} <= logs[0].keys()
    assert sorted(p.name for p in resumed.iterdir()) == ["checkpoint.pth", "checkpoint0000.pth", "checkpoint0001.pth",
                                                          "log.txt"]


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path: Path, tiny_ytvos: dict):
    output_dir = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
               "main.py", *train_argv(tiny_ytvos, output_dir, "--epochs", "2")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    # exactly one set of checkpoint files, written by rank 0
    assert sorted(p.name for p in output_dir.iterdir()) == ["checkpoint.pth", "checkpoint0000.pth",
                                                             "checkpoint0001.pth", "log.txt"]
    start = next(json.loads(line) for line in result.stdout.splitlines() if '"event": "start"' in line)
    assert start["world_size"] == 2 and start["train_samples"] == 4
    logs = [json.loads(line) for line in (output_dir / "log.txt").read_text().splitlines()]
    assert [record["epoch"] for record in logs] == [0, 1]
    # both ranks hold bitwise the same parameters after every epoch (SHA-1 of the states compared across ranks)
    assert all(record["ranks_in_sync"] is True for record in logs)
    assert load(output_dir / "checkpoint.pth")["epoch"] == 1


LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def slurm_env(rank: int, ntasks: int, port: int) -> dict:
    """This environment without any launcher variable, plus what `srun` and scripts/slurm_train.sh set."""
    env = {k: v for k, v in os.environ.items()
           if k not in LAUNCHER_VARIABLES and not k.startswith(("SLURM_", "TORCHELASTIC_"))}
    env.update(OMP_NUM_THREADS="1", SLURM_PROCID=str(rank), SLURM_NTASKS=str(ntasks), SLURM_LOCALID=str(rank),
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    return env


@pytest.mark.slow
def test_slurm_two_processes(tmp_path: Path, tiny_ytvos: dict):
    """Two CPU processes started with SLURM's variables only (no RANK/WORLD_SIZE) train in sync."""
    output_dir, port = tmp_path / "out", free_port()
    command = [sys.executable, "main.py", *train_argv(tiny_ytvos, output_dir, "--epochs", "2")]
    logs, processes = [], []
    for rank in range(2):
        out, err = open(tmp_path / f"stdout{rank}", "w"), open(tmp_path / f"stderr{rank}", "w")
        logs.append((out, err))
        processes.append(subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=err, env=slurm_env(rank, 2, port)))
    for process in processes:
        process.wait(timeout=600)
    for out, err in logs:
        out.close()
        err.close()
    for rank, process in enumerate(processes):
        assert process.returncode == 0, (tmp_path / f"stderr{rank}").read_text()[-4000:]
    start = next(json.loads(line) for line in (tmp_path / "stdout0").read_text().splitlines()
                 if '"event": "start"' in line)
    assert start["world_size"] == 2 and start["train_samples"] == 4
    # Rank 1 prints no JSON lines: two processes' lines would interleave in a shared log.
    assert '"event"' not in (tmp_path / "stdout1").read_text()
    assert sorted(p.name for p in output_dir.iterdir()) == ["checkpoint.pth", "checkpoint0000.pth",
                                                             "checkpoint0001.pth", "log.txt"]
    records = [json.loads(line) for line in (output_dir / "log.txt").read_text().splitlines()]
    assert [record["epoch"] for record in records] == [0, 1]
    assert all(record["ranks_in_sync"] is True for record in records)


def test_launcher_variables_are_read_from_torchrun_or_slurm(monkeypatch):
    from util.misc import distributed_environment, init_distributed_mode

    assert distributed_environment({}) is None
    assert distributed_environment({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (1, 4, 1, "env")
    assert distributed_environment({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}) == (5, 8, 1, "slurm")
    assert distributed_environment({"SLURM_PROCID": "5", "SLURM_NTASKS": "8"}) == (5, 8, None, "slurm")
    # torchrun inside a SLURM allocation: torchrun's variables win
    assert distributed_environment({"RANK": "0", "WORLD_SIZE": "2", "SLURM_PROCID": "3", "SLURM_NTASKS": "4"})[:2] == (0, 2)

    env = slurm_env(1, 2, free_port())
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        env.pop(name)
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        if name.startswith("SLURM_"):
            monkeypatch.setenv(name, value)
    args = parse_args(get_args_parser(), ["--device", "cpu"])
    with pytest.raises(SystemExit, match=r"slurm, rank 1 of 2.*MASTER_ADDR and MASTER_PORT.*--dist_url"):
        init_distributed_mode(args)
    monkeypatch.setenv("SLURM_NTASKS", "1")  # one task: one process, nothing to set up
    settings = init_distributed_mode(args)
    assert (settings["distributed"], settings["rank"], settings["world_size"]) == (False, 0, 1)


def test_slurm_script_is_valid_and_sets_the_rendezvous():
    script = ROOT / "scripts" / "slurm_train.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert "export MASTER_ADDR" in text and "export MASTER_PORT" in text and 'srun' in text and 'main.py "$@"' in text


def test_optimizer_groups_learning_rates_and_schedule_are_the_official_recipe():
    """docs/protocol.md §4: AdamW, lr 1e-4 (backbone 1e-5), weight decay 1e-4, StepLR x0.1 after 12 epochs."""
    from models import build_model

    args = parse_args(get_args_parser(), TINY_MODEL)
    model, _, _ = build_model(args)
    optimizer = build_optimizer(model, args)
    assert type(optimizer) is torch.optim.AdamW
    assert [group["lr"] for group in optimizer.param_groups] == [1e-4, 1e-5]
    assert [group["weight_decay"] for group in optimizer.param_groups] == [1e-4, 1e-4]
    names = {id(p): n for n, p in model.named_parameters()}
    rest, backbone = ([names[id(p)] for p in group["params"]] for group in optimizer.param_groups)
    assert rest and backbone and all("backbone" not in n for n in rest) and all("backbone" in n for n in backbone)
    assert sorted(rest + backbone) == sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert any(".body.layer2." in n for n in backbone) and any(".body.layer4." in n for n in backbone)
    # the stem and layer1 never train (docs/protocol.md §2)
    assert not any(".body.layer1." in n or ".body.conv1." in n for n in backbone)

    scheduler = build_lr_scheduler(optimizer, args)
    lrs = []
    for _ in range(18):  # the official 18 epochs
        lrs.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert lrs[:12] == [[1e-4, 1e-5]] * 12
    assert all(lr == pytest.approx([1e-5, 1e-6]) for lr in lrs[12:])


def test_gradients_are_clipped_to_the_official_norm(tmp_path: Path, tiny_ytvos: dict, monkeypatch):
    real_clip = torch.nn.utils.clip_grad_norm_
    calls = []

    def spy(parameters, max_norm, *args, **kwargs):
        parameters = [p for p in parameters if p.grad is not None]
        total = real_clip(parameters, max_norm, *args, **kwargs)
        after = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in parameters]))
        calls.append((max_norm, float(total), float(after)))
        return total

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    run_main(train_argv(tiny_ytvos, tmp_path / "out"))  # the default --clip_max_norm
    assert len(calls) == 4  # one per step: 4 samples, batch 1
    assert all(max_norm == 0.1 for max_norm, _, _ in calls)
    assert all(after <= 0.1 * (1 + 1e-4) for _, _, after in calls)
    assert any(total > 0.1 for _, total, _ in calls), "the test data's gradients are large enough to be clipped"


def test_ranks_in_sync_compares_states():
    from util.misc import state_digest

    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert state_digest(a) == state_digest(b)
    with torch.no_grad():
        b.bias[0] = torch.nextafter(b.bias[0], torch.tensor(1.0))  # one ulp
    assert state_digest(a) != state_digest(b)


KILLER = """
import time, torch
import main as train
from engine.train import NonFiniteLossError
from main import get_args_parser
from util.config import parse_args
from util.errors import OptionError
real_save = torch.save
calls = []
def save_then_hang(obj, f, *args, **kwargs):
    calls.append(f)
    if len(calls) == 3:  # epoch 1's first checkpoint file: write half of it, then wait to be killed
        real_save(obj, f, *args, **kwargs)  # f: the open temporary file (atomic_torch_save)
        f.flush()
        f.truncate(f.tell() // 2)
        f.flush()
        open({marker!r}, 'w').close()
        time.sleep(600)
    return real_save(obj, f, *args, **kwargs)
torch.save = save_then_hang
train.main(parse_args(get_args_parser(), {argv!r}))
"""


def test_killed_while_writing_a_checkpoint(tmp_path: Path, tiny_ytvos: dict):
    output_dir, marker = tmp_path / "out", tmp_path / "writing"
    argv = train_argv(tiny_ytvos, output_dir, "--epochs", "2")
    process = subprocess.Popen([sys.executable, "-c", KILLER.format(marker=str(marker), argv=argv)],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert marker.exists(), process.stderr.read().decode()[-3000:] if process.poll() is not None else "timed out"
    process.send_signal(signal.SIGKILL)
    process.wait()
    checkpoint = load(output_dir / "checkpoint.pth")  # loads: the half-written file is a temporary one
    assert checkpoint["epoch"] == 0
    assert not (output_dir / "checkpoint0001.pth").exists()
    # and training resumes from it
    run_main(train_argv(tiny_ytvos, output_dir, "--epochs", "2", "--resume", str(output_dir / "checkpoint.pth")))
    assert load(output_dir / "checkpoint.pth")["epoch"] == 1


def test_detr_style_pretrained_weights(tmp_path: Path, tiny_ytvos: dict, capsys):
    from models import build_model

    model, _, _ = build_model(parse_args(get_args_parser(), TINY_MODEL))
    detr = {"detr." + key[len("wnet."):]: value for key, value in model.state_dict().items() if key.startswith("wnet.")}
    marked = torch.randn_like(detr["detr.input_proj.weight"])
    detr["detr.input_proj.weight"] = marked
    detr["detr.class_embed.weight"] = torch.zeros(92, 48)
    detr["detr.query_embed.weight"] = torch.zeros(100, 48)
    detr["detr.transformer.decoder.layers.0.self_attn.in_proj_weight"] = torch.zeros(144, 48)
    path = tmp_path / "detr.pth"
    torch.save({"model": detr}, path)

    trained = run_main(train_argv(tiny_ytvos, tmp_path / "out", "--pretrained_weights", str(path), "--lr", "0",
                                  "--lr_backbone", "0"))
    report = next(json.loads(line) for line in capsys.readouterr().out.splitlines() if "pretrained_weights" in line)
    assert "wnet.query_embed.weight" in report["missing"]
    assert any(key.startswith("insmask_head") or key.startswith("mask_head") for key in report["missing"])
    assert report["unexpected"] == ["wnet.transformer.decoder.layers.0.self_attn.in_proj_weight"]
    assert torch.equal(trained.state_dict()["wnet.input_proj.weight"], marked)  # lr 0: the file's values

    with pytest.raises(OptionError, match="--pretrained_weights: .*absent.pth does not exist"):
        run_main(train_argv(tiny_ytvos, tmp_path / "out2", "--pretrained_weights", str(tmp_path / "absent.pth")))


def test_official_pretrained_weights_by_default_and_from_scratch_is_logged(tmp_path: Path, tiny_ytvos: dict,
                                                                           monkeypatch, capsys):
    argv = [a for a in train_argv(tiny_ytvos, tmp_path / "out") if a not in ("--pretrained_weights", "none")]
    monkeypatch.chdir(tmp_path)  # no coco_pretrained_weights/ here
    with pytest.raises(OptionError) as stop:
        run_main(argv)
    message = str(stop.value)
    assert "coco_pretrained_weights/384_coco_r50.pth does not exist" in message
    assert "384_coco_r50.pth" in message and "drive.google.com" in message  # where to get them
    assert "scripts/convert_detr_weights.py" in message and "--pretrained_weights none" in message
    assert not (tmp_path / "out").exists(), "stopped before any work"

    run_main(argv + ["--pretrained_weights", "none"])
    report = next(json.loads(line) for line in capsys.readouterr().out.splitlines() if "pretrained_weights" in line)
    assert report["from_scratch"] is True and report["path"] is None


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path: Path, tiny_ytvos: dict, monkeypatch):
    from models.criterion import WnetCriterion

    output_dir = tmp_path / "out"
    run_main(train_argv(tiny_ytvos, output_dir))
    before = (output_dir / "checkpoint.pth").read_bytes()

    real_forward = WnetCriterion.forward

    def nan_forward(self, outputs, targets):
        losses = real_forward(self, outputs, targets)
        losses["loss_bbox"] = losses["loss_bbox"] * float("nan")
        return losses

    monkeypatch.setattr(WnetCriterion, "forward", nan_forward)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1: loss is nan on the batch of samples \(video=vid000"):
        run_main(train_argv(tiny_ytvos, output_dir, "--epochs", "2", "--resume", str(output_dir / "checkpoint.pth")))
    assert (output_dir / "checkpoint.pth").read_bytes() == before
    assert not (output_dir / "checkpoint0001.pth").exists()


def test_eval_runs_the_validation_loss_loop(tmp_path: Path, tiny_ytvos: dict):
    output_dir = tmp_path / "out"
    run_main(train_argv(tiny_ytvos, output_dir))
    trained = load(output_dir / "checkpoint.pth")
    run_main(train_argv(tiny_ytvos, output_dir, "--eval", "--resume", str(output_dir / "checkpoint.pth")))
    record = json.loads((output_dir / "log.txt").read_text().splitlines()[-1])
    assert record["epoch"] == 0 and record["val_loss"] > 0 and "val_loss_mask" in record
    assert_same_state(load(output_dir / "checkpoint.pth")["model"], trained["model"])  # evaluation writes no weights


def test_subset_keeps_the_first_videos(tmp_path: Path):
    from datasets import build_dataset

    data = make_ytvos(tmp_path / "ytvos", num_videos=3, num_frames=2)
    full = build_dataset("train", parse_args(get_args_parser(), train_argv(data, tmp_path / "out")))
    subset = build_dataset("train", parse_args(get_args_parser(), train_argv(data, tmp_path / "out", "--subset", "2")))
    videos = [full.sample_video(i) for i in range(len(full))]
    assert sorted(set(videos)) == ["vid000", "vid001", "vid002"]
    assert [subset.sample_video(i) for i in range(len(subset))] == [v for v in videos if v in ("vid000", "vid001")]
    assert [subset.describe(i) for i in range(len(subset))] == [full.describe(i) for i in range(len(subset))]


def test_warmup_stage_trains_on_the_subset_first(tmp_path: Path, capsys):
    data = make_ytvos(tmp_path / "ytvos", num_videos=2, num_frames=2)
    out = tmp_path / "out"
    model = run_main(train_argv(data, out, "--warmup_epochs", "2", "--warmup_subset", "1"))
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    warmup_start = next(e for e in events if e.get("event") == "warmup_start")
    start = next(e for e in events if e.get("event") == "start")
    assert warmup_start["train_samples"] == start["train_samples"] // 2  # one of the two (equal) videos
    logs = [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]
    assert [(r.get("stage", "train"), r["epoch"]) for r in logs] == [("warmup", 0), ("warmup", 1), ("train", 0)]
    assert all(r["epoch_seconds"] > 0 for r in logs)
    warm = load(out / WARMUP_CHECKPOINT)["model"]
    final = model.state_dict()
    key = "wnet.bbox_embed.layers.0.weight"
    assert not torch.equal(warm[key], final[key])  # the main epoch trained on from the warm weights

    # a resumed run does not warm up again
    capsys.readouterr()
    run_main(train_argv(data, out, "--warmup_epochs", "2", "--warmup_subset", "1", "--epochs", "2",
                        "--resume", str(out / "checkpoint.pth")))
    assert "warmup_start" not in capsys.readouterr().out


def test_one_launched_process_sets_up_the_process_group(monkeypatch):
    """Under torchrun even one process gets a process group (gloo on the CPU, NCCL on CUDA), so that
    `torchrun --nproc_per_node=1` runs the distributed path; without the launcher's variables, none."""
    import argparse

    from util import misc

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    args = argparse.Namespace(device="cpu", dist_url="env://")
    assert misc.init_distributed_mode(args)["distributed"] is False and misc.get_backend() is None

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    try:
        settings = misc.init_distributed_mode(args)
        assert settings["distributed"] is True and (settings["rank"], settings["world_size"]) == (0, 1)
        assert misc.get_backend() == "gloo" and misc.get_world_size() == 1
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def test_curriculum_stages_widen_the_warm_up_and_can_share_the_optimizer(tmp_path: Path, capsys):
    data = make_ytvos(tmp_path / "ytvos", num_videos=2, num_frames=2)
    out = tmp_path / "out"
    run_main(train_argv(data, out, "--warmup_epochs", "1", "--warmup_subset", "1", "--curriculum_stages", "2:2",
                        "--warmup_shares_optimizer", "--group_expressions"))
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    stages = [e for e in events if e.get("event") == "warmup_start"]
    start = next(e for e in events if e.get("event") == "start")
    assert [(e["videos"], e["epochs"]) for e in stages] == [(1, 1), (2, 2)]
    assert stages[1]["train_samples"] == start["train_samples"] == 2 * stages[0]["train_samples"]
    logs = [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]
    assert [(r.get("stage", "train"), r["epoch"], r.get("videos")) for r in logs] == [
        ("warmup", 0, 1), ("warmup", 1, 2), ("warmup", 2, 2), ("train", 0, None)]
    # the main optimizer took the warm-up's steps: its Adam step count is theirs plus the main epoch's
    optimizer = load(out / "checkpoint.pth")["optimizer"]
    steps = {int(state["step"]) for state in optimizer["state"].values()}
    assert steps == {sum(r["train_steps"] for r in logs)}
    with pytest.raises(SystemExit):
        parse_args(get_args_parser(), ["--curriculum_stages", "16"])


def test_set_cpu_threads_limits_torch_and_the_blas_pools():
    before_torch, before_pools = torch.get_num_threads(), threadpool_info()
    try:
        set_cpu_threads(1)
        assert torch.get_num_threads() == 1
        assert before_pools and all(pool["num_threads"] == 1 for pool in threadpool_info())
    finally:
        torch.set_num_threads(before_torch)
        for pool in before_pools:
            threadpool_limits(pool["num_threads"], user_api=pool["user_api"])
