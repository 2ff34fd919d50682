"""Weights for sharing (issue 21): `scripts/export_weights.py CKPT OUT.safetensors` writes the tensors alone (no
pickle) with the model's args as metadata; `--model_path`, `--pretrained_weights` and torch.hub read it with the
same results as the checkpoint; a changed or cut file is refused in one line."""
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import inference_rvos
from data_factory import make_ytvos
from models import build_inference_model
from scripts import export_weights
from util.results import decode_masks, read_results
from util.weights import DROPPED_DETR_KEYS, load_pretrained_weights

ROOT = Path(__file__).resolve().parents[1]
NUM_FRAMES = 3
MODEL_ARGV = ["--backbone", "resnet18", "--hidden_dim", "96", "--nheads", "8", "--dim_feedforward", "128",
              "--enc_layers", "1", "--dec_layers", "1", "--num_frames", str(NUM_FRAMES),
              "--num_queries", str(NUM_FRAMES), "--masks", "--device", "cpu", "--seed", "0"]
AUDIO_RATE = 16000
HEADER_LENGTH = struct.Struct("<Q")  # the safetensors format: header length, JSON header, raw tensor bytes
SUBPROCESS_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """A random-weights checkpoint as main.py writes it (model, args, training videos) and its export."""
    folder = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    args = inference_rvos.parse(MODEL_ARGV)
    model, _ = build_inference_model(args)
    checkpoint = folder / "checkpoint.pth"
    torch.save({"model": model.state_dict(), "args": {**vars(args), "audio_sample_rate": AUDIO_RATE},
                "train_videos": {"ytvos": ["train000"]}, "epoch": 3}, checkpoint)
    out = folder / "wnet.safetensors"
    assert export_weights.main([str(checkpoint), str(out)]) == 0
    return {"checkpoint": checkpoint, "out": out, "state_dict": model.state_dict()}


def test_the_export_is_tensors_and_json_only(exported):
    data = exported["out"].read_bytes()
    (length,) = HEADER_LENGTH.unpack_from(data)
    header = json.loads(data[HEADER_LENGTH.size:HEADER_LENGTH.size + length])
    metadata = header.pop("__metadata__")
    body = data[HEADER_LENGTH.size + length:]
    # every byte after the header belongs to a tensor: nothing else (no pickle) is in the file
    spans = sorted(tuple(entry["data_offsets"]) for entry in header.values())
    assert spans[0][0] == 0 and spans[-1][1] == len(body)
    assert all(end == start for (_, end), (start, _) in zip(spans, spans[1:]))
    assert set(header) == set(exported["state_dict"])
    args = json.loads(metadata["wnet_args"])
    assert args["backbone"] == "resnet18" and args["hidden_dim"] == 96 and args["audio_sample_rate"] == AUDIO_RATE
    assert json.loads(metadata["wnet_train_videos"]) == {"ytvos": ["train000"]}


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> list:
    """The options of one folder of frames and one recording."""
    folder = tmp_path_factory.mktemp("clip")
    data = make_ytvos(folder / "ytvos", num_videos=1, num_frames=4)
    recording = folder / "phrase.wav"
    soundfile.write(recording, (np.random.default_rng(0).standard_normal(AUDIO_RATE) * 3000).astype(np.int16),
                    AUDIO_RATE)
    return ["--audio", str(recording), "--video_dir", str(Path(data["root"]) / "train" / "JPEGImages" / "vid000")]


def test_model_path_and_pretrained_weights_read_the_export(tmp_path, exported, clip):
    masks = {}
    for name in ("checkpoint", "out"):
        results = tmp_path / f"{name}.json"
        inference_rvos.main(MODEL_ARGV + clip + ["--model_path", str(exported[name]), "--save_path", str(results)])
        (entry,) = read_results(results)
        masks[name] = decode_masks(entry["segmentations"])
    assert masks["checkpoint"].shape == (4, 24, 32)
    np.testing.assert_array_equal(masks["out"], masks["checkpoint"])

    torch.manual_seed(1)  # other random weights, replaced by the export's
    model, _ = build_inference_model(inference_rvos.parse(MODEL_ARGV))
    load_pretrained_weights(model, exported["out"])
    loaded = model.state_dict()
    # as from DETR weights: every tensor but the query embedding (another number of queries, DROPPED_DETR_KEYS)
    unequal = [key for key, value in exported["state_dict"].items() if not torch.equal(loaded[key], value)]
    assert unequal == list(DROPPED_DETR_KEYS)


def run_inference_cli(model_path: Path, tmp_path: Path, clip: list) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "inference_rvos.py"), *MODEL_ARGV, *clip, "--model_path",
                           str(model_path), "--save_path", str(tmp_path / "r.json")], cwd=ROOT, capture_output=True,
                          text=True, timeout=SUBPROCESS_TIMEOUT_S)


@pytest.mark.parametrize("damage", ["changed", "cut", "header"])
def test_a_changed_or_cut_export_is_refused_in_one_line(tmp_path, exported, clip, damage):
    data = bytearray(exported["out"].read_bytes())
    if damage == "changed":
        data[-1] ^= 0xFF  # one bit pattern of one weight
    elif damage == "cut":
        data = data[:len(data) // 2]
    else:
        data[HEADER_LENGTH.size] = ord("[")  # the header is no JSON object
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(bytes(data))
    done = run_inference_cli(broken, tmp_path, clip)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode != 0 and len(errors) == 1 and "Traceback" not in done.stderr
    assert str(broken) in errors[0]
    assert ("SHA-256" in errors[0]) if damage != "header" else ("header" in errors[0])


def test_torch_hub_loads_an_exported_official_model(tmp_path):
    from test_hubconf import save_random_checkpoint
    checkpoint, out = tmp_path / "wnet_r50.pth", tmp_path / "wnet_r50.safetensors"
    saved = save_random_checkpoint(checkpoint)
    assert export_weights.main([str(checkpoint), str(out)]) == 0
    model, postprocessors = torch.hub.load(str(ROOT), "wnet_r50", source="local", checkpoint=str(out))
    loaded = model.state_dict()
    assert list(loaded) == list(saved) and all(torch.equal(loaded[key], saved[key]) for key in saved)
    assert not model.training and set(postprocessors) == {"bbox", "segm"}
