"""Videos out (PyAV): frames as H.264 where the FFmpeg build has an encoder for it, a recording as the audio track,
written atomically (a temporary name renamed onto the target).

    codec = write_video("out.mp4", frames, fps=6.0, audio=samples, sample_rate=22050)   # -> the video codec used
"""
from fractions import Fraction
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from util.errors import OptionError
from util.misc import atomic_write

PathLike = Union[str, Path]

# H.264 first (every player has it), then MPEG-4 part 2, which every FFmpeg build ships.
VIDEO_CODECS = ("libx264", "h264", "mpeg4")
H264_CODECS = ("libx264", "h264")
PIXEL_FORMAT = "yuv420p"  # the one players expect; it halves the chroma, so sizes are padded to even numbers
CHROMA_STEP = 2
AUDIO_CODEC = "aac"
# The sound's rate: the players' usual one, at which AAC's 1024-sample frames pad the end by at most 21 ms.
AUDIO_TRACK_RATE = 48000
FPS_DENOMINATOR = 1001  # NTSC-style rates (29.97) stay exact
INT16_SCALE = 32768.0  # recordings arrive as float samples in int16 units (datasets.audio.io.load_audio)
CONTAINER_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


def container_format(path: PathLike) -> str:
    """The FFmpeg muxer of an output path by its suffix (`.mp4`, `.m4v`, `.mov`, `.mkv`)."""
    suffix = Path(path).suffix.lower()
    if suffix not in CONTAINER_FORMATS:
        raise OptionError(f"--save_video {path}: expected a file ending in {', '.join(CONTAINER_FORMATS)}")
    return CONTAINER_FORMATS[suffix]


def video_codec() -> str:
    """The first encoder of `VIDEO_CODECS` this PyAV build has."""
    import av

    for name in VIDEO_CODECS:
        try:
            av.codec.Codec(name, "w")
        except av.codec.codec.UnknownCodecError:
            continue
        return name
    raise RuntimeError(f"this PyAV build has none of the video encoders {VIDEO_CODECS}")


def _even(frame: np.ndarray) -> np.ndarray:
    """Pad the bottom and right edges (repeating the last row / column) to even sizes, as yuv420p needs."""
    pad_h, pad_w = frame.shape[0] % CHROMA_STEP, frame.shape[1] % CHROMA_STEP
    return np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge") if pad_h or pad_w else frame


def _write(tmp: str, fmt: str, codec: str, frames: Sequence[np.ndarray], fps: float, audio: Optional[np.ndarray],
           sample_rate: int) -> None:
    import av

    height, width = _even(frames[0]).shape[:2]
    with av.open(tmp, "w", format=fmt) as container:
        video = container.add_stream(codec, rate=Fraction(fps).limit_denominator(FPS_DENOMINATOR))
        video.width, video.height, video.pix_fmt = width, height, PIXEL_FORMAT
        sound = None
        if audio is not None:
            sound = container.add_stream(AUDIO_CODEC, rate=AUDIO_TRACK_RATE, layout="mono")
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(_even(frame), format="rgb24")))
        container.mux(video.encode(None))
        if sound is not None:
            samples = np.clip(np.rint(audio), -INT16_SCALE, INT16_SCALE - 1).astype(np.int16)[None]  # [1, n]
            recording = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            recording.sample_rate = sample_rate
            resampler = av.AudioResampler(format=sound.codec_context.format.name, layout="mono", rate=sound.rate,
                                          frame_size=sound.codec_context.frame_size)
            position = 0
            for chunk in [*resampler.resample(recording), *resampler.resample(None)]:
                # timestamps from 0: the encoder's priming samples get negative ones, which the muxer's edit
                # list skips, so the track lasts as long as the recording
                chunk.pts, chunk.time_base = position, Fraction(1, sound.rate)
                position += chunk.samples
                container.mux(sound.encode(chunk))
            container.mux(sound.encode(None))


def write_video(path: PathLike, frames: Sequence[np.ndarray], fps: float, audio: Optional[np.ndarray] = None,
                sample_rate: int = 0) -> str:
    """Write `frames` (`[H, W, 3]` uint8 RGB, one size) at `fps` to `path` (its suffix picks the container), with
    `audio` (mono float samples in int16 units at `sample_rate` Hz) as an AAC track when given. Odd sizes are
    padded by one row / column. Returns the video codec used (`video_codec()`)."""
    if not frames:
        raise ValueError(f"{path}: write_video needs at least one frame")
    if len({frame.shape for frame in frames}) != 1:
        raise ValueError(f"{path}: frames differ in size {sorted({frame.shape for frame in frames})}")
    if not fps > 0:
        raise ValueError(f"{path}: fps must be positive, got {fps}")
    if audio is not None and (not sample_rate or not len(audio)):
        raise ValueError(f"{path}: an audio track needs samples and their rate")
    fmt, codec = container_format(path), video_codec()
    atomic_write(path, lambda tmp: _write(tmp, fmt, codec, frames, fps, audio, sample_rate))
    return codec
