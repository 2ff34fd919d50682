"""Training and validation-loss entry point of Wnet (DETR style).

    python -m torch.distributed.launch --nproc_per_node=4 --use_env main.py \
        --backbone resnet50 --dataset_file avos --ytvos_path data/ytvos --masks \
        --pretrained_weights 384_coco_r50.pth
"""
from util.config import get_args_parser, parse_args  # noqa: F401  (the one parser of every entry point)
