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
from engine.middle_frame import run_middle_frame_evaluation
from main import get_args_parser
from util.config import ArgumentParser, HelpFormatter, parse_args
from util.errors import run_main


def get_parser() -> argparse.ArgumentParser:
    return ArgumentParser("Wnet JHMDB-Sentences evaluation", parents=[get_args_parser()], formatter_class=HelpFormatter)


def main(argv: Optional[Sequence[str]] = None) -> Union[dict, int]:
    """The metrics; with `--check_data` the exit code of the data check."""
    return run_middle_frame_evaluation(parse_args(get_parser(), argv), build_test_set)


if __name__ == "__main__":
    sys.exit(run_main(main))
