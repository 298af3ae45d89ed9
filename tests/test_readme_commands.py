"""The documented command lines (the sections "Command line", "The paper's recipes", "Distributed" and
"Comparing policies at the same compute" of docs/guide/cli.md and docs/guide/distributed.md, the
walk-through of docs/guide/transfer.md and the README's two set-up commands), run as printed.

Every line is parsed completely, by droppick's parser and, for torchrun lines, by torchrun's own.
Each runs in a fresh folder through the installed entry points (the console script, ``python -m``,
``torchrun -m``): as printed where it finishes in seconds here, else with ``--help`` appended
(a full CIFAR or ImageNet run, or a run directory that only a long run makes), which still
imports and starts the printed entry point under the printed launcher. The two-node command runs
in test_elastic.py with both nodes on this machine, and the SLURM script here with stand-ins for
``srun`` and ``scontrol``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from torch.distributed.run import get_args_parser as torchrun_parser

from droppick.cli.main import build_parser
from launch import free_port
from test_library_api import doc_pages

BIN = Path(sys.executable).parent
SECTIONS = ("Command line", "The paper's recipes", "Distributed", "Comparing policies at the same compute",
            "Which policy for which budget", "Noisy labels", "Converting and training",
            "Selective Backprop and SeTa")
SECONDS_HERE = ("plan", "models", "recipes")  # droppick commands that finish in seconds on any data
TIMEOUT_S = 240


def section(title: str) -> str:
    """The section under the heading ``## title``, on whichever page of the README or docs/ holds it."""
    heading = f"\n## {title}\n"
    holders = {page: text for page in doc_pages() if heading in (text := page.read_text())}
    assert len(holders) == 1, f"'## {title}' is a heading of {[str(p) for p in holders]}: expected one page"
    [text] = holders.values()
    start = text.index(heading)
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def blocks(text: str, info: str = "") -> list[str]:
    return re.findall(rf"^```{info}\n(.*?)^```$", text, flags=re.S | re.M)


def command_lines(block: str) -> list[list[str]]:
    """The block's commands as word lists: continuation lines joined, comments dropped."""
    joined = block.replace("\\\n", " ")
    return [words for line in joined.splitlines() if (words := shlex.split(line, comments=True))]


def readme_commands() -> list[list[str]]:
    return [words for title in SECTIONS for block in blocks(section(title)) for words in command_lines(block)]


def droppick_words(words: list[str]) -> list[str]:
    """The droppick command line inside a documented line: after `droppick`, `python -m droppick[.cli]`
    or torchrun's `-m droppick[.cli]`."""
    if words[0] == "droppick":
        return words[1:]
    if words[0] == "python" and words[1] == "-m" and words[2] in ("droppick", "droppick.cli"):
        return words[3:]
    if words[0] == "torchrun":
        args = torchrun_parser().parse_args(words[1:])
        assert args.module and args.training_script in ("droppick", "droppick.cli"), words
        return args.training_script_args
    raise AssertionError(f"a documented command that no test knows how to run: {shlex.join(words)}")


def two_node_command(nproc_per_node: int, endpoint: str, rdzv_id: str, train: list[str]) -> list[str]:
    """torchrun's arguments of the documented two-node line, with this machine's values: the
    processes per node, the rendezvous endpoint and id, and the training arguments after `train`."""
    [words] = [w for w in readme_commands() if w[0] == "torchrun" and "--nnodes" in w]
    args = torchrun_parser().parse_args(words[1:])
    assert (args.nnodes, args.rdzv_backend, args.rdzv_endpoint) == ("2", "c10d", "HOST:29500")
    values = {"--nproc_per_node": str(nproc_per_node), "--rdzv_endpoint": endpoint, "--rdzv_id": rdzv_id}
    launcher = words[1:words.index("-m")]
    for flag, value in values.items():
        launcher[launcher.index(flag) + 1] = value
    return launcher + words[words.index("-m"):words.index("train") + 1] + train


def test_the_sections_hold_the_commands_they_promise():
    commands = readme_commands()
    assert {w[0] for w in commands} == {"droppick", "python", "torchrun"}
    assert {droppick_words(w)[0] for w in commands} >= {"plan", "train", "eval", "compare", "inspect", "export",
                                                          "models", "recipes"}
    assert sum(w[0] == "torchrun" for w in commands) == 5
    assert any("--shard-state" in w for w in commands)
    assert any("--auto-resume" in w and "--max-restarts" in w for w in commands)


@pytest.mark.parametrize("words", readme_commands(), ids=shlex.join)
def test_readme_command_parses_and_runs(words, tmp_path, request):
    inner = droppick_words(words)
    build_parser().parse_args(inner)  # every flag known and of the right type (argparse exits otherwise)
    if "HOST:29500" in words:
        pytest.skip("the two-node line runs in test_elastic.py, with 127.0.0.1 for HOST")
    fast = inner[0] in SECONDS_HERE or "fashion-mnist-tiny_cnn-dap" in inner
    if "fashion-mnist-tiny_cnn-dap" in inner:
        request.getfixturevalue("real_fashion_dir")  # the real data: skipped without it, failed in CI
    program = {"droppick": [str(BIN / "droppick")], "python": [sys.executable],
               "torchrun": [str(BIN / "torchrun")]}[words[0]]
    command = program + words[1:] + ([] if fast else ["--help"])
    # torchrun's default port, 29500, may be in use by a test running beside this one: PET_MASTER_PORT
    # (torchrun reads every option from PET_<NAME>) moves it without changing the printed line.
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S,
                          env=dict(os.environ, OMP_NUM_THREADS="1", PET_MASTER_PORT=str(free_port())))
    assert proc.returncode == 0, proc.stderr[-3000:]
    if not fast:
        assert f"usage: droppick {inner[0]}" in proc.stdout
    elif inner[0] == "train":
        out = tmp_path / inner[inner.index("--out") + 1]
        assert proc.stdout.count("final test top-1") == 1 and (out / "summary.json").exists()
        if "--shard-state" in inner:  # one DaP shard per rank beside each checkpoint
            assert len(list(out.glob("dap-shard-*-of-2.pt"))) == 4
    if "--plot" in inner:
        assert (tmp_path / inner[inner.index("--plot") + 1]).stat().st_size > 0


def test_the_slurm_script_starts_one_torchrun_agent_per_node_that_auto_resumes(tmp_path):
    """The documented sbatch script (docs/guide/distributed.md), run by bash with stand-ins:
    scontrol names two hosts, srun records the command it would start on each node."""
    [script] = blocks(section("Distributed"), "bash")
    assert script.startswith("#!/bin/bash\n") and "#SBATCH --requeue\n" in script
    (tmp_path / "train-r50.sh").write_text(script)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text('#!/bin/sh\n[ "$1 $2 $3" = "show hostnames gpu[07-08]" ] && printf "gpu07\\ngpu08\\n"\n')
    (bin_dir / "srun").write_text(f'#!/bin/sh\nprintf "%s\\0" "$@" > {tmp_path}/srun-args\n')
    for tool in ("scontrol", "srun"):
        (bin_dir / tool).chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_JOB_NODELIST="gpu[07-08]",
               SLURM_NNODES="2", SLURM_JOB_ID="4242")
    proc = subprocess.run(["bash", "train-r50.sh"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr

    words = (tmp_path / "srun-args").read_text().split("\0")[:-1]
    assert words[0] == "torchrun"
    args = torchrun_parser().parse_args(words[1:])
    assert (args.nnodes, args.nproc_per_node, args.max_restarts) == ("2", "8", 3)
    assert (args.rdzv_backend, args.rdzv_endpoint, args.rdzv_id) == ("c10d", "gpu07:29500", "4242")
    train = build_parser().parse_args(droppick_words(words))
    assert train.command == "train" and train.auto_resume and train.out == "/shared/runs/r50"


ROOT = Path(__file__).resolve().parents[1]


def test_the_transfer_walkthrough_runs_under_bash_with_every_droppick_line_parsed(tmp_path):
    """docs/guide/transfer.md's block needs ImageNet, COCO and days of GPU time: bash runs it as
    printed (its variables, continuation lines and mkdir included) with a stand-in ``droppick`` that
    records each command line, which droppick's own parser then reads completely."""
    [block] = blocks((ROOT / "docs" / "guide" / "transfer.md").read_text())
    stand_in = tmp_path / "bin" / "droppick"
    stand_in.parent.mkdir()
    stand_in.write_text('#!/bin/bash\nprintf "%q " "$@" >> "$CALLS"; echo >> "$CALLS"\n')
    stand_in.chmod(0o755)
    calls = tmp_path / "calls"
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, PATH=f"{stand_in.parent}:{os.environ['PATH']}", CALLS=str(calls)))
    assert proc.returncode == 0, proc.stderr
    recorded = [shlex.split(line) for line in calls.read_text().splitlines()]
    printed = [words for words in command_lines(block) if words[0] == "droppick"]
    assert [words[0] for words in recorded] == [words[1] for words in printed]  # every line ran, in order
    assert {words[0] for words in recorded} == {"train", "export", "transfer", "compare-transfer"}
    for words in recorded:
        build_parser().parse_args(words)  # every flag known and of the right type, $INST and $KPTS expanded
    assert (tmp_path / "backbones").is_dir()
    assert sum("coco/annotations/person_keypoints_val2017.json" in words for words in recorded) == 1


def test_the_readme_opens_with_the_two_set_up_commands_that_make_knows():
    """CI runs ``make test`` itself and tests/test_demo.py runs ``droppick demo``'s path; this holds
    the printed lines to those targets (``make -n`` resolves each target without running it)."""
    [first, *_] = blocks((ROOT / "README.md").read_text())
    assert [words for words in command_lines(first)] == [["make", "demo"], ["make", "test"]]
    for target, runs in (("demo", "droppick demo"), ("test", "pytest")):
        proc = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and runs in proc.stdout, proc.stderr
    assert "make test" in (ROOT / ".ci" / "run").read_text()
