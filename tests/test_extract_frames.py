"""scripts/extract_frames.py on real (tiny) mp4 files written with PyAV."""
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from datasets.a2d_format import A2DVideo, write_videoset_csv
from scripts.extract_frames import TEMP_PREFIX, extract_all, main

HEIGHT, WIDTH, FPS = 32, 48, 10
COLOUR_TOLERANCE = 40  # lossy codec on flat colours


def frame_colour(index: int):
    return (40 * index % 256, 255 - 40 * index % 256, 128)


def write_mp4(path: Path, num_frames: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(num_frames):
            rgb = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
            rgb[:] = frame_colour(i)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture
def a2d_root(tmp_path: Path) -> Path:
    clips = tmp_path / "Release" / "clips320H"
    write_mp4(clips / "vidA.mp4", 5)
    write_mp4(clips / "vidB.mp4", 3)
    (clips / "broken.mp4").write_bytes(b"not a video at all")
    return tmp_path


def test_extracts_every_frame_in_order_and_reports_broken_videos(a2d_root: Path, capsys):
    rc = main(["--a2d_path", str(a2d_root)])
    out = a2d_root / "Release" / "pngs320H"
    assert rc == 1
    assert "broken.mp4" in capsys.readouterr().err
    assert not (out / "broken").exists()
    assert not list(out.glob(f"{TEMP_PREFIX}*")), "a failed video must not leave its temporary folder"
    frames = sorted(p.name for p in (out / "vidA").iterdir())
    assert frames == [f"{i:05d}.png" for i in range(1, 6)]
    assert len(list((out / "vidB").iterdir())) == 3
    for i, name in enumerate(frames):
        with Image.open(out / "vidA" / name) as image:
            assert image.mode == "RGB" and image.size == (WIDTH, HEIGHT)
            mean = np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(0)
        assert np.all(np.abs(mean - frame_colour(i)) < COLOUR_TOLERANCE), (name, mean)


def test_skips_finished_videos_and_cleans_leftovers(a2d_root: Path):
    clips, out = a2d_root / "Release" / "clips320H", a2d_root / "Release" / "pngs320H"
    assert extract_all(clips, out, videos=["vidA"]) == []
    marker = out / "vidA" / "marker.txt"
    marker.write_text("kept")
    leftover = out / f"{TEMP_PREFIX}vidB-abc"
    leftover.mkdir()
    (leftover / "00001.png").write_bytes(b"partial")
    assert extract_all(clips, out, videos=["vidA", "vidB"]) == []
    assert marker.read_text() == "kept", "a finished video must be skipped"
    assert not leftover.exists()
    assert len(list((out / "vidB").iterdir())) == 3
    # --overwrite decodes again and replaces the folder
    assert extract_all(clips, out, videos=["vidA"], overwrite=True) == []
    assert not marker.exists() and len(list((out / "vidA").iterdir())) == 5


def test_reports_frame_count_that_disagrees_with_videoset(a2d_root: Path, capsys):
    write_videoset_csv(a2d_root / "Release" / "videoset.csv",
                       [A2DVideo("vidA", 11, "0", "1", HEIGHT, WIDTH, 7, 1, 0),
                        A2DVideo("vidB", 11, "0", "1", HEIGHT, WIDTH, 3, 1, 0)])
    assert main(["--a2d_path", str(a2d_root), "--videos", "vidA", "vidB", "missing"]) == 1
    err = capsys.readouterr().err
    assert "vidA.mp4: decoded 5 frames, videoset.csv says 7" in err
    assert "missing.mp4: not found" in err
    assert "vidB" not in err
