"""A2D-Sentences evaluation with the official protocol.

    python inference_a2d.py --masks --num_frames 8 --num_queries 8 --model_path CKPT \
        --a2d_path data/a2d --a2d_audio_path data/a2d_j_audio_feature --metrics_path a2d_metrics.json

Every test sample (videoset.csv split 1; samples from `a2d_annotation_info.txt` or derived from
`a2d_annotation.txt` and the .h5 files): the clip of `--num_frames` frames centred on the annotated
frame (clamped to the video), the middle frame's mask against the instance's mask. Reports the
official mean J (and the F the official hard-codes to 0), overall/mean IoU, precision@0.5..0.9 and
COCO mask mAP. The official falls back to `00025.h5` when a sample's file is missing; we report
the sample (or drop it with `--skip_bad_samples`). `--a2d_wav_path` reads recordings instead of features
(MFCC-39 on the fly), and `--audio_noise` / `--audio_snr_db` add noise to them
(`--audio_rt60`, `--audio_band`, `--audio_speed` change them too; datasets/audio/perturb.py).
"""
import argparse
import sys
from typing import Optional, Sequence, Union

from datasets.a2d import build_test_set
from engine.inference import inference_parser, parse_inference
from engine.middle_frame import run_middle_frame_evaluation
from util.errors import run_main
from util.options import add_middle_frame_args


def get_parser() -> argparse.ArgumentParser:
    """The options of the evaluation: the run's, the model's, the data's and the inference groups."""
    return inference_parser("Wnet A2D-Sentences evaluation", "a2d", add_middle_frame_args)


def parse(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The options of `argv`, frozen (`engine.inference.parse_inference`)."""
    return parse_inference(get_parser(), argv)


def main(argv: Optional[Sequence[str]] = None) -> Union[dict, int]:
    """The metrics; with `--check_data` the exit code of the data check."""
    return run_middle_frame_evaluation(parse(argv), build_test_set)


if __name__ == "__main__":
    sys.exit(run_main(main))
