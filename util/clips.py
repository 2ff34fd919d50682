"""Where frames sit in a clip: the middle frame the A2D/JHMDB protocol and the single-frame losses score, and the
consecutive clips that cover a whole video at inference."""
from typing import List, Tuple


def middle_frame_index(num_frames: int) -> int:
    """Position in a clip of `num_frames` of its centre frame, `(T - 1) // 2` (the earlier one of the two centres
    of an even clip): where A2D / JHMDB put the annotated frame."""
    return (num_frames - 1) // 2


def cyclic_clips(video_len: int, clip_len: int) -> List[Tuple[List[int], int]]:
    """Cover the frames `0..video_len-1` of a video with consecutive clips of `clip_len` frames.

    Returns `(frame indices of the clip, number of new frames it predicts)`. A clip short of frames
    (the last one, or the only one of a short video) repeats its frames cyclically, as the official
    does for videos shorter than the clip; only its first `count` predictions are kept.
    """
    clips = []
    for start in range(0, video_len, clip_len):
        own = list(range(start, min(start + clip_len, video_len)))
        clips.append(([own[j % len(own)] for j in range(clip_len)], len(own)))
    return clips
