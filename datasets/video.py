"""Frames of a video file (any container FFmpeg reads, through PyAV), in presentation order, optionally subsampled.

    frames = read_video_frames("clip.mp4", fps=6, max_frames=900)   # VideoFrames(images, names, fps)
    seconds = video_seconds("clip.mp4")   # from the header, nothing decoded: a limit checked before the work

A file without a video stream, one FFmpeg cannot read, or one with more than `max_frames` frames (after the
subsampling) raises a `DataFormatError` naming the file, so the caller stops with one line.
"""
import contextlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, List, Tuple, Union

from PIL import Image

from datasets.formats import DataFormatError

PathLike = Union[str, Path]

FRAME_NAME_DIGITS = 5  # frame names are the source frame's index, zero-padded like the Ref-YouTube-VOS release's


@dataclass
class VideoFrames:
    images: List[Image.Image]  # RGB
    names: List[str]  # the index of each frame in the source video, zero-padded: results and PNGs are named by it
    fps: float  # the rate of the frames kept (the video's rate, or the subsampled one)


def _video_stream(container, path: PathLike):
    stream = next((s for s in container.streams if s.type == "video"), None)
    if stream is None:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise DataFormatError(f"{path}: the file holds no video stream (its streams: {', '.join(kinds)})")
    return stream


@contextlib.contextmanager
def _open_video(path: Path) -> Iterator[Tuple[object, object]]:
    """`(container, its first video stream)` of `path`; a missing file is a FileNotFoundError, and FFmpeg's errors
    while it is open (decoding included) a DataFormatError naming the file."""
    import av  # FFmpeg: imported here, only videos need it

    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    try:
        with av.open(str(path)) as container:
            yield container, _video_stream(container, path)
    except av.FFmpegError as error:
        raise DataFormatError(f"{path}: not a readable video ({error.strerror or error})") from None


def video_seconds(path: PathLike) -> float:
    """How long the first video stream of `path` lasts, in seconds, as its header says (its own duration, else the
    container's; 0.0 when neither is recorded). Nothing is decoded; errors as `read_video_frames`'s."""
    import av

    with _open_video(Path(path)) as (container, stream):
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        return float(container.duration or 0) / av.time_base


def read_video_frames(path: PathLike, fps: float = 0.0, max_frames: int = 0) -> VideoFrames:
    """Decode the first video stream of `path` into RGB images, in presentation order.

    `fps` > 0 keeps about `fps` frames per second (a frame is kept when its time reaches the next multiple of
    1/`fps`; every frame when the video's own rate is not higher); `max_frames` > 0 refuses longer videos
    (counted after the subsampling) before they fill the memory.
    """
    path = Path(path)
    with _open_video(path) as (container, stream):
        source_fps = float(stream.average_rate or stream.guessed_rate or 0)
        subsample = fps > 0 and (not source_fps or fps < source_fps)
        step = Fraction(1) / Fraction(fps).limit_denominator() if subsample else Fraction(0)
        images, names, next_time = [], [], Fraction(0)
        for index, frame in enumerate(container.decode(stream)):
            if subsample:
                time = Fraction(frame.pts - (stream.start_time or 0)) * stream.time_base \
                    if frame.pts is not None else Fraction(index) / Fraction(source_fps).limit_denominator()
                if time < next_time:
                    continue
                while next_time <= time:
                    next_time += step
            if max_frames and len(images) == max_frames:
                raise DataFormatError(f"{path}: more than --max_frames {max_frames} frames"
                                      f"{f' at --fps {fps:g}' if subsample else ''}; pass a lower --fps or a "
                                      f"higher --max_frames")
            images.append(frame.to_image())  # RGB24
            names.append(f"{index:0{FRAME_NAME_DIGITS}d}")
    if not images:
        raise DataFormatError(f"{path}: the video stream holds no frames")
    return VideoFrames(images, names, float(fps) if subsample else source_fps)

