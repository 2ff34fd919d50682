"""JHMDB-Sentences evaluation with the official protocol.

    python inference_jhmdb.py --masks --model_path CKPT --jhmdb_path data/JHMDB \
        --a2d_audio_path data/a2d_j_audio_feature --metrics_path jhmdb_metrics.json

For each annotation row (the six videos the official lists as missing data are skipped), three
frames at `linspace(4, n - 5, 3)`, the clip of `--num_frames` frames centred on each, the middle
frame's mask against `part_mask[:, :, frame]` (frame clamped to the .mat's length, as the official).
Reports the official mean J and F, overall/mean IoU, precision@0.5..0.9 and COCO mask mAP.
`--a2d_wav_path` reads recordings `<video>.wav` instead of features (MFCC-39 on the fly), and `--audio_noise` /
`--audio_snr_db` add noise to them
(`--audio_rt60`, `--audio_band`, `--audio_speed` change them too; datasets/audio/perturb.py).
"""
import argparse
import sys
from typing import Optional, Sequence, Union

from datasets.jhmdb import build_test_set
from engine.inference import inference_parser, parse_inference
from engine.middle_frame import run_middle_frame_evaluation
from util.errors import run_main
from util.options import add_middle_frame_args


def get_parser() -> argparse.ArgumentParser:
    """The options of the evaluation: the run's, the model's, the data's and the inference groups."""
    return inference_parser("Wnet JHMDB-Sentences evaluation", "jhmdb", add_middle_frame_args)


def parse(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The options of `argv`, frozen (`engine.inference.parse_inference`)."""
    return parse_inference(get_parser(), argv)


def main(argv: Optional[Sequence[str]] = None) -> Union[dict, int]:
    """The metrics; with `--check_data` the exit code of the data check."""
    return run_middle_frame_evaluation(parse(argv), build_test_set)


if __name__ == "__main__":
    sys.exit(run_main(main))
