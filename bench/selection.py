"""Selection at scale: ``select_hardest`` and the whole ``end_epoch`` at ImageNet sizes.

Targets on this CPU: N = 1.28M (ImageNet-1k) under 0.2 s, N = 14M (ImageNet-21k) under 0.5 s,
both for ``select_hardest`` and for a whole drop ``end_epoch`` (keep 90% of all N samples), for
DaP and for the rules beyond the paper (``epsilon``, ``ema``: its moving average is updated at
every ``end_epoch``, picks included; ``rs2``: a fresh chunk every epoch, here of about 95% of N,
so every epoch straddles the end of a permutation and draws the next one, its worst case); the
persistent state of each, the policy's own (the EMA, RS2's permutation) included, at most
20 bytes per sample.

Losses are ``torch.rand`` (at 14M float32 values many ties: the slow path of the tie rule is
exercised). Every drop is timed from the full set (the schedule picks all data back up after
each drop), so each repetition is the worst case n = N. ``select_hardest`` is also timed
against the previous implementation (full-length ``torch.where`` copy, ``kthvalue`` over the
whole subset, ``bool.sum()``), interleaved, as a ratio.

Memory: the persistent state is the sum of ``nbytes`` of every tensor the engine holds. The
transient peak of ``end_epoch`` is measured as the growth of the peak RSS (``VmHWM``, reset
through ``/proc/self/clear_refs``) over the RSS before it; torch's CPU allocator returns large
blocks to the OS at once, so RSS follows live tensors.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import torch

from _common import header, interleave, median_ratio, parse_args, spread, verdict
from droppick import DaPSchedule, DropAndPick
from droppick.selection import select_hardest

TARGETS = {1_280_000: 0.2, 14_000_000: 0.5}
STATE_TARGET = 20.0  # bytes per sample
POLICIES = ("dap", "epsilon", "ema", "rs2")  # a decision of each is timed; "dap" keeps the historic names


def select_hardest_previous(subset: torch.Tensor, losses: torch.Tensor, k: int) -> torch.Tensor:
    """The implementation before this benchmark existed (for the ratio only)."""
    n = subset.numel()
    values = losses[subset]
    threshold = torch.kthvalue(values, n - k + 1).values
    above = values > threshold
    at = values == threshold
    missing = k - int(above.sum())
    keep = above
    keep[at.nonzero().squeeze(1)[:missing]] = True
    return subset[keep]


def vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def state_bytes(dap: DropAndPick) -> dict[str, int]:
    """nbytes of every tensor the engine, its policy and the policy's selection rule hold."""
    holders = [dap, dap.policy] + ([dap.policy.rule] if hasattr(dap.policy, "rule") else [])
    return {name: value.nbytes for holder in holders for name, value in vars(holder).items()
            if isinstance(value, torch.Tensor)}


def time_decisions(n: int, policy: str, repeats: int, gen: torch.Generator) -> dict:
    """``repeats`` drops from all N samples, each followed by a pick back to all of them (rs2:
    2 * repeats resamples), every subset member recorded; the wall and CPU time of each decision,
    the picks' times and the RSS high-water growth of each decision. Returns them and the engine."""
    schedule = DaPSchedule(epochs=2 * repeats + 1, warmup=0, interval=1, keep=0.9,
                           reuse_at=list(range(2, 2 * repeats + 1, 2)))
    dap = DropAndPick(n, schedule, policy=policy, seed=0)
    decision = "resample" if policy == "rs2" else "drop"
    out = {"decision": [], "pick": [], "cpu": [], "peaks": [], "dap": dap}
    for _ in range(repeats):
        for expected in (decision, "resample" if policy == "rs2" else "pick"):
            dap.losses.copy_(torch.rand(n, generator=gen))
            dap.seen.copy_(dap._in_subset)  # as if record() had recorded every subset member
            rss = vm("VmRSS")
            tracked = reset_peak()
            t0, c0 = time.perf_counter(), time.process_time()
            event = dap.end_epoch()
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            if expected == "pick":
                out["pick"].append(seconds)
            else:
                out["decision"].append(seconds)
                out["cpu"].append(cpu)
                if tracked:
                    out["peaks"].append(vm("VmHWM") - rss)
            assert event == expected, (policy, event, expected)
    return out


def main() -> int:
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        # A fixed glibc mmap threshold: every tensor of 1 MB or more gets its own mapping and is
        # unmapped when freed, so the RSS follows the live tensors (the default threshold adapts
        # upwards and would serve later tensors from a heap that RSS never gives back).
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)
        os.execv(sys.executable, [sys.executable, *sys.argv])
    args = parse_args(__doc__.splitlines()[0])
    header("selection at scale: select_hardest and end_epoch", args.quick)
    sizes = [1_280_000] if args.quick else [1_280_000, 14_000_000]
    repeats = 3 if args.quick else 5
    for n in sizes:
        target = TARGETS[n]
        gen = torch.Generator().manual_seed(0)
        losses = torch.rand(n, generator=gen)
        subset = torch.arange(n)
        k = round(0.9 * n)
        assert torch.equal(select_hardest(subset, losses, k), select_hardest_previous(subset, losses, k))
        times = interleave({"new": lambda s=subset, x=losses: select_hardest(s, x, k),
                            "previous": lambda s=subset, x=losses: select_hardest_previous(s, x, k)}, repeats)
        select_s = statistics.median(times["new"])

        print(f"N = {n:,} (keep {k:,}):")
        print(f"  select_hardest  median {1e3 * select_s:7.1f} ms (min {1e3 * min(times['new']):.1f}); "
              f"new / previous {median_ratio(times['new'], times['previous']):.3f} "
              f"({spread(times['new'], times['previous'])}; previous median "
              f"{1e3 * statistics.median(times['previous']):.1f} ms)")
        verdict(f"select_hardest N={n:,}", select_s < target, f"{1e3 * select_s:.0f} ms (target < {1e3 * target:.0f} ms)")
        del losses, subset
        for policy in POLICIES:
            measured = time_decisions(n, policy, repeats, gen)
            report_policy(n, policy, measured, target)
            del measured
    return 0


def report_policy(n: int, policy: str, measured: dict, target: float) -> None:
    """The timing and memory lines and verdicts of one policy's decisions."""
    dap, times = measured["dap"], measured["decision"]
    end_s = statistics.median(times)
    kind = "resample" if policy == "rs2" else "drop"
    label = "" if policy == "dap" else f" {policy}"  # dap's verdicts keep the names of earlier results
    picks = f"; end_epoch pick median {1e3 * statistics.median(measured['pick']):.1f} ms" if measured["pick"] else ""
    print(f"  {policy:8s} end_epoch {kind} median {1e3 * end_s:7.1f} ms (min {1e3 * min(times):.1f}, CPU time median "
          f"{1e3 * statistics.median(measured['cpu']):.1f}){picks}")
    state = state_bytes(dap)
    per_sample = sum(state.values()) / n
    print(f"  {policy:8s} persistent state {per_sample:.2f} B/sample: "
          + ", ".join(f"{name} {b / n:.0f}" for name, b in state.items()))
    if measured["peaks"]:
        print(f"  {policy:8s} end_epoch transient peak (RSS high-water growth) median "
              f"{statistics.median(measured['peaks']) / n:.1f} B/sample, max {max(measured['peaks']) / n:.1f}")
    verdict(f"end_epoch{label} N={n:,}", end_s < target, f"{1e3 * end_s:.0f} ms (target < {1e3 * target:.0f} ms)")
    name = "DaP" if policy == "dap" else policy
    verdict(f"{name} state N={n:,}", per_sample <= STATE_TARGET,
            f"{per_sample:.2f} B/sample persistent (target <= {STATE_TARGET:.0f})")
    # Under torch.distributed, record() checks each batch against this rank's shard, which
    # the engine caches for the epoch as a mask over all N: measured here for rank 0 of 2
    # without a process group, as record() would build it.
    dap._shard_mask(0, 2)
    world_state = state_bytes(dap)
    world_per_sample = sum(world_state.values()) / n
    extra = {k: v / n for k, v in world_state.items() if k not in state}
    verdict(f"{name} state N={n:,} under torch.distributed (world 2)", world_per_sample <= STATE_TARGET,
            f"{world_per_sample:.2f} B/sample during an epoch: the shard cache adds "
            + ", ".join(f"{k} {v:.1f}" for k, v in extra.items()) + f" (target <= {STATE_TARGET:.0f})")


if __name__ == "__main__":
    raise SystemExit(main())
