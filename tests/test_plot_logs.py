"""scripts/plot_logs.py (issue 21): the log.txt of several runs, one with a warm-up stage, -> one PNG of every loss
term and the learning rate, the warm-up epochs placed before the main ones."""
import json
from pathlib import Path

import pytest
from PIL import Image

from scripts import plot_logs

LOSSES = ("loss", "loss_bbox", "loss_giou", "loss_mask", "loss_dice", "loss_kl")


def write_log(path: Path, warmup_epochs: int, epochs: int, lr: float) -> None:
    """A log as main.py writes it: warm-up lines (`"stage": "warmup"`, epochs from 0), then main lines (from 0)."""
    lines = []
    for stage, count in (("warmup", warmup_epochs), ("main", epochs)):
        for epoch in range(count):
            record = {f"train_{name}": 1.0 / (epoch + 1 + (stage == "main")) for name in LOSSES}
            record.update({"train_lr": lr, "train_steps": 4, "epoch": epoch, "epoch_seconds": 1.0})
            lines.append({"stage": "warmup", **record} if stage == "warmup" else record)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_two_runs_one_with_a_warmup_stage_make_one_png(tmp_path):
    write_log(tmp_path / "warm" / "log.txt", warmup_epochs=3, epochs=4, lr=1e-3)
    write_log(tmp_path / "cold" / "log.txt", warmup_epochs=0, epochs=5, lr=1e-4)
    out = tmp_path / "curves" / "training_curves.png"
    assert plot_logs.main([str(tmp_path / "warm"), str(tmp_path / "cold" / "log.txt"), "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 500 and image.height > 500
    # 6 loss panels and the learning rate
    assert plot_logs.panel_keys([plot_logs.run_curves(plot_logs.read_log(tmp_path / "warm" / "log.txt"))[0]]) == [
        "train_loss", "train_loss_bbox", "train_loss_dice", "train_loss_giou", "train_loss_kl", "train_loss_mask",
        "train_lr"]


def test_the_warmup_epochs_come_first():
    records = [{"stage": "warmup", "train_loss": 5.0, "train_lr": 1e-3, "epoch": 0},
               {"stage": "warmup", "train_loss": 4.0, "train_lr": 1e-3, "epoch": 1},
               {"event": "start"},  # not an epoch line
               {"train_loss": 3.0, "train_lr": 1e-4, "epoch": 0},
               {"train_loss": 2.0, "train_lr": 1e-4, "epoch": 1}]
    curves, warmup_epochs = plot_logs.run_curves(records)
    assert warmup_epochs == 2
    assert curves["train_loss"] == {"warmup": ([1, 2], [5.0, 4.0]), "main": ([3, 4], [3.0, 2.0])}
    assert curves["train_lr"]["main"] == ([3, 4], [1e-4, 1e-4])


def test_a_broken_log_is_named(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text('{"epoch": 0, "train_loss": 1.0}\nnot json\n')
    with pytest.raises(ValueError, match=r"log.txt: line 2 is not JSON"):
        plot_logs.main([str(log), "--out", str(tmp_path / "x.png")])
    assert not (tmp_path / "x.png").exists()
