"""The demo dataset: moving coloured shapes with spoken referring expressions, in the Ref-YouTube-VOS layout.

    python scripts/make_demo_data.py --out data/demo --seed 0 [--num_train_videos 24 --num_test_videos 6
                                     --frames 16 --size 120x216 --min_objects 2 --max_objects 3
                                     --num_colours 6 --num_shapes 6 --num_voices 9 --test_voices V1,V2
                                     --speakers {fixed,varied} --held_out_speakers {seen,unseen} --force]

Every video shows 2-3 shapes (circle, square, triangle, star, heart, cross) that differ in colour AND shape,
each in a "small" or "big" size, moving in a straight line along one of the four directions so that their
paths cross near the middle of the frame; a random depth order decides who covers whom, and the label maps
keep only the visible pixels. The background is a smooth, mildly tinted texture plus per-frame noise. Each
object gets one spoken expression naming its colour and shape, sometimes its size and its motion
("the small blue square moving left"); no two objects of a video share an expression, so only the audio
tells which one to segment. `--num_colours`, `--num_shapes` and `--num_voices` keep only the first ones of
each list (a smaller vocabulary and fewer voices make a dataset that a small model learns in minutes on the
CPU, see scripts/demo.py).

Speech comes from eSpeak NG. `--speakers fixed` (the default) speaks with the first `--num_voices` English
voices at several rates; `--test_voices` keeps some of them for the held-out videos only. `--speakers varied`
gives every recording its own speaker: a voice of the training pool (every English accent but two, times
every curated voice variant but six, see datasets/speech.py) with its own rate, pitch, pitch range and word
gap. `--held_out_speakers unseen` then speaks the held-out videos with the unseen pool (the two accents times
the six variants: no accent nor variant a training video has), and nothing else changes: the frames, masks
and texts are those of `--held_out_speakers seen`, so that `--num_train_videos 0 --held_out_speakers unseen`
makes the unseen-speaker copy of the held-out videos of a dataset.

Written under OUT (all videos in the `train` split, as our RVOS loaders read the train split for both):

    train/JPEGImages/<vid>/00000.jpg ...         frames
    train/Annotations/<vid>/00000.png ...        palette PNG, pixel value = object id (0 = background)
    train/meta.json                              objects per video (category, frames where visible)
    meta_expressions/train/meta_expressions.json {"videos": {vid: {"expressions": {exp_id: {"exp", "obj_id"}},
                                                  "frames": [...]}}}
    ann/instances_{train,test}_sub.json          YouTube-VIS style split files (the official training reads these)
    train_videos.txt, test_videos.txt            the same split as text files of video ids
    audio_wav/<vid>_<exp_id>.wav                 the spoken expressions (16-bit PCM, 22050 Hz)
    audio_wav/speech.json                        text, eSpeak NG voice and rate of each recording (with
                                                 --speakers varied also pitch, pitch range, word gap, seed)
    audio_feature/<vid>_<exp_id>.npy             their MFCC-39 features, float64 [frames, 39] (docs/protocol.md §5, §6)
    .complete                                    the generation parameters; written last

The dataset is built in a temporary folder next to OUT and renamed onto it at the end, so a killed run leaves
no half dataset; a complete OUT made with the same parameters is kept as it is.

Deterministic for a seed: the same parameters give the same bytes when run in a fresh process. eSpeak NG
seeds its own random generator (breathy voice variants such as `en+f3` use it) from the clock, so it is
re-seeded before every synthesis; it also carries state from one synthesis to the next inside a process, so
the audio depends on the order of the syntheses, which is fixed here.
"""
import argparse
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from datasets.audio import mfcc39, save_features
from datasets.formats import write_jpeg, write_json, write_palette_png
from datasets.speech import (ENGLISH_VOICES, SPEECH_RATE_WPM, SPEECH_SEED_RANGE, TRAINING_VOICES, UNSEEN_VOICES,
                             check_voices, draw_style, parse_voices, seed_speech, synthesize, synthesize_style,
                             write_wav)
from datasets.ytvos_format import vis_annotation_from_masks, write_meta_expressions, write_vis_instances
from util.misc import atomic_directory

SPLIT_DIR = "train"  # every video lives in the train split; the split files say which are held out
COMPLETE_MARKER = ".complete"
FRAME_NAME = "{:05d}"

COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (215, 35, 35), "green": (40, 175, 60), "blue": (40, 80, 225),
    "yellow": (235, 215, 40), "purple": (145, 55, 200), "orange": (245, 135, 25),
}
SHAPES = ("circle", "square", "triangle", "star", "heart", "cross")
# Object radius as a fraction of the frame height, per spoken size.
SIZE_RADIUS = {"small": (0.11, 0.13), "big": (0.17, 0.20)}
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
SPEED_RANGE = (0.008, 0.016)  # pixels per frame, as a fraction of the frame width
DIRECTION_JITTER_DEG = 20.0  # motion stays clearly "left", "right", "up" or "down"
CROSSING_JITTER = 0.15  # paths cross within this fraction of the frame size around its centre
CROSSING_TIME = (0.3, 0.7)  # ... at this fraction of the video
COLOUR_JITTER = 12  # per-channel variation of an object's colour
P_SAY_SIZE = 0.35  # how often an expression also names the size
P_SAY_MOTION = 0.35  # ... and the motion

BACKGROUND_LEVEL = (70, 120)  # the background's grey level range
BACKGROUND_TINT = 15  # per-channel tint of the background
TEXTURE_CELL = 12  # pixels per cell of the smooth background texture
TEXTURE_AMPLITUDE = 18
FRAME_NOISE_STD = 4.0  # per-pixel noise added to every frame

MIN_VISIBLE_FRACTION = 0.4  # an object must show this much of its area ...
MIN_VISIBLE_FRAMES = 0.6  # ... on this fraction of the frames, or the video is drawn again
MAX_LAYOUT_TRIES = 50

VOICES = ENGLISH_VOICES
# --speakers: "fixed", the first --num_voices of VOICES at eSpeak NG's default prosody (the datasets made before
# the speaker pools, byte for byte); "varied", a voice of the training pool (datasets.speech.TRAINING_VOICES) and
# a prosody drawn per recording. --held_out_speakers: "seen", the held-out videos draw as the training ones;
# "unseen" (with "varied"), from datasets.speech.UNSEEN_VOICES, no accent nor variant of which is in training.
SPEAKER_MODES = ("fixed", "varied")
HELD_OUT_SPEAKER_MODES = ("seen", "unseen")


@dataclass
class DemoConfig:
    """What `generate` makes; stored in the `.complete` marker."""

    seed: int = 0
    num_train_videos: int = 24
    num_test_videos: int = 6
    num_frames: int = 16
    height: int = 120
    width: int = 216
    min_objects: int = 2
    max_objects: int = 3
    num_colours: int = len(COLOURS)  # the first ones of COLOURS: a smaller vocabulary learns faster
    num_shapes: int = len(SHAPES)  # ... of SHAPES
    num_voices: int = len(VOICES)  # ... of VOICES
    p_say_size: float = P_SAY_SIZE
    p_say_motion: float = P_SAY_MOTION
    speed_scale: float = 1.0  # multiplies SPEED_RANGE: short videos need faster shapes to separate them
    size_scale: float = 1.0  # multiplies SIZE_RADIUS: at low resolution, larger shapes leave the masks' edges less weight
    # Voices heard only in the held-out videos (the training videos keep the others of the first num_voices);
    # empty: every video draws from the first num_voices.
    test_voices: Tuple[str, ...] = ()
    speakers: str = "fixed"  # one of SPEAKER_MODES
    held_out_speakers: str = "seen"  # one of HELD_OUT_SPEAKER_MODES

    def check(self) -> None:
        if self.num_train_videos < 0 or self.num_test_videos < 0 or self.num_train_videos + self.num_test_videos == 0:
            raise ValueError("need at least one video (--num_train_videos / --num_test_videos >= 0, not both 0)")
        if self.num_frames < 1:
            raise ValueError(f"--frames must be >= 1, got {self.num_frames}")
        if self.height < 32 or self.width < 32:
            raise ValueError(f"--size must be at least 32x32, got {self.height}x{self.width}")
        for name, value, known in (("--num_colours", self.num_colours, COLOURS), ("--num_shapes", self.num_shapes, SHAPES),
                                   ("--num_voices", self.num_voices, VOICES)):
            if not 1 <= value <= len(known):
                raise ValueError(f"{name} must be in 1..{len(known)}, got {value}")
        if self.speed_scale <= 0:
            raise ValueError(f"--speed_scale must be > 0, got {self.speed_scale}")
        if self.size_scale <= 0:
            raise ValueError(f"--size_scale must be > 0, got {self.size_scale}")
        for name, value in (("--p_say_size", self.p_say_size), ("--p_say_motion", self.p_say_motion)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {value}")
        if self.speakers not in SPEAKER_MODES:
            raise ValueError(f"--speakers must be one of {', '.join(SPEAKER_MODES)}, got {self.speakers!r}")
        if self.held_out_speakers not in HELD_OUT_SPEAKER_MODES:
            raise ValueError(f"--held_out_speakers must be one of {', '.join(HELD_OUT_SPEAKER_MODES)}, "
                             f"got {self.held_out_speakers!r}")
        if self.speakers == "varied" and (self.test_voices or self.num_voices != len(VOICES)):
            raise ValueError("--num_voices and --test_voices choose the voices of --speakers fixed; --speakers "
                             "varied draws from the speaker pools (--held_out_speakers unseen for unseen ones)")
        if self.held_out_speakers == "unseen" and self.speakers != "varied":
            raise ValueError("--held_out_speakers unseen needs --speakers varied (with fixed voices, "
                             "--test_voices picks the held-out ones)")
        if self.test_voices:
            if not self.train_voices():
                raise ValueError(f"--test_voices {','.join(self.test_voices)} leave no training voice among the "
                                 f"first --num_voices {self.num_voices} ({', '.join(VOICES[:self.num_voices])})")
            check_voices(self.test_voices)
        if not 1 <= self.min_objects <= self.max_objects <= min(self.num_colours, self.num_shapes):
            raise ValueError(f"need 1 <= --min_objects <= --max_objects <= {min(self.num_colours, self.num_shapes)} "
                             f"(objects of a video differ in colour and shape), "
                             f"got {self.min_objects} and {self.max_objects}")

    def train_voices(self) -> Tuple[str, ...]:
        """The voices of the training videos: the first `num_voices` less the test voices, or with "varied"
        speakers the training pool."""
        if self.speakers == "varied":
            return TRAINING_VOICES
        return tuple(v for v in VOICES[:self.num_voices] if v not in self.test_voices)

    def held_out_voices(self) -> Tuple[str, ...]:
        """The voices of the held-out videos: `test_voices`, the unseen pool with "unseen" held-out speakers,
        else the training ones."""
        if self.held_out_speakers == "unseen":
            return UNSEEN_VOICES
        return tuple(self.test_voices) or self.train_voices()

    def record(self) -> dict:
        """What the `.complete` marker stores: the fields, `test_voices`, `speakers` and `held_out_speakers`
        only when not the default (so that a dataset made without them keeps its marker byte for byte)."""
        record = asdict(self)
        defaults = DemoConfig()
        for name in ("speakers", "held_out_speakers"):
            if record[name] == getattr(defaults, name):
                del record[name]
        if not self.test_voices:
            del record["test_voices"]
        else:
            record["test_voices"] = list(self.test_voices)
        return record


@dataclass
class DemoObject:
    """One shape of a video: what it is, how it moves, and how it is spoken about."""

    obj_id: int
    shape: str
    colour: str
    size: str
    direction: str
    rgb: Tuple[int, int, int]
    radius: float
    depth: int  # 0 is drawn first (farthest)
    centres: List[Tuple[float, float]]  # (x, y) per frame
    expression: str = ""


@dataclass
class DemoVideo:
    """A rendered video: `frames [T, H, W, 3]` uint8, `labels [T, H, W]` uint8 object ids, its objects."""

    video_id: str
    frames: np.ndarray
    labels: np.ndarray
    objects: List[DemoObject] = field(default_factory=list)


# ----------------------------------------------------------------------------- drawing
def _polygon(cx: float, cy: float, radii: Sequence[float], start_deg: float) -> List[Tuple[float, float]]:
    """Vertices at equal angles from `start_deg`, at the given distances from the centre."""
    step = 2 * math.pi / len(radii)
    start = math.radians(start_deg)
    return [(cx + r * math.cos(start + i * step), cy + r * math.sin(start + i * step)) for i, r in enumerate(radii)]


def _heart(cx: float, cy: float, radius: float) -> List[Tuple[float, float]]:
    """The classic parametric heart, scaled to about `radius`."""
    heart_extent = 16.0  # the curve's half width in its own units
    scale = radius / heart_extent
    points = []
    for t in np.linspace(0, 2 * math.pi, 48, endpoint=False):
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        points.append((cx + scale * x, cy - scale * (y + 2.5)))  # + 2.5 centres it vertically
    return points


def _cross(cx: float, cy: float, radius: float) -> List[Tuple[float, float]]:
    """A plus sign with arms of half-width 0.38 radius."""
    a, b = 0.38 * radius, 1.05 * radius
    corners = [(a, b), (a, a), (b, a), (b, -a), (a, -a), (a, -b), (-a, -b), (-a, -a), (-b, -a), (-b, a), (-a, a),
               (-a, b)]
    return [(cx + x, cy + y) for x, y in corners]


def shape_mask(shape: str, cx: float, cy: float, radius: float, height: int, width: int) -> np.ndarray:
    """Boolean `[H, W]` mask of a shape centred at (cx, cy), about `radius` pixels from centre to edge."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=1)
    elif shape == "square":
        half = 0.88 * radius  # about the area of the circle
        draw.rectangle([cx - half, cy - half, cx + half, cy + half], fill=1)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy + 0.2 * radius, [1.3 * radius] * 3, -90), fill=1)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, [1.3 * radius, 0.55 * radius] * 5, -90), fill=1)
    elif shape == "heart":
        draw.polygon(_heart(cx, cy, 1.1 * radius), fill=1)
    elif shape == "cross":
        draw.polygon(_cross(cx, cy, radius), fill=1)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")
    return np.asarray(canvas, dtype=bool)


def make_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth tinted texture, float `[H, W, 3]`."""
    level = rng.uniform(*BACKGROUND_LEVEL)
    tint = rng.uniform(-BACKGROUND_TINT, BACKGROUND_TINT, size=3)
    cells = rng.uniform(-1, 1, size=(height // TEXTURE_CELL + 2, width // TEXTURE_CELL + 2)).astype(np.float32)
    smooth = np.asarray(Image.fromarray(cells, mode="F").resize((width, height), Image.BICUBIC))  # [H, W]
    return level + tint[None, None, :] + TEXTURE_AMPLITUDE * smooth[:, :, None]


# ----------------------------------------------------------------------------- layout and expressions
def _path(rng: np.random.Generator, direction: str, radius: float, config: DemoConfig) -> List[Tuple[float, float]]:
    """Centres per frame of a straight motion crossing near the frame's middle, kept (mostly) inside the frame."""
    h, w, t = config.height, config.width, config.num_frames
    dx, dy = DIRECTIONS[direction]
    angle = math.radians(rng.uniform(-DIRECTION_JITTER_DEG, DIRECTION_JITTER_DEG))
    vx, vy = dx * math.cos(angle) - dy * math.sin(angle), dx * math.sin(angle) + dy * math.cos(angle)
    speed = rng.uniform(*SPEED_RANGE) * config.speed_scale * w
    crossing_time = rng.uniform(*CROSSING_TIME) * (t - 1)
    cross_x = w / 2 + rng.uniform(-CROSSING_JITTER, CROSSING_JITTER) * w
    cross_y = h / 2 + rng.uniform(-CROSSING_JITTER, CROSSING_JITTER) * h
    times = np.arange(t) - crossing_time
    xs, ys = cross_x + speed * vx * times, cross_y + speed * vy * times
    # Shift the whole path (not the motion) so the centre stays at least half a radius inside the frame.
    margin = radius / 2
    for coords, extent in ((xs, w), (ys, h)):
        low, high = margin - coords.min(), extent - margin - coords.max()
        coords += min(max(0.0, low), high) if low <= high else (low + high) / 2
    return [(float(x), float(y)) for x, y in zip(xs, ys)]


def describe(obj: DemoObject, rng: np.random.Generator, p_say_size: float = P_SAY_SIZE,
             p_say_motion: float = P_SAY_MOTION) -> str:
    """The spoken expression: colour and shape, sometimes also the size and the motion."""
    words = ["the"]
    if rng.random() < p_say_size:
        words.append(obj.size)
    words += [obj.colour, obj.shape]
    if rng.random() < p_say_motion:
        words += ["moving", obj.direction]
    return " ".join(words)


def _layout(rng: np.random.Generator, config: DemoConfig) -> List[DemoObject]:
    num_objects = int(rng.integers(config.min_objects, config.max_objects + 1))
    colours = rng.choice(list(COLOURS)[:config.num_colours], size=num_objects, replace=False)
    shapes = rng.choice(SHAPES[:config.num_shapes], size=num_objects, replace=False)
    depths = rng.permutation(num_objects)
    objects = []
    for index in range(num_objects):
        size = str(rng.choice(list(SIZE_RADIUS)))
        radius = rng.uniform(*SIZE_RADIUS[size]) * config.size_scale * config.height
        direction = str(rng.choice(list(DIRECTIONS)))
        base = np.array(COLOURS[str(colours[index])])
        rgb = tuple(int(v) for v in np.clip(base + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3), 0, 255))
        objects.append(DemoObject(obj_id=index + 1, shape=str(shapes[index]), colour=str(colours[index]), size=size,
                                  direction=direction, rgb=rgb, radius=float(radius), depth=int(depths[index]),
                                  centres=_path(rng, direction, radius, config)))
    return objects


def _render_labels(objects: List[DemoObject], config: DemoConfig) -> Tuple[np.ndarray, np.ndarray]:
    """(labels [T, H, W] uint8 of visible object ids, full areas [K, T]) with nearer objects covering farther ones."""
    t, h, w = config.num_frames, config.height, config.width
    labels = np.zeros((t, h, w), dtype=np.uint8)
    full_areas = np.zeros((len(objects), t), dtype=np.int64)
    by_depth = sorted(objects, key=lambda o: o.depth)  # farthest first: nearer ones overwrite
    for frame in range(t):
        for obj in by_depth:
            cx, cy = obj.centres[frame]
            mask = shape_mask(obj.shape, cx, cy, obj.radius, h, w)
            labels[frame][mask] = obj.obj_id
            full_areas[obj.obj_id - 1, frame] = mask.sum()
    return labels, full_areas


def _well_visible(objects: List[DemoObject], labels: np.ndarray, full_areas: np.ndarray) -> bool:
    """Every object shows at least MIN_VISIBLE_FRACTION of itself on at least MIN_VISIBLE_FRAMES of the frames."""
    for obj in objects:
        visible = (labels == obj.obj_id).sum(axis=(1, 2))
        fraction = visible / np.maximum(full_areas[obj.obj_id - 1], 1)
        if np.mean(fraction >= MIN_VISIBLE_FRACTION) < MIN_VISIBLE_FRAMES:
            return False
    return True


def make_video(video_id: str, rng: np.random.Generator, config: DemoConfig) -> DemoVideo:
    """Draw one video: objects laid out until all are well visible, then frames, labels and expressions."""
    for _ in range(MAX_LAYOUT_TRIES):
        objects = _layout(rng, config)
        labels, full_areas = _render_labels(objects, config)
        if _well_visible(objects, labels, full_areas):
            break
    else:
        raise RuntimeError(f"{video_id}: no layout with every object visible in {MAX_LAYOUT_TRIES} tries; "
                           f"use a larger --size or fewer --max_objects")
    background = make_background(rng, config.height, config.width)
    frames = np.empty((config.num_frames, config.height, config.width, 3), dtype=np.uint8)
    colours = np.zeros((len(objects) + 1, 3))  # row k = the colour of object k
    for obj in objects:
        colours[obj.obj_id] = obj.rgb
    for index in range(config.num_frames):
        label = labels[index]
        image = np.where(label[:, :, None] > 0, colours[label], background)  # [H, W, 3]
        image = image + rng.normal(0, FRAME_NOISE_STD, size=image.shape)
        frames[index] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    for obj in objects:
        obj.expression = describe(obj, rng, config.p_say_size, config.p_say_motion)
    return DemoVideo(video_id, frames, labels, objects)


# ----------------------------------------------------------------------------- writing
def video_ids(config: DemoConfig) -> Tuple[List[str], List[str]]:
    """(training ids, held-out test ids)."""
    return ([f"train{i:03d}" for i in range(config.num_train_videos)],
            [f"test{i:03d}" for i in range(config.num_test_videos)])


def _video_rng(seed: int, split_index: int, video_index: int) -> np.random.Generator:
    # One stream per video: a video does not change when another split's count changes.
    return np.random.default_rng([seed, split_index, video_index])


def _speak(text: str, stem: str, rng: np.random.Generator, voices: Sequence[str],
           config: DemoConfig) -> Tuple[np.ndarray, int, dict]:
    """(samples, sample rate, speech.json entry) of one recording.

    "fixed" speakers draw the voice, rate and eSpeak NG seed from the video's stream `rng`, as the datasets
    made before the speaker pools; "varied" ones draw the whole style from a stream of the recording's own
    (`draw_style`), so the video's stream, and with it every frame, mask and text, does not depend on the pool.
    The samples depend on what the process spoke before (eSpeak NG keeps waveform state across syntheses, see
    scripts/speak_expressions.py): with another number of training videos the held-out recordings are other
    renditions of the same styles.
    """
    if config.speakers == "fixed":
        voice = str(rng.choice(voices))
        rate = int(rng.integers(SPEECH_RATE_WPM[0], SPEECH_RATE_WPM[1] + 1))
        seed_speech(int(rng.integers(SPEECH_SEED_RANGE)))
        samples, sample_rate = synthesize(text, voice, rate)
        return samples, sample_rate, {"text": text, "voice": voice, "rate_wpm": rate}
    style = draw_style(stem, config.seed, voices)
    samples, sample_rate = synthesize_style(text, style)
    return samples, sample_rate, {"text": text, **style.as_record()}


def _write_video(root: Path, video: DemoVideo, rng: np.random.Generator, voices: Sequence[str],
                 config: DemoConfig, speech_log: Dict[str, dict]) -> Tuple[dict, dict]:
    """Frames, masks, audio and features of one video -> (its meta_expressions entry, its meta.json entry).

    Adds the `_speak` entry of each recording (text, voice, rate and, with "varied" speakers, pitch, pitch
    range, word gap and eSpeak NG seed) to `speech_log` under its stem.
    """
    frame_names = [FRAME_NAME.format(i) for i in range(len(video.frames))]
    for name, frame, label in zip(frame_names, video.frames, video.labels):
        write_jpeg(root / SPLIT_DIR / "JPEGImages" / video.video_id / f"{name}.jpg", frame)
        write_palette_png(root / SPLIT_DIR / "Annotations" / video.video_id / f"{name}.png", label)
    expressions, objects = {}, {}
    order = rng.permutation(len(video.objects))  # expression ids do not follow object ids
    for exp_index, obj_index in enumerate(order):
        obj = video.objects[obj_index]
        exp_id = str(exp_index)
        expressions[exp_id] = {"exp": obj.expression, "obj_id": str(obj.obj_id)}
        stem = f"{video.video_id}_{exp_id}"
        samples, sample_rate, speech_log[stem] = _speak(obj.expression, stem, rng, voices, config)
        write_wav(root / "audio_wav" / f"{stem}.wav", samples, sample_rate)
        save_features(root / "audio_feature" / f"{stem}.npy", mfcc39(samples, sample_rate))
    for obj in video.objects:
        present = [name for name, label in zip(frame_names, video.labels) if np.any(label == obj.obj_id)]
        objects[str(obj.obj_id)] = {"category": obj.shape, "frames": present}
    return {"expressions": expressions, "frames": frame_names}, {"objects": objects}


def _vis_split(videos: List[DemoVideo], first_video_id: int, first_annotation_id: int) -> Tuple[list, list]:
    """YouTube-VIS style (videos, annotations); annotations in object-id order, so the k-th is object k."""
    vis_videos, annotations = [], []
    for offset, video in enumerate(videos):
        numeric_id = first_video_id + offset
        height, width = video.labels.shape[1:]
        vis_videos.append({"id": numeric_id, "width": int(width), "height": int(height), "length": len(video.labels),
                           "file_names": [f"{video.video_id}/{FRAME_NAME.format(i)}.jpg" for i in range(len(video.labels))]})
        for obj in sorted(video.objects, key=lambda o: o.obj_id):
            annotation = vis_annotation_from_masks(first_annotation_id + len(annotations), numeric_id,
                                                   SHAPES.index(obj.shape) + 1, list(video.labels == obj.obj_id))
            annotations.append(annotation)
    return vis_videos, annotations


def _write_dataset(root: Path, config: DemoConfig) -> None:
    train_ids, test_ids = video_ids(config)
    meta_expressions, meta, speech_log = {}, {}, {}
    rendered: Dict[str, List[DemoVideo]] = {"train": [], "test": []}
    jobs = [("train", 0, i, vid) for i, vid in enumerate(train_ids)] + [("test", 1, i, vid) for i, vid in enumerate(test_ids)]
    for split, split_index, video_index, vid in tqdm(jobs, desc="demo videos", unit="video"):
        rng = _video_rng(config.seed, split_index, video_index)
        video = make_video(vid, rng, config)
        voices = config.train_voices() if split == "train" else config.held_out_voices()
        meta_expressions[vid], meta[vid] = _write_video(root, video, rng, voices, config, speech_log)
        rendered[split].append(video)
    write_meta_expressions(root / "meta_expressions" / SPLIT_DIR / "meta_expressions.json", meta_expressions)
    write_json(root / SPLIT_DIR / "meta.json", {"videos": meta})
    write_json(root / "audio_wav" / "speech.json", speech_log)
    categories = [{"id": i + 1, "name": shape} for i, shape in enumerate(SHAPES)]
    train_videos, train_annotations = _vis_split(rendered["train"], 1, 1)
    test_videos, test_annotations = _vis_split(rendered["test"], len(train_videos) + 1, len(train_annotations) + 1)
    write_vis_instances(root / "ann" / "instances_train_sub.json", train_videos, train_annotations, categories)
    write_vis_instances(root / "ann" / "instances_test_sub.json", test_videos, test_annotations, categories)
    (root / "train_videos.txt").write_text("".join(f"{vid}\n" for vid in train_ids))
    (root / "test_videos.txt").write_text("".join(f"{vid}\n" for vid in test_ids))
    (root / COMPLETE_MARKER).write_text(json.dumps(config.record(), sort_keys=True) + "\n")


def is_complete(out: Path, config: Optional[DemoConfig] = None) -> bool:
    """Whether `out` holds a finished demo dataset (made with `config`, when given)."""
    marker = Path(out) / COMPLETE_MARKER
    if not marker.is_file():
        return False
    return config is None or json.loads(marker.read_text()) == config.record()


def generate(out: Path, config: DemoConfig, force: bool = False) -> bool:
    """Write the demo dataset to `out`; returns False (and writes nothing) when it is already there.

    An `out` that exists but is not a complete dataset made with `config` is an error unless `force`,
    which replaces it.
    """
    config.check()
    out = Path(out)
    if out.exists() and not force:
        if is_complete(out, config):
            return False
        reason = "made with other parameters" if is_complete(out) else "not a complete demo dataset"
        raise FileExistsError(f"{out} exists and is {reason}; remove it or pass --force to replace it")
    atomic_directory(out, lambda tmp: _write_dataset(tmp, config))
    return True


def parse_size(text: str) -> Tuple[int, int]:
    """'120x216' -> (120, 216): height x width."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must be HEIGHTxWIDTH such as 120x216, got {text!r}") from None
    return height, width


def get_parser() -> argparse.ArgumentParser:
    # A data-making utility, not a model entry point, so it has its own small parser.
    defaults = DemoConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/demo"), help="dataset root to create")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--num_train_videos", type=int, default=defaults.num_train_videos)
    parser.add_argument("--num_test_videos", type=int, default=defaults.num_test_videos)
    parser.add_argument("--frames", type=int, default=defaults.num_frames, help="frames per video")
    parser.add_argument("--size", type=parse_size, default=(defaults.height, defaults.width), help="HEIGHTxWIDTH")
    parser.add_argument("--min_objects", type=int, default=defaults.min_objects)
    parser.add_argument("--max_objects", type=int, default=defaults.max_objects)
    parser.add_argument("--num_colours", type=int, default=defaults.num_colours,
                        help=f"use the first N of {', '.join(COLOURS)}")
    parser.add_argument("--num_shapes", type=int, default=defaults.num_shapes,
                        help=f"use the first N of {', '.join(SHAPES)}")
    parser.add_argument("--num_voices", type=int, default=defaults.num_voices,
                        help=f"use the first N eSpeak NG voices of {', '.join(VOICES)}")
    parser.add_argument("--p_say_size", type=float, default=defaults.p_say_size,
                        help="probability that an expression also names the size ('the small red circle')")
    parser.add_argument("--p_say_motion", type=float, default=defaults.p_say_motion,
                        help="probability that an expression also names the motion ('... moving left')")
    parser.add_argument("--speed_scale", type=float, default=defaults.speed_scale,
                        help=f"multiplies the shapes' speed range {SPEED_RANGE} (frame widths per frame); with "
                             "few --frames a larger value keeps the shapes apart except when their paths cross")
    parser.add_argument("--size_scale", type=float, default=defaults.size_scale,
                        help="multiplies the shapes' radii (small 0.11-0.13, big 0.17-0.20 of the frame height)")
    parser.add_argument("--test_voices", type=parse_voices, default=(),
                        help="comma-separated eSpeak NG voices heard only in the held-out videos, e.g. "
                             "en-gb-x-rp,en+f3; the training videos keep the others of the first --num_voices "
                             "(unseen speakers); default: every video draws from the first --num_voices")
    parser.add_argument("--speakers", choices=SPEAKER_MODES, default=defaults.speakers,
                        help="fixed: the voices of --num_voices / --test_voices at eSpeak NG's default prosody; "
                             f"varied: each recording draws one of {len(TRAINING_VOICES)} voices (every training "
                             "accent x variant) and its pitch, pitch range, rate and word gap")
    parser.add_argument("--held_out_speakers", choices=HELD_OUT_SPEAKER_MODES, default=defaults.held_out_speakers,
                        help="seen: the held-out videos draw their voices as the training ones; unseen (with "
                             f"--speakers varied): from {len(UNSEEN_VOICES)} voices whose accents and variants "
                             "no training video speaks; with --num_train_videos 0, the unseen-voice copy of the "
                             "held-out videos of the same --seed")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    config = DemoConfig(seed=args.seed, num_train_videos=args.num_train_videos, num_test_videos=args.num_test_videos,
                        num_frames=args.frames, height=args.size[0], width=args.size[1],
                        min_objects=args.min_objects, max_objects=args.max_objects, num_colours=args.num_colours,
                        num_shapes=args.num_shapes, num_voices=args.num_voices, p_say_size=args.p_say_size,
                        p_say_motion=args.p_say_motion, speed_scale=args.speed_scale, size_scale=args.size_scale,
                        test_voices=args.test_voices, speakers=args.speakers,
                        held_out_speakers=args.held_out_speakers)
    if generate(args.out, config, force=args.force):
        print(f"wrote the demo dataset to {args.out}")
    else:
        print(f"{args.out} is already complete; skipped (use --force to make it again)")


if __name__ == "__main__":
    main()
