"""JHMDB-Sentences evaluation with the official protocol.

    python inference_jhmdb.py --masks --model_path CKPT --jhmdb_path data/JHMDB \
        --a2d_audio_path data/a2d_j_audio_feature --metrics_path jhmdb_metrics.json

For each annotation row (the six videos the official lists as missing data are skipped), three
frames at `linspace(4, n - 5, 3)`, the clip of `--num_frames` frames centred on each, the middle
frame's mask against `part_mask[:, :, frame]` (frame clamped to the .mat's length, as the official).
Reports the official mean J and F, overall/mean IoU, precision@0.5..0.9 and COCO mask mAP.
`--a2d_wav_path` reads recordings `<video>.wav` instead of features (MFCC-39 on the fly), and `--audio_noise` /
`--audio_snr_db` add noise to them (datasets/noise.py).
"""
import argparse
import sys
from typing import List, Optional, Sequence, Union

from datasets.jhmdb import JHMDBDataset
from datasets.common import build_for_check, report_data_check
from engine import MiddleFrameSample, run_middle_frame_protocol
from main import get_args_parser
from util.config import ArgumentParser, HelpFormatter, parse_args
from util.errors import run_main


def get_parser() -> argparse.ArgumentParser:
    return ArgumentParser("Wnet JHMDB-Sentences evaluation", parents=[get_args_parser()], formatter_class=HelpFormatter)


def jhmdb_dataset(args):
    return JHMDBDataset(args.jhmdb_path, args.a2d_audio_path, args.num_frames, transforms=None,
                        skip_bad_samples=args.skip_bad_samples, wav_root=args.a2d_wav_path)


def jhmdb_samples(args, dataset) -> List[MiddleFrameSample]:
    return [MiddleFrameSample(dataset.describe(index), dataset.frame_paths(sample.video_id), sample.frame_idx,
                              dataset.audio_path(sample.video_id),
                              lambda index=index: dataset.ground_truth(index))
            for index, sample in enumerate(dataset.samples)]


def main(argv: Optional[Sequence[str]] = None) -> Union[dict, int]:
    """The metrics; with `--check_data` the exit code of the data check."""
    args = parse_args(get_parser(), argv)
    if args.check_data:
        args.skip_bad_samples = True  # list every broken sample
        dataset = build_for_check(lambda: jhmdb_dataset(args))
        return report_data_check(dataset.check_data(), {"dataset": "jhmdb", "samples": len(dataset)})
    dataset = jhmdb_dataset(args)
    return run_middle_frame_protocol(args, jhmdb_samples(args, dataset), "JHMDB-Sentences", dataset)


if __name__ == "__main__":
    sys.exit(run_main(main))
