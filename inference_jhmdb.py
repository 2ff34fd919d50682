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
from typing import List, Optional, Sequence

from util.config import HelpFormatter, get_args_parser, parse_args
from util.inference import MiddleFrameSample, run_middle_frame_protocol


def get_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser("Wnet JHMDB-Sentences evaluation", parents=[get_args_parser()],
                                   formatter_class=HelpFormatter)


def jhmdb_samples(args) -> List[MiddleFrameSample]:
    from datasets.jhmdb import JHMDBDataset

    dataset = JHMDBDataset(args.jhmdb_path, args.a2d_audio_path, args.num_frames, transforms=None,
                           skip_bad_samples=args.skip_bad_samples, wav_root=args.a2d_wav_path)
    return [MiddleFrameSample(dataset.describe(index), dataset.frame_paths(sample.video_id), sample.frame_idx,
                              dataset.audio_path(sample.video_id),
                              lambda index=index: dataset.ground_truth(index))
            for index, sample in enumerate(dataset.samples)]


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(get_parser(), argv)
    return run_middle_frame_protocol(args, jhmdb_samples(args), desc="JHMDB-Sentences")


if __name__ == "__main__":
    main()
