"""The web app (issue 21): scripts/app.py started on a free loopback port with a small random-weights model and
demo-layout data, called through `gradio_client` and driven in headless Chromium (Debian's chromium and
chromium-driver, installed by .ci/run); its masks are those of `inference_rvos.py` on the same video and recording.
Without gradio, selenium or the browser the tests that need them skip, naming what is missing."""
import io
import shutil
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import inference_rvos
from audio_helpers import tone_signal, write_audio
from data_factory import make_ytvos
from model_helpers import save_untrained_checkpoint
from scripts.app import DEFAULT_HOST, get_parser, kept_copy, main as app_main
from scripts.app_screenshot import BROWSER, DRIVER, drive_page, start_app, stop_app
from test_video import CLIP_FPS, clip_frames, write_mp4
from util.errors import OptionError
from util.results import decode_masks, read_results

NUM_FRAMES = 3
MODEL_ARGV = ["--backbone", "resnet18", "--hidden_dim", "96", "--nheads", "8", "--dim_feedforward", "128",
              "--enc_layers", "1", "--dec_layers", "1", "--num_frames", str(NUM_FRAMES),
              "--num_queries", str(NUM_FRAMES), "--masks", "--device", "cpu", "--seed", "0"]
VIDEO_FRAMES = {"vid000": 4, "vid001": 3}
HEIGHT, WIDTH = 48, 64
MAX_SECONDS = 2.0  # the app's limit: the test clip (0.7 s) passes, a 3 s one does not
LONG_CLIP_FRAMES = 30  # 3 s at CLIP_FPS
AUDIO_RATE, AUDIO_SECONDS = 16000, 1.0
LOW_RATE = 4000  # below the app's 8 kHz
MIN_SCREENSHOT_BYTES = 20_000  # a page with its widgets and a video frame; a blank page compresses to far less
MIN_SCREENSHOT_COLOURS = 50


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app on a free port with a small model and two held-out demo-layout videos: (its URL, the data)."""
    pytest.importorskip("gradio")
    pytest.importorskip("gradio_client")
    folder = tmp_path_factory.mktemp("app")
    checkpoint = save_untrained_checkpoint(folder, MODEL_ARGV)
    data = make_ytvos(folder / "data", num_videos=len(VIDEO_FRAMES), num_frames=list(VIDEO_FRAMES.values()),
                      height=HEIGHT, width=WIDTH)
    (folder / "data" / "test_videos.txt").write_text("\n".join(VIDEO_FRAMES) + "\n")  # the demo's held-out list
    process, url = start_app([*MODEL_ARGV, "--model_path", str(checkpoint), "--data_root", data["root"],
                              "--max_seconds", str(MAX_SECONDS)], folder / "app.log")
    yield {"url": url, "checkpoint": checkpoint, "root": Path(data["root"]), "folder": folder}
    stop_app(process)


@pytest.fixture(scope="module")
def client(served):
    from gradio_client import Client
    return Client(served["url"], verbose=False, download_files=str(served["folder"] / "downloads"))


def segment(client, video: str = "vid000", phrase: str = "", recording: Path = None, upload: Path = None):
    from gradio_client import handle_file
    return client.predict(video, handle_file(str(upload)) if upload else None, phrase, "en",
                          handle_file(str(recording)) if recording else None, api_name="/segment")


def masks_of_zip(path: str) -> dict:
    with zipfile.ZipFile(path) as archive:
        return {name: np.asarray(Image.open(io.BytesIO(archive.read(name)))) for name in archive.namelist()}


def video_frame_count(path: str) -> int:
    with av.open(path) as container:
        return sum(1 for _ in container.decode(video=0))


def test_a_typed_phrase_gives_an_overlay_video_masks_and_results(client):
    overlay, masks, results = segment(client, "vid001", phrase="the green square")
    assert video_frame_count(overlay) == VIDEO_FRAMES["vid001"]
    pngs = masks_of_zip(masks)
    assert sorted(pngs) == [f"{i * 5:05d}.png" for i in range(VIDEO_FRAMES["vid001"])]  # the frames' names
    assert all(png.shape == (HEIGHT, WIDTH) for png in pngs.values())
    (entry,) = read_results(results)
    assert entry["file_name"] == "vid001" and entry["exp_id"] == "expression"


def test_an_uploaded_recording_gives_the_masks_of_inference_rvos(client, served, tmp_path):
    wav = tmp_path / "phrase.wav"
    write_audio(wav, tone_signal(AUDIO_RATE, AUDIO_SECONDS), AUDIO_RATE)
    overlay, masks, results = segment(client, "vid000", recording=wav)
    assert video_frame_count(overlay) == VIDEO_FRAMES["vid000"]
    script_results, script_pngs = tmp_path / "results.json", tmp_path / "png"
    inference_rvos.main(MODEL_ARGV + ["--model_path", str(served["checkpoint"]), "--audio", str(wav),
                                      "--video_dir", str(served["root"] / "train" / "JPEGImages" / "vid000"),
                                      "--save_path", str(script_results), "--png_dir", str(script_pngs)])
    app_pngs = masks_of_zip(masks)
    expected = {path.name: np.asarray(Image.open(path)) for path in (script_pngs / "vid000" / "phrase").glob("*.png")}
    assert sorted(app_pngs) == sorted(expected) and len(expected) == VIDEO_FRAMES["vid000"]
    for name, png in expected.items():
        np.testing.assert_array_equal(app_pngs[name], png)
    (app_entry,), (script_entry,) = read_results(results), read_results(script_results)
    np.testing.assert_array_equal(decode_masks(app_entry["segmentations"]),
                                  decode_masks(script_entry["segmentations"]))


def test_an_uploaded_video_is_segmented_and_bad_uploads_get_a_readable_message(client, tmp_path):
    from gradio_client.exceptions import AppError
    clip, long_clip, empty = tmp_path / "clip.mp4", tmp_path / "long.mp4", tmp_path / "empty.wav"
    low_rate = tmp_path / "low_rate.wav"
    write_mp4(clip, clip_frames(), CLIP_FPS)
    write_mp4(long_clip, [clip_frames()[i % len(clip_frames())] for i in range(LONG_CLIP_FRAMES)], CLIP_FPS)
    write_audio(empty, np.zeros(0, dtype=np.int16), AUDIO_RATE)
    write_audio(low_rate, tone_signal(LOW_RATE, AUDIO_SECONDS), LOW_RATE)
    overlay, _, _ = segment(client, phrase="the red square", upload=clip)
    # the app's --fps 6 keeps every other frame of the 10 fps clip
    assert video_frame_count(overlay) == len(range(0, len(clip_frames()), 2))
    for kwargs, message in (({"recording": empty}, "the recording: zero-length recording"),
                            ({"recording": low_rate}, f"the recording's sample rate {LOW_RATE} Hz is not one of speech"),
                            ({"phrase": "   "}, "no expression: type one, or upload or record one"),
                            ({"phrase": "x", "upload": long_clip}, "the video lasts 3 s; this app takes up to 2 s"),
                            ({"phrase": "x", "upload": empty}, "the video: the file holds no video stream")):
        with pytest.raises(AppError) as error:
            segment(client, **kwargs)
        assert str(error.value).startswith(message) and "Traceback" not in str(error.value)


def test_the_page_in_a_real_browser(served, tmp_path):
    pytest.importorskip("selenium")
    for program, package in ((BROWSER, "chromium"), (DRIVER, "chromium-driver")):
        if shutil.which(program) is None:
            pytest.skip(f"{package} is not installed (apt-get install chromium chromium-driver)")
    screenshot = tmp_path / "page.png"
    drive_page(served["url"], "vid001", ["the green square"], screenshot)
    picture = np.asarray(Image.open(screenshot).convert("RGB"))
    assert screenshot.stat().st_size > MIN_SCREENSHOT_BYTES
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > MIN_SCREENSHOT_COLOURS


def test_the_app_listens_on_loopback_and_names_how_to_make_a_missing_model(tmp_path):
    args = get_parser().parse_args([])
    assert args.host == DEFAULT_HOST == "127.0.0.1" and not args.share
    with pytest.raises(OptionError, match=r"no model at .*missing.pth: run `make demo`.*or pass --model_path"):
        app_main(["--model_path", str(tmp_path / "missing.pth")])


def test_an_uploaded_name_does_not_become_a_path(tmp_path):
    (tmp_path / "in").mkdir()
    odd = tmp_path / "in" / "x.w;v"  # a suffix that is not a plain one is dropped
    odd.write_bytes(b"data")
    plain = tmp_path / "in" / "talk.M4A"
    plain.write_bytes(b"data")
    folder = tmp_path / "request"
    folder.mkdir()
    assert kept_copy(str(odd), folder, "recording") == folder / "recording"
    assert kept_copy(str(plain), folder, "recording") == folder / "recording.M4A"
    assert sorted(path.name for path in folder.iterdir()) == ["recording", "recording.M4A"]
