"""The ``export``, ``transfer`` and ``compare-transfer`` commands; ``cli.py`` adds them with
``add_parsers(subparsers)``. User errors are raised as ValueError / FileNotFoundError /
FileExistsError, which ``droppick``'s main turns into one error line and exit status 2."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from .args import int_list
from ..transfer.coco import TASKS


def _csv(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


def cmd_export(args) -> int:
    from ..transfer.export import export_backbone

    done = export_backbone(args.checkpoint, args.format, args.out)
    print(f"{done.arch} backbone (epoch {done.epoch}, {done.num_tensors} tensors) -> {done.path} [{args.format}]")
    print(f"{done.sha256}  {done.path.name}")
    return 0


def _config(args, backbone: str):
    from ..transfer.finetune import TransferConfig

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TransferConfig) if hasattr(args, f.name)}
    return TransferConfig(**(values | {"backbone": backbone}))


def cmd_transfer(args) -> int:
    from ..transfer.finetune import markdown_table, run_transfer

    out = args.out or f"runs/transfer-{args.task}-{Path(args.backbone).stem}"
    results = run_transfer(_config(args, args.backbone), out, name=args.name)
    print(markdown_table([results]), end="")
    print(f"results -> {out}/results.json, {out}/results.md")
    return 0


def cmd_compare(args) -> int:
    from ..transfer.finetune import compare_transfer

    names = args.names or [Path(b).stem for b in args.backbones]
    out = args.out or f"runs/compare-transfer-{args.task}"
    print(compare_transfer(_config(args, ""), args.backbones, names, out), end="")
    print(f"table -> {out}/comparison.md")
    return 0


def _add_recipe_args(p: argparse.ArgumentParser) -> None:
    from ..transfer.finetune import TransferConfig

    d = TransferConfig(task="detection", backbone="")
    p.add_argument("--task", required=True, choices=TASKS,
                   help="detection: Faster R-CNN FPN; segmentation: Mask R-CNN; keypoints: Keypoint R-CNN")
    g = p.add_argument_group("data (COCO format)")
    g.add_argument("--data", metavar="COCO_DIR", help="COCO_DIR/images/ and COCO_DIR/annotations/"
                   "{instances,person_keypoints}_{train,val}.json")
    for split in ("train", "val"):
        g.add_argument(f"--{split}-json", help=f"{split} annotation file (overrides --data's)")
        g.add_argument(f"--{split}-images", help=f"folder the {split} JSON's file_name entries are relative to")
    g.add_argument("--workers", type=int, default=d.workers, help=f"DataLoader processes (default {d.workers})")
    g = p.add_argument_group("fine-tuning (defaults: the 1x schedule at the paper's single scale)")
    g.add_argument("--iters", type=int, default=d.iters, help=f"SGD iterations (default {d.iters})")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help=f"images per iteration (default {d.batch_size})")
    g.add_argument("--lr", type=float, default=None, help="base LR (default 0.02 * batch-size / 16)")
    g.add_argument("--momentum", type=float, default=d.momentum, help=f"default {d.momentum}")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"default {d.weight_decay}")
    g.add_argument("--warmup-iters", type=int, default=d.warmup_iters, help=f"linear LR warm-up (default {d.warmup_iters})")
    g.add_argument("--lr-steps", type=int_list, default=None, help="iterations after which LR /10 "
                   "(default 2/3 and 8/9 of --iters)")
    g.add_argument("--min-size", type=int, default=d.min_size, help=f"shorter image side (default {d.min_size})")
    g.add_argument("--max-size", type=int, default=d.max_size, help=f"longer side cap (default {d.max_size})")
    g.add_argument("--trainable-layers", type=int, default=d.trainable_layers,
                   help=f"ResNet stages fine-tuned, top down; BatchNorm stays frozen (default {d.trainable_layers})")
    g.add_argument("--roi-batch-size", type=int, default=d.roi_batch_size, help=f"RoIs per image (default {d.roi_batch_size})")
    g.add_argument("--detections-per-img", type=int, default=d.detections_per_img, help=f"default {d.detections_per_img}")
    g.add_argument("--seed", type=int, default=d.seed, help=f"default {d.seed}")
    g.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N (default auto)")
    g.add_argument("--no-save-model", dest="save_model", action="store_false",
                   help="do not write model_final.pt")


def add_parsers(sub) -> None:
    from ..transfer.export import FORMATS, supported_archs

    e = sub.add_parser("export", help="write a checkpoint's backbone for torchvision, safetensors or detectron2",
                       description="Backbones of: " + ", ".join(supported_archs("torchvision"))
                                   + f"; detectron2 format: {', '.join(supported_archs('detectron2'))} only.")
    e.add_argument("checkpoint", help="a checkpoint-EEEE.pt, or a run directory (its newest checkpoint)")
    e.add_argument("--format", default="torchvision", choices=FORMATS, help="default torchvision")
    e.add_argument("-o", "--out", required=True, help="output file (.pth, .safetensors, or .pkl for detectron2); "
                   "OUT.sha256 is written beside it")
    e.set_defaults(func=cmd_export)

    t = sub.add_parser("transfer", help="fine-tune an exported ResNet backbone on COCO-format data and evaluate it")
    t.add_argument("--backbone", required=True, help="a 'droppick export' file (torchvision or safetensors format)")
    t.add_argument("--name", default=None, help="row label in the table (default: the backbone file's stem)")
    t.add_argument("--out", default=None, help="output folder (default runs/transfer-TASK-BACKBONE)")
    _add_recipe_args(t)
    t.set_defaults(func=cmd_transfer)

    c = sub.add_parser("compare-transfer", help="transfer several backbones and tabulate them side by side",
                       description="Runs found complete in OUT/NAME with the same backbone and settings are reused.")
    c.add_argument("--backbones", required=True, type=_csv, help="comma-separated export files, e.g. full.pth,dap75.pth")
    c.add_argument("--names", type=_csv, default=None, help="comma-separated row labels (default: file stems)")
    c.add_argument("--out", default=None, help="output folder (default runs/compare-transfer-TASK)")
    _add_recipe_args(c)
    c.set_defaults(func=cmd_compare)
