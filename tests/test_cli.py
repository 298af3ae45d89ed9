"""The command line: plan's JSON, table and plot; train's run directory; clear errors."""

import json

import pytest

from droppick import DaPSchedule
from droppick.cli.main import main


def test_plan_json_reproduces_the_paper_baseline(capsys):
    assert main(["plan", "--epochs", "300", "--warmup", "40", "--interval", "10", "--keep", "0.9",
                 "--reuse-at", "150", "--num-samples", "50000", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 0 <= out["compute_fraction"] <= 1 and abs(100 * out["compute_fraction"] - 63) <= 0.7
    assert len(out["subset_sizes"]) == 300 and out["pick_epochs"] == [150]
    assert out["drop_epochs"][:2] == [50, 60]
    expected = DaPSchedule(300, 40, 10, 0.9, None, [150]).plan(50000)
    assert out["subset_sizes"] == list(expected.subset_sizes)


def test_plan_table_and_plot(tmp_path, capsys):
    png = tmp_path / "plan.png"
    assert main(["plan", "--epochs", "120", "--warmup", "10", "--interval", "2", "--keep", "0.9",
                 "--active", "10", "--reuse-at", "30,60,90", "--num-samples", "1281167", "--plot", str(png)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["epoch", "subset", "event"]
    assert lines[12].split() == ["12", "1281167", "drop"] and lines[30].split() == ["30", "840573", "pick"]
    assert "73.91%" in lines[-2]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_plan_bad_hyperparameter_is_a_clear_error(capsys):
    assert main(["plan", "--keep", "1.5"]) == 2
    assert "keep must be in (0, 1]" in capsys.readouterr().err


def test_plan_with_a_floor_solves_keep_and_refuses_a_bad_floor(capsys):
    args = ["plan", "--epochs", "30", "--warmup", "4", "--interval", "1", "--reuse-at", "15,25", "--num-samples",
            "20000", "--target-compute", "0.446", "--solve", "keep"]
    assert main(args + ["--min-keep", "0.15", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    solved = DaPSchedule.from_dict(out["schedule"])
    assert solved.min_keep == 0.15 and min(out["subset_sizes"]) == 3000
    assert out["subset_sizes"] == list(solved.plan(20000).subset_sizes)
    assert abs(out["compute_fraction"] - 0.446) < 0.002
    assert main(["plan", "--min-keep", "1.5"]) == 2
    assert "min_keep must be a number in [0, 1]" in capsys.readouterr().err
    # a recipe's schedule takes the floor too: CIFAR-10's 63% recipe never goes below half the data
    assert main(["plan", "--recipe", "cifar10-resnet110-dap63", "--min-keep", "0.5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert min(out["subset_sizes"]) == 25000 and out["compute_fraction"] > 0.63


def test_train_cli_writes_run_dir_and_resumes(fake_fashion, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data-dir", str(fake_fashion), "--epochs", "3", "--warmup", "1", "--interval", "1",
            "--keep", "0.5", "--reuse-at", "none", "--batch-size", "64", "--out", str(out), "--no-progress",
            "--device", "cpu"]
    assert main(args + ["--stop-after", "1"]) == 0
    assert "--resume" in capsys.readouterr().out
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert "final test top-1" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["compute_fraction"] == pytest.approx((240 + 240 + 120) / 720)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


def test_train_refuses_missing_data_dir(tmp_path, capsys):
    assert main(["train", "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "run")]) == 2
    assert "dataset-fashion-mnist" in capsys.readouterr().err


def test_models_lists_parameter_counts(capsys):
    from droppick.models import build_model

    assert main(["models"]) == 0
    counts = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()}
    assert "resnet110" in counts  # 1.7M in the paper's Table 6
    for name in ("small_cnn", "resnet20"):  # counted independently, for the defaults: 10 classes, 3 channels
        assert counts[name] == f"{sum(p.numel() for p in build_model(name, 10, 3).parameters()):,d}", name


def test_epochs_alone_scales_the_schedule(fake_fashion, tmp_path, capsys):
    """--epochs 6 without other schedule flags: warm-up, picks and LR decays follow the defaults'
    proportions (30 epochs: W=4, R=[15, 25]; x 6/30 -> W=1, R=[3, 5]), printed before training."""
    out = tmp_path / "run"
    assert main(["train", "--data-dir", str(fake_fashion), "--epochs", "6", "--batch-size", "64",
                 "--out", str(out), "--device", "cpu"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["epochs"], cfg["warmup"], cfg["interval"], cfg["reuse_at"]) == (6, 1, 1, [3, 5])
    assert cfg["lr_milestones"] is None  # still follows reuse_at, as in the defaults
    captured = capsys.readouterr()
    assert "epochs 6 (base 30): warmup 1, interval 1, reuse_at [3, 5] scaled to match" in captured.err
    plan = DaPSchedule(6, 1, 1, 0.9, None, [3, 5]).plan(240)
    assert f"warm-up 1, interval 1, keep 0.9, active None, picks after [3, 5], LR /10 after [3, 5]: " \
           f"planned compute {100 * plan.compute_fraction:.1f}%" in captured.out
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["subset_size"] for r in rows] == list(plan.subset_sizes)
    assert [r["event"] for r in rows] == list(plan.events)


def test_explicit_schedule_flags_win_over_derived_ones(capsys):
    assert main(["plan", "--epochs", "30", "--warmup", "8", "--num-samples", "1000", "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    # the paper's 300-epoch baseline scaled by 1/10: I 10 -> 1, R 150 -> 15; W stays the 8 given
    assert out["subset_sizes"] == list(DaPSchedule(30, 8, 1, 0.9, None, [15]).plan(1000).subset_sizes)
    assert "interval 1, reuse_at [15] scaled" in captured.err and "warmup" not in captured.err
    assert main(["plan", "--epochs", "300", "--num-samples", "1000", "--json"]) == 0
    assert capsys.readouterr().err == ""  # the base's own epochs: nothing derived, nothing said


def test_an_in_memory_run_starts_without_importing_torchvision():
    """torchvision (and torch._dynamo under it) adds seconds to the start of every process, the
    CLI's and each DDP rank's; only ImageFolder data, torchvision's models, inspection images and
    detection transfer need it."""
    import subprocess
    import sys

    code = ("import sys, droppick.cli.main, droppick.train.trainer, droppick.data.pipeline, droppick.data.folder_split; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("command", ["recipes", "models"])
def test_listing_commands_exit_quietly_into_a_closed_pipe(command):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "droppick.cli.main", command],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader (`| head -0`) is gone before the first line is written
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err and b"BrokenPipeError" not in err


def test_the_flags_of_the_rules_beyond_the_paper_reach_the_config(capsys):
    from droppick.cli.main import _config_from_args, build_parser

    args = build_parser().parse_args(["train", "--policy", "epsilon", "--epsilon", "0.3",
                                      "--min-keep", "0.2", "--val-samples", "100"])
    cfg = _config_from_args(args)
    assert (cfg.policy, cfg.epsilon, cfg.min_keep, cfg.val_samples) == ("epsilon", 0.3, 0.2, 100)
    assert cfg.schedule.min_keep == 0.2
    cfg = _config_from_args(build_parser().parse_args(["train", "--policy", "ema", "--ema-beta", "0.5"]))
    assert (cfg.policy, cfg.ema_beta) == ("ema", 0.5)
    assert main(["train", "--policy", "epsilon", "--epsilon", "1.5", "--out", "unused"]) == 2
    assert "epsilon must lie in [0, 1]" in capsys.readouterr().err
