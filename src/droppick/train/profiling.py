"""``droppick train --profile``: where an epoch's time goes, with a few named laps.

A ``Profiler`` is a stopwatch with named sections. ``start()`` starts the clock;
``lap(name)`` adds the time since the previous lap (or ``start``) to ``name``. The trainer
puts one ``lap`` after each phase of a step (data, forward, DaP record, backward, optimizer)
and after the end-of-epoch work, so the sections add up to the wall time between ``start()``
and the last lap: nothing is left out and nothing is counted twice.

Disabled (the default), ``start`` and ``lap`` return at once: no clock reads, and no
``torch.cuda.synchronize()``. Enabled on CUDA, every lap synchronises first, so the time of
asynchronous kernels lands in the phase that launched them (which slows training a little:
profile to see where time goes, not to measure the fastest speed).
"""

from __future__ import annotations

import time
from typing import Optional

import torch


NOT_TRAINING = ("eval", "checkpoint")  # sections outside a run's epoch_seconds


class Profiler:
    def __init__(self, enabled: bool = False, device: Optional[torch.device] = None):
        self.enabled = bool(enabled)
        self._sync = self.enabled and device is not None and torch.device(device).type == "cuda"
        self.seconds: dict[str, float] = {}  # this epoch, in lap order
        self.counts: dict[str, int] = {}
        self.run_seconds: dict[str, float] = {}  # the whole run so far
        self._last: Optional[float] = None

    def _now(self) -> float:
        if self._sync:
            torch.cuda.synchronize()
        return time.perf_counter()

    def start(self) -> None:
        """Start a new epoch's table (the run totals stay); the time before it counts nowhere."""
        if self.enabled:
            self.seconds, self.counts = {}, {}
            self._last = self._now()

    def lap(self, name: str) -> None:
        """Add the time since the previous lap (or ``start``) to section ``name``."""
        if not self.enabled:
            return
        now = self._now()
        if self._last is not None:
            dt = now - self._last
            self.seconds[name] = self.seconds.get(name, 0.0) + dt
            self.counts[name] = self.counts.get(name, 0) + 1
            self.run_seconds[name] = self.run_seconds.get(name, 0.0) + dt
        self._last = now

    def report(self, title: str, run: bool = False, samples: Optional[int] = None) -> str:
        """A small table: seconds, share of the total and (per epoch) ms per call.

        ``samples``: images trained on, for a training rate over the sections other than
        evaluation and checkpointing (the time ``epoch_seconds`` measures).
        """
        seconds = self.run_seconds if run else self.seconds
        total = sum(seconds.values())
        head = f"profile {title}: {total:.2f} s"
        train = total - sum(seconds.get(name, 0.0) for name in NOT_TRAINING)
        if samples and train > 0:
            head += f"; training {train:.2f} s, {samples / train:.0f} images/s"
        lines = [head]
        for name, s in seconds.items():
            share = 100.0 * s / total if total > 0 else 0.0
            calls = "" if run else f"  {1e3 * s / max(self.counts.get(name, 1), 1):8.2f} ms x {self.counts.get(name, 0)}"
            lines.append(f"  {name:<16s} {s:8.3f} s {share:5.1f}%{calls}")
        return "\n".join(lines)
