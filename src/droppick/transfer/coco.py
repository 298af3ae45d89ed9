"""COCO-format data and evaluation for ``droppick transfer``, on top of pycocotools.

Default layout of a dataset folder (``--train-json/--val-json/--train-images/--val-images``
override each part; real COCO 2017 uses the overrides, see the README)::

    COCO_DIR/images/*.jpg                          file_name in the JSON is relative to this
    COCO_DIR/annotations/instances_train.json      detection and segmentation
    COCO_DIR/annotations/instances_val.json
    COCO_DIR/annotations/person_keypoints_train.json   keypoints
    COCO_DIR/annotations/person_keypoints_val.json

Labels are the COCO category ids themselves (torchvision's convention: 91 classes for COCO,
0 = background), so predictions go back to COCOeval without a mapping table.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image, ImageDraw

TASKS = ("detection", "segmentation", "keypoints")
ANNOTATION_PREFIX = {"detection": "instances", "segmentation": "instances", "keypoints": "person_keypoints"}
IOU_TYPES = {"detection": ("bbox",), "segmentation": ("bbox", "segm"), "keypoints": ("bbox", "keypoints")}
# COCOeval.stats, in its order. Keypoint evaluation has no small-object range (and reports AR
# beside AP), which is why Table 9 has columns that Table 8 lacks and vice versa.
_BOX_STATS = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "AR1", "AR10", "AR100", "AR_S", "AR_M", "AR_L")
STATS = {"bbox": _BOX_STATS, "segm": _BOX_STATS,
         "keypoints": ("AP", "AP50", "AP75", "AP_M", "AP_L", "AR", "AR50", "AR75", "AR_M", "AR_L")}
TABLE_COLUMNS = {"bbox": _BOX_STATS[:6], "segm": _BOX_STATS[:6], "keypoints": STATS["keypoints"]}
MIN_VISIBLE_KEYPOINTS = 10  # torchvision's reference recipe drops training images with fewer


def default_paths(coco_dir: str | Path, task: str, split: str) -> tuple[Path, Path]:
    """(annotation JSON, image folder) of ``split`` ("train" or "val") in the default layout."""
    coco_dir = Path(coco_dir)
    return coco_dir / "annotations" / f"{ANNOTATION_PREFIX[task]}_{split}.json", coco_dir / "images"


def load_coco(path: str | Path, flag: str):
    """pycocotools' COCO index of ``path``; ``flag`` names the option that overrides the path."""
    from .export import require

    COCO = require("pycocotools.coco").COCO
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist; pass it with {flag} "
                                "or use the layout COCO_DIR/annotations/{instances,person_keypoints}_{train,val}.json")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        return COCO(str(path))


def num_classes(coco) -> int:
    return max(coco.getCatIds()) + 1


def keypoint_names(coco) -> list[str]:
    """The keypoint names of the dataset's one keypoint category (COCO: person, 17 names)."""
    lists = [c["keypoints"] for c in coco.loadCats(coco.getCatIds()) if c.get("keypoints")]
    if len(lists) != 1:
        raise ValueError(f"keypoint training needs exactly one category with a 'keypoints' list; found {len(lists)}")
    if len(lists[0]) != 17:  # COCOeval's OKS sigmas are the 17 COCO person keypoints'
        raise ValueError(f"pycocotools evaluates the 17 COCO person keypoints; the category has {len(lists[0])}")
    return lists[0]


def flip_permutation(names: list[str]) -> list[int]:
    """Index of each keypoint's mirror image: left_X <-> right_X, others map to themselves."""
    swap = {"left": "right", "right": "left"}
    mirrored = [swap[n.split("_")[0]] + n[n.index("_"):] if n.split("_")[0] in swap else n for n in names]
    return [names.index(m) for m in mirrored]


class CocoDataset(torch.utils.data.Dataset):
    """Images with torchvision detection targets. ``dataset[(i, flip)]`` -> (image, target).

    The flip decision comes with the index so that all randomness stays in the sampler (one
    seeded generator in the main process), however many loader workers there are.
    """

    def __init__(self, coco, image_dir: str | Path, task: str, train: bool, flag: str) -> None:
        self.coco, self.image_dir, self.task = coco, Path(image_dir), task
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"image folder {self.image_dir} does not exist; pass it with {flag}")
        self.flip_perm = flip_permutation(keypoint_names(coco)) if task == "keypoints" else None
        ids = sorted(coco.getImgIds())
        self.ids = [i for i in ids if self._trainable(i)] if train else ids
        if not self.ids:
            raise ValueError("no usable training images: each lacks a non-crowd annotation with a box (keypoints: "
                             f"or has fewer than {MIN_VISIBLE_KEYPOINTS} visible keypoints)")

    def _annotations(self, image_id: int) -> list[dict]:
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=image_id, iscrowd=False))
        return [a for a in anns if a["bbox"][2] > 0 and a["bbox"][3] > 0]

    def _trainable(self, image_id: int) -> bool:
        anns = self._annotations(image_id)
        if self.task == "keypoints":
            visible = sum(int((np.asarray(a.get("keypoints", []))[2::3] > 0).sum()) for a in anns)
            return visible >= MIN_VISIBLE_KEYPOINTS
        return bool(anns)

    def __len__(self) -> int:
        return len(self.ids)

    def image(self, index: int) -> torch.Tensor:
        info = self.coco.loadImgs(self.ids[index])[0]
        path = self.image_dir / info["file_name"]
        if not path.is_file():
            raise FileNotFoundError(f"image {path} (id {info['id']}) is missing from {self.image_dir}")
        with Image.open(path) as picture:
            pixels = np.array(picture.convert("RGB"))  # a writable copy: torch refuses read-only arrays
        return torch.from_numpy(pixels).permute(2, 0, 1).float() / 255  # CHW in [0, 1], what R-CNNs take

    def __getitem__(self, item: tuple[int, bool]) -> tuple[torch.Tensor, dict]:
        index, flip = item
        image = self.image(index)
        height, width = image.shape[-2:]
        anns = self._annotations(self.ids[index])
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        labels = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
        target = {"boxes": boxes[keep], "labels": labels[keep]}
        if self.task == "segmentation":
            masks = [torch.from_numpy(self.coco.annToMask(a)) for a in anns]
            masks = torch.stack(masks) if masks else torch.zeros(0, height, width, dtype=torch.uint8)
            target["masks"] = masks[keep]
        if self.task == "keypoints":
            keypoints = torch.tensor([a["keypoints"] for a in anns], dtype=torch.float32)
            target["keypoints"] = keypoints.reshape(-1, len(self.flip_perm), 3)[keep]
        if flip:
            image, target = hflip(image, target, self.flip_perm)
        return image, target


def hflip(image: torch.Tensor, target: dict, flip_perm: Optional[list[int]]) -> tuple[torch.Tensor, dict]:
    """Mirror an image and its target; keypoints also swap left and right (as torchvision's reference)."""
    width = image.shape[-1]
    target = dict(target)
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    target["boxes"] = boxes
    if "masks" in target:
        target["masks"] = target["masks"].flip(-1)
    if "keypoints" in target:
        kp = target["keypoints"][:, flip_perm].clone()
        kp[..., 0] = width - kp[..., 0]
        kp[kp[..., 2] == 0] = 0  # unlabelled keypoints stay (0, 0, 0)
        target["keypoints"] = kp
    return image.flip(-1), target


def to_coco_results(image_id: int, output: dict[str, torch.Tensor], task: str) -> dict[str, list[dict]]:
    """One model output (original image coordinates) as COCO result entries, per IoU type.

    Each type gets entries with only its own field, as torchvision's reference does: loadRes
    derives ``area`` (used for the S/M/L ranges) from the first geometric field it finds, so a
    mask result carrying a box would be binned by box area, and a keypoint result's box would be
    replaced by the keypoints' extent.
    """
    from pycocotools import mask as mask_utils

    base = [{"image_id": image_id, "category_id": int(label), "score": float(score)}
            for label, score in zip(output["labels"].tolist(), output["scores"].tolist())]
    boxes = output["boxes"].cpu().clone()
    boxes[:, 2:] -= boxes[:, :2]  # xyxy -> xywh
    results = {"bbox": [b | {"bbox": [round(float(v), 2) for v in box]} for b, box in zip(base, boxes)]}
    if task == "segmentation":
        masks = (output["masks"][:, 0] > 0.5).cpu().numpy().astype(np.uint8)
        rles = [mask_utils.encode(np.asfortranarray(mask)) for mask in masks]
        results["segm"] = [b | {"segmentation": {"size": r["size"], "counts": r["counts"].decode("ascii")}}
                           for b, r in zip(base, rles)]
    if task == "keypoints":
        results["keypoints"] = [b | {"keypoints": [round(float(v), 2) for v in kp.flatten()]}
                                for b, kp in zip(base, output["keypoints"].cpu())]
    return results


def _detections(coco_gt, results: list[dict]):
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            return coco_gt.loadRes(results)
    # loadRes cannot take an empty list; an empty result set still gets COCOeval's real scores (0 or -1).
    from pycocotools.coco import COCO

    empty = COCO()
    empty.dataset = {"images": coco_gt.dataset["images"], "categories": coco_gt.dataset["categories"], "annotations": []}
    empty.createIndex()
    return empty


def evaluate(coco_gt, results: dict[str, list[dict]], task: str) -> tuple[dict[str, dict], str]:
    """COCOeval for each IoU type of ``task``: ({iou_type: {stat name: value, "stats": [...]}}, printed summary)."""
    from pycocotools.cocoeval import COCOeval

    metrics, printed = {}, io.StringIO()
    for iou_type in IOU_TYPES[task]:
        evaluator = COCOeval(coco_gt, _detections(coco_gt, results.get(iou_type, [])), iou_type)
        with contextlib.redirect_stdout(printed):
            print(f"== {iou_type} ==")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        stats = [float(s) for s in evaluator.stats]
        metrics[iou_type] = {**dict(zip(STATS[iou_type], stats)), "stats": stats}
    return metrics, printed.getvalue()


COCO_KEYPOINTS = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
                  "left_knee", "right_knee", "left_ankle", "right_ankle"]


def _random_shape(draw: ImageDraw.ImageDraw, g: torch.Generator, size: int) -> tuple[int, list, list, float]:
    """Draw a filled rectangle (category 1) or ellipse (2); returns (category, bbox, polygon, area)."""
    def draw_int(low: int, high: int) -> int:
        return int(torch.randint(low, high, (1,), generator=g))

    w, h = draw_int(size // 8, size // 2), draw_int(size // 8, size // 2)
    x, y, category = draw_int(0, size - w), draw_int(0, size - h), draw_int(1, 3)
    colour = tuple(draw_int(120, 256) for _ in range(3))
    if category == 1:
        draw.rectangle([x, y, x + w - 1, y + h - 1], fill=colour)
        return category, [x, y, w, h], [x, y, x + w, y, x + w, y + h, x, y + h], float(w * h)
    draw.ellipse([x, y, x + w - 1, y + h - 1], fill=colour)
    angles = torch.linspace(0, 2 * np.pi, 17)[:-1]
    points = torch.stack([x + w / 2 * (1 + angles.cos()), y + h / 2 * (1 + angles.sin())], 1)
    return category, [x, y, w, h], [round(float(v), 1) for v in points.flatten()], float(np.pi * w * h / 4)


def write_fake_coco(root: str | Path, train: int = 6, val: int = 4, size: int = 128, seed: int = 0) -> Path:
    """Test/demo helper: a tiny dataset in the default layout. Each image has 1-3 filled shapes:
    rectangles (category 1) and ellipses (category 2) with polygon masks in ``instances_*``;
    in ``person_keypoints_*`` every shape is a "person" with 17 visible keypoints on a grid over it."""
    root, g = Path(root), torch.Generator().manual_seed(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    shapes = [{"id": 1, "name": "rectangle", "supercategory": "shape"},
              {"id": 2, "name": "ellipse", "supercategory": "shape"}]
    person = [{"id": 1, "name": "person", "supercategory": "person", "keypoints": COCO_KEYPOINTS, "skeleton": []}]
    for split, count in (("train", train), ("val", val)):
        images, instances, people = [], [], []
        for image_id in range(1, count + 1):
            picture = Image.fromarray(torch.randint(0, 60, (size, size, 3), generator=g, dtype=torch.uint8).numpy())
            draw = ImageDraw.Draw(picture)
            for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
                category, (x, y, w, h), polygon, area = _random_shape(draw, g, size)
                ann = {"id": len(instances) + 1, "image_id": image_id, "category_id": category, "bbox": [x, y, w, h],
                       "area": area, "iscrowd": 0, "segmentation": [polygon]}
                grid = [(x + w * (0.1 + 0.8 * (k % 4) / 3), y + h * (0.1 + 0.8 * (k // 4) / 4)) for k in range(17)]
                instances.append(ann)
                people.append(ann | {"category_id": 1, "num_keypoints": 17,
                                     "keypoints": [v for px, py in grid for v in (round(px, 1), round(py, 1), 2)]})
            file_name = f"{split}_{image_id:04d}.jpg"
            picture.save(root / "images" / file_name, quality=95)
            images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        for prefix, anns, cats in (("instances", instances, shapes), ("person_keypoints", people, person)):
            text = json.dumps({"images": images, "annotations": anns, "categories": cats})
            (root / "annotations" / f"{prefix}_{split}.json").write_text(text)
    return root
