"""Every recipe: its planned compute matches the paper, and it trains for one epoch on generated data."""

import json

import pytest

from droppick.cli.main import main
from droppick.train.config import TrainConfig
from droppick.data.datasets import write_fake_cifar, write_fake_imagefolder
from droppick.train.recipes import list_recipes, load_recipe, parse_overrides
from droppick.train.rundir import RunDir
from droppick.train.trainer import train

RECIPES = list_recipes()


def test_recipe_names_cover_the_paper_tables():
    names = {r.name for r in RECIPES}
    for arch in ("resnet110", "resnet164", "densenet_bc_100"):
        assert {f"cifar10-{arch}-{v}" for v in ("full", "dap63", "dap83")} <= names
        assert {f"cifar100-{arch}-{v}" for v in ("full", "dap79", "dap92")} <= names
    for arch in ("resnet18", "resnet50", "resnet101", "resnet152", "densenet121", "densenet169", "mobilenet_v1"):
        assert {f"imagenet-{arch}-{v}" for v in ("full", "dap75", "dap86")} <= names


@pytest.mark.parametrize("recipe", [r for r in RECIPES if r.paper_compute is not None], ids=lambda r: r.name)
def test_plan_recipe_matches_paper_compute(recipe, capsys):
    assert main(["plan", "--recipe", recipe.name, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    tolerance = 1.2 if recipe.name.startswith("imagenet") else 0.7  # percentage points, as in test_schedule
    assert abs(100 * out["compute_fraction"] - 100 * recipe.paper_compute) <= tolerance
    assert out["recipe"] == recipe.name


def test_recipes_keep_paper_lr_schedule():
    r = load_recipe("cifar10-resnet110-dap63").config
    assert (r["epochs"], r["lr_milestones"], r["reuse_at"], r["interval"]) == (300, [150, 225], [150], 10)
    r = load_recipe("imagenet-resnet50-dap86").config
    assert (r["epochs"], r["lr_milestones"], r["keep"], r["active"]) == (120, [30, 60, 90], 0.95, 10)


def test_unknown_recipe_and_unknown_set_key_are_refused(capsys):
    assert main(["plan", "--recipe", "cifar10-resnet9000-dap63"]) == 2
    assert "available recipes: cifar10-densenet_bc_100-full" in capsys.readouterr().err
    assert main(["train", "--recipe", "cifar10-resnet110-full", "--set", "learning_rate=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown config keys ['learning_rate']" in err and "lr_milestones" in err


def test_parse_overrides_types():
    assert parse_overrides(["epochs=2", "reuse_at=[1, 2]", "data_dir=/x", "active=null", "amp=bf16"]) == {
        "epochs": 2, "reuse_at": [1, 2], "data_dir": "/x", "active": None, "amp": "bf16"}
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["epochs"])


@pytest.fixture(scope="module")
def generated_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe-data")
    return {
        "cifar10": write_fake_cifar(root / "c10", "cifar10", n_train=30, n_test=10),
        "cifar100": write_fake_cifar(root / "c100", "cifar100", n_train=200, n_test=100),
        "imagefolder": write_fake_imagefolder(root / "inet", classes=3, per_class=4, size=40),
    }


def _one_per_family() -> list:
    """The first variant of each recipe file: the variants of a family share model, data and
    optimiser and differ only in schedule keys, which test_every_recipe_makes_a_valid_config checks."""
    families = {}
    for recipe in RECIPES:
        families.setdefault(recipe.name.rsplit("-", 1)[0], recipe)
    return list(families.values())


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.name)
def test_every_recipe_makes_a_valid_config_and_plan(recipe):
    cfg = TrainConfig.from_dict(recipe.config)  # validates every key, the schedule included
    from droppick.policies import build_policy

    plan = build_policy(cfg.policy, target_compute=cfg.target_compute).plan(cfg.schedule, recipe.num_samples)
    assert plan.epochs <= cfg.epochs and 0 < plan.compute_fraction <= 1


@pytest.mark.parametrize("recipe", _one_per_family(), ids=lambda r: r.name)
def test_every_recipe_family_trains_one_epoch(recipe, generated_data, fake_fashion, tmp_path):
    """The recipe as written (model, optimiser, schedule), with only the data made tiny."""
    dataset = recipe.config["dataset"]
    data_dir = fake_fashion if dataset == "fashion-mnist" else generated_data[dataset]
    small = {"data_dir": str(data_dir), "batch_size": 8, "eval_batch_size": 16, "device": "cpu",
             "train_samples": 16 if dataset != "imagefolder" else None, "num_workers": 0}
    if dataset == "imagefolder":
        small |= {"image_size": 32, "eval_resize": 36}
    cfg = TrainConfig.from_dict(recipe.config | small)
    assert train(cfg, tmp_path / "run", stop_after=1) is None
    [row] = RunDir(tmp_path / "run").read_metrics()
    assert row["epoch"] == 1 and row["subset_size"] == row["samples_seen"]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["recipe"] == recipe.name
