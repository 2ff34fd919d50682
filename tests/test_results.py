"""util/results.py: the results.json entries, their RLEs, and the errors that name a bad entry."""
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from util.results import (RESULT_KEYS, ResultsFormatError, decode_masks, encode_masks, encode_rle, make_entry,
                          read_results, rle_run_lengths, validate_results, write_results)


def random_masks(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    masks = np.zeros((num_frames, height, width), dtype=bool)
    for frame in range(num_frames):
        y0, x0 = rng.integers(0, height // 2), rng.integers(0, width // 2)
        masks[frame, y0:y0 + height // 3, x0:x0 + width // 3] = True
    masks[-1] = False  # an object absent in the last frame
    return masks


def run_lengths(mask: np.ndarray) -> list:
    """Column-major runs starting with background (the COCO RLE convention), counted directly."""
    flat = mask.ravel(order="F").astype(np.int8)
    boundaries = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    runs = list(np.diff(boundaries))
    return [0] + runs if flat[0] == 1 else runs


def test_make_entry_is_the_official_format_plus_exp_id_and_round_trips(tmp_path):
    masks = random_masks(5, 24, 40)
    entry = make_entry(7, 2, "abc123", "1", masks)
    assert set(entry) == set(RESULT_KEYS)
    assert entry["video_id"] == 7 and entry["obj_id"] == 2 and entry["file_name"] == "abc123"
    assert entry["exp_id"] == "1"
    assert len(entry["segmentations"]) == 5
    for frame, rle in enumerate(entry["segmentations"]):
        assert rle["size"] == [24, 40] and isinstance(rle["counts"], str)
        # the same RLE as pycocotools gives for the frame alone
        official = mask_utils.encode(np.asfortranarray(masks[frame].astype(np.uint8)))
        assert rle["counts"] == official["counts"].decode("ascii")
    path = tmp_path / "out" / "results.json"
    write_results(path, [entry])
    assert json.loads(path.read_text())[0]["segmentations"] == entry["segmentations"]
    assert not [p for p in path.parent.iterdir() if p.name != "results.json"]  # no temporary file left
    (read_back,) = read_results(path)
    np.testing.assert_array_equal(decode_masks(read_back["segmentations"]), masks)


def test_rle_run_lengths_match_the_mask_runs():
    rng = np.random.default_rng(1)
    shapes = [(1, 1), (3, 7), (24, 40), (61, 33), (200, 300)]
    for height, width in shapes:
        for density in (0.0, 0.05, 0.5, 1.0):
            mask = rng.random((height, width)) < density
            counts = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")
            runs = rle_run_lengths(counts)
            assert list(runs) == run_lengths(mask)
            assert runs.sum() == height * width


@pytest.mark.parametrize("counts", ["", "P1370000000008\x7f", "0" * 3 + "\x60", "é"])
def test_rle_run_lengths_rejects_malformed_strings(counts):
    with pytest.raises(ValueError):
        rle_run_lengths(counts)


def entry_with(**changes):
    entry = make_entry(0, 1, "vid", "0", random_masks(3, 12, 16))
    entry.update(changes)
    return entry


def test_validation_errors_name_the_entry():
    good = entry_with()
    other_size = encode_masks(np.zeros((1, 12, 17), dtype=bool))[0]
    wrong_counts = {"size": [12, 16], "counts": encode_masks(np.zeros((1, 10, 16), dtype=bool))[0]["counts"]}
    cases = {
        "missing keys \\['exp_id'\\]": {k: v for k, v in good.items() if k != "exp_id"},
        "'video_id' must be an integer": entry_with(video_id="7"),
        "'obj_id' must be an integer": entry_with(obj_id=True),
        "'file_name' must be the video name": entry_with(file_name=""),
        "'segmentations' must be a list": entry_with(segmentations="x"),
        "frame 0: expected an RLE": entry_with(segmentations=[{"size": [12, 16], "counts": [1, 2]}]),
        "frame 1: RLE 'size' must be": entry_with(segmentations=[good["segmentations"][0], {"size": [12], "counts": "1"}]),
        "frames have different RLE sizes": entry_with(segmentations=[good["segmentations"][0], other_size]),
        "frame 0: RLE counts cover 160 pixels": entry_with(segmentations=[wrong_counts]),
        "frame 0: malformed RLE counts": entry_with(segmentations=[{"size": [12, 16], "counts": "~~~"}]),
    }
    for message, bad in cases.items():
        with pytest.raises(ResultsFormatError, match=message) as error:
            validate_results([good, bad], "my_results.json")
        assert "my_results.json: entry 1" in str(error.value)


def test_read_results_errors_name_the_file(tmp_path):
    path = tmp_path / "results.json"
    with pytest.raises(FileNotFoundError, match="results.json"):
        read_results(path)
    path.write_text("{not json")
    with pytest.raises(ResultsFormatError, match="not valid JSON"):
        read_results(path)
    path.write_text(json.dumps({"video_id": 1}))
    with pytest.raises(ResultsFormatError, match="expected a list"):
        read_results(path)
    path.write_text(json.dumps([entry_with(), entry_with(video_id=None)]))
    with pytest.raises(ResultsFormatError, match=r"results.json: entry 1 \(video 'vid', expression '0'\)"):
        read_results(path)


def test_integer_exp_ids_are_read_as_str(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps([entry_with(exp_id=3)]))
    assert read_results(path)[0]["exp_id"] == "3"


def test_write_results_refuses_bad_entries_and_leaves_nothing(tmp_path):
    path = tmp_path / "results.json"
    with pytest.raises(ResultsFormatError, match="entry 0"):
        write_results(path, [entry_with(obj_id="one")])
    assert list(tmp_path.iterdir()) == []


def test_encode_rle_is_the_compressed_coco_rle_of_one_mask():
    mask = random_masks(1, 7, 9)[0]
    rle = encode_rle(mask)
    coco = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert rle == {"size": [7, 9], "counts": coco["counts"].decode("ascii")}
    assert np.array_equal(decode_masks([rle])[0], mask)
