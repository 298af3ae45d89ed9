"""``droppick transfer``: fine-tune an exported backbone on COCO-format detection, instance
segmentation or keypoints (the paper's Section 4.4) and score it with pycocotools.

Models are torchvision's R-CNNs with an FPN on a ResNet: Faster R-CNN ("FPN" in Table 8),
Mask R-CNN and Keypoint R-CNN. They are assembled from ``resnet_fpn_backbone`` exactly as
``fasterrcnn_resnet50_fpn`` & co. assemble them for a *pre-trained* backbone (FrozenBatchNorm2d,
3 trainable stages), for any ResNet depth. Calling those builders with ``weights_backbone=None``
would instead give plain BatchNorm and train all 5 stages, torchvision's from-scratch recipe.

Recipe defaults: the 1x schedule (90k iterations at batch 16, LR 0.02 scaled linearly with
the batch, /10 at 2/3 and 8/9 of training, 1000 linear warm-up iterations), SGD with momentum
0.9 and weight decay 1e-4, horizontal flips, single scale 800/1333 for training and testing.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import torch
from torch import nn

from . import coco
from ..atomic import atomic_write_bytes, atomic_write_text
from .export import RESNETS, file_sha256, load_backbone, reference_backbone
from ..seeding import generator, seeded_global_rng

METHODS = {"detection": "FPN (Faster R-CNN)", "segmentation": "Mask R-CNN", "keypoints": "Keypoint R-CNN"}
COLUMN_TAGS = {"bbox": "bb", "segm": "m", "keypoints": "kp"}
LOG_EVERY = 20  # iterations between loss lines
# Settings that change no number in the results; compare-transfer ignores them when reusing a run.
_NOT_SETTINGS = ("backbone", "workers", "device", "save_model")


@dataclass
class TransferConfig:
    task: str
    backbone: str
    data: Optional[str] = None  # COCO_DIR in coco.py's layout; the four paths below override parts of it
    train_json: Optional[str] = None
    val_json: Optional[str] = None
    train_images: Optional[str] = None
    val_images: Optional[str] = None
    iters: int = 90_000
    batch_size: int = 16
    lr: Optional[float] = None  # None: 0.02 * batch_size / 16
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 1000
    lr_steps: Optional[list[int]] = None  # iterations after which LR /10; None: 2/3 and 8/9 of iters
    min_size: int = 800
    max_size: int = 1333
    trainable_layers: int = 3  # ResNet stages fine-tuned, from the top (5 = all, stem included)
    roi_batch_size: int = 512  # sampled RoIs per image for the box head
    detections_per_img: int = 100
    workers: int = 4  # DataLoader processes
    seed: int = 0
    device: str = "auto"
    save_model: bool = True

    def __post_init__(self) -> None:
        if self.task not in coco.TASKS:
            raise ValueError(f"task must be one of {', '.join(coco.TASKS)}; got {self.task!r}")
        for name in ("iters", "batch_size", "min_size", "max_size", "roi_batch_size", "detections_per_img"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.min_size > self.max_size:
            raise ValueError(f"min_size ({self.min_size}) must not exceed max_size ({self.max_size})")
        if not 0 <= self.trainable_layers <= 5:
            raise ValueError(f"trainable_layers must be in 0..5, got {self.trainable_layers}")

    @property
    def base_lr(self) -> float:
        return 0.02 * self.batch_size / 16 if self.lr is None else self.lr

    @property
    def steps(self) -> list[int]:
        return self.lr_steps if self.lr_steps is not None else [round(self.iters * 2 / 3), round(self.iters * 8 / 9)]

    def lr_at(self, iteration: int) -> float:
        """LR of 0-based ``iteration``: linear warm-up from 0.001x, then /10 after each step."""
        factor = 0.1 ** sum(iteration >= s for s in self.steps)
        if iteration < self.warmup_iters:
            factor *= 0.001 + 0.999 * iteration / self.warmup_iters
        return self.base_lr * factor

    def paths(self, split: str) -> tuple[Path, Path]:
        """(annotation JSON, image folder) of ``split``; ``--SPLIT-json``/``--SPLIT-images`` set them."""
        given_json, given_images = getattr(self, f"{split}_json"), getattr(self, f"{split}_images")
        if self.data is None and (given_json is None or given_images is None):
            raise ValueError(f"give --data COCO_DIR, or both --{split}-json and --{split}-images")
        default_json, default_images = coco.default_paths(self.data or ".", self.task, split)
        return Path(given_json or default_json), Path(given_images or default_images)


def resnet_arch(state: dict[str, torch.Tensor]) -> str:
    """Which ResNet a backbone state dict is, from its keys (depths differ in block counts)."""
    for arch in RESNETS:
        if set(reference_backbone(arch)) == set(state):
            return arch
    raise ValueError(f"the backbone's keys match none of {', '.join(RESNETS)}; the R-CNN FPN models take a ResNet "
                     "(torchvision has no FPN mapping for DenseNet or MobileNet-V1 exports)")


def resolve_device(name: str) -> torch.device:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("droppick transfer runs in one process on one device; start it without torchrun")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}, but no CUDA device is visible; use --device cpu")
    return device


def build_detector(cfg: TransferConfig, arch: str, num_classes: int) -> nn.Module:
    from torchvision.models.detection import FasterRCNN, KeypointRCNN, MaskRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops import FrozenBatchNorm2d

    kwargs = dict(num_classes=num_classes, min_size=cfg.min_size, max_size=cfg.max_size,
                  box_batch_size_per_image=cfg.roi_batch_size, box_detections_per_img=cfg.detections_per_img)
    if cfg.task == "keypoints":
        kwargs["num_keypoints"] = 17
    cls = {"detection": FasterRCNN, "segmentation": MaskRCNN, "keypoints": KeypointRCNN}[cfg.task]
    with seeded_global_rng(cfg.seed, "detector-init"):  # head initialisation draws from the global RNG
        backbone = resnet_fpn_backbone(backbone_name=arch, weights=None, norm_layer=FrozenBatchNorm2d,
                                       trainable_layers=cfg.trainable_layers)
        return cls(backbone, **kwargs)


def load_body(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Strict load into ``model.backbone.body`` (FrozenBatchNorm2d drops num_batches_tracked itself)."""
    try:
        model.backbone.body.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"the backbone does not load into the detector's ResNet body: {e}") from e


def _batches(n: int, batch_size: int, iters: int, seed: int) -> Iterator[list[tuple[int, bool]]]:
    """``iters`` batches of (index, flip): a new seeded permutation and flips each pass over the data."""
    def stream():
        for epoch in itertools.count():
            g = generator(seed, "transfer", epoch)
            order, flips = torch.randperm(n, generator=g).tolist(), (torch.rand(n, generator=g) < 0.5).tolist()
            yield from ((i, flips[i]) for i in order)

    pairs = stream()
    for _ in range(iters):
        yield [next(pairs) for _ in range(batch_size)]


def _collate(batch: list) -> tuple:
    return tuple(zip(*batch))  # images differ in size: lists, which the R-CNN transform batches itself


def _loader(dataset, batch_sampler, workers: int):
    return torch.utils.data.DataLoader(dataset, batch_sampler=batch_sampler, num_workers=workers, collate_fn=_collate)


def fine_tune(model: nn.Module, dataset: coco.CocoDataset, cfg: TransferConfig, device: torch.device,
              log_path: Path) -> dict[str, float]:
    """SGD on the trainable parameters for ``cfg.iters`` iterations; returns the last losses."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    model.train()
    losses: dict[str, float] = {}
    with open(log_path, "w") as log:
        batches = _batches(len(dataset), cfg.batch_size, cfg.iters, cfg.seed)
        for it, (images, targets) in enumerate(_loader(dataset, batches, cfg.workers)):
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr_at(it)
            images = [image.to(device, non_blocking=True) for image in images]
            targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
            parts = model(images, targets)
            loss = sum(parts.values())
            value = float(loss.detach())  # one sync per step: cheap next to an R-CNN step
            if not math.isfinite(value):
                raise FloatingPointError(f"iteration {it + 1}: loss is {value}; lower --lr or check the annotations")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if (it + 1) % LOG_EVERY == 0 or it + 1 == cfg.iters:
                losses = {"iter": it + 1, "lr": cfg.lr_at(it), "loss": value, **{k: v.item() for k, v in parts.items()}}
                log.write(json.dumps(losses) + "\n")
                print(f"iter {it + 1}/{cfg.iters}  loss {losses['loss']:.4f}  lr {losses['lr']:.5f}", flush=True)
    return losses


@torch.no_grad()
def predict(model: nn.Module, dataset: coco.CocoDataset, cfg: TransferConfig, device: torch.device) -> dict[str, list]:
    """COCO results of every image of ``dataset``, per IoU type."""
    model.eval()
    indices = [(i, False) for i in range(len(dataset))]
    order = [indices[s:s + cfg.batch_size] for s in range(0, len(indices), cfg.batch_size)]
    results: dict[str, list] = {t: [] for t in coco.IOU_TYPES[cfg.task]}
    for batch, (images, _) in zip(order, _loader(dataset, order, cfg.workers)):
        outputs = model([image.to(device) for image in images])
        for (index, _), output in zip(batch, outputs):
            for iou_type, entries in coco.to_coco_results(dataset.ids[index], output, cfg.task).items():
                results[iou_type] += entries
    return results


def run_transfer(cfg: TransferConfig, out: str | Path, name: Optional[str] = None) -> dict:
    """Fine-tune, evaluate and write ``out``/{results.json, results.md, cocoeval.txt, train_log.jsonl,
    model_final.pt}; returns the results dict. A folder that already holds results is refused."""
    out = Path(out)
    if (out / "results.json").exists():
        raise FileExistsError(f"{out} already holds results; choose another --out")
    state = load_backbone(cfg.backbone)
    arch = resnet_arch(state)
    (train_json, train_images), (val_json, val_images) = cfg.paths("train"), cfg.paths("val")
    train_gt, val_gt = coco.load_coco(train_json, "--train-json"), coco.load_coco(val_json, "--val-json")
    train_set = coco.CocoDataset(train_gt, train_images, cfg.task, train=True, flag="--train-images")
    val_set = coco.CocoDataset(val_gt, val_images, cfg.task, train=False, flag="--val-images")
    device = resolve_device(cfg.device)
    model = build_detector(cfg, arch, coco.num_classes(train_gt))
    load_body(model, state)
    model.to(device)
    out.mkdir(parents=True, exist_ok=True)

    tick = time.perf_counter()
    losses = fine_tune(model, train_set, cfg, device, out / "train_log.jsonl")
    train_seconds = time.perf_counter() - tick
    if cfg.save_model:
        atomic_write_bytes(out / "model_final.pt", lambda f: torch.save(model.state_dict(), f))
    tick = time.perf_counter()
    metrics, printed = coco.evaluate(val_gt, predict(model, val_set, cfg, device), cfg.task)
    results = {
        "task": cfg.task, "method": METHODS[cfg.task], "name": name or Path(cfg.backbone).stem,
        "backbone": {"path": str(cfg.backbone), "sha256": file_sha256(cfg.backbone), "arch": arch},
        "metrics": metrics, "final_losses": losses, "num_train_images": len(train_set),
        "num_val_images": len(val_set), "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - tick, "device": str(device), "config": dataclasses.asdict(cfg),
    }
    atomic_write_text(out / "cocoeval.txt", printed)
    atomic_write_text(out / "results.md", markdown_table([results]))
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    return results


def _cell(value: float) -> str:
    return "-" if value < 0 else f"{100 * value:.1f}"  # COCOeval's -1: no ground truth in that range


def markdown_table(rows: list[dict]) -> str:
    """Results side by side, laid out like the paper's Tables 8 and 9 (AP in %, '-' where COCOeval gives -1)."""
    iou_types = coco.IOU_TYPES[rows[0]["task"]]
    header = ["Method", "Backbone", "Pre-training"] + [f"{col}^{COLUMN_TAGS[t]}" for t in iou_types
                                                       for col in coco.TABLE_COLUMNS[t]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        backbone = r["backbone"]["arch"].replace("resnet", "ResNet-")
        cells = [r["method"], backbone, r["name"]] + [_cell(r["metrics"][t][col]) for t in iou_types
                                                      for col in coco.TABLE_COLUMNS[t]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _settings(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in _NOT_SETTINGS}


def compare_transfer(cfg: TransferConfig, backbones: list[str], names: list[str], out: str | Path) -> str:
    """Fine-tune each backbone into ``out``/NAME (a finished run with the same backbone and
    settings is reused, so runs can be made one at a time) and tabulate them together."""
    if len(backbones) < 2:
        raise ValueError("compare-transfer needs two or more --backbones; use 'droppick transfer' for one")
    if len(names) != len(backbones) or len(set(names)) != len(names):
        raise ValueError(f"--names needs {len(backbones)} distinct names, one per backbone; got {names}")
    out, rows = Path(out), []
    for name, backbone in zip(names, backbones):
        run_cfg = dataclasses.replace(cfg, backbone=backbone)
        saved = out / name / "results.json"
        if saved.exists():
            results = json.loads(saved.read_text())
            same_settings = _settings(results["config"]) == _settings(dataclasses.asdict(run_cfg))
            if results["backbone"]["sha256"] != file_sha256(backbone) or not same_settings:
                raise ValueError(f"{saved} was made with another backbone or other settings; "
                                 f"delete {out / name} or choose another --out")
            results["name"] = name
        else:
            results = run_transfer(run_cfg, out / name, name=name)
        rows.append(results)
    table = markdown_table(rows)
    atomic_write_text(out / "comparison.md", table)
    atomic_write_text(out / "comparison.json", json.dumps(rows, indent=2) + "\n")
    return table
