"""scripts/evaluate_rvos.py on a tiny Ref-YouTube-VOS written in the real on-disk layout."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_factory import make_ytvos
from datasets.formats import write_palette_png
from datasets.ytvos_format import write_meta_expressions, write_vis_instances
from davis_reference import reference_boundary_f, reference_jaccard
from scripts.evaluate_rvos import evaluate_rvos, main
from util.results import ResultsFormatError, make_entry, write_results

REPO_ROOT = Path(__file__).resolve().parents[1]
SPLIT = "train"


def rect(height, width, y0, y1, x0, x1):
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def tiny_ytvos(root: Path) -> dict:
    """Two videos; `vid_a` has objects 1 and 2 (2 absent in two frames) and two expressions that
    share object 1; `vid_b` is another size. Returns `{vid: {"labels": [n, H, W], "expressions":
    {exp_id: obj_id}, "video_id": int}}`, the ground truth the test scores against."""
    labels_a = np.zeros((4, 24, 32), dtype=np.uint8)
    for frame in range(4):
        labels_a[frame][rect(24, 32, 2 + frame, 12 + frame, 3, 15)] = 1
    labels_a[0][rect(24, 32, 14, 22, 18, 30)] = 2
    labels_a[3][rect(24, 32, 15, 20, 20, 28)] = 2
    labels_b = np.zeros((3, 30, 20), dtype=np.uint8)
    for frame in range(3):
        y, x = np.mgrid[:30, :20]
        labels_b[frame][(y - 15) ** 2 / 64 + (x - 8 - frame) ** 2 / 25 <= 1] = 1
    videos = {"vid_a": {"labels": labels_a, "expressions": {"0": 1, "1": 2, "2": 1}, "video_id": 1},
              "vid_b": {"labels": labels_b, "expressions": {"0": 1}, "video_id": 2}}
    meta = {}
    for vid, video in videos.items():
        frames = [f"{5 * i:05d}" for i in range(len(video["labels"]))]  # the release annotates every 5th frame
        for frame, labels in zip(frames, video["labels"]):
            write_palette_png(root / SPLIT / "Annotations" / vid / f"{frame}.png", labels)
        meta[vid] = {"frames": frames,
                     "expressions": {exp_id: {"exp": f"expression {exp_id}", "obj_id": str(obj_id)}
                                     for exp_id, obj_id in video["expressions"].items()}}
    write_meta_expressions(root / "meta_expressions" / SPLIT / "meta_expressions.json", meta)
    return videos


@pytest.fixture()
def dataset(tmp_path):
    root = tmp_path / "ytvos"
    return root, tiny_ytvos(root)


def entries_from(videos: dict, predict) -> list:
    """One entry per expression, masks = predict(ground-truth masks [n, H, W])."""
    return [make_entry(video["video_id"], obj_id, vid, exp_id, predict(video["labels"] == obj_id))
            for vid, video in videos.items() for exp_id, obj_id in video["expressions"].items()]


def expected_scores(videos: dict, predict, vids=None) -> dict:
    """The per-frame reference J and F, averaged over every frame of every expression."""
    jaccards, boundaries = [], []
    for vid, video in videos.items():
        if vids is not None and vid not in vids:
            continue
        for obj_id in video["expressions"].values():
            gt = video["labels"] == obj_id
            pred = predict(gt)
            for gt_frame, pred_frame in zip(gt, pred):
                jaccards.append(reference_jaccard(gt_frame, pred_frame))
                boundaries.append(reference_boundary_f(gt_frame, pred_frame))
    return {"J": np.mean(jaccards), "F": np.mean(boundaries), "num_frames": len(jaccards)}


def shifted(gt):
    return np.roll(gt, (1, 2), axis=(1, 2))


def test_perfect_results_score_one(dataset):
    root, videos = dataset
    metrics = evaluate_rvos(entries_from(videos, lambda gt: gt), root, SPLIT)
    assert metrics["J"] == 1.0 and metrics["F"] == 1.0 and metrics["J&F"] == 1.0
    assert metrics["num_frames"] == 3 * 4 + 3 and metrics["num_expressions"] == 4
    assert metrics["num_missing_expressions"] == 0


def test_missing_and_empty_predictions_score_as_empty_masks(dataset):
    root, videos = dataset
    expected = expected_scores(videos, np.zeros_like)
    # J = F = 1 only on the frames where the object is absent (object 2 of vid_a: frames 1 and 2)
    assert expected["J"] == pytest.approx(2 / 15) and expected["F"] == pytest.approx(2 / 15)
    for results in ([], entries_from(videos, np.zeros_like)):
        metrics = evaluate_rvos(results, root, SPLIT)
        assert metrics["J"] == pytest.approx(expected["J"]) and metrics["F"] == pytest.approx(expected["F"])
        assert metrics["num_frames"] == 15 and metrics["num_expressions"] == 4
    assert evaluate_rvos([], root, SPLIT)["num_missing_expressions"] == 4


def test_shifted_masks_match_the_reference(dataset):
    root, videos = dataset
    entries = entries_from(videos, shifted)
    expected = expected_scores(videos, shifted)
    metrics = evaluate_rvos(entries[::-1], root, SPLIT)  # the order of the entries does not matter
    assert 0 < metrics["J"] < 1 and 0 < metrics["F"] < 1
    assert metrics["J"] == pytest.approx(expected["J"], abs=1e-12)
    assert metrics["F"] == pytest.approx(expected["F"], abs=1e-12)
    assert metrics["J&F"] == pytest.approx((expected["J"] + expected["F"]) / 2, abs=1e-12)


def test_one_missing_expression_counts_as_empty(dataset):
    root, videos = dataset
    entries = [e for e in entries_from(videos, lambda gt: gt) if (e["file_name"], e["exp_id"]) != ("vid_a", "2")]
    metrics = evaluate_rvos(entries, root, SPLIT)
    # 11 perfect frames, and vid_a expression 2 (object 1, present in all 4 frames) scores 0
    assert metrics["J"] == pytest.approx(11 / 15) and metrics["F"] == pytest.approx(11 / 15)
    assert metrics["num_missing_expressions"] == 1


def test_split_files_select_the_videos(dataset, tmp_path):
    root, videos = dataset
    entries = entries_from(videos, shifted)
    text_split = tmp_path / "videos.txt"
    text_split.write_text("vid_b\n")
    metrics = evaluate_rvos(entries, root, SPLIT, split_file=text_split)
    expected = expected_scores(videos, shifted, vids={"vid_b"})
    assert metrics["num_expressions"] == 1 and metrics["num_frames"] == 3
    assert metrics["J"] == pytest.approx(expected["J"], abs=1e-12)
    vis_split = tmp_path / "instances_test_sub.json"
    write_vis_instances(vis_split, [{"id": 1, "file_names": [f"vid_a/{5 * i:05d}.jpg" for i in range(4)],
                                     "width": 32, "height": 24, "length": 4}], [])
    metrics = evaluate_rvos(entries, root, SPLIT, split_file=vis_split)
    assert metrics["num_expressions"] == 3 and metrics["num_frames"] == 12
    # a VIS split file's frames are the evaluated frames (as in the official evaluation)
    write_vis_instances(vis_split, [{"id": 1, "file_names": ["vid_a/00005.jpg", "vid_a/00015.jpg"],
                                     "width": 32, "height": 24, "length": 2}], [])
    frames_5_and_15 = [{**entry, "segmentations": [entry["segmentations"][1], entry["segmentations"][3]]}
                       for entry in entries if entry["file_name"] == "vid_a"]
    metrics = evaluate_rvos(frames_5_and_15, root, SPLIT, split_file=vis_split)
    subset = {vid: dict(video, labels=video["labels"][[1, 3]]) for vid, video in videos.items() if vid == "vid_a"}
    assert metrics["num_frames"] == 6
    assert metrics["F"] == pytest.approx(expected_scores(subset, shifted)["F"], abs=1e-12)
    with pytest.raises(ResultsFormatError, match="4 frames, the video has 2"):
        evaluate_rvos(entries, root, SPLIT, split_file=vis_split)
    text_split.write_text("vid_c\n")
    with pytest.raises(ValueError, match="vid_c"):
        evaluate_rvos(entries, root, SPLIT, split_file=text_split)


def test_bad_results_name_the_entry(dataset):
    root, videos = dataset
    good = entries_from(videos, lambda gt: gt)
    unknown_video = dict(good[1], file_name="vid_z")
    wrong_frames = dict(good[1], segmentations=good[1]["segmentations"][:-1])
    wrong_size = make_entry(1, 2, "vid_a", "1", np.zeros((4, 24, 33), dtype=bool))
    unknown_expression = dict(good[1], exp_id="9")
    wrong_object = dict(good[1], obj_id=5)
    cases = {
        "unknown video 'vid_z'": unknown_video,
        "3 frames, the video has 4": wrong_frames,
        r"frame 0: RLE size \[24, 33\], the annotations are \[24, 32\]": wrong_size,
        "has no expression '9'": unknown_expression,
        "obj_id 5 but the expression refers to object 2": wrong_object,
        "duplicates entry 1": good[1],
    }
    for message, bad in cases.items():
        results = good[:1] + [bad] if bad is not good[1] else good[:2] + [bad]
        index = len(results) - 1
        with pytest.raises(ResultsFormatError, match=message) as error:
            evaluate_rvos(results, root, SPLIT)
        assert f"entry {index} (video '{bad['file_name']}', expression '{bad['exp_id']}')" in str(error.value)


def test_command_line_writes_the_metrics(dataset, tmp_path, capsys):
    root, videos = dataset
    results_path = tmp_path / "results.json"
    write_results(results_path, entries_from(videos, shifted))
    out = tmp_path / "metrics" / "metrics.json"
    metrics = main([str(results_path), "--ytvos_path", str(root), "--ytvos_split", SPLIT, "--out", str(out)])
    written = json.loads(out.read_text())
    assert written == metrics
    assert {"J", "F", "J&F", "num_frames", "num_expressions"} <= set(written)
    assert all(0 <= written[key] <= 1 for key in ("J", "F", "J&F"))
    assert written["J"] == pytest.approx(expected_scores(videos, shifted)["J"], abs=1e-12)
    assert f"J {metrics['J']:.4f}" in capsys.readouterr().out
    # default output: beside the results
    main([str(results_path), "--ytvos_path", str(root)])
    assert json.loads((tmp_path / "results_metrics.json").read_text()) == metrics


def test_script_reports_a_bad_entry_and_fails(dataset, tmp_path):
    root, videos = dataset
    entries = entries_from(videos, lambda gt: gt)
    entries[2]["file_name"] = "vid_z"
    results_path = tmp_path / "results.json"
    results_path.write_text(json.dumps(entries))
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "evaluate_rvos.py"), str(results_path),
                                "--ytvos_path", str(root), "--out", str(tmp_path / "m.json")],
                               capture_output=True, text=True, cwd=tmp_path)
    assert completed.returncode != 0
    assert "entry 2 (video 'vid_z', expression '2')" in completed.stderr and "unknown video" in completed.stderr
    assert not (tmp_path / "m.json").exists()


def test_the_shared_data_factory_layout(tmp_path):
    """The tests' shared Ref-YouTube-VOS factory: masks drawn from its boxes score 1 when right, and
    the reference value when every expression is given the other object's mask."""
    height, width = 24, 32
    info = make_ytvos(tmp_path / "ytvos", num_videos=2, num_frames=[3, 5], height=height, width=width, vis_file=True)

    def box_masks(boxes):
        masks = np.zeros((len(boxes), height, width), dtype=bool)
        for frame, box in enumerate(boxes):
            if box is not None:
                x0, y0, x1, y1 = box
                masks[frame, y0:y1, x0:x1] = True
        return masks

    perfect, swapped, expected_swapped = [], [], {"J": [], "F": []}
    for video_id, (vid, video) in enumerate(info["videos"].items(), start=1):
        for exp_id, obj_id, other in (("0", 1, 2), ("1", 2, 1)):
            gt, wrong = box_masks(video["boxes"][obj_id]), box_masks(video["boxes"][other])
            perfect.append(make_entry(video_id, obj_id, vid, exp_id, gt))
            swapped.append(make_entry(video_id, obj_id, vid, exp_id, wrong))
            expected_swapped["J"] += [reference_jaccard(g, w) for g, w in zip(gt, wrong)]
            expected_swapped["F"] += [reference_boundary_f(g, w) for g, w in zip(gt, wrong)]
    for split_file in (None, info["ann_file"]):
        metrics = evaluate_rvos(perfect, info["root"], SPLIT, split_file=split_file)
        assert (metrics["J"], metrics["F"], metrics["num_frames"], metrics["num_expressions"]) == (1.0, 1.0, 16, 4)
    metrics = evaluate_rvos(swapped, info["root"], SPLIT)
    assert metrics["J"] == pytest.approx(np.mean(expected_swapped["J"]), abs=1e-12)
    assert metrics["F"] == pytest.approx(np.mean(expected_swapped["F"]), abs=1e-12)
