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

import main as train
from data_factory import make_ytvos
from engine import NonFiniteLossError
from util.config import get_args_parser, parse_args
from util.errors import OptionError

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = ["--backbone", "resnet18", "--hidden_dim", "48", "--nheads", "4", "--dim_feedforward", "64",
              "--enc_layers", "1", "--dec_layers", "2", "--num_frames", "2", "--num_queries", "2", "--masks"]


def train_argv(data: dict, output_dir: Path, *extra: str) -> list:
    return TINY_MODEL + ["--dataset_file", "ytvos", "--ytvos_path", data["root"], "--rvos_audio_path",
                         data["audio_root"], "--device", "cpu", "--num_workers", "0", "--data_scale", "0.1",
                         "--output_dir", str(output_dir), "--epochs", "1", *extra]


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


def test_ranks_in_sync_compares_states():
    from util.misc import state_digest

    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert state_digest(a) == state_digest(b)
    with torch.no_grad():
        b.bias[0] = torch.nextafter(b.bias[0], torch.tensor(1.0))  # one ulp
    assert state_digest(a) != state_digest(b)


KILLER = """
import sys, time, torch
sys.path.insert(0, {root!r})
import main as train
from engine import NonFiniteLossError
from util.config import get_args_parser, parse_args
from util.errors import OptionError
real_save = torch.save
calls = []
def save_then_hang(obj, f, *args, **kwargs):
    calls.append(f)
    if len(calls) == 3:  # epoch 1's first checkpoint file: write half of it, then wait to be killed
        real_save(obj, f, *args, **kwargs)
        size = len(open(f, 'rb').read())
        with open(f, 'r+b') as fh:
            fh.truncate(size // 2)
        open({marker!r}, 'w').close()
        time.sleep(600)
    return real_save(obj, f, *args, **kwargs)
torch.save = save_then_hang
train.main(parse_args(get_args_parser(), {argv!r}))
"""


def test_killed_while_writing_a_checkpoint(tmp_path: Path, tiny_ytvos: dict):
    output_dir, marker = tmp_path / "out", tmp_path / "writing"
    argv = train_argv(tiny_ytvos, output_dir, "--epochs", "2")
    process = subprocess.Popen([sys.executable, "-c", KILLER.format(root=str(ROOT), marker=str(marker), argv=argv)],
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

    with pytest.raises(OptionError, match="--pretrained_weights .*absent.pth: the file does not exist"):
        run_main(train_argv(tiny_ytvos, tmp_path / "out2", "--pretrained_weights", str(tmp_path / "absent.pth")))


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path: Path, tiny_ytvos: dict, monkeypatch):
    from models.criterion import SetCriterion

    output_dir = tmp_path / "out"
    run_main(train_argv(tiny_ytvos, output_dir))
    before = (output_dir / "checkpoint.pth").read_bytes()

    real_forward = SetCriterion.forward

    def nan_forward(self, outputs, targets):
        losses = real_forward(self, outputs, targets)
        losses["loss_bbox"] = losses["loss_bbox"] * float("nan")
        return losses

    monkeypatch.setattr(SetCriterion, "forward", nan_forward)
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
