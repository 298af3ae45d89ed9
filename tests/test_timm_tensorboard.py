"""`--model timm:NAME` trains a timm architecture; `--tensorboard` writes every scalar of every epoch."""

import json

import pytest
import torch

from droppick.cli.main import main
from droppick.models import build_model


def test_timm_model_trains_a_tiny_run_and_exports_its_backbone(tmp_path, capsys):
    """A timm run on (fake) CIFAR-10; its backbone exports in both formats and loads strictly into
    timm's headless model, which then computes the trained model's pre-logits features."""
    timm = pytest.importorskip("timm")
    from droppick.data.datasets import write_fake_cifar
    from droppick.train.rundir import RunDir
    from droppick.transfer.export import export_backbone, load_backbone

    data, out = write_fake_cifar(tmp_path / "cifar", "cifar10", n_train=128, n_test=20), tmp_path / "run"
    assert main(["train", "--dataset", "cifar10", "--data-dir", str(data), "--model", "timm:resnet10t",
                 "--epochs", "2", "--warmup", "1", "--keep", "0.5", "--reuse-at", "none", "--batch-size", "64",
                 "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["subset_size"] for r in rows] == [128, 128] and all(r["train_loss"] > 0 for r in rows)
    trained = timm.create_model("resnet10t", pretrained=False, num_classes=10).eval()
    trained.load_state_dict(RunDir(out).latest_checkpoint()["model"])
    images = torch.randn(2, 3, 32, 32)
    for fmt, name in (("torchvision", "backbone.pth"), ("safetensors", "backbone.safetensors")):
        exported = export_backbone(out, fmt, tmp_path / name)
        headless = timm.create_model("resnet10t", pretrained=False, num_classes=0).eval()
        headless.load_state_dict(load_backbone(tmp_path / name))  # strict: every key, nothing more
        assert exported.arch == "timm:resnet10t" and exported.num_tensors == len(headless.state_dict())
        with torch.no_grad():
            assert torch.equal(headless(images), trained.forward_head(trained.forward_features(images), pre_logits=True))
    with pytest.raises(ValueError, match="--format detectron2 has no backbone mapping for model 'timm:resnet10t'; "
                                         "use --format torchvision or safetensors"):
        export_backbone(out, "detectron2", tmp_path / "backbone.pkl")
    model = build_model("timm:resnet10t", num_classes=10, in_channels=1)  # in_chans and num_classes from the data
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert "timm:NAME" in (main(["models"]) == 0 and capsys.readouterr().out)


def test_unknown_timm_model_is_a_clear_error(capsys):
    pytest.importorskip("timm")
    with pytest.raises(ValueError, match="timm has no architecture 'resnet10tt'; similar names: .*resnet10t"):
        build_model("timm:resnet10tt")


def test_tensorboard_event_file_holds_every_scalar_of_every_epoch(fake_fashion, tmp_path):
    """Every scalar, by its tag spelled out here (not read back from the source's table), one point
    per epoch; the points a killed process wrote past its last checkpoint are purged on resume."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    tags = {"train_loss": "train/loss", "test_top1": "test/top1", "test_top5": "test/top5", "lr": "train/lr",
            "subset_size": "dap/subset_size", "compute_fraction": "dap/compute_fraction",
            "epoch_seconds": "time/epoch_seconds"}
    out = tmp_path / "run"
    args = ["train", "--data-dir", str(fake_fashion), "--epochs", "3", "--warmup", "1", "--keep", "0.5",
            "--reuse-at", "none", "--batch-size", "64", "--device", "cpu", "--no-progress", "--tensorboard",
            "--out", str(out)]
    assert main(args + ["--stop-after", "1"]) == 0
    killed = SummaryWriter(str(out / "tensorboard"))  # what a process killed in epoch 3 leaves past checkpoint 1
    for tag in tags.values():
        for epoch in (2, 3):
            killed.add_scalar(tag, -1.0, global_step=epoch)
    killed.close()
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0  # a resumed run appends, once
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == set(tags.values())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for key, tag in tags.items():
        points = events.Scalars(tag)
        assert [p.step for p in points] == [1, 2, 3], tag
        assert [p.value for p in points] == pytest.approx([r[key] for r in rows], rel=1e-6), tag
