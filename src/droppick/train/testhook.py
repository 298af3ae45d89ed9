"""The trainer's fault-injection hook, for the resume tests: a process kills itself exactly where a
test means it to, so nothing depends on sleeps or timing. Unset, it does nothing."""

from __future__ import annotations

import os
import signal

from .. import distributed

# DROPPICK_TEST_KILL_AT="epoch:E:batch:B" (after the
# optimiser step of batch B of epoch E, 1-based) or "after_checkpoint:E" makes the process
# SIGKILL itself at that point, so a test interrupts a run exactly where it means to.
# DROPPICK_TEST_KILL_RANK=R limits it to rank R. Under torchrun it fires in the first attempt
# only (TORCHELASTIC_RESTART_COUNT 0), so a restarted worker gets past the point.
KILL_AT = os.environ.get("DROPPICK_TEST_KILL_AT")
KILL_RANK = os.environ.get("DROPPICK_TEST_KILL_RANK")
TERM_AT = os.environ.get("DROPPICK_TEST_TERM_AT")  # the same points, with SIGTERM (what SLURM sends first)


def kill_point(point: str) -> None:
    if point not in (KILL_AT, TERM_AT) or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return
    if KILL_RANK is None or int(KILL_RANK) == distributed.rank_and_world()[0]:
        os.kill(os.getpid(), signal.SIGKILL if point == KILL_AT else signal.SIGTERM)
