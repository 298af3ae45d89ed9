"""`make demo`'s path (`droppick demo`) on tiny data: both policies with one seed, the table the
terminal ends with, the picture it names, and the line bench/demo_time.py writes from it."""

import contextlib
import io
import json
import re
import sys
from pathlib import Path

import pytest

from droppick import DaPSchedule
from droppick.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))


@pytest.fixture(scope="module")
def tiny_demo(fake_fashion, tmp_path_factory):
    """The demo recipe as `make demo` runs it, on the 240 fake images instead of 60,000."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # capsys is per test; this fixture is per module
        code = main(["demo", "--seed", "0", "--out", str(out), "--data-dir", str(fake_fashion),
                     "--train-samples", "240", "--device", "cpu", "--no-progress"])
    assert code == 0
    return out, printed.getvalue()


def test_demo_trains_full_and_dap_with_the_same_seed_and_prints_the_comparison(tiny_demo):
    out, printed = tiny_demo
    result = json.loads((out / "demo.json").read_text())
    assert list(result["policies"]) == ["full", "dap"]
    summaries = {p: json.loads((out / "runs" / f"{p}-seed0" / "summary.json").read_text()) for p in ("full", "dap")}
    assert {s["seed"] for s in summaries.values()} == {0}
    assert summaries["full"]["compute_fraction"] == 1.0
    # the recipe's schedule on 240 samples: two drops, a pick, a drop
    plan = DaPSchedule(6, 1, 1, 0.5, None, [4]).plan(240)
    assert plan.drop_epochs[:2] == [2, 3] and plan.pick_epochs == [4]
    assert summaries["dap"]["compute_fraction"] == pytest.approx(plan.compute_fraction)
    assert result["policies"]["dap"]["epoch_subset"] == list(plan.subset_sizes)
    table = printed.splitlines()
    assert table[-5].split() == ["policy", "final", "top-1", "compute", "train", "time", "of", "full"]
    for line, policy in zip(table[-4:-2], ("full", "dap")):
        s = summaries[policy]
        fraction = s["train_seconds"] / summaries["full"]["train_seconds"]
        assert line.split() == [policy, f"{s['final_test_top1']:.2f}%", f"{100 * s['compute_fraction']:.1f}%",
                                f"{s['train_seconds']:.1f}", "s", f"{100 * fraction:.0f}%"]
    assert re.fullmatch(r"DaP trained on 70\.8% of the samples in \d+% of full's training time; its final top-1 is "
                        r"[+-]\d+\.\d\d points from full's\.", table[-2])
    assert table[-1].startswith(f"picture: {out / 'demo.png'} ")


def test_demo_picture_is_a_png_with_both_policies(tiny_demo):
    out, _ = tiny_demo
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads((out / "demo.json").read_text())["policies"]
    assert all(len(r["epoch_top1"]) == len(r["epoch_subset"]) == 6 for r in rows.values())


def test_demo_time_reads_what_the_demo_writes(tiny_demo):
    import demo_time

    out, _ = tiny_demo
    assert demo_time.DEMO_JSON == "runs/demo/demo.json" and "--out runs/demo" in (
        Path(__file__).resolve().parent.parent / "Makefile").read_text()
    result = json.loads((out / "demo.json").read_text())
    line = demo_time.describe(result, install=120.4, data=None, demo=150.2,
                              m={"cpu": "CPU", "nproc": 2, "date": "today"}, commit="abc1234")
    full, dap = result["policies"]["full"], result["policies"]["dap"]
    assert line.startswith("Measured: `make demo` took **4.5 minutes** on a fresh clone (install 120 s, data not "
                           "measured (not root), training and evaluation of both runs 150 s; ")
    assert (f"final test top-1 full {full['top1_mean']:.2f}%, DaP {dap['top1_mean']:.2f}% at 70.8% compute in "
            f"{100 * dap['train_time_vs_full']:.0f}% of full's training time)") in line


def test_demo_refuses_a_policy_flag(capsys):
    assert main(["demo", "--policy", "random"]) == 2
    assert "droppick demo trains policies full and dap; remove --policy" in capsys.readouterr().err
