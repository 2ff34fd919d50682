"""The dataset loaders on tiny datasets written in the real formats (tests/data_factory.py)."""
import colorsys
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch.utils.data import DataLoader

from datasets import build_dataset
from datasets.a2d import A2DDataset, InstanceCountWarning, read_a2d_samples
from datasets.a2d_format import A2DFrameAnnotation, read_a2d_h5, write_a2d_h5
from datasets.audio import AudioLoader
from datasets.common import (BadSampleWarning, SampleError, centred_clip_indices, middle_frame_index,
                             rvos_clip_indices)
from datasets.formats import write_npy
from datasets.jhmdb import JHMDBDataset
from datasets.transforms import (IMAGENET_MEAN, IMAGENET_STD, Compose, Normalize, RandomHorizontalFlip, RandomResize,
                                 RandomSizeCrop, crop, make_video_transforms)
from datasets.ytvos import RVOSDataset
from datasets.ytvos_format import read_meta_expressions, write_meta_expressions
from tests.data_factory import (dataset_args, frame_index_from_blue, make_a2d, make_jhmdb,
                                make_ytvos, object_box)
from util.misc import collate_fn

T = 3
OBJECT_CHANNEL_THRESHOLD = 128  # object colours have one channel at 230, everything else stays below 60
MIN_MASK_AGREEMENT = 0.95
EDGE_PX = 2  # pixels at a mask's edge that may disagree with the frame
BOX_TOLERANCE_PX = 1.5


# ----------------------------------------------------------------------------- helpers
def to_rgb255(clip: torch.Tensor) -> np.ndarray:
    """Normalised [T, 3, H, W] -> [T, H, W, 3] in 0..255."""
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return ((clip * std + mean) * 255).permute(0, 2, 3, 1).numpy()


def expected_cxcywh(box, height, width):
    x0, y0, x1, y1 = box
    return np.array([(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height])


def background_frame_indices(clip: torch.Tensor) -> list:
    """The frame index each clip frame's background encodes (median blue: the objects cover less than half)."""
    return [frame_index_from_blue(np.median(frame[..., 2])) for frame in to_rgb255(clip)]


def check_alignment(clip: torch.Tensor, target: dict, obj_id: int) -> None:
    """Masks and boxes follow the transformed frames: mask pixels show object `obj_id`, box = mask box.

    Object k is the only thing in the frames whose colour channel k-1 is bright (`tests.data_factory.OBJECT_COLOURS`), so a
    pixel shows it when that channel is above the middle of the range.
    """
    rgb = to_rgb255(clip)
    height, width = clip.shape[-2:]
    assert tuple(target["masks"].shape[-2:]) == (height, width)
    assert torch.equal(target["size"], torch.tensor([height, width]))
    for t, (mask, box, valid) in enumerate(zip(target["masks"].bool().numpy(), target["boxes"], target["valid"])):
        shows_object = rgb[t][..., obj_id - 1] > OBJECT_CHANNEL_THRESHOLD
        if not valid:
            assert not mask.any() and torch.all(box == 0)
            continue
        # edge pixels are blurred (JPEG, bilinear frames vs nearest masks): compare away from the mask's edge
        core = ndimage.binary_erosion(mask, iterations=EDGE_PX)
        if core.any():
            assert shows_object[core].mean() > MIN_MASK_AGREEMENT, f"frame {t}: mask not on the object"
        near = ndimage.binary_dilation(mask, iterations=EDGE_PX)
        assert not (shows_object & ~near).any(), f"frame {t}: object outside the mask"
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        mask_box = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
        cx, cy, w, h = box.tolist()
        box_px = (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height
        assert np.allclose(box_px, mask_box, atol=BOX_TOLERANCE_PX), (box_px, mask_box)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("data")
    return {"ytvos": make_ytvos(root / "ytvos", num_frames=[5, 2], vis_file=True),
            "a2d": make_a2d(root / "a2d"),
            "jhmdb": make_jhmdb(root / "jhmdb", mask_frames=6)}


def rvos(info: dict, **kwargs) -> RVOSDataset:
    return RVOSDataset(info["root"], info["audio_root"], kwargs.pop("num_frames", T), **kwargs)


def copy_tree(info: dict, tmp_path: Path) -> dict:
    """A private copy of a factory dataset (for tests that break files)."""
    new_root = tmp_path / Path(info["root"]).name
    shutil.copytree(info["root"], new_root)
    audio = Path(info["audio_root"])
    new_audio = new_root / audio.relative_to(info["root"]) if audio.is_relative_to(info["root"]) else audio
    return {**info, "root": str(new_root), "audio_root": str(new_audio)}


# ----------------------------------------------------------------------------- clip windows
def official_rvos_window(end_frame, n, num_frames):
    frames = list(range(n))
    offsets = [i % n for i in range(num_frames)][::-1]
    return [frames[end_frame - offsets[j]] for j in range(num_frames)]  # negative indices wrap


def test_rvos_window_matches_the_official_indexing():
    for n in (1, 2, 5, 9):
        for num_frames in (1, 3, 5, 12):
            for end in range(n):
                assert rvos_clip_indices(end, n, num_frames) == official_rvos_window(end, n, num_frames)
    assert rvos_clip_indices(0, 5, 3) == [3, 4, 0]  # wraps to the end of the video
    with pytest.raises(IndexError):
        rvos_clip_indices(5, 5, 3)


def test_centred_window_is_clamped():
    assert middle_frame_index(5) == 2 and middle_frame_index(36) == 17 and middle_frame_index(4) == 1
    assert centred_clip_indices(0, 9, 5) == [0, 0, 0, 1, 2]
    assert centred_clip_indices(4, 9, 5) == [2, 3, 4, 5, 6]
    assert centred_clip_indices(8, 9, 5) == [6, 7, 8, 8, 8]
    assert centred_clip_indices(1, 2, 4) == [0, 1, 1, 1]


# ----------------------------------------------------------------------------- Ref-YouTube-VOS
def test_rvos_samples_clips_and_targets(data):
    info = data["ytvos"]
    dataset = rvos(info)
    videos = list(info["videos"].items())
    assert len(dataset) == sum(len(v["frames"]) for _, v in videos) * 2  # two expressions per video
    height, width = 24, 32
    for index in range(len(dataset)):
        clip, audio, target = dataset[index]
        name, exp_id, end = target["video"], target["exp_id"], target["frame_id"]
        frames, boxes = info["videos"][name]["frames"], info["videos"][name]["boxes"]
        expected_clip = rvos_clip_indices(end, len(frames), T)
        assert target["clip_frames"] == expected_clip
        assert background_frame_indices(clip) == expected_clip, "the clip holds the wrong frames"
        assert clip.shape == (T, 3, height, width) and audio.shape[0] == 39
        obj_id = int(exp_id) + 1
        for t, f in enumerate(expected_clip):
            gt = boxes[obj_id][f]
            assert target["valid"][t] == int(gt is not None)
            if gt is None:
                assert torch.all(target["boxes"][t] == 0) and not target["masks"][t].any()
            else:
                assert np.allclose(target["boxes"][t].numpy(), expected_cxcywh(gt, height, width), atol=1e-6)
                x0, y0, x1, y1 = gt
                assert target["masks"][t].sum() == (x1 - x0) * (y1 - y0) and target["masks"][t, y0:y1, x0:x1].all()
        check_alignment(clip, target, obj_id)
    # object 2 is absent in frame 0: some clip of expression "1" has a valid 0
    assert any(0 in dataset[i][2]["valid"].tolist() for i in range(len(dataset)))


def test_rvos_vis_annotation_file_gives_the_same_targets(data):
    info = data["ytvos"]
    from_pngs, from_vis = rvos(info), rvos(info, ann_file=info["ann_file"])
    assert len(from_pngs) == len(from_vis)
    for index in range(len(from_pngs)):
        clip_a, audio_a, a = from_pngs[index]
        clip_b, audio_b, b = from_vis[index]
        assert (a["video"], a["exp_id"], a["clip_frames"]) == (b["video"], b["exp_id"], b["clip_frames"])
        for key in ("boxes", "masks", "valid"):
            assert torch.equal(a[key], b[key]), key
        assert torch.equal(clip_a, clip_b) and torch.equal(audio_a, audio_b)


def test_audio_feature_is_transposed(data, tmp_path):
    path = tmp_path / "a.npy"
    features = np.arange(7 * 39, dtype=np.float64).reshape(7, 39)
    write_npy(path, features)
    loaded = AudioLoader()(path)
    assert loaded.dtype == torch.float32 and loaded.shape == (39, 7)
    assert torch.equal(loaded, torch.from_numpy(features.T).float())


# ----------------------------------------------------------------------------- transforms
def test_flip_resize_crop_keep_masks_and_boxes_on_the_objects(data):
    info = data["ytvos"]
    random.seed(0)
    transforms = Compose([RandomHorizontalFlip(p=1.0), RandomResize([40, 48]), RandomSizeCrop(30, 44), Normalize()])
    plain, flipped = rvos(info), rvos(info, transforms=transforms)
    for index in range(0, len(plain), 3):
        clip, _, target = flipped[index]
        obj_id = int(target["exp_id"]) + 1
        check_alignment(clip, target, obj_id)
    # a flip without crop mirrors the box centre
    mirror = rvos(info, transforms=Compose([RandomHorizontalFlip(p=1.0), Normalize()]))
    _, _, a = plain[0]
    clip, _, b = mirror[0]
    valid = a["valid"].bool()
    assert torch.allclose(b["boxes"][valid, 0], 1 - a["boxes"][valid, 0])
    assert torch.equal(b["masks"], a["masks"].flip(-1))
    check_alignment(clip, b, 1)


def test_crop_that_removes_the_object_marks_it_absent():
    from PIL import Image
    frames = [Image.new("RGB", (20, 10))] * 2
    masks = torch.zeros(2, 10, 20, dtype=torch.uint8)
    masks[:, 1:4, 2:6] = 1
    target = {"boxes": torch.tensor([[2.0, 1.0, 6.0, 4.0]] * 2), "masks": masks, "valid": torch.tensor([1, 1]),
              "size": torch.tensor([10, 20])}
    _, inside = crop(frames, target, 0, 0, 10, 10)
    _, outside = crop(frames, target, 0, 10, 10, 10)
    assert inside["valid"].tolist() == [1, 1] and outside["valid"].tolist() == [0, 0]
    assert torch.all(outside["boxes"] == 0) and tuple(outside["masks"].shape) == (2, 10, 10)


def test_official_train_transforms_give_consistent_samples(data):
    info = data["ytvos"]
    random.seed(1)
    dataset = rvos(info, transforms=make_video_transforms("train", scale=0.1))
    for index in range(len(dataset)):
        clip, _, target = dataset[index]
        height, width = clip.shape[-2:]
        assert clip.shape[:2] == (T, 3) and tuple(target["masks"].shape) == (T, height, width)
        assert min(height, width) >= 32
        assert torch.all((target["boxes"] >= 0) & (target["boxes"] <= 1))
        present = target["masks"].flatten(1).any(1).long()
        assert torch.equal(target["valid"] * present, target["valid"]), "a valid frame lost its mask"
    val = rvos(info, transforms=make_video_transforms("val"))
    clip, _, target = val[0]
    assert min(clip.shape[-2:]) == 360 and tuple(target["size"].tolist()) == tuple(clip.shape[-2:])
    assert target["orig_size"].tolist() == [24, 32]


def test_official_training_and_validation_transform_sizes():
    """docs/protocol.md §4: flip; short side 480..768 step 32 (long <= 800); photometric; short side 400/500/600;
    crop sides in [384, 600]; short side 300 (long <= 540). Validation: short side 360 (long <= 640)."""
    from PIL import Image
    from datasets.transforms import PhotometricDistort
    steps = make_video_transforms("train").transforms
    assert [type(step) for step in steps] == [RandomHorizontalFlip, RandomResize, PhotometricDistort, RandomResize,
                                              RandomSizeCrop, RandomResize, Normalize]
    assert steps[0].p == 0.5
    assert steps[1].sizes == [480, 512, 544, 576, 608, 640, 672, 704, 736, 768] and steps[1].max_size == 800
    assert steps[3].sizes == [400, 500, 600] and steps[3].max_size is None
    assert (steps[4].min_size, steps[4].max_size) == (384, 600)
    assert steps[5].sizes == [300] and steps[5].max_size == 540
    val = make_video_transforms("val").transforms
    assert [type(step) for step in val] == [RandomResize, Normalize]
    assert val[0].sizes == [360] and val[0].max_size == 640

    # and the sizes the steps produce (photometric left out: it changes no size)
    random.seed(0)
    seen = {"first": set(), "second": set(), "crop": set()}
    for width, height in ((1280, 720), (640, 480), (480, 640)):
        for _ in range(12):
            frames = [Image.new("RGB", (width, height))] * 2
            target = {"size": torch.tensor([height, width])}
            sizes = []
            for step in steps[:2] + steps[3:6]:
                frames, target = step(frames, target)
                sizes.append(frames[0].size)
            (w1, h1), (w2, h2), (w3, h3), (w4, h4) = sizes[1:]
            short, long = min(w1, h1), max(w1, h1)
            assert long <= 800 and (short in range(480, 769, 32) or long >= 799), (width, height, sizes)
            assert min(w2, h2) in (400, 500, 600)
            assert min(384, w2) <= w3 <= 600 and min(384, h2) <= h3 <= 600
            assert max(w4, h4) <= 540 and (min(w4, h4) == 300 or max(w4, h4) >= 539), sizes
            seen["first"].add(short)
            seen["second"].add(min(w2, h2))
            seen["crop"].update((w3, h3))
    assert len(seen["first"]) > 3 and seen["second"] == {400, 500, 600} and min(seen["crop"]) < 450


# ----------------------------------------------------------------------------- A2D-Sentences
def test_a2d_samples_centred_clamped_clips_and_one_target(data):
    info = data["a2d"]
    num_frames = 5
    dataset = A2DDataset(info["root"], info["audio_root"], num_frames, split="train")
    train_video = next(v for v, i in info["videos"].items() if i["split"] == 0)
    assert [(s.video_id, s.frame_idx) for s in dataset.samples] == \
        [(s.video_id, s.frame_idx) for s in info["samples"] if s.video_id == train_video]
    for index in range(len(dataset)):
        sample = dataset.samples[index]
        clip, audio, target = dataset[index]
        expected_clip = centred_clip_indices(sample.frame_idx, 9, num_frames)
        assert target["clip_frames"] == expected_clip
        assert background_frame_indices(clip) == expected_clip
        assert target["frame_idx"] == 2 and target["frame_id"] == sample.frame_idx
        assert target["boxes"].shape == (1, 4) and target["masks"].shape == (1, 24, 32)
        gt = info["videos"][sample.video_id]["boxes"][int(sample.instance_id)][sample.frame_idx]
        assert np.allclose(target["boxes"][0].numpy(), expected_cxcywh(gt, 24, 32), atol=1e-6)
        assert target["labels"].tolist() == [11 if sample.instance_id == "1" else 22]
        assert target["valid"].tolist() == [1]
        # the annotated frame is the clip's middle frame: the mask lies on it
        check_alignment(clip[target["frame_idx"]:target["frame_idx"] + 1], target,
                        int(sample.instance_id))
    test_split = A2DDataset(info["root"], info["audio_root"], num_frames, split="val")
    assert {s.video_id for s in test_split.samples} == {v for v, i in info["videos"].items() if i["split"] == 1}


def test_a2d_samples_derived_from_annotations_and_h5(data, tmp_path):
    info = make_a2d(tmp_path / "a2d", write_info=False)
    derived = read_a2d_samples(info["root"])
    assert [(s.video_id, s.instance_id, s.frame_idx, s.query) for s in derived] == \
        [(s.video_id, s.instance_id, s.frame_idx, s.query) for s in info["samples"]]


def test_a2d_h5_masks_are_stored_transposed(data):
    info = data["a2d"]
    annotation = read_a2d_h5(Path(info["root"]) / "a2d_annotation_with_instances" / "a2dvid0" / "00005.h5")
    import h5py
    with h5py.File(Path(info["root"]) / "a2d_annotation_with_instances" / "a2dvid0" / "00005.h5") as f:
        assert f["reMask"].shape == (2, 32, 24) and f["reBBox"].shape == (4, 2)
    assert annotation.masks.shape == (2, 24, 32)


# ----------------------------------------------------------------------------- JHMDB-Sentences
def test_jhmdb_evaluation_samples(data):
    info = data["jhmdb"]
    dataset = JHMDBDataset(info["root"], info["audio_root"], 5)
    frames = [4, 5, 7]  # linspace(4, 12 - 5, 3) = [4, 5.5, 7], truncated
    assert [(s.video_id, s.frame_idx) for s in dataset.samples] == [(v, f) for v in info["videos"] for f in frames]
    for index in range(len(dataset)):
        sample = dataset.samples[index]
        clip, audio, target = dataset[index]
        assert target["clip_frames"] == centred_clip_indices(sample.frame_idx, 12, 5)
        assert background_frame_indices(clip) == target["clip_frames"]
        # the .mat holds 6 frames: later frames are scored against its last one, as the official
        mask_frame = min(sample.frame_idx, 5)
        x0, y0, x1, y1 = object_box(1, mask_frame, 24, 32)
        assert target["masks"][0, y0:y1, x0:x1].all() and target["masks"][0].sum() == (x1 - x0) * (y1 - y0)
        assert np.array_equal(dataset.ground_truth(index), target["masks"][0].numpy())


# ----------------------------------------------------------------------------- bad data
def test_missing_root_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        RVOSDataset(tmp_path / "nowhere", tmp_path, T)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        A2DDataset(tmp_path / "nowhere", tmp_path, T)


def test_rvos_bad_data_errors_name_the_item_and_can_be_skipped(data, tmp_path):
    info = copy_tree(data["ytvos"], tmp_path)
    root = Path(info["root"])
    # wrong-shape audio for vid000 expression 1, a missing mask PNG for vid001
    write_npy(Path(info["audio_root"]) / "vid000_1.npy", np.zeros((39, 5)))
    (root / "train" / "Annotations" / "vid001" / "00005.png").unlink()
    with pytest.raises(SampleError, match=r"vid001.*00005\.png"):
        rvos(info)
    with pytest.warns(BadSampleWarning) as record:
        dataset = rvos(info, skip_bad_samples=True)
    messages = " ".join(str(w.message) for w in record)
    assert "vid000 expression 1" in messages and "(39, 5)" in messages and "dropped" in messages
    assert len(dataset) == 5 and {dataset[i][2]["exp_id"] for i in range(len(dataset))} == {"0"}
    assert dataset.num_dropped == 2  # one video, one expression


def test_rvos_expression_naming_an_unknown_object(data, tmp_path):
    info = copy_tree(data["ytvos"], tmp_path)
    path = Path(info["root"]) / "meta_expressions" / "train" / "meta_expressions.json"
    videos = read_meta_expressions(path)
    videos["vid001"]["expressions"]["1"]["obj_id"] = "5"
    write_meta_expressions(path, videos)
    with pytest.raises(SampleError, match=r"vid001 expression 1.*object 5"):
        rvos(info)
    with pytest.raises(SampleError, match=r"vid001 expression 1.*object 5"):
        rvos(info, ann_file=info["ann_file"])
    with pytest.warns(BadSampleWarning):
        assert len(rvos(info, skip_bad_samples=True)) == 5 * 2 + 2


def test_broken_frame_at_load_time(data, tmp_path):
    info = copy_tree(data["ytvos"], tmp_path)
    (Path(info["root"]) / "train" / "JPEGImages" / "vid001" / "00000.jpg").write_bytes(b"not a jpeg")
    dataset = rvos(info)
    bad = next(i for i in range(len(dataset)) if dataset.samples[i][0] == 1)
    with pytest.raises(SampleError, match=r"video vid001 frame 00000 expression 0"):
        dataset[bad]
    skipping = rvos(info, skip_bad_samples=True)
    clip, _, target = skipping[bad]  # the next sample, naming the one it replaces (the run warns once per name)
    assert any("vid001" in message and "00000.jpg" in message for message in target["bad_samples"])
    assert skipping.num_skipped_at_load >= 1 and clip.shape[0] == T


def test_a2d_bad_data(data, tmp_path):
    info = copy_tree(data["a2d"], tmp_path)
    root = Path(info["root"])
    (root / "a2d_annotation_with_instances" / "a2dvid0" / "00005.h5").unlink()
    with pytest.raises(SampleError, match=r"a2dvid0 instance 1 frame 4.*00005\.h5"):
        A2DDataset(root, info["audio_root"], 5)
    with pytest.warns(BadSampleWarning):
        dataset = A2DDataset(root, info["audio_root"], 5, skip_bad_samples=True)
    assert len(dataset) == 4 and dataset.num_dropped == 2
    # frames and videoset.csv disagree
    (root / "Release" / "pngs320H" / "a2dvid0" / "00009.png").unlink()
    with pytest.raises(SampleError, match=r"a2dvid0.*8 frames.*videoset.csv says 9"):
        A2DDataset(root, info["audio_root"], 5)
    # an instance the .h5 does not list
    path = root / "a2d_annotation_with_instances" / "a2dvid1" / "00001.h5"
    annotation = read_a2d_h5(path)
    write_a2d_h5(path, A2DFrameAnnotation(annotation.instance_ids + 10, annotation.masks, annotation.boxes,
                                          annotation.class_ids))
    with pytest.raises(SampleError, match=r"a2dvid1 instance 1 frame 0.*instance 1 not among"):
        A2DDataset(root, info["audio_root"], 5, split="val")


def test_a2d_h5_with_disagreeing_instance_counts_is_kept_and_reported_once(data, tmp_path):
    """As the official: the sample stays, the instance's position in 'instance' indexes reMask/reBBox/id."""
    info = copy_tree(data["a2d"], tmp_path)
    root = Path(info["root"])
    path = root / "a2d_annotation_with_instances" / "a2dvid0" / "00005.h5"
    annotation = read_a2d_h5(path)  # instances 1 and 2
    extra_mask = np.zeros_like(annotation.masks[:1])
    extra_mask[0, :3, :3] = 1
    write_a2d_h5(path, A2DFrameAnnotation(annotation.instance_ids, np.concatenate([annotation.masks, extra_mask]),
                                          np.concatenate([annotation.boxes, [[0, 0, 3, 3]]]),
                                          np.concatenate([annotation.class_ids, [33]])))
    with pytest.warns(InstanceCountWarning) as record:
        dataset = A2DDataset(root, info["audio_root"], 5)
    reports = [str(w.message) for w in record if issubclass(w.category, InstanceCountWarning)]
    assert len(reports) == 1, "two samples read the file, it is reported once"
    assert str(path) in reports[0] and "instance 2, reMask 3, reBBox 3, id 3" in reports[0]
    assert len(dataset) == 6 and dataset.num_dropped == 0  # every sample kept
    index = next(i for i, s in enumerate(dataset.samples) if (s.video_id, s.instance_id, s.frame_idx) == ("a2dvid0", "2", 4))
    x0, y0, x1, y1 = object_box(2, 4, 24, 32)
    mask = dataset.ground_truth(index)  # instance 2 -> position 1: its own mask, not the extra one
    assert mask[y0:y1, x0:x1].all() and mask.sum() == (x1 - x0) * (y1 - y0)
    _, _, target = dataset[index]
    assert target["labels"].tolist() == [22]
    # fewer masks than instances: the instance without one is an error naming the file
    write_a2d_h5(path, A2DFrameAnnotation(annotation.instance_ids, annotation.masks[:1], annotation.boxes[:1],
                                          annotation.class_ids[:1]))
    with pytest.raises(SampleError, match=r"a2dvid0 instance 2 frame 4: .*00005\.h5.*position 1.*reMask"):
        A2DDataset(root, info["audio_root"], 5)


# ----------------------------------------------------------------------------- build_dataset and batching
def test_build_dataset_and_dataloader_batches(data):
    y, a, j = data["ytvos"], data["a2d"], data["jhmdb"]
    args = dataset_args(ytvos_path=y["root"], rvos_audio_path=y["audio_root"], a2d_path=a["root"],
                        a2d_audio_path=a["audio_root"], jhmdb_path=j["root"], num_frames=T, data_scale=0.1,
                        dataset_file="avos")
    avos = build_dataset("train", args)
    assert len(avos) == len(avos.rvos) + len(avos.a2d) == 14 + 6
    random.seed(2)
    loader = DataLoader(avos, batch_size=2, collate_fn=collate_fn, shuffle=False,
                        sampler=[0, len(avos) - 1, 1, 2])  # one RVOS and one A2D item in the first batch
    frames, audio, targets = next(iter(loader))
    assert frames.tensors.shape[:2] == (2 * T, 3) and frames.mask.shape == (2 * T, *frames.tensors.shape[-2:])
    assert audio.tensors.shape[:2] == (2, 39) and audio.mask.shape == (2, audio.tensors.shape[-1])
    assert [len(t["valid"]) for t in targets] == [T, 1]
    lengths = [int((~m).sum()) for m in audio.mask]
    assert sorted(lengths) == sorted([AudioLoader()(Path(y["audio_root"]) / "vid000_0.npy").shape[1],
                                      AudioLoader()(Path(a["audio_root"]) / "a2dvid0_2.npy").shape[1]])
    for clip_index, target in enumerate(targets):
        height, width = target["size"].tolist()
        assert not frames.mask[clip_index * T, :height, :width].any()
    args.dataset_file = "jhmdb"
    args.a2d_audio_path = j["audio_root"]
    assert len(build_dataset("val", args)) == 6
    with pytest.raises(ValueError, match="evaluation"):
        build_dataset("train", args)


FLT_EPS = float(np.finfo(np.float32).eps)
OPENCV_SECTOR_TABLE = [[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]]


def opencv_bgr2hsv_pixel(b, g, r):
    """A line-by-line transcription of OpenCV's scalar float RGB2HSV_f (what the official's cv2 runs)."""
    f32 = np.float32
    b, g, r = f32(b), f32(g), f32(r)
    v = vmin = r
    if v < g:
        v = g
    if v < b:
        v = b
    if vmin > g:
        vmin = g
    if vmin > b:
        vmin = b
    diff = f32(v - vmin)
    s = f32(diff / f32(abs(v) + f32(FLT_EPS)))
    diff = f32(60.0 / (float(diff) + FLT_EPS))
    if v == r:
        h = (g - b) * diff
    elif v == g:
        h = (b - r) * diff + f32(120)
    else:
        h = (r - g) * diff + f32(240)
    if h < 0:
        h += f32(360)
    return h, s, v


def opencv_hsv2bgr_pixel(h, s, v):
    """A line-by-line transcription of OpenCV's scalar float HSV2RGB (hscale = 6/360)."""
    f32 = np.float32
    h, s, v = f32(h), f32(s), f32(v)
    if s == 0:
        return v, v, v
    h = f32(h * f32(6.0 / 360.0))
    h = f32(math.fmod(h, 6.0))
    if h < 0:
        h += f32(6)
    sector = math.floor(h)
    h = f32(h - sector)
    if not 0 <= sector < 6:
        sector, h = 0, f32(0)
    tab = [v, v * (f32(1) - s), v * (f32(1) - s * h), v * (f32(1) - s * (f32(1) - h))]
    return tuple(tab[i] for i in OPENCV_SECTOR_TABLE[sector])


def test_hsv_conversion_is_opencvs_float_conversion_without_clipping():
    from datasets.transforms import bgr_to_hsv, hsv_to_bgr
    rng = np.random.default_rng(0)
    pixels = rng.uniform(-64, 320, size=(200, 3)).astype(np.float32)  # out of range too: nothing is clipped
    pixels[:4] = [[10, 20, 30], [-22, -12, -2], [0, 0, 0], [50, 50, 50]]
    hsv = bgr_to_hsv(pixels)
    for pixel, ours in zip(pixels, hsv):
        np.testing.assert_allclose(ours, opencv_bgr2hsv_pixel(*pixel), rtol=1e-5, atol=1e-4)
    hsv[:, 1] *= rng.uniform(0.5, 1.5, size=len(hsv)).astype(np.float32)  # saturations above 1 as well
    hsv[:, 0] = rng.uniform(0, 360, size=len(hsv)).astype(np.float32)
    for pixel, ours in zip(hsv, hsv_to_bgr(hsv)):
        np.testing.assert_allclose(ours, opencv_hsv2bgr_pixel(*pixel), rtol=1e-5, atol=1e-3)
    in_range = rng.uniform(0, 255, size=(6, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(hsv_to_bgr(bgr_to_hsv(in_range)), in_range, atol=1e-3)
    for pixel, ours in zip(in_range.reshape(-1, 3)[:10], bgr_to_hsv(in_range).reshape(-1, 3)[:10]):
        h, s, v = colorsys.rgb_to_hsv(*(pixel[::-1] / 255))  # channel 0 plays blue, as in the official
        assert np.allclose(ours, (h * 360, s, v * 255), atol=1e-3)


class ScriptedRandom:
    """Draws for PhotometricDistort: `coins` (True = the step runs), `values` for uniform(), `perm` for sample()."""

    def __init__(self, coins, values=(), perm=(0, 1, 2)):
        self.coins, self.values, self.perm = list(coins), list(values), list(perm)

    def random(self):
        return 0.0 if self.coins.pop(0) else 0.9

    def uniform(self, low, high):
        value = self.values.pop(0)
        assert low <= value <= high
        return value

    def sample(self, population, k):
        return list(self.perm)


# Coins in draw order: brightness, contrast first?, [contrast], saturation, hue, [contrast], channel swap.
PHOTOMETRIC_CASES = {
    # (10, 20, 30) - 32 goes negative; the HSV round trip (always run) maps it as OpenCV does: v = -2,
    # s = 20 / 2 = 10, h = 30 -> (18, 8, -2); clipping before HSV would give black
    "no clip before HSV": ((10, 20, 30), [1, 1, 0, 0, 0, 0], [-32.0], (0, 1, 2), (18, 8, -2), (18, 8, 0)),
    # s = 190 / 200 = 0.95 -> x1.5 = 1.425, not clipped to 1: channel 0 = 200 (1 - 1.425) = -85,
    # channel 1 = 200 (1 - 1.425 (1 - 28.42 / 60)) = 50
    "saturation not clipped": ((10, 100, 200), [0, 0, 1, 0, 0, 0], [1.5], (0, 1, 2), (-85, 50, 200), None),
    # hue 240 (the maximum in channel 0, which OpenCV names blue) + 18 = 258: sector 4 -> (200, 100, 130)
    "hue shift": ((200, 100, 100), [0, 0, 0, 1, 0, 0], [18.0], (0, 1, 2), (200, 100, 130), (200, 100, 130)),
    # truncation, not rounding: 100.75 -> 100
    "truncated": ((100, 150, 200), [1, 0, 0, 0, 0, 0], [0.75], (0, 1, 2), (100.75, 150.75, 200.75), (100, 150, 200)),
    # contrast after HSV, then the channel permutation; 300 > 255 is clipped at the very end only
    "contrast last, swap": ((10, 21, 200), [0, 0, 0, 0, 1, 1], [1.45], (2, 0, 1), (290, 14.5, 30.45), (255, 14, 30)),
}


@pytest.mark.parametrize("case", list(PHOTOMETRIC_CASES))
def test_photometric_distortion_hand_computed(case):
    from PIL import Image
    from datasets.transforms import PhotometricDistort
    pixel, coins, values, perm, expected_float, expected_uint8 = PHOTOMETRIC_CASES[case]
    image = np.full((2, 3, 3), pixel, dtype=np.float32)
    rng = ScriptedRandom(coins, values, perm)
    out = PhotometricDistort(rng=rng).distort_array(image)
    assert out.dtype == np.float32 and not rng.coins and not rng.values, "every scripted draw used, no more"
    np.testing.assert_allclose(out, np.broadcast_to(expected_float, out.shape), atol=1e-3)
    if expected_uint8 is not None:
        frame = Image.fromarray(image.astype(np.uint8))
        distorted = PhotometricDistort(rng=ScriptedRandom(coins, values, perm)).distort(frame)
        assert np.asarray(distorted).reshape(-1, 3).tolist() == [list(expected_uint8)] * 6


def test_photometric_distortion_per_frame_draws_and_inference_size():
    from PIL import Image
    from datasets.transforms import PhotometricDistort, make_inference_transforms
    random.seed(3)
    frame = Image.fromarray(np.random.default_rng(0).uniform(0, 255, size=(6, 7, 3)).astype(np.uint8))
    distorted, target = PhotometricDistort()([frame] * 4, {"valid": torch.ones(4)})
    arrays = [np.asarray(f) for f in distorted]
    assert len({a.tobytes() for a in arrays}) > 1, "each frame gets its own draw"
    assert all(a.shape == (6, 7, 3) and a.dtype == np.uint8 for a in arrays)
    frames, _ = make_inference_transforms()([Image.new("RGB", (200, 50))] * 2, {})
    assert frames[0].shape == (3, 300, 1200)  # short side 300, long side not capped


def test_listing_helpers_for_inference(data):
    from datasets.ytvos import read_ytvos_videos, video_frame_paths
    info = data["ytvos"]
    videos = read_ytvos_videos(info["root"], "train")
    assert [v.name for v in videos] == list(info["videos"])
    assert [e.obj_id for e in videos[0].expressions] == [1, 2]
    paths = video_frame_paths(info["root"], "train", videos[1])
    assert [p.stem for p in paths] == info["videos"]["vid001"]["frames"] and all(p.is_file() for p in paths)
    assert [v.vis_id for v in read_ytvos_videos(info["root"], "train", info["ann_file"])] == [1, 2]
    a2d = A2DDataset(data["a2d"]["root"], data["a2d"]["audio_root"], 5, split="test")
    _, _, target = a2d[0]
    assert np.array_equal(a2d.ground_truth(0), target["masks"][0].numpy())


def test_hsv_conversions_equal_the_reduction_and_table_forms_exactly():
    """The channel-wise max/min and per-channel selection give the very values of the straightforward forms
    (a reduction over the colour axis, a stacked table indexed per pixel): the loader's outputs are unchanged."""
    from datasets.transforms import FLT_EPSILON, HSV_SECTOR_TABLE, HUE_RANGE, HUE_SECTOR, bgr_to_hsv, hsv_to_bgr
    rng = np.random.default_rng(0)
    image = (rng.random((40, 50, 3), dtype=np.float32) * 400 - 60).astype(np.float32)
    image[0, :5] = 0
    image[1, :5] = 255
    image[2, :5] = [7, 7, 7]  # grey: saturation 0
    image[3, :5] = [10, 200, 200]  # ties between channels
    hsv = bgr_to_hsv(image)
    np.testing.assert_array_equal(hsv[..., 2], image.max(-1))
    value, diff = image.max(-1), image.max(-1) - image.min(-1)
    np.testing.assert_array_equal(hsv[..., 1], (diff / (np.abs(value) + np.float32(FLT_EPSILON))).astype(np.float32))

    hsv[..., 1] *= rng.uniform(0.5, 1.5, size=hsv.shape[:2]).astype(np.float32)
    hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    sectors = np.float32(HUE_RANGE / HUE_SECTOR)
    h = np.fmod(hue * np.float32(1 / HUE_SECTOR), sectors)
    h = np.where(h < 0, h + sectors, h)
    sector = np.floor(h)
    fraction = (h - sector).astype(np.float32)
    sector = sector.astype(np.int64)
    outside = (sector < 0) | (sector >= len(HSV_SECTOR_TABLE))
    sector, fraction = np.where(outside, 0, sector), np.where(outside, np.float32(0), fraction)
    one = np.float32(1)
    tab = np.stack([value, value * (one - saturation), value * (one - saturation * fraction),
                    value * (one - saturation * (one - fraction))], -1)
    expected = np.take_along_axis(tab, np.asarray(HSV_SECTOR_TABLE)[sector], axis=-1)
    expected = np.where((saturation == 0)[..., None], value[..., None], expected).astype(np.float32)
    np.testing.assert_array_equal(hsv_to_bgr(hsv), expected)
