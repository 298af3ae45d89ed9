"""``droppick transfer`` / ``compare-transfer`` on a tiny generated COCO-format dataset: a few
CPU iterations of each R-CNN at 128 px, then real pycocotools evaluation written as JSON and
markdown. The numbers themselves are meaningless at this size; where they come from is checked."""

import json
import re

import pytest
import torch

from droppick.transfer import coco
from droppick.train.checkpoint import save_checkpoint
from droppick.train.config import TrainConfig
from droppick.data.datasets import write_fake_imagefolder
from droppick.transfer.export import export_backbone, load_backbone
from droppick.models import build_model
from droppick.train.trainer import CHECKPOINT_FORMAT, train
from droppick.transfer.finetune import TransferConfig, build_detector, load_body, resnet_arch
from test_export import fake_checkpoint, run_cli

SMALL = ["--iters", "2", "--batch-size", "2", "--min-size", "128", "--max-size", "160", "--warmup-iters", "1",
         "--roi-batch-size", "16", "--detections-per-img", "5", "--workers", "0", "--device", "cpu"]
# pycocotools' own numpy-2 deprecation notice, not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
TASK_LOSS = {"detection": "loss_classifier", "segmentation": "loss_mask", "keypoints": "loss_keypoint"}


def seeded_backbone(tmp_path, arch, seed):
    """A freshly initialised classifier (torchvision's init, seeded) in a checkpoint, exported:
    finite activations through a deep net, unlike test_export's random-valued tensors."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = build_model(arch, num_classes=10, in_channels=3).state_dict()
    config = TrainConfig(dataset="imagefolder", model=arch).to_dict()
    save_checkpoint({"format": CHECKPOINT_FORMAT, "config": config, "epoch": 1, "model": state}, tmp_path / f"{arch}-{seed}.pt")
    return export_backbone(tmp_path / f"{arch}-{seed}.pt", "torchvision", tmp_path / f"{arch}-{seed}.pth").path


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    return coco.write_fake_coco(tmp_path_factory.mktemp("coco"), train=6, val=4, size=128)


@pytest.fixture(scope="module")
def r50(tmp_path_factory):
    return seeded_backbone(tmp_path_factory.mktemp("r50"), "resnet50", seed=0)


def printed_stats(text, iou_type):
    """The numbers pycocotools' summarize() printed for one IoU type, in order."""
    block = text.split(f"== {iou_type} ==")[1].split("== ")[0]
    return [float(v) for v in re.findall(r"\] = (-?\d\.\d{3})", block)]


@pytest.mark.parametrize("task", coco.TASKS)
def test_fine_tune_and_evaluate_writes_every_pycocotools_metric(task, coco_dir, r50, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli(["transfer", "--task", task, "--backbone", str(r50), "--data", str(coco_dir), "--name", "dap75",
                    "--out", str(out), "--no-save-model", *SMALL]) == 0
    results = json.loads((out / "results.json").read_text())
    printed = (out / "cocoeval.txt").read_text()
    assert set(results["metrics"]) == set(coco.IOU_TYPES[task])
    for iou_type, metrics in results["metrics"].items():
        stats = metrics.pop("stats")
        assert list(metrics) == list(coco.STATS[iou_type]) and list(metrics.values()) == stats
        assert all(isinstance(v, float) and -1 <= v <= 1 for v in stats)
        assert printed_stats(printed, iou_type) == [round(v, 3) for v in stats]  # the summary COCOeval printed
    assert results["backbone"]["arch"] == "resnet50" and results["num_val_images"] == 4
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["iter"] == 2 and TASK_LOSS[task] in log[-1] and all(v == v for v in log[-1].values())
    table = (out / "results.md").read_text().splitlines()
    assert len(table) == 3 and f"| {coco.TABLE_COLUMNS[coco.IOU_TYPES[task][-1]][0]}^" in table[0]
    assert table[2].startswith(f"| {results['method']} | ResNet-50 | dap75 |") and table[2] in capsys.readouterr().out


@pytest.mark.parametrize("task", coco.TASKS)
def test_detector_is_torchvisions_model_with_the_backbone_loaded_and_frozen_bn(task, r50):
    from torchvision.models import detection
    from torchvision.ops import FrozenBatchNorm2d

    state = load_backbone(r50)
    model = build_detector(TransferConfig(task=task, backbone=str(r50)), resnet_arch(state), num_classes=3)
    load_body(model, state)
    body = model.backbone.body.state_dict()
    assert all(torch.equal(body[k], v) for k, v in state.items() if k in body)
    assert all(not isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert isinstance(model.backbone.body.bn1, FrozenBatchNorm2d)
    trainable = {name.split(".")[0] for name, p in model.backbone.body.named_parameters() if p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4"}  # the default 3 stages; stem and layer1 frozen
    builder = {"detection": detection.fasterrcnn_resnet50_fpn, "segmentation": detection.maskrcnn_resnet50_fpn,
               "keypoints": detection.keypointrcnn_resnet50_fpn}[task]
    reference = builder(weights=None, weights_backbone=None, num_classes=3)
    # The same modules and tensors, apart from BatchNorm's counter: FrozenBatchNorm2d keeps none.
    assert list(model.state_dict()) == [k for k in reference.state_dict() if not k.endswith("num_batches_tracked")]


def test_compare_transfer_tabulates_backbones_and_reuses_finished_runs(coco_dir, tmp_path, capsys):
    data = write_fake_imagefolder(tmp_path / "imagenet", classes=2, per_class=4, size=36)
    cfg = TrainConfig(dataset="imagefolder", data_dir=str(data), model="resnet18", image_size=32, eval_resize=36,
                      batch_size=4, epochs=1, warmup=0, interval=1, keep=0.5, reuse_at=[], device="cpu")
    train(cfg, tmp_path / "run")  # a real (tiny) DaP run, end to end through export and transfer
    assert run_cli(["export", str(tmp_path / "run"), "-o", str(tmp_path / "dap.pth")]) == 0
    full = seeded_backbone(tmp_path, "resnet18", seed=1)
    argv = ["compare-transfer", "--task", "detection", "--backbones", f"{full},{tmp_path / 'dap.pth'}",
            "--names", "full,dap75", "--data", str(coco_dir), "--out", str(tmp_path / "cmp"), "--no-save-model", *SMALL]
    assert run_cli(argv) == 0
    table = (tmp_path / "cmp" / "comparison.md").read_text().splitlines()
    assert table[0].startswith("| Method | Backbone | Pre-training | AP^bb | AP50^bb | AP75^bb | AP_S^bb |")
    assert [row.split(" | ")[1:3] for row in table[2:]] == [["ResNet-18", "full"], ["ResNet-18", "dap75"]]
    made = (tmp_path / "cmp" / "full" / "results.json").stat().st_mtime_ns
    capsys.readouterr()
    assert run_cli(argv) == 0  # both runs are reused: nothing is trained again
    assert "iter " not in capsys.readouterr().out
    assert (tmp_path / "cmp" / "full" / "results.json").stat().st_mtime_ns == made
    assert (tmp_path / "cmp" / "comparison.md").read_text().splitlines() == table
    with pytest.raises(ValueError, match="was made with another backbone or other settings"):
        run_cli(argv[:-len(SMALL)] + ["--seed", "1", *SMALL])
    with pytest.raises(FileExistsError, match="already holds results; choose another --out"):
        run_cli(["transfer", "--task", "detection", "--backbone", str(full), "--data", str(coco_dir),
                 "--out", str(tmp_path / "cmp" / "full"), *SMALL])


def test_dataset_targets_and_flips(coco_dir):
    gt = coco.load_coco(coco_dir / "annotations" / "person_keypoints_train.json", "--train-json")
    dataset = coco.CocoDataset(gt, coco_dir / "images", "keypoints", train=True, flag="--train-images")
    image, target = dataset[(0, False)]
    flipped_image, flipped = dataset[(0, True)]
    x, y, w, h = gt.loadAnns(gt.getAnnIds(imgIds=dataset.ids[0]))[0]["bbox"]
    assert target["boxes"][0].tolist() == [x, y, x + w, y + h]
    assert flipped["boxes"][0].tolist() == [128 - x - w, y, 128 - x, y + h]
    assert torch.equal(flipped_image, image.flip(-1))
    # torchvision's reference flip order for COCO person keypoints
    assert dataset.flip_perm == [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
    left_eye, right_eye = 1, 2
    assert flipped["keypoints"][0, left_eye, 0] == 128 - target["keypoints"][0, right_eye, 0]
    masks = coco.CocoDataset(coco.load_coco(coco_dir / "annotations" / "instances_val.json", "--val-json"),
                             coco_dir / "images", "segmentation", train=False, flag="--val-images")
    _, target = masks[(0, True)]
    assert target["masks"].shape[1:] == (128, 128) and len(target["masks"]) == len(target["boxes"])


def test_clear_errors_before_any_training(coco_dir, r50, tmp_path):
    base = ["transfer", "--task", "segmentation", "--backbone", str(r50), "--out", str(tmp_path / "o"), *SMALL]
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"annotation file .*empty/annotations/instances_train.json does not "
                                                r"exist; pass it with --train-json"):
        run_cli(base + ["--data", str(tmp_path / "empty")])
    with pytest.raises(FileNotFoundError, match=r"image folder .*nowhere does not exist; pass it with --val-images"):
        run_cli(base + ["--data", str(coco_dir), "--val-images", str(tmp_path / "nowhere")])
    with pytest.raises(ValueError, match="give --data COCO_DIR, or both --train-json and --train-images"):
        run_cli(base)
    fake_checkpoint(tmp_path / "d.pt", "densenet121")
    export_backbone(tmp_path / "d.pt", "torchvision", tmp_path / "d.pth")
    with pytest.raises(ValueError, match="match none of resnet18, resnet50, resnet101, resnet152"):
        run_cli(["transfer", "--task", "detection", "--backbone", str(tmp_path / "d.pth"), "--data", str(coco_dir), *SMALL])
    with pytest.raises(ValueError, match="--names needs 2 distinct names"):
        run_cli(["compare-transfer", "--task", "detection", "--backbones", f"{r50},{r50}", "--names", "a",
                 "--data", str(coco_dir), *SMALL])


@pytest.mark.parametrize("task", coco.TASKS)
def test_ground_truth_given_as_predictions_scores_ap_1(task, coco_dir):
    """Checks the path from model outputs to COCOeval (box format, mask RLE, keypoint layout)."""
    gt = coco.load_coco(coco_dir / "annotations" / f"{coco.ANNOTATION_PREFIX[task]}_val.json", "--val-json")
    dataset = coco.CocoDataset(gt, coco_dir / "images", task, train=False, flag="--val-images")
    results = {t: [] for t in coco.IOU_TYPES[task]}
    for index, image_id in enumerate(dataset.ids):
        _, target = dataset[(index, False)]
        output = target | {"scores": torch.ones(len(target["boxes"]))}
        if "masks" in target:
            output["masks"] = target["masks"][:, None].float()  # the model's (N, 1, H, W) probabilities
        for iou_type, entries in coco.to_coco_results(image_id, output, task).items():
            results[iou_type] += entries
    metrics, _ = coco.evaluate(gt, results, task)
    for iou_type in coco.IOU_TYPES[task]:
        assert metrics[iou_type]["AP"] == pytest.approx(1.0) and metrics[iou_type]["AP50"] == pytest.approx(1.0)
