"""Video files in and overlay videos out (issue 21): `inference_rvos.py --video clip.mp4 --audio phrase.m4a
--save_video out.mp4` on a small random-weights model, against the same frames as a folder."""
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import List, Tuple

import av
import numpy as np
import pytest

import inference_rvos
from data_factory import draw_frame, object_box
from datasets.audio.io import load_audio
from datasets.formats import DataFormatError, write_png
from datasets.video import read_video_frames
from model_helpers import save_untrained_checkpoint
from util.results import decode_masks, read_results

ROOT = Path(__file__).resolve().parents[1]
NUM_FRAMES = 3
MODEL_ARGV = ["--backbone", "resnet18", "--hidden_dim", "96", "--nheads", "8", "--dim_feedforward", "128",
              "--enc_layers", "1", "--dec_layers", "1", "--num_frames", str(NUM_FRAMES),
              "--num_queries", str(NUM_FRAMES), "--masks", "--device", "cpu", "--seed", "0"]
HEIGHT, WIDTH = 48, 64  # even: the overlay video keeps the frames' size
CLIP_FRAMES, CLIP_FPS = 7, 10
AUDIO_RATE, AUDIO_SECONDS = 16000, 1.3
DURATION_TOLERANCE_S = 0.05  # issue 21: the audio track lasts the recording's duration +- 50 ms
SUBPROCESS_TIMEOUT_S = 300


def clip_frames() -> List[np.ndarray]:
    """A demo-like clip: two coloured rectangles moving over a background whose colour changes every frame."""
    return [draw_frame(i, {k: object_box(k, i, HEIGHT, WIDTH) for k in (1, 2)}, HEIGHT, WIDTH)[0]
            for i in range(CLIP_FRAMES)]


def write_mp4(path: Path, frames: List[np.ndarray], fps: int, audio: Tuple[np.ndarray, int] = None) -> None:
    """H.264 video (and an AAC track of int16 mono samples) written by PyAV directly, not by the code under test."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        sound = container.add_stream("aac", rate=audio[1], layout="mono") if audio is not None else None
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode(None))
        if sound is not None:
            encode_audio(container, sound, *audio)


def encode_audio(container, sound, samples: np.ndarray, rate: int) -> None:
    frame = av.AudioFrame.from_ndarray(samples[None], format="s16", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format=sound.codec_context.format.name, layout="mono", rate=rate,
                                  frame_size=sound.codec_context.frame_size)
    position = 0
    for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
        chunk.pts, chunk.time_base, position = position, Fraction(1, rate), position + chunk.samples
        container.mux(sound.encode(chunk))
    container.mux(sound.encode(None))


def write_audio_file(path: Path, samples: np.ndarray, rate: int, fmt: str, codec: str) -> None:
    with av.open(str(path), "w", format=fmt) as container:
        encode_audio(container, container.add_stream(codec, rate=rate, layout="mono"), samples, rate)


def phrase() -> np.ndarray:
    """A 'recording': a chirp with noise, int16."""
    t = np.arange(int(AUDIO_RATE * AUDIO_SECONDS)) / AUDIO_RATE
    signal = 0.3 * np.sin(2 * np.pi * (200 + 400 * t) * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size)
    return (signal * 32767).astype(np.int16)


def decoded_audio_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        (stream,) = container.streams.audio
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.rate


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_untrained_checkpoint(tmp_path_factory.mktemp("ckpt"), MODEL_ARGV)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("media")
    clip, recording, m4a = folder / "clip.mp4", folder / "phrase.mp3", folder / "phrase.m4a"
    write_mp4(clip, clip_frames(), CLIP_FPS)
    write_audio_file(recording, phrase(), AUDIO_RATE, "mp3", "libmp3lame")  # gapless: decodes to its length
    write_audio_file(m4a, phrase(), AUDIO_RATE, "mp4", "aac")
    # the same frames as a folder: the decoded ones (H.264 is lossy), stored losslessly
    frames_dir = folder / "frames"
    with av.open(str(clip)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            write_png(frames_dir / f"{index:05d}.png", frame.to_ndarray(format="rgb24"))
    return {"clip": clip, "recording": recording, "m4a": m4a, "frames_dir": frames_dir}


def test_a_video_file_gives_the_masks_of_its_frames_and_an_overlay_video(tmp_path, checkpoint, media):
    from_video, from_folder, overlay = tmp_path / "video.json", tmp_path / "folder.json", tmp_path / "out" / "o.mp4"
    inference_rvos.main(MODEL_ARGV + ["--model_path", str(checkpoint), "--video", str(media["clip"]),
                                      "--audio", str(media["recording"]), "--save_path", str(from_video),
                                      "--save_video", str(overlay)])
    inference_rvos.main(MODEL_ARGV + ["--model_path", str(checkpoint), "--video_dir", str(media["frames_dir"]),
                                      "--audio", str(media["recording"]), "--save_path", str(from_folder)])
    (video_entry,), (folder_entry,) = read_results(from_video), read_results(from_folder)
    video_masks, folder_masks = decode_masks(video_entry["segmentations"]), decode_masks(folder_entry["segmentations"])
    assert video_masks.shape == (CLIP_FRAMES, HEIGHT, WIDTH)
    np.testing.assert_array_equal(video_masks, folder_masks)
    assert video_entry["file_name"] == "clip" and video_entry["exp_id"] == "phrase"

    with av.open(str(overlay)) as container:
        (video,), (audio,) = container.streams.video, container.streams.audio
        assert video.codec_context.name in ("h264", "libx264")
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video)]
    assert len(frames) == CLIP_FRAMES and frames[0].shape == (HEIGHT, WIDTH, 3)
    assert float(video.average_rate) == pytest.approx(CLIP_FPS)
    samples, rate = load_audio(media["recording"])
    assert samples.size / rate == pytest.approx(AUDIO_SECONDS)
    assert decoded_audio_seconds(overlay) == pytest.approx(AUDIO_SECONDS, abs=DURATION_TOLERANCE_S)
    assert not list(overlay.parent.glob(".*.tmp"))  # written through a temporary file, renamed


def test_the_audio_track_of_a_video_file_is_a_recording(tmp_path, checkpoint, media):
    talking = tmp_path / "talking.mp4"
    write_mp4(talking, clip_frames(), CLIP_FPS, (phrase(), AUDIO_RATE))
    from_track, from_m4a = tmp_path / "track.json", tmp_path / "m4a.json"
    for audio, out in ((talking, from_track), (media["m4a"], from_m4a)):
        inference_rvos.main(MODEL_ARGV + ["--model_path", str(checkpoint), "--video", str(talking),
                                          "--audio", str(audio), "--save_path", str(out)])
    (track,), (m4a,) = read_results(from_track), read_results(from_m4a)
    np.testing.assert_array_equal(decode_masks(track["segmentations"]), decode_masks(m4a["segmentations"]))


def test_fps_subsamples_in_order(media):
    every = read_video_frames(media["clip"])
    assert every.names == [f"{i:05d}" for i in range(CLIP_FRAMES)] and every.fps == pytest.approx(CLIP_FPS)
    half = read_video_frames(media["clip"], fps=CLIP_FPS / 2)
    assert half.names == [f"{i:05d}" for i in range(0, CLIP_FRAMES, 2)] and half.fps == pytest.approx(CLIP_FPS / 2)
    # the frames keep their order: the background's blue channel counts the frames (data_factory)
    blues = [np.asarray(image)[0, -1, 2] for image in every.images]
    assert all(a < b for a, b in zip(blues, blues[1:]))


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "inference_rvos.py"), *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=SUBPROCESS_TIMEOUT_S)


def test_a_file_without_a_video_stream_and_a_long_video_are_refused_in_one_line(tmp_path, checkpoint, media):
    with pytest.raises(DataFormatError, match="holds no video stream"):
        read_video_frames(media["recording"])
    with pytest.raises(DataFormatError, match="more than --max_frames 3"):
        read_video_frames(media["clip"], max_frames=3)
    for video, max_frames, expected in ((media["recording"], "900", "the file holds no video stream (its streams: audio)"),
                                        (media["clip"], "3", "more than --max_frames 3 frames")):
        done = run_cli(*MODEL_ARGV, "--model_path", str(checkpoint), "--video", str(video), "--audio",
                       str(media["recording"]), "--max_frames", max_frames, "--save_path", str(tmp_path / "r.json"))
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert done.returncode == 1 and len(errors) == 1 and "Traceback" not in done.stderr
        assert errors[0].startswith(f"error: {video}: {expected}")
    assert not (tmp_path / "r.json").exists()


def test_a_split_writes_one_overlay_video_per_video(tmp_path, checkpoint):
    from data_factory import make_ytvos
    data = make_ytvos(tmp_path / "ytvos", num_videos=2, num_frames=[4, 2], height=HEIGHT, width=WIDTH)
    videos = tmp_path / "videos"
    inference_rvos.main(MODEL_ARGV + ["--model_path", str(checkpoint), "--ytvos_path", data["root"],
                                      "--rvos_audio_path", data["audio_root"], "--save_path", str(tmp_path / "r.json"),
                                      "--save_video", str(videos)])
    for name, count in (("vid000", 4), ("vid001", 2)):
        with av.open(str(videos / f"{name}.mp4")) as container:
            assert not container.streams.audio  # extracted features: no recording to play
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        # below the frame, a caption band per expression (their words are known)
        assert len(frames) == count and frames[0].shape[0] > HEIGHT and frames[0].shape[1] == WIDTH


def test_without_an_h264_encoder_another_codec_is_used(tmp_path, monkeypatch):
    import util.video_writer as video_writer
    monkeypatch.setattr(video_writer, "VIDEO_CODECS", ("no_such_encoder", "mpeg4"))
    frames = [frame[:-1, :-1] for frame in clip_frames()]  # odd sizes: padded by one row and column
    out = tmp_path / "fallback.mp4"
    assert video_writer.write_video(out, frames, fps=CLIP_FPS) == "mpeg4"
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "mpeg4" and not container.streams.audio
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(decoded) == CLIP_FRAMES and decoded[0].shape == (HEIGHT, WIDTH, 3)


def test_a_save_video_name_without_a_video_suffix_fails_before_any_work(tmp_path, checkpoint, media):
    from util.errors import OptionError
    with pytest.raises(OptionError, match=r"--save_video .*out.gif: expected a file ending in .mp4"):
        inference_rvos.main(MODEL_ARGV + ["--model_path", str(checkpoint), "--video", str(media["clip"]),
                                          "--audio", str(media["recording"]), "--save_video", str(tmp_path / "out.gif"),
                                          "--save_path", str(tmp_path / "r.json")])
    assert not (tmp_path / "r.json").exists()
