"""The second bad-input matrix (issue 23), its names part: ids from data are never paths, frames come in natural
order, an id is named once, an expression refers to an annotated object.

One test per item of the issue (`test_NN_...`), each failing when its fix is reverted; the data is written in the
real on-disk formats by `data_factory`. User errors are checked as the user meets them: `util.errors.run_main`
around the script's `main` (the exit code it returns is the process's), exactly one `error:` line naming the file
and the id.
"""
import json
import shutil
from pathlib import Path
from typing import Callable, List, Sequence

import numpy as np
import pytest

import inference_a2d
import inference_jhmdb
import inference_rvos
from cli_helpers import assert_user_error
from data_factory import draw_frame, make_a2d, make_jhmdb, make_ytvos, write_audio
from datasets.formats import read_palette_png, write_jpeg
from datasets.ytvos import read_ytvos_videos
from engine.inference import list_frames
from model_helpers import save_untrained_checkpoint
from scripts import evaluate_rvos, speak_expressions
from util.errors import EXIT_DATA, run_main
from util.names import UnsafeNameError, check_name, child_path, natural_key
from util.results import ResultsFormatError, make_entry, read_results

TINY_MODEL = ["--backbone", "resnet18", "--hidden_dim", "48", "--nheads", "4", "--dim_feedforward", "64",
              "--enc_layers", "1", "--dec_layers", "1", "--num_frames", "2", "--num_queries", "2", "--masks",
              "--device", "cpu", "--num_workers", "0", "--data_scale", "0.1", "--pretrained_weights", "none"]
HEIGHT, WIDTH = 24, 32  # data_factory's frame size
NATURAL_FRAMES = 12  # frame_1 ... frame_12: the lexical order puts frame_10 before frame_2


# ----------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_untrained_checkpoint(tmp_path_factory.mktemp("ckpt"), TINY_MODEL)


def meta_path(data: dict) -> Path:
    return Path(data["root"]) / "meta_expressions" / "train" / "meta_expressions.json"


def edit_meta(data: dict, edit: Callable[[dict], None]) -> Path:
    path = meta_path(data)
    meta = json.loads(path.read_text())
    edit(meta["videos"])
    path.write_text(json.dumps({"videos": meta["videos"]}))
    return path


def rvos_argv(data: dict, checkpoint: Path, tmp_path: Path, *extra) -> List[str]:
    return TINY_MODEL + ["--model_path", checkpoint, "--ytvos_path", data["root"], "--rvos_audio_path",
                         data["audio_root"], "--save_path", tmp_path / "results.json", *extra]


def evaluate_argv(data: dict, results: Path, tmp_path: Path, *extra) -> List:
    return [results, "--ytvos_path", data["root"], "--out", tmp_path / "metrics.json", *extra]


def perfect_results(data: dict, path: Path) -> Path:
    """results.json with the ground-truth masks of every expression of the factory's videos, written as JSON."""
    entries = []
    for number, (vid, video) in enumerate(data["videos"].items(), start=1):
        labels = np.stack([read_palette_png(Path(data["root"]) / "train" / "Annotations" / vid / f"{frame}.png")
                           for frame in video["frames"]])
        entries += [make_entry(number, obj_id, vid, str(obj_id - 1), labels == obj_id, video["frames"])
                    for obj_id in (1, 2)]
    path.write_text(json.dumps(entries))
    return path


def files_under(folder: Path) -> List[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


# ----------------------------------------------------------------------------- names from data are never paths
def test_01_a_video_id_that_is_a_path_reads_and_writes_nothing_outside(checkpoint, tmp_path, capsys):
    data = make_ytvos(tmp_path / "data" / "ytvos", num_videos=1, num_frames=2)
    escaped = "../../outside_vid"
    # what the id reaches from the frame folder: a copy of the frames there, as the probe had them
    shutil.copytree(Path(data["root"]) / "train" / "JPEGImages" / "vid000", Path(data["root"]) / "outside_vid")
    path = edit_meta(data, lambda videos: videos.update({escaped: videos.pop("vid000")}))
    before = files_under(tmp_path)
    assert_user_error(capsys, inference_rvos.main, rvos_argv(data, checkpoint, tmp_path, "--png_dir",
                                                             tmp_path / "out" / "png", "--visualize",
                                                             tmp_path / "out" / "vis"), EXIT_DATA,
                      str(path), f"video id {escaped!r}", "path separator")
    assert files_under(tmp_path) == before  # no PNG, overlay, sheet or GIF anywhere
    # every writer builds its paths under its folder: a job whose name escapes writes nothing
    job = inference_rvos.VideoJob("../escaped", 1, list_frames(Path(data["root"]) / "outside_vid"))
    masks = {"0": np.zeros((2, HEIGHT, WIDTH), dtype=bool)}
    with pytest.raises(UnsafeNameError, match="outside"):
        inference_rvos.write_visualisation(tmp_path / "out" / "vis", job, masks)
    assert files_under(tmp_path) == before

    # the A2D and JHMDB lists follow the same rule, naming the line
    a2d = make_a2d(tmp_path / "a2d", splits=(1,))
    info = Path(a2d["root"]) / "a2d_annotation_info.txt"
    info.write_text(info.read_text().replace("a2dvid0,1,", "../a2dvid0,1,", 1))
    assert_user_error(capsys, inference_a2d.main, TINY_MODEL + ["--model_path", checkpoint, "--a2d_path", a2d["root"],
                                                                "--a2d_audio_path", a2d["audio_root"]], EXIT_DATA,
                      f"{info}:2", "video id '../a2dvid0'")
    jhmdb = make_jhmdb(tmp_path / "jhmdb", num_videos=1)
    queries = Path(jhmdb["root"]) / "jhmdb_annotation.txt"
    queries.write_text(queries.read_text().replace("jvid0,", "/tmp/jvid0,", 1))
    argv = TINY_MODEL + ["--model_path", checkpoint, "--jhmdb_path", jhmdb["root"], "--a2d_audio_path",
                         jhmdb["audio_root"]]
    assert_user_error(capsys, inference_jhmdb.main, argv, EXIT_DATA, f"{queries}:2", "'/tmp/jvid0'", "absolute path")



def test_02_an_absolute_expression_id_replaces_no_file(checkpoint, tmp_path, capsys):
    data = make_ytvos(tmp_path / "ytvos", num_videos=1, num_frames=2)
    target = tmp_path / "some" / "dir" / "target"
    target.mkdir(parents=True)
    (target / "00000.png").write_bytes(b"keep me")
    path = edit_meta(data, lambda videos: videos["vid000"]["expressions"].update(
        {str(target): videos["vid000"]["expressions"].pop("0")}))
    png_dir = tmp_path / "png"
    assert_user_error(capsys, inference_rvos.main, rvos_argv(data, checkpoint, tmp_path, "--png_dir", png_dir),
                      EXIT_DATA, str(path), f"expression id {str(target)!r}", "absolute path")
    assert (target / "00000.png").read_bytes() == b"keep me" and files_under(target) == [target / "00000.png"]
    assert not png_dir.exists()
    # the rule is that of util.names, also for control characters and '..'
    for bad in ("", "..", "a\nb", "a\\b"):
        with pytest.raises(UnsafeNameError, match="ids become file names"):
            check_name(bad, "expression id", path)
    with pytest.raises(UnsafeNameError, match="outside"):
        child_path(png_dir, "vid000", str(target), "00000.png")
    # speak_expressions.py, which names its recordings by the ids, skips such a row by the same rule
    queries = tmp_path / "a2d_annotation.txt"
    queries.write_text("video_id,instance_id,query\nv1,1,the man\nv\x012,1,the woman\n")
    expressions, bad = speak_expressions.read_expressions("a2d", queries)
    assert [e.name for e in expressions] == ["v1_1"]
    assert [(row.line, row.reason) for row in bad] == [
        (3, "'v\\x012_1' is not a file name: it holds a control character")]


def test_03_evaluation_reads_no_ground_truth_outside_annotations(tmp_path, capsys):
    data = make_ytvos(tmp_path / "ytvos", num_videos=1, num_frames=2)
    results = perfect_results(data, tmp_path / "results.json")
    annotations = Path(data["root"]) / "train" / "Annotations"
    assert run_main(evaluate_rvos.main, [str(a) for a in evaluate_argv(data, results, tmp_path)]) == 0

    # results.json naming a video outside Annotations/ (its masks put there, as the probe did)
    shutil.copytree(annotations / "vid000", annotations.parent / "outside_vid")
    escaping = tmp_path / "escaping.json"
    escaping.write_text(results.read_text().replace('"vid000"', '"../outside_vid"'))
    assert_user_error(capsys, evaluate_rvos.main, evaluate_argv(data, escaping, tmp_path), EXIT_DATA,
                      str(escaping), "'../outside_vid'", "path separator")
    with pytest.raises(ResultsFormatError, match="'file_name' '../outside_vid'"):
        read_results(escaping)
    # meta_expressions.json and a split file naming it
    split_file = tmp_path / "videos.txt"
    split_file.write_text("../outside_vid\n")
    assert_user_error(capsys, evaluate_rvos.main, evaluate_argv(data, results, tmp_path, "--split_file", split_file),
                      EXIT_DATA, str(split_file), "video id '../outside_vid'")
    path = edit_meta(data, lambda videos: videos.update({"../outside_vid": videos["vid000"]}))
    assert_user_error(capsys, evaluate_rvos.main, evaluate_argv(data, results, tmp_path), EXIT_DATA,
                      str(path), "video id '../outside_vid'")
    # the ground-truth reader itself stays under Annotations/
    with pytest.raises(UnsafeNameError, match="outside"):
        evaluate_rvos.read_video_labels(annotations, "../outside_vid", ["00000"], (HEIGHT, WIDTH))


# ----------------------------------------------------------------------------- frames in natural order
def write_frames(folder: Path, names: Sequence[str]) -> None:
    for index, name in enumerate(names):
        write_jpeg(folder / f"{name}.jpg", draw_frame(index, {}, HEIGHT, WIDTH)[0])


def test_09_frames_come_in_natural_order_and_results_record_them(checkpoint, tmp_path, capsys):
    natural = [f"frame_{number}" for number in range(1, NATURAL_FRAMES + 1)]
    folder = tmp_path / "clip"
    write_frames(folder, natural)
    assert [path.stem for path in list_frames(folder)] == natural  # frame_2 right after frame_1
    assert natural_key("frame_2.jpg") < natural_key("frame_10.jpg") and natural_key("9") < natural_key("a")
    recording = tmp_path / "phrase.npy"
    write_audio(recording, num_audio_frames=12, seed=0)
    results = tmp_path / "results.json"
    argv = TINY_MODEL + ["--model_path", checkpoint, "--audio", recording, "--video_dir", folder,
                         "--save_path", results]
    assert run_main(inference_rvos.main, [str(a) for a in argv]) == 0
    (entry,) = read_results(results)
    assert entry["frames"] == natural and len(entry["segmentations"]) == NATURAL_FRAMES

    # names that natural order cannot tell apart are refused, naming the folder and both names
    ambiguous = tmp_path / "ambiguous"
    write_frames(ambiguous, ["1", "01", "2"])
    assert_user_error(capsys, inference_rvos.main, argv[:argv.index("--video_dir") + 1] + [ambiguous, "--save_path",
                                                                                            tmp_path / "r2.json"],
                      EXIT_DATA, str(ambiguous), "'01.jpg'", "'1.jpg'", "ambiguous")

    # results recording another frame order are refused by the evaluation, which otherwise scores them
    data = make_ytvos(tmp_path / "ytvos", num_videos=1, num_frames=3)
    shuffled = perfect_results(data, tmp_path / "shuffled.json")
    entries = json.loads(shuffled.read_text())
    entries[0]["frames"] = entries[0]["frames"][::-1]
    shuffled.write_text(json.dumps(entries))
    assert_user_error(capsys, evaluate_rvos.main, evaluate_argv(data, shuffled, tmp_path), EXIT_DATA,
                      str(shuffled), "frame 0 is '00010'", "another frame order")
    # results written before frame names were recorded stay readable
    for entry in entries:
        del entry["frames"]
    shuffled.write_text(json.dumps(entries))
    assert run_main(evaluate_rvos.main, [str(a) for a in evaluate_argv(data, shuffled, tmp_path)]) == 0


# ----------------------------------------------------------------------------- an id names one thing
def test_11_a_duplicate_expression_id_is_refused(checkpoint, tmp_path, capsys):
    data = make_ytvos(tmp_path / "ytvos", num_videos=1, num_frames=2)
    path = meta_path(data)
    text = path.read_text()
    # the second expression written under the first one's id: json.load would keep only the last
    path.write_text(text.replace('"1": {"exp": "the green square"', '"0": {"exp": "the green square"'))
    assert text != path.read_text()
    assert_user_error(capsys, inference_rvos.main, rvos_argv(data, checkpoint, tmp_path), EXIT_DATA,
                      str(path), "video 'vid000': expression id '0' appears twice")
    with pytest.raises(ValueError, match="appears twice"):  # training reads the file with the same reader
        read_ytvos_videos(data["root"])
    expressions, bad = speak_expressions.read_expressions("ytvos", path)  # nor is either spoken
    assert [e.name for e in expressions] == [] and [row.reason for row in bad] == [
        "video 'vid000' expression '0' appears twice"]
    # a video id repeated in the file
    video = json.dumps(json.loads(text)["videos"]["vid000"])
    path.write_text(json.dumps({"videos": {}}).replace("{}", f'{{"vid000": {video}, "vid000": {video}}}'))
    assert_user_error(capsys, inference_rvos.main, rvos_argv(data, checkpoint, tmp_path), EXIT_DATA,
                      str(path), "video id 'vid000' appears twice")


def test_16_a_split_file_naming_a_video_twice_is_refused(checkpoint, tmp_path, capsys):
    data = make_ytvos(tmp_path / "ytvos", num_videos=2, num_frames=2, vis_file=True)
    split_file = tmp_path / "videos.txt"
    split_file.write_text("vid000\nvid001\nvid000\n")
    assert_user_error(capsys, inference_rvos.main, rvos_argv(data, checkpoint, tmp_path, "--split_file", split_file),
                      EXIT_DATA, str(split_file), "video id 'vid000' appears twice")
    assert not (tmp_path / "results.json").exists()
    results = perfect_results(data, tmp_path / "perfect.json")
    assert_user_error(capsys, evaluate_rvos.main, evaluate_argv(data, results, tmp_path, "--split_file", split_file),
                      EXIT_DATA, str(split_file), "'vid000' appears twice")
    # the YouTube-VIS style split file: one video listed twice
    vis_file = Path(data["ann_file"])
    instances = json.loads(vis_file.read_text())
    instances["videos"].append({**instances["videos"][0], "id": len(instances["videos"]) + 1})
    vis_file.write_text(json.dumps(instances))
    for main, argv in ((inference_rvos.main, rvos_argv(data, checkpoint, tmp_path, "--split_file", vis_file)),
                       (evaluate_rvos.main, evaluate_argv(data, results, tmp_path, "--split_file", vis_file))):
        assert_user_error(capsys, main, argv, EXIT_DATA, str(vis_file), "video id 'vid000' appears twice")


# ----------------------------------------------------------------------------- an expression's object
def test_12_an_obj_id_no_annotation_holds_is_refused_by_the_evaluation(tmp_path, capsys):
    data = make_ytvos(tmp_path / "ytvos", num_videos=1, num_frames=2)
    results = perfect_results(data, tmp_path / "results.json")
    entries = [entry for entry in json.loads(results.read_text()) if entry["exp_id"] == "0"]
    results.write_text(json.dumps(entries))  # expression "1" is missing: scored as an empty mask
    path = edit_meta(data, lambda videos: videos["vid000"]["expressions"]["1"].update({"obj_id": "7"}))
    assert_user_error(capsys, evaluate_rvos.main, evaluate_argv(data, results, tmp_path), EXIT_DATA,
                      str(path), "video 'vid000' expression '1'", "object 7", "no annotation", "objects [1, 2]")
    assert not (tmp_path / "metrics.json").exists()
