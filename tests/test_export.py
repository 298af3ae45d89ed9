"""``droppick export``: every Table 7 backbone round-trips exactly in every format, a real
training run exports end to end, and what cannot be exported is refused with the list of archs."""

import argparse
import hashlib
import pickle
import re

import pytest
import torch
import torchvision

from droppick.train.checkpoint import save_checkpoint
from droppick.cli.transfer import add_parsers
from droppick.train.config import TrainConfig
from droppick.data.datasets import write_fake_imagefolder
from droppick.transfer.export import CLASSIFIERS, export_backbone, load_backbone
from droppick.models import build_model
from droppick.train.trainer import CHECKPOINT_FORMAT, train

TABLE7 = ["resnet18", "resnet50", "resnet101", "resnet152", "densenet121", "densenet169", "mobilenet_v1"]


def run_cli(argv):
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def fake_checkpoint(path, arch, in_channels=3, seed=0):
    """A checkpoint with the layout train() writes: build_model's keys, shapes and dtypes (built on
    the meta device, so without initialisation cost), holding seeded random values in every float
    tensor (BN statistics included), so a dropped, swapped or renamed tensor cannot go unseen."""
    with torch.device("meta"):
        model = build_model(arch, num_classes=10, in_channels=in_channels)
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=g).abs() if v.is_floating_point() else torch.zeros((), dtype=v.dtype)
             for k, v in model.state_dict().items()}
    config = TrainConfig(dataset="imagefolder", model=arch).to_dict()
    save_checkpoint({"format": CHECKPOINT_FORMAT, "config": config, "epoch": 7, "model": state, "optimizer": {}}, path)
    return state


def backbone_part(state, arch):
    return {k: v for k, v in state.items() if not k.startswith(CLASSIFIERS[arch])}


def assert_sidecar(path, printed=None):
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (path.parent / (path.name + ".sha256")).read_text() == f"{digest}  {path.name}\n"
    if printed is not None:
        assert f"{digest}  {path.name}" in printed


def from_detectron2_name(name):
    """The inverse of detectron2's convert-torchvision-to-d2.py renaming, written independently."""
    name = re.sub(r"^stem\.", "", name)
    name = re.sub(r"^res(\d)", lambda m: f"layer{int(m.group(1)) - 1}", name)
    name = name.replace("shortcut.norm", "downsample.1").replace("shortcut", "downsample.0")
    return re.sub(r"conv(\d)\.norm", r"bn\1", name)


def torchvision_classifier(arch):
    """The model of that name with its classifier, on the meta device: loading with assign=True
    checks keys and shapes as a real model would, and the loaded tensors can be compared."""
    with torch.device("meta"):
        if arch == "mobilenet_v1":
            return build_model(arch, num_classes=1000, in_channels=3)
        return torchvision.models.get_model(arch, weights=None)


@pytest.mark.parametrize("arch", TABLE7)
def test_every_table7_backbone_round_trips_exactly(arch, tmp_path):
    state = fake_checkpoint(tmp_path / "checkpoint-0007.pt", arch)
    expected = backbone_part(state, arch)
    target = torchvision_classifier(arch)
    classifier_keys = sorted(k for k in target.state_dict() if k.startswith(CLASSIFIERS[arch]))
    for fmt, name in (("torchvision", "b.pth"), ("safetensors", "b.safetensors")):
        done = export_backbone(tmp_path / "checkpoint-0007.pt", fmt, tmp_path / name)
        assert (done.arch, done.epoch, done.num_tensors) == (arch, 7, len(expected))
        assert_sidecar(done.path)
        loaded = load_backbone(done.path)
        assert loaded.keys() == expected.keys()
        assert all(torch.equal(loaded[k], expected[k]) for k in expected)
        result = target.load_state_dict(loaded, strict=False, assign=True)
        assert sorted(result.missing_keys) == classifier_keys and result.unexpected_keys == []
        target_state = target.state_dict()
        assert all(torch.equal(target_state[k], expected[k]) for k in expected)
        done.path.unlink()  # ResNet-152 is 230 MB a file
    if arch in ("resnet18", "resnet50"):  # BasicBlock and Bottleneck; deeper ResNets only repeat blocks
        done = export_backbone(tmp_path / "checkpoint-0007.pt", "detectron2", tmp_path / "b.pkl")
        with open(done.path, "rb") as f:
            d2 = pickle.load(f)
        assert d2["__author__"] == "droppick" and d2["matching_heuristics"] is True
        weights = d2["model"]
        assert {"stem.conv1.weight", "stem.conv1.norm.running_var", "res2.0.conv1.norm.weight",
                "res3.0.shortcut.weight", "res3.0.shortcut.norm.running_mean", "res5.1.conv2.weight"} <= set(weights)
        assert not any(k.endswith("num_batches_tracked") for k in weights)
        assert {from_detectron2_name(k) for k in weights} == {k for k in expected if not k.endswith("num_batches_tracked")}
        assert all(torch.equal(torch.from_numpy(v), expected[from_detectron2_name(k)]) for k, v in weights.items())


def test_real_training_run_exports_into_torchvision_detection_bodies(tmp_path, capsys):
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    data = write_fake_imagefolder(tmp_path / "data", classes=2, per_class=4, size=36)
    cfg = TrainConfig(dataset="imagefolder", data_dir=str(data), model="resnet18", image_size=32, eval_resize=36,
                      batch_size=4, epochs=1, warmup=0, interval=1, keep=0.5, reuse_at=[], device="cpu")
    train(cfg, tmp_path / "run")
    out = tmp_path / "r18.pth"
    assert run_cli(["export", str(tmp_path / "run"), "--format", "torchvision", "-o", str(out)]) == 0  # run dir
    assert_sidecar(out, capsys.readouterr().out)
    trained = torch.load(tmp_path / "run" / "checkpoint-0001.pt", weights_only=True)["model"]
    exported = torch.load(out, weights_only=True)
    assert exported.keys() == backbone_part(trained, "resnet18").keys()
    assert all(torch.equal(exported[k], trained[k]) for k in exported)
    # FrozenBatchNorm2d (the detectors' default) and plain BatchNorm2d bodies both take it strictly.
    resnet_fpn_backbone(backbone_name="resnet18", weights=None).body.load_state_dict(exported, strict=True)
    body = IntermediateLayerGetter(torchvision.models.resnet18(weights=None), {"layer4": "0"})
    body.load_state_dict(exported, strict=True)
    assert run_cli(["export", str(tmp_path / "run" / "checkpoint-0001.pt"), "--format", "safetensors",
                    "-o", str(tmp_path / "r18.safetensors")]) == 0
    assert all(torch.equal(v, exported[k]) for k, v in load_backbone(tmp_path / "r18.safetensors").items())


@pytest.mark.parametrize("arch", ["small_cnn", "resnet20"])
def test_models_without_a_backbone_mapping_are_refused_with_the_supported_list(arch, tmp_path):
    fake_checkpoint(tmp_path / "c.pt", arch)
    with pytest.raises(ValueError, match=f"no backbone mapping for model '{arch}'.*Supported: resnet18, resnet50, "
                                         "resnet101, resnet152, densenet121, densenet169, mobilenet_v1"):
        export_backbone(tmp_path / "c.pt", "torchvision", tmp_path / "b.pth")
    assert not (tmp_path / "b.pth").exists()


def test_detectron2_format_is_for_resnets_in_pkl_files_only(tmp_path):
    fake_checkpoint(tmp_path / "d.pt", "densenet121")
    with pytest.raises(ValueError, match="detectron2 has no backbone mapping.*use --format torchvision or "
                                         "safetensors. Supported: resnet18, resnet50, resnet101, resnet152$"):
        run_cli(["export", str(tmp_path / "d.pt"), "--format", "detectron2", "-o", str(tmp_path / "d.pkl")])
    with pytest.raises(ValueError, match=r"only from a file ending in \.pkl; name the output e\.g\. .*r\.pkl"):
        export_backbone(tmp_path / "d.pt", "detectron2", tmp_path / "r.pth")


def test_grey_input_missing_file_and_changed_export_are_clear_errors(tmp_path):
    fake_checkpoint(tmp_path / "grey.pt", "resnet18", in_channels=1)
    with pytest.raises(ValueError, match=r"conv1.weight has shape \(64, 1, 7, 7\).*3-channel images only"):
        export_backbone(tmp_path / "grey.pt", "torchvision", tmp_path / "b.pth")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        export_backbone(tmp_path / "nope.pt", "torchvision", tmp_path / "b.pth")
    fake_checkpoint(tmp_path / "c.pt", "resnet18")
    done = export_backbone(tmp_path / "c.pt", "torchvision", tmp_path / "b.pth")
    done.path.write_bytes(done.path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="the file changed or is truncated; export it again"):
        load_backbone(done.path)
