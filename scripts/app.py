"""Say it and see it: a Gradio page around Ref-YouTube-VOS inference on one clip and one spoken expression.

    make app                                           # installs requirements/app.txt, serves http://127.0.0.1:7860
    python scripts/app.py [--model_path output/demo/checkpoint.pth] [--data_root data/demo] [--port 7860]
    python scripts/app.py --host 0.0.0.0 --max_seconds 60 --max_upload_mb 200 --fps 10 --device cpu

The page takes one of the demo's held-out videos (`--data_root`, the frames `make demo` made) or an uploaded video
file, and an expression typed (spoken by eSpeak NG, the voice chosen in the page), uploaded or recorded from the
microphone; it shows the overlay video `inference_rvos.py --save_video` writes and offers the masks (a zip of
PNGs) and `results.json`. Two columns take two expressions of the same video, side by side.

Each request is `inference_rvos.py --video/--video_dir ... --audio ...` run in-process (`single_job`, `run`) on
the model loaded once at start, so its masks are the script's. The app listens on 127.0.0.1 unless `--host` says
otherwise and makes no public link without `--share`. It writes only into a temporary folder of its own (the
uploads and outputs Gradio serves, kept an hour; the last request's recording, results, PNGs and videos), removed
when it stops; uploaded names never become paths. Any other option of `inference_rvos.py` (`--fps`, `--max_frames`, `--amp`, model options for a
checkpoint that records none) applies to every request.
"""
import argparse
import html
import os
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

import inference_rvos
from datasets.audio import AudioDecodeError, load_audio
from datasets.speech import DEFAULT_VOICE, ENGLISH_VOICES, synthesize, write_wav
from datasets.video import video_seconds
from datasets.ytvos import split_paths
from datasets.ytvos_format import read_meta_expressions
from engine.inference import load_model_for_inference, parse_inference
from scripts.demo import test_videos
from scripts.demo_args import SPLIT
from util.config import FrozenNamespace, freeze
from util.errors import USER_OS_ERRORS, OptionError, UserError, one_line, run_main

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "output" / "demo" / "checkpoint.pth"  # what `make demo` trains
DEFAULT_DATA = ROOT / "data" / "demo"
DEFAULT_HOST = "127.0.0.1"  # this machine only
DEFAULT_PORT = 7860  # Gradio's
DEFAULT_MAX_SECONDS = 20.0
DEFAULT_MAX_UPLOAD_MB = 50
APP_FPS = 6.0  # uploaded videos are subsampled to the rate of the Ref-YouTube-VOS frames (every 5th of 30 fps)
MAX_PHRASE_CHARS = 200  # a typed expression is a phrase, not a text to read out
# Recordings at rates outside this range are refused: below it speech has no consonants left (telephone: 8 kHz),
# above it the header is more likely broken than the recording studio-grade.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 192000
SAFE_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")  # an upload's suffix kept (decoders look at it), nothing else
UPLOADED_VIDEO, RECORDING, TYPED = "clip", "recording", "expression"  # the stems of a request's inputs
OVERLAY, MASKS, RESULTS, PNG_DIR = "overlay.mp4", "masks.zip", "results.json", "png"
COLUMNS = 2  # expressions side by side
KEEP_SERVED_S = 3600  # how long Gradio keeps the files it serves (checked as often)


def add_app_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("app")
    group.add_argument("--host", default=DEFAULT_HOST, help="the address to listen on (0.0.0.0: every interface)")
    group.add_argument("--port", default=DEFAULT_PORT, type=int, help="the port to listen on")
    group.add_argument("--share", action="store_true", help="also make a public link through Gradio's servers")
    group.add_argument("--data_root", default=str(DEFAULT_DATA), type=str,
                       help="demo-layout data whose held-out videos (test_videos.txt) the page offers")
    group.add_argument("--max_seconds", default=DEFAULT_MAX_SECONDS, type=float, metavar="S",
                       help="refuse an uploaded video or recording longer than S seconds")
    group.add_argument("--max_upload_mb", default=DEFAULT_MAX_UPLOAD_MB, type=int, metavar="MB",
                       help="refuse an uploaded file larger than MB megabytes")


def get_parser() -> argparse.ArgumentParser:
    """`inference_rvos.py`'s options (the model, the run, the inference) and the app's, with the app's defaults:
    the demo model, the CPU without CUDA, uploaded videos at `APP_FPS`."""
    parser = inference_rvos.get_parser("Wnet app")
    add_app_args(parser)
    parser.set_defaults(model_path=str(DEFAULT_MODEL), fps=APP_FPS,
                        device="cuda" if torch.cuda.is_available() else "cpu")
    return parser


def demo_videos(data_root: Path) -> Dict[str, Tuple[Path, List[str]]]:
    """The held-out videos of demo-layout data: `{name: (frame folder, the words of its expressions)}`; empty
    when `data_root` holds none (uploads still work)."""
    if not (data_root / "test_videos.txt").is_file():
        return {}
    paths = split_paths(data_root, SPLIT)
    meta = read_meta_expressions(paths["meta_expressions"])
    return {name: (paths["frames"] / name, [e["exp"] for e in meta[name]["expressions"].values()])
            for name in test_videos(data_root)}


def kept_copy(upload: str, folder: Path, stem: str) -> Path:
    """An upload copied into `folder` as `stem` plus its suffix when that is a plain one: its name goes no further."""
    suffix = Path(upload).suffix
    target = folder / f"{stem}{suffix if SAFE_SUFFIX.fullmatch(suffix) else ''}"
    shutil.copyfile(upload, target)
    return target


class Segmenter:
    """The model, loaded once, and one request: a video and an expression -> the overlay video, the masks' zip and
    `results.json`, written in a fresh folder under `work_dir`. Bad input is a `UserError` worded for the page."""

    def __init__(self, args: FrozenNamespace, work_dir: Path):
        self.args, self.work_dir = args, work_dir
        self.videos = demo_videos(Path(args.data_root))
        self.model, self.postprocessors, _, self.model_rate = load_model_for_inference(args)

    def video_options(self, demo_video: str, uploaded_video: Optional[str], folder: Path) -> Dict[str, str]:
        """`--video` (an upload, checked against the limits) or `--video_dir` (a demo video)."""
        if uploaded_video:
            video = kept_copy(uploaded_video, folder, UPLOADED_VIDEO)
            size_mb = video.stat().st_size / 2 ** 20
            if size_mb > self.args.max_upload_mb:
                raise UserError(f"the video is {size_mb:.0f} MB; this app takes up to {self.args.max_upload_mb} MB")
            seconds = self.worded(video_seconds, video, "the video")
            if seconds > self.args.max_seconds:
                raise UserError(f"the video lasts {seconds:.0f} s; this app takes up to {self.args.max_seconds:g} s")
            return {"video": str(video), "video_dir": ""}
        if demo_video not in self.videos:
            raise UserError(f"no demo video {demo_video!r}: choose one of the list or upload a video")
        return {"video": "", "video_dir": str(self.videos[demo_video][0])}

    def recording(self, text: str, voice: str, recording: Optional[str], folder: Path) -> Tuple[Path, str]:
        """The recording of the expression (an upload, checked, or the typed words spoken) and its words."""
        if recording:
            audio = kept_copy(recording, folder, RECORDING)
            samples, rate = self.worded(load_audio, audio, "the recording")
            if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
                raise UserError(f"the recording's sample rate {rate} Hz is not one of speech "
                                f"({MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz)")
            if samples.size / rate > self.args.max_seconds:
                raise UserError(f"the recording lasts {samples.size / rate:.0f} s; this app takes up to "
                                f"{self.args.max_seconds:g} s")
            return audio, ""
        words = " ".join(text.split())
        if not words:
            raise UserError("no expression: type one, or upload or record one")
        if len(words) > MAX_PHRASE_CHARS:
            raise UserError(f"the expression has {len(words)} characters; type a phrase of up to {MAX_PHRASE_CHARS}")
        if voice not in ENGLISH_VOICES:
            raise UserError(f"no voice {voice!r}: choose one of {', '.join(ENGLISH_VOICES)}")
        audio = folder / f"{TYPED}.wav"
        write_wav(audio, *synthesize(words, voice))
        return audio, words

    @staticmethod
    def worded(read, path: Path, what: str):
        """`read(path)`, its errors naming `what` rather than the app's copy of the file."""
        try:
            return read(path)
        except (UserError, AudioDecodeError) as error:
            raise UserError(one_line(error).replace(str(path), what)) from None

    def __call__(self, demo_video: str, uploaded_video: Optional[str], text: str, voice: str,
                 recording: Optional[str]) -> Tuple[str, str, str]:
        """(overlay video, masks zip, results.json) of the video and the expression; a recording (uploaded or from
        the microphone) is used rather than the typed words, an uploaded video rather than the demo video."""
        for earlier in self.work_dir.iterdir():  # one request at a time; Gradio serves its own copies of the outputs
            shutil.rmtree(earlier)
        folder = Path(tempfile.mkdtemp(prefix="request.", dir=self.work_dir))
        args = freeze(self.args, **self.video_options(demo_video, uploaded_video, folder))
        audio, words = self.recording(text or "", voice, recording, folder)
        args = freeze(args, audio=str(audio), save_path=str(folder / RESULTS), save_video=str(folder / OVERLAY),
                      png_dir=str(folder / PNG_DIR), visualize="")
        job = inference_rvos.single_job(args)
        job.expressions[0].text = words  # the caption of the overlay video
        inference_rvos.run(args, [job], self.model, self.postprocessors, model_rate=self.model_rate)
        with zipfile.ZipFile(folder / MASKS, "w") as archive:
            for png in sorted((folder / PNG_DIR).rglob("*.png")):
                archive.write(png, png.name)  # one PNG per frame, named by the frame
        return str(folder / OVERLAY), str(folder / MASKS), str(folder / RESULTS)


def build_page(segment: Segmenter, max_upload_mb: int):
    """The page: the video (a demo video or an upload) above `COLUMNS` expressions, each with its results."""
    import gradio as gr

    def handle(*inputs):
        try:
            return segment(*inputs)
        except (UserError,) + USER_OS_ERRORS as error:
            raise gr.Error(html.escape(one_line(error), quote=False), print_exception=False) from None  # shown as HTML

    choices = [(f"{name}: {' / '.join(words)}", name) for name, (_, words) in segment.videos.items()]
    # Gradio's copies of the outputs, and the uploads, are deleted an hour after they were made
    with gr.Blocks(title="Wnet: say it and see it", delete_cache=(KEEP_SERVED_S, KEEP_SERVED_S)) as page:
        gr.Markdown("## Wnet: say it and see it\nChoose a video, say which object you mean (type it, upload a "
                    "recording or record one), and press *Segment*. A second expression beside the first shows the "
                    f"mask follow the words. Videos and recordings up to {segment.args.max_seconds:g} s and "
                    f"{max_upload_mb} MB.")
        with gr.Row():
            demo_video = gr.Dropdown(choices, value=choices[0][1] if choices else None, elem_id="demo_video",
                                     label="Demo video (the words it knows)" if choices else
                                     f"Demo video (none in {segment.args.data_root}: `make demo` makes them)")
            uploaded_video = gr.Video(sources=["upload"], label="... or your own video (used when given)",
                                      elem_id="uploaded_video")
        with gr.Row():
            for column in range(1, COLUMNS + 1):
                with gr.Column():
                    text = gr.Textbox(label=f"Expression {column}: type it", elem_id=f"phrase_{column}",
                                      placeholder="the red circle")
                    voice = gr.Dropdown(list(ENGLISH_VOICES), value=DEFAULT_VOICE, label="eSpeak NG voice",
                                        elem_id=f"voice_{column}")
                    recording = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                         label="... or upload or record it (used when given)",
                                         elem_id=f"recording_{column}")
                    button = gr.Button("Segment", variant="primary", elem_id=f"segment_{column}")
                    overlay = gr.Video(label="Overlay", elem_id=f"overlay_{column}", interactive=False)
                    masks = gr.File(label="Masks (PNG per frame, zip)", elem_id=f"masks_{column}")
                    results = gr.File(label="results.json", elem_id=f"results_{column}")
                    button.click(handle, [demo_video, uploaded_video, text, voice, recording],
                                 [overlay, masks, results], api_name="segment" if column == 1 else f"segment_{column}",
                                 concurrency_id="model")  # one request at a time on the one model
    return page


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_inference(get_parser(), argv)
    if not Path(args.model_path).is_file():
        raise OptionError(f"no model at {args.model_path}: run `make demo` to train the demo model, or pass "
                          f"--model_path (a .pth checkpoint or a safetensors export)")
    with tempfile.TemporaryDirectory(prefix="wnet-app.") as work:
        work_dir = Path(work)
        # Gradio keeps uploads and the files it serves under GRADIO_TEMP_DIR, read when it is imported
        os.environ["GRADIO_TEMP_DIR"] = str(work_dir / "gradio")
        os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home
        try:
            import gradio  # noqa: F401  (the page's import, checked before the model is loaded)
        except ImportError:
            raise UserError("the app needs gradio: `make app` installs it (pip install -r requirements/app.txt)") \
                from None
        requests = work_dir / "requests"
        requests.mkdir()
        page = build_page(Segmenter(args, requests), args.max_upload_mb)
        page.queue().launch(server_name=args.host, server_port=args.port, share=args.share,
                            max_file_size=f"{args.max_upload_mb}mb", allowed_paths=[str(requests)],
                            footer_links=["api"])


if __name__ == "__main__":
    sys.exit(run_main(main))
