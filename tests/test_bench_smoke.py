"""Smoke tests for the profiler, the --profile/--compile flags and the benchmark helpers (no timing asserts)."""

import sys
from pathlib import Path

import pytest
import torch

from droppick.cli.main import build_parser, main
from droppick.train.config import TrainConfig
from droppick.train.profiling import Profiler

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))


def test_profiler_off_records_nothing_and_on_adds_up_laps(monkeypatch):
    off = Profiler(enabled=False)
    off.start()
    off.lap("forward")
    assert off.seconds == {} and off.report("x").startswith("profile x: 0.00 s")
    clock = iter(range(100))  # each clock read is 1 s after the previous one
    monkeypatch.setattr(Profiler, "_now", lambda self: float(next(clock)))
    on = Profiler(enabled=True, device=torch.device("cpu"))
    for _ in range(2):
        on.start()
        for name in ("data", "forward", "data", "eval"):
            on.lap(name)
    assert on.seconds == {"data": 2.0, "forward": 1.0, "eval": 1.0}  # this epoch's laps, 1 s each
    assert on.counts == {"data": 2, "forward": 1, "eval": 1}
    assert on.run_seconds == {"data": 4.0, "forward": 2.0, "eval": 2.0}  # both epochs added up
    report = on.report("epoch 1", samples=9)
    # 4 s in all, eval is not training: 3 s for 9 images
    assert report.startswith("profile epoch 1: 4.00 s; training 3.00 s, 3 images/s")
    assert all(name in report for name in ("data", "forward", "eval"))


def test_profile_and_compile_flags_reach_the_config():
    from droppick.cli.main import _config_from_args

    args = build_parser().parse_args(["train", "--profile", "--compile"])
    cfg = _config_from_args(args)
    assert cfg.profile is True and cfg.compile is True
    assert TrainConfig().profile is False and TrainConfig().compile is False


def test_train_profile_prints_where_the_epoch_went(fake_fashion, tmp_path, capsys):
    assert main(["train", "--data-dir", str(fake_fashion), "--epochs", "1", "--warmup", "0", "--reuse-at", "none",
                 "--train-samples", "64", "--test-samples", "20", "--batch-size", "32", "--device", "cpu",
                 "--profile", "--no-progress", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr()
    text = out.out + out.err
    for section in ("profile epoch 1", "data", "forward", "dap record", "backward", "optimizer", "dap end_epoch",
                    "eval", "checkpoint", "profile run"):
        assert section in text


def test_bench_helpers_interleave_and_ratio():
    from _common import interleave, median_ratio

    calls = []
    times = interleave({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3)
    assert calls == ["a", "b", "b", "a", "a", "b"] and [len(v) for v in times.values()] == [3, 3]
    assert median_ratio([2.0, 4.0, 9.0], [1.0, 2.0, 3.0]) == 2.0


def test_compile_trains_a_shrinking_run_with_one_compilation(fake_fashion, tmp_path, monkeypatch):
    """--compile: full batches through torch.compile (dynamic=False), each epoch's last partial
    batch eagerly, so a subset that shrinks every epoch (a new partial size each time) still
    compiles once. Dynamo's backend="eager" keeps the suite fast: the guards and recompilations
    are Dynamo's either way (bench/compile_recompiles.py counts with Inductor)."""
    import torch
    import torch._dynamo
    from torch._dynamo.utils import counters

    from droppick.train.config import TrainConfig
    from droppick.train.rundir import RunDir
    from droppick.train.trainer import train

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real_compile(model, **(kw | {"backend": "eager"})))
    torch._dynamo.reset()
    counters.clear()
    cfg = TrainConfig(data_dir=str(fake_fashion), model="tiny_cnn", epochs=4, warmup=1, interval=1, keep=0.7,
                      reuse_at=[], batch_size=32, device="cpu", compile=True)
    train(cfg, tmp_path / "run")
    sizes = [r["subset_size"] for r in RunDir(tmp_path / "run").read_metrics()]
    assert len({n % 32 for n in sizes[1:]}) == 3  # three epochs ending on three different partial batches
    assert counters["stats"]["unique_graphs"] == 1
    assert counters["stats"]["calls_captured"] >= 1
    torch._dynamo.reset()


@pytest.mark.real_data
def test_the_gpu_check_script_runs_end_to_end_on_the_cpu(real_fashion_dir, tmp_path):
    """experiments/gpu_check.py --device cpu --quick: every step runs and the results page says so,
    so the script cannot rot while no GPU is lent."""
    import os
    import subprocess

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, DROPPICK_DATA=str(Path(real_fashion_dir).parent), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "experiments/gpu_check.py", "--device", "cpu", "--quick", "--out",
                           str(tmp_path)], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    page = (tmp_path / "README.md").read_text()
    assert proc.returncode == 0, page + proc.stderr[-2000:]
    for step in ("trainer speed", "savings", "device decode", "fashion-mnist gpu report"):
        assert f"| {step} | 0 |" in page
    assert "trainer speed: PASS" in page or "trainer speed: FAIL" in page  # its verdict reached the page
    report = (tmp_path / "fashion-mnist-gpu" / "README.md").read_text()
    assert "| dap |" in report and "| full |" in report
    assert not list(tmp_path.glob("fashion-mnist-gpu/runs/*/checkpoint-*.pt"))


def test_a_partial_benchmark_rerun_replaces_only_its_rows_and_section_and_says_when():
    import run_all

    def results(rows: dict, note: str) -> str:
        sections = [f"### {name}\n\n`python bench/{name}.py` (1 s)\n\n```\n{note} {name}\n```\n" for name in rows]
        return "\n".join(["## Benchmark results", "", "- command: `c`", "", *run_all.TABLE_HEAD,
                          *[f"| {name} | PASS | {v} |" for name, vs in rows.items() for v in vs], "", *sections])

    old = results({"bookkeeping": ["b1"], "savings": ["s1", "s2"], "selection": ["x1"]}, "old")
    fresh = results({"savings": ["s3"]}, "new")
    merged = run_all.merge(old.rstrip("\n"), fresh, ["savings"], "- rerun since: savings")
    expected = results({"bookkeeping": ["b1"], "savings": ["s3"], "selection": ["x1"]}, "old")
    expected = expected.replace("old savings", "new savings").replace("`c`\n", "`c`\n- rerun since: savings\n")
    assert merged == expected.rstrip("\n")


def test_the_flake_page_counts_each_tests_failures_over_the_runs(tmp_path):
    import flake

    def junit(name: str, cases: str) -> Path:  # pytest's junit XML, as -n 2 writes it
        path = tmp_path / name
        path.write_text('<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest">'
                        f"{cases}</testsuite></testsuites>")
        return path

    ok = '<testcase classname="tests.test_a" name="test_ok" time="1.0" />'
    skip = '<testcase classname="tests.test_b" name="test_skip"><skipped message="no data">x</skipped></testcase>'
    good = junit("run-1.xml", ok + skip + '<testcase classname="tests.test_a" name="test_p[a b]" time="2.0" />')
    bad = junit("run-2.xml", ok + skip + '<testcase classname="tests.test_a" name="test_p[a b]"><failure message='
                '"ProcessExitedException: process 0 terminated with signal SIGABRT&#10;more">trace</failure></testcase>'
                '<testcase classname="tests.test_a" name="test_ok"><error message="teardown broke">e</error></testcase>')
    assert flake.outcomes(bad)["tests/test_a.py::test_p[a b]"] == (
        "failed", "ProcessExitedException: process 0 terminated with signal SIGABRT")
    runs = [flake.run_result(good, 0, 300.0, 2.1, [], "3 passed", ""),
            flake.run_result(bad, 1, 330.0, 3.4, ["`python train.py` (nice 10)"], "1 failed", "Traceback"),
            flake.run_result(tmp_path / "none.xml", 3, 5.0, 2.0, [], "INTERNALERROR", "worker crashed")]
    record = {"runs": runs, "planned": 4, "command": "`python bench/flake.py --runs 4`", "note": "a clean clone",
              "pytest": "python -m pytest -q -n 2 --dist loadfile tests/test_a.py tests/test_b.py",
              "started": "2026-12-07 10:00 UTC", "commit": "abc1234",
              "machine": {"nproc": 2, "cpu": "AMD EPYC", "torch": "2.14.1", "python": "3.11.7"}}
    page = tmp_path / "flake.md"
    assert flake.write_page(record, page) == 2
    text = page.read_text()
    for line in ["- command: `python bench/flake.py --runs 4`; it runs, 4 times: `python -m pytest -q -n 2 --dist "
                 "loadfile tests/test_a.py tests/test_b.py`",
                 "- date: 2026-12-07 10:00 UTC; 3 runs took 11 min (**partial: 3 of 4 runs so far**)",
                 "- commit: abc1234", "- machine: 2 CPUs (`nproc`), AMD EPYC; torch 2.14.1; python 3.11.7",
                 "- load: load average 2.0 to 3.4 at the start of a run (on 2 CPUs); other busy processes: "
                 "`python train.py` (nice 10) at the start of 1 run", "- note: a clean clone",
                 "| tests/test_a.py::test_ok | 1 of 3 | 0 | 1 |", "| tests/test_a.py::test_p[a b] | 1 of 3 | 0 | 1 |",
                 "| tests/test_b.py::test_skip | 0 of 3 | 2 | 1 |",
                 "| tests/test_a.py::test_p[a b] | 2 | ProcessExitedException: process 0 terminated with signal SIGABRT |",
                 "| 3 | 3 | 0.1 | 2.0 | INTERNALERROR |"]:
        assert line in text.splitlines(), line
    assert "**2 failures in 3 runs of 3 tests**; 2 test(s) failed at least once; runs 3 ended without a report" in text
    assert "### Run 3: the end of its output" in text and "worker crashed" in text


def test_the_flake_runs_take_the_test_files_that_start_processes(tmp_path):
    import flake

    (tmp_path / "test_many.py").write_text("import os\n\nfrom launch import spawn\n")
    (tmp_path / "test_one.py").write_text('"""mentions launch but does not use it"""\nimport os\n')
    (tmp_path / "helper.py").write_text("from launch import spawn\n")
    assert flake.multi_process_files(tmp_path) == ["tests/test_many.py"]
    real = flake.multi_process_files()
    assert {"tests/test_distributed.py", "tests/test_elastic.py", "tests/test_group_teardown.py"} <= set(real)


def test_the_sharded_selection_benchmark_runs_quick_and_finds_the_subsets_equal():
    """bench/sharded_selection.py --quick: the simulated ranks and the 4 gloo processes select what
    select_hardest selects, and a quick run leaves the docs' table alone."""
    import os
    import subprocess

    root = Path(__file__).resolve().parent.parent
    docs = (root / "docs" / "guide" / "distributed.md").read_text()
    proc = subprocess.run([sys.executable, "bench/sharded_selection.py", "--quick"], cwd=root, capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "PASS same subset as the unsharded engine" in proc.stdout and "FAIL" not in proc.stdout
    for target in ("sharded decision", "sharded exchange per decision", "sharded state"):
        assert f"PASS {target}" in proc.stdout, target
    assert (root / "docs" / "guide" / "distributed.md").read_text() == docs
