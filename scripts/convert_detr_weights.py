"""Convert VisTR-style DETR weights to Wnet names: `python scripts/convert_detr_weights.py IN OUT`.

IN is a checkpoint `{'model': state_dict}` (or a bare state dict) with keys `detr.*`, such as
VisTR's `384_coco_r50.pth`. OUT gets `{'model': state_dict}` with `detr.` renamed to `wnet.` and
without `wnet.class_embed.*` and `wnet.query_embed.weight`, ready for `--pretrained_weights`.
The output is written to a temporary file and renamed, so it is never left half-written.
"""
import sys
from typing import List

from util.errors import DEBUG_FLAG, run_main
from util.misc import atomic_torch_save
from util.weights import convert_detr_state_dict, plan_detr_conversion, read_state_dict

USAGE = "usage: python scripts/convert_detr_weights.py IN OUT [--debug]"


def main(argv: List[str]) -> int:
    paths = [arg for arg in argv if arg != DEBUG_FLAG]
    if paths[:1] in (["-h"], ["--help"]):  # asked for: the usage on stdout and success, as argparse does
        print(USAGE)
        return 0
    if len(paths) != 2:
        print(USAGE, file=sys.stderr)
        return 2
    source, destination = paths
    state_dict = read_state_dict(source)  # a missing or unreadable file is one error line (run_main)
    renames, dropped = plan_detr_conversion(list(state_dict))
    converted = convert_detr_state_dict(state_dict)
    atomic_torch_save({"model": converted}, destination)
    print(f"{source}: {len(state_dict)} tensors")
    print(f"renamed {len(renames)} key(s) from 'detr.*' to 'wnet.*'")
    if not renames:
        print(f"warning: {source} has no 'detr.*' key; is it a VisTR-style DETR checkpoint?", file=sys.stderr)
    print(f"dropped {len(dropped)} key(s): {', '.join(dropped) if dropped else 'none'}")
    print(f"wrote {len(converted)} tensors to {destination}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
