"""Bad settings are refused with a message that names the cause and what to change, one test
per kind of field; a damaged config.json names the file; a schedule that drops nothing says so."""

import json
import re

import pytest

from droppick import DaPSchedule
from droppick.cli.main import main
from droppick.train.config import TrainConfig
from droppick.train.epochs import no_drop_warning
from droppick.train.rundir import RunDir
from droppick.train.trainer import train


def refused(values: dict) -> str:
    with pytest.raises(ValueError) as err:
        TrainConfig.from_dict(values)
    return str(err.value)


@pytest.mark.parametrize("epochs", ["0", "-3"])
def test_epochs_below_one_is_refused_as_such_not_as_a_milestone(epochs, capsys):
    assert main(["train", "--epochs", epochs, "--data-dir", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert f"epochs must be >= 1, got {epochs}" in err and "milestones" not in err, err


@pytest.mark.parametrize("values,message", [  # integers: type, then range
    ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
    ({"batch_size": 1.5}, r"batch_size must be an integer, got 1.5 \(float\)"),
    ({"warmup": 30}, r"warmup must be < epochs \(30\), got 30"),
    ({"num_workers": -1}, "num_workers must be >= 0, got -1"),
    ({"augment_padding": -1}, "augment_padding must be >= 0, got -1"),
    ({"train_samples": 0}, "train_samples must be >= 1, got 0"),
])
def test_integer_fields(values, message):
    assert re.search(message, refused(values))


@pytest.mark.parametrize("values,message", [  # real numbers: finite and in their interval
    ({"lr": float("nan")}, r"lr must be a finite number in \(0, inf\), got nan"),
    ({"lr": 0}, r"lr must be a finite number in \(0, inf\), got 0"),
    ({"momentum": 1.5}, r"momentum must be a finite number in \[0, 1\), got 1.5"),
    ({"weight_decay": float("inf")}, r"weight_decay must be a finite number in \[0, inf\), got inf"),
    ({"lr": "fast"}, r"lr must be a number, got 'fast' \(str\)"),
])
def test_real_number_fields(values, message):
    assert re.search(message, refused(values))


@pytest.mark.parametrize("values,message", [  # fractions
    ({"keep": 0}, r"keep must be in \(0, 1\] \(the fraction of the subset kept at a drop\), got 0"),
    ({"target_compute": 1.5}, r"target_compute must lie in \(0, 1\], got 1.5"),
    ({"infobatch_ratio": float("nan")}, r"infobatch_ratio must lie in \[0, 0.95\], got nan"),
])
def test_fraction_fields(values, message):
    assert re.search(message, refused(values))


@pytest.mark.parametrize("values,message", [  # a choice among names
    ({"policy": "dapp"}, "policy must be one of dap, random, full, scaled, static, infobatch, rs2, epsilon, ema, "
                          "window, trusted, rho, seta, selective_backprop; got 'dapp'"),
    ({"device": "gpu"}, "device must be auto, cpu, cuda or cuda:N .*; got 'gpu'"),
    ({"model": "resnet9000"}, "unknown model 'resnet9000'; available models: .*tiny_cnn, or timm:NAME"),
    ({"dataset": "mnist"}, r"dataset must be one of fashion-mnist, cifar10, cifar100, imagefolder, hf:PATH "
                           r"\(a Hugging Face dataset on disk\), litdata:DIR or wds:DIR .*; got 'mnist'"),
])
def test_choice_fields(values, message):
    assert re.search(message, refused(values))


@pytest.mark.parametrize("values,message", [  # a setting the run's policy would ignore
    ({"trusted_suspects": "uniform"}, r"trusted_suspects='uniform': a setting of policy trusted, which this run "
                                      r"\(policy dap\) would ignore: set policy to trusted, or leave trusted_suspects "
                                      r"at the default \('share'\)"),
    ({"policy": "rho", "val_samples": 10, "epsilon": 0.9}, r"epsilon=0.9: a setting of policy epsilon, .*\(policy rho\)"),
    ({"policy": "epsilon", "sb_keep": 0.3, "sb_start": 2}, r"sb_keep=0.3, sb_start=2: a setting of policy "
                                                          r"selective_backprop, .*leave sb_keep and sb_start at the default"),
    ({"policy": "trusted", "trusted_suspects": "uniform", "trusted_share": 0.3},
     r"trusted_share=0.3 with trusted_suspects 'uniform': .*ignores the share"),
])
def test_another_policys_setting_is_refused(values, message):
    assert re.search(message, refused(values))


def test_the_cli_names_the_ignored_setting(capsys):
    assert main(["train", "--policy", "dap", "--window-skip", "0.2", "--data-dir", "/nonexistent"]) == 2
    assert "window_skip=0.2: a setting of policy window" in capsys.readouterr().err


def test_for_policy_keeps_only_that_policys_settings():
    base = TrainConfig(policy="epsilon", epsilon=0.5)
    assert base.for_policy("epsilon").epsilon == 0.5
    dap = base.for_policy("dap")
    assert (dap.policy, dap.epsilon) == ("dap", TrainConfig().epsilon)
    assert dap.to_dict() | {"epsilon": 0.5, "policy": "epsilon"} == base.to_dict()  # nothing else changed


def test_a_resume_ignores_a_setting_its_policy_never_read():
    from droppick.train.config import training_differences

    saved = TrainConfig(policy="rho", val_samples=10).to_dict() | {"epsilon": 0.9}  # written before the refusal
    now = TrainConfig(policy="rho", val_samples=10).to_dict()
    assert training_differences(saved, now) == []
    epsilon = TrainConfig(policy="epsilon").to_dict()
    assert training_differences(epsilon | {"epsilon": 0.9}, epsilon) == ["epsilon"]  # read: a real difference


def test_choice_fields_accept_what_they_name():
    cfg = TrainConfig(device="cuda:1", model="timm:resnet10t")  # timm itself is asked only when building
    assert (cfg.device, cfg.model) == ("cuda:1", "timm:resnet10t")


@pytest.mark.parametrize("values,message", [  # lists of epochs: each refused under its own name
    ({"reuse_at": [40]}, r"reuse_at entries must lie in 1..epochs \(30\), got 40"),
    ({"reuse_at": [9, 3]}, r"reuse_at must be strictly increasing without duplicates, got \[9, 3\]"),
    ({"reuse_at": 5}, r"reuse_at must be a list of integers, e.g. \[150, 225\], got 5"),
    ({"lr_milestones": [40]}, r"lr_milestones must be increasing epochs in 1..30, got \[40\]: .*--lr-milestones"),
])
def test_list_fields(values, message):
    assert re.search(message, refused(values))


@pytest.mark.parametrize("values,message", [  # switches and free text
    ({"nesterov": "yes"}, r"nesterov must be true or false, got 'yes' \(str\)"),
    ({"recipe": 5}, r"recipe must be a string, got 5 \(int\)"),
    ({"data_dir": " "}, r"data_dir must name a folder; leave it unset \(null\)"),
])
def test_switch_text_and_path_fields(values, message):
    assert re.search(message, refused(values))


def test_a_data_dir_that_does_not_exist_is_named(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["train", "--data-dir", str(missing), "--out", str(tmp_path / "run")]) == 2
    assert f"--data-dir {missing} does not exist or is not a directory" in capsys.readouterr().err


@pytest.mark.parametrize("text,message", [
    ('{"epochs": 4,\n"warmup" 1}', r"is not valid JSON \(Expecting ':' delimiter: line 2"),
    ("[1, 2]", "holds a JSON list, not the object of settings droppick wrote"),
    ('{"epochs": 0}', "epochs must be >= 1, got 0"),
])
def test_a_damaged_config_json_names_the_file(text, message, tmp_path, capsys):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.config_path.write_text(text)
    assert main(["train", "--resume", str(run.path)]) == 2
    err = capsys.readouterr().err
    assert f"{run.config_path}" in err and re.search(message, err), err
    if "JSON" in message:
        assert "edited or damaged" in err


def test_no_drop_warning_concerns_the_policies_that_follow_the_drops():
    none = DaPSchedule(epochs=3, warmup=1, interval=1, keep=0.9, reuse_at=[2])  # `--epochs 3` alone
    some = DaPSchedule(epochs=3, warmup=1, interval=1, keep=0.9, reuse_at=[])
    for policy in ("dap", "random", "epsilon", "ema", "window", "trusted", "rho", "scaled", "static"):
        assert "policy " + policy + " will train on all data every epoch" in no_drop_warning(none, 100, policy)
        assert no_drop_warning(some, 100, policy) is None
    for policy in ("full", "infobatch", "rs2", "seta", "selective_backprop"):
        assert no_drop_warning(none, 100, policy) is None
    assert no_drop_warning(none, 100, "scaled", target_compute=0.5) is None  # its own target, not the plan's
    keep_all = DaPSchedule(epochs=3, warmup=1, interval=1, keep=1.0)
    assert "keep 1.0" in no_drop_warning(keep_all, 100)


def test_plan_and_train_say_before_training_that_the_schedule_drops_nothing(fake_fashion, tmp_path, capsys):
    assert main(["plan", "--epochs", "3"]) == 0
    captured = capsys.readouterr()
    assert "compute: 150000 of 3 x 50000 samples = 100.00%" in captured.out
    assert "schedule drops nothing" in captured.err and "--warmup, --interval or --keep" in captured.err
    out = tmp_path / "run"
    assert main(["train", "--data-dir", str(fake_fashion), "--epochs", "3", "--batch-size", "120", "--device", "cpu",
                 "--out", str(out), "--no-progress", "--stop-after", "1"]) == 0
    assert "policy dap will train on all data every epoch" in capsys.readouterr().err
    assert len(RunDir(out).read_metrics()) == 1  # a warning: the run trains
    assert main(["plan", "--recipe", "fashion-mnist-tiny_cnn-dap"]) == 0
    assert "drops nothing" not in capsys.readouterr().err


def test_train_warns_once_not_at_every_resume(fake_fashion, tmp_path, capsys):
    cfg = TrainConfig(data_dir=str(fake_fashion), epochs=2, warmup=1, reuse_at=[], keep=1.0, batch_size=120,
                      device="cpu")
    train(cfg, tmp_path / "run", stop_after=1)
    assert "drops nothing" in capsys.readouterr().err
    train(None, tmp_path / "run", resume=True)
    assert "drops nothing" not in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["compute_fraction"] == 1.0
