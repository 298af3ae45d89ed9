"""experiments/_jobs.py: the runs a process trains when K processes share a script's jobs, and a run
another process holds is left to it instead of ending this process's share."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
import _jobs  # noqa: E402  (a broken import must fail, not skip)
from droppick.train.lock import RunLockError  # noqa: E402


def test_shares_split_every_run_once_and_a_held_run_is_skipped(monkeypatch, tmp_path):
    jobs = [({"dap-seed0": "a0", "dap-seed1": "a1"}, tmp_path / "a"), ({"rs2-seed0": "b0"}, tmp_path / "b")]
    trained = []

    def run_all(configs, folder, log):
        (name,) = configs
        if name == "dap-seed1":
            raise RunLockError(f"{folder} is held by pid 1")
        trained.append((name, folder.name))

    monkeypatch.setattr(_jobs, "run_all", run_all)
    _jobs.train(jobs, 0, 2)
    assert trained == [("dap-seed0", "a"), ("rs2-seed0", "b")]  # runs 0 and 2 of three
    _jobs.train(jobs, 1, 2)  # run 1, held elsewhere: skipped, no error
    assert len(trained) == 2
