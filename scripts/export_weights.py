"""Weights for sharing: `python scripts/export_weights.py CKPT OUT.safetensors`.

CKPT is a checkpoint `{'model': state_dict, 'args': ..., ...}` as main.py writes it. OUT gets the model's tensors
alone, as safetensors (no pickle: loading it runs no code), with the checkpoint's args and training videos as JSON
metadata and a SHA-256 of the tensors, so that a changed or cut file is refused. `--model_path`,
`--pretrained_weights` and `hubconf.py` read it like the checkpoint; `--resume` needs the checkpoint itself (the
optimizer's state is not exported). The output is written to a temporary file and renamed.
"""
import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from util.errors import OptionError, run_main
from util.weights import (SAFETENSORS_SUFFIX, checkpoint_train_videos, load_weights_file, read_state_dict,
                          save_safetensors)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser("python scripts/export_weights.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a Wnet checkpoint (main.py's checkpoint.pth)")
    parser.add_argument("out", type=Path, help=f"the weights file to write ({SAFETENSORS_SUFFIX})")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def parse(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    args = get_parser().parse_args(argv)
    if args.out.suffix.lower() != SAFETENSORS_SUFFIX:
        raise OptionError(f"OUT {args.out}: expected a file name ending in {SAFETENSORS_SUFFIX}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse(argv)
    checkpoint = load_weights_file(args.checkpoint)  # a missing or unreadable file is one error line (run_main)
    state_dict = read_state_dict(args.checkpoint)
    saved_args = checkpoint.get("args") if isinstance(checkpoint, dict) else None
    saved_args = vars(saved_args) if isinstance(saved_args, argparse.Namespace) else dict(saved_args or {})
    if not saved_args:
        print(f"warning: {args.checkpoint} records no args; the export carries none", file=sys.stderr)
    train_videos = checkpoint_train_videos(checkpoint, args.checkpoint) if isinstance(checkpoint, dict) else None
    save_safetensors(args.out, state_dict, saved_args, train_videos)
    print(f"wrote {len(state_dict)} tensors and {len(saved_args)} args to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
