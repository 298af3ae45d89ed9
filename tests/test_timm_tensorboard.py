"""`--model timm:NAME` trains a timm architecture; `--tensorboard` writes every scalar of every epoch."""

import json

import pytest
import torch

from droppick.cli.main import main
from droppick.models import build_model


def test_timm_model_trains_a_tiny_run(fake_fashion, tmp_path, capsys):
    pytest.importorskip("timm")
    out = tmp_path / "run"
    assert main(["train", "--data-dir", str(fake_fashion), "--model", "timm:resnet10t", "--epochs", "2",
                 "--warmup", "1", "--keep", "0.5", "--reuse-at", "none", "--batch-size", "64", "--device", "cpu",
                 "--no-progress", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["subset_size"] for r in rows] == [240, 240] and all(r["train_loss"] > 0 for r in rows)
    model = build_model("timm:resnet10t", num_classes=10, in_channels=1)  # in_chans and num_classes from the data
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert "timm:NAME" in (main(["models"]) == 0 and capsys.readouterr().out)


def test_unknown_timm_model_is_a_clear_error(capsys):
    pytest.importorskip("timm")
    with pytest.raises(ValueError, match="timm has no architecture 'resnet10tt'; similar names: .*resnet10t"):
        build_model("timm:resnet10tt")


def test_tensorboard_event_file_holds_every_scalar_of_every_epoch(fake_fashion, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from droppick.integrations.tensorboard import SCALARS

    out = tmp_path / "run"
    args = ["train", "--data-dir", str(fake_fashion), "--epochs", "3", "--warmup", "1", "--keep", "0.5",
            "--reuse-at", "none", "--batch-size", "64", "--device", "cpu", "--no-progress", "--tensorboard",
            "--out", str(out)]
    assert main(args + ["--stop-after", "1"]) == 0
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0  # a resumed run appends, once
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == set(SCALARS.values())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for key, tag in SCALARS.items():
        points = events.Scalars(tag)
        assert [p.step for p in points] == [1, 2, 3], tag
        assert [p.value for p in points] == pytest.approx([r[key] for r in rows], rel=1e-6), tag
