"""Sharded selection (issue 33): a drop of ``shard_state=True`` over W ranks, per rank, in time and bytes.

Targets, per rank and per decision (a drop from all data keeping 90%, the largest selection):

- state <= 20 B x N/W + 1 MB: the sharded engine's persistent arrays at the start of an epoch,
  measured on one rank's slice (an engine of N/W samples in one process holds what a rank of
  W holds for N: the slice's bitmap and loss statistics, and its shard of the order, n/W);
- one decision <= 2 s at N/W = 16M: one rank's compute (the order-preserving keys, three rounds
  of histograms and narrowing, the tie prefix, the mask), replayed on its own slice with the
  global sums the simulation computed; the real gloo run adds the all-reduces' latency;
- <= 1 MB exchanged per rank per decision: the all-reduced histograms and tie counts (a ring
  all-reduce sends and receives about 2 (W - 1) / W of its payload per rank);
- the same subset as the unsharded engine: ``select_hardest`` over all N, bit for bit. At
  N = 1B (which ``select_hardest`` cannot hold here: 4 GB of losses and 8 GB of kept indices) the
  property that defines its answer is checked slice by slice: exactly k kept, every kept key >=
  every dropped one, and the threshold's ties kept from the lowest index on.

Simulated: the W ranks' slices in one process, the all-reduce replaced by the sum of their
arrays (``sharded.simulated``); at W = 64, N = 1B each rank's slice is generated when read (a
seeded generator per rank), so the process never holds more than the candidates after the
first round and the masks. Real: 4 gloo processes on this machine, the whole engine
(``DropAndPick(..., shard_state=True)``): recording, the all-to-all of the records to their owners,
the decision, and the next epoch's order, whose transient (the subset's indices and the
permutation of all n members, on every rank) is the one O(N) step left, measured as the growth
of each rank's peak RSS. Losses: exponential (cross-entropy-like), every 7th rounded to 2
decimals (ties), 1% +inf (unrecorded) and 0.01% -inf (non-finite).

``python bench/sharded_selection.py`` rewrites the table of docs/guide/distributed.md between
its markers; ``--quick`` (seconds) prints only.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from _common import REPO, header, machine, parse_args, verdict
from droppick import DaPSchedule, DropAndPick
from droppick.selection import select_hardest
from droppick.sharded import Ranks, float_keys, select_hardest_sharded, select_largest, simulated, slice_bounds

KEEP = 0.9
SCHEDULE = DaPSchedule(epochs=2, warmup=0, interval=1, keep=KEEP)  # one drop, from all data


def kept(n: int) -> int:
    return SCHEDULE.kept_at_drop(n, n)  # keep_count: floor(0.9 n), exactly from the decimal
STATE_TARGET, STATE_SLACK = 20.0, 1 << 20  # bytes per owned sample, plus bytes
DECISION_TARGET_S, DECISION_AT = 2.0, 16_000_000  # seconds per decision at N/W = 16M
EXCHANGE_TARGET = 1 << 20  # bytes per rank per decision
DOCS = REPO / "docs" / "guide" / "distributed.md"
START, END = "<!-- sharded-selection:start (written by bench/sharded_selection.py) -->", "<!-- sharded-selection:end -->"


def losses(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.exponential(1.0, n).astype(np.float32)
    values[::7] = np.round(values[::7], 2)
    special = rng.random(n, dtype=np.float32)
    values[special < 0.01] = np.inf
    values[special > 0.9999] = -np.inf
    return values


class Recording:
    """A ``Ranks`` collective that sums (the simulation) and keeps what it summed, to replay."""

    def __init__(self, world: int):
        self.world, self.sums, self.payload = world, [], 0
        self.ranks = Ranks(self.reduce, 0, world)

    def reduce(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        total = simulated(self.world).reduce(arrays)
        self.sums.append(total)
        self.payload += arrays[0].nbytes  # what each rank contributes (all the same size)
        return total

    def replay(self, rank: int) -> Ranks:
        """Rank ``rank`` alone, given the sums the simulation computed: its own compute only."""
        sums = iter(self.sums)
        return Ranks(lambda arrays: next(sums), rank, self.world)


class Slices(Sequence):
    """W ranks' keys, each generated when read (W = 64, N = 1B does not fit in memory at once)."""

    def __init__(self, n: int, world: int, seed: int):
        self.bounds, self.seed, self.world = slice_bounds(n, world), seed, world

    def __len__(self) -> int:
        return self.world

    def values(self, rank: int) -> np.ndarray:
        return losses(self.bounds[rank + 1] - self.bounds[rank], self.seed * 1000 + rank)

    def __getitem__(self, rank):
        if not 0 <= rank < self.world:
            raise IndexError(rank)
        return float_keys(self.values(rank))


def engine_state_bytes(dap) -> int:
    """Bytes of every array the engine (and its loss statistics and policy) holds."""
    holders = [dap, dap.loss_stats, dap.policy] + ([dap.policy.rule] if hasattr(dap.policy, "rule") else [])
    return sum(v.nbytes for h in holders for v in vars(h).values() if isinstance(v, (torch.Tensor, np.ndarray)))


def per_rank_state(n: int, world: int, policy: str = "dap") -> float:
    """The sharded engine's state per owned sample on a rank of ``world`` at N = ``n``, measured on
    an engine of that rank's N/W samples (the dtypes chosen for N, not N/W: int32 below 2^31)."""
    if n > np.iinfo(np.int32).max:
        raise ValueError("the per-rank engine would choose int32 where the global N needs int64")
    rank_n = slice_bounds(n, world)[1]
    dap = DropAndPick(rank_n, SCHEDULE, policy=policy, shard_state=True)
    if policy == "ema":  # its average exists once it has observed an epoch
        dap.policy.rule.observe(torch.zeros(rank_n))
    return engine_state_bytes(dap) / rank_n


def record_cost(n: int, batch: int = 1024, batches: int = 300) -> dict:
    """Seconds per ``record()`` of a batch, sharded (a search of the rank's sorted shard) and unsharded
    (a lookup in its masks over N), both engines of ``n`` samples in one process."""
    out = {}
    for name, shard_state in (("sharded", True), ("unsharded", False)):
        dap = DropAndPick(n, SCHEDULE, shard_state=shard_state)
        idx = dap.sampler().indices()
        idx = idx[: idx.numel() // batch * batch].reshape(-1, batch)[:batches]
        values = torch.rand(batch)
        t0 = time.perf_counter()
        for b in idx:
            dap.record(b, values)
        out[name] = (time.perf_counter() - t0) / len(idx)
        del dap, idx
    return out


def median_replay(recording: Recording, rank: int, values: np.ndarray, k: int, repeats: int) -> float:
    members, times = np.ones(values.size, dtype=bool), []
    for _ in range(repeats):
        t0 = time.perf_counter()
        select_hardest_sharded([values], [members], k, recording.replay(rank))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def simulate(n: int, world: int, repeats: int) -> dict:
    """W ranks in memory: the decision, its exactness against select_hardest, one rank's compute."""
    values, k = losses(n, seed=1), kept(n)
    bounds = slice_bounds(n, world)
    slices = [values[bounds[r]:bounds[r + 1]] for r in range(world)]
    recording = Recording(world)
    masks = select_hardest_sharded(slices, [np.ones(s.size, dtype=bool) for s in slices], k, recording.ranks)
    got = np.flatnonzero(np.concatenate(masks))
    t0 = time.perf_counter()
    expected = select_hardest(torch.arange(n), torch.from_numpy(values), k).numpy()
    unsharded_s = time.perf_counter() - t0
    same = np.array_equal(got, expected)
    del masks, got, expected
    return {"world": world, "n": n, "k": k, "same": same, "check": "bit for bit against select_hardest",
            "seconds": median_replay(recording, 0, slices[0], k, repeats), "payload": recording.payload,
            "rounds": len(recording.sums), "unsharded_s": unsharded_s, "state": per_rank_state(n, world)}


def simulate_lazily(n: int, world: int, repeats: int) -> dict:
    """W ranks whose slices are generated when read: N beyond this machine's memory."""
    slices, k = Slices(n, world, seed=2), kept(n)
    recording = Recording(world)
    masks = select_largest(slices, k, recording.ranks)
    # The answer select_hardest would give, checked by its defining property (module docstring).
    n_kept = sum(int(np.count_nonzero(m)) for m in masks)
    lowest_kept, highest_dropped = 1 << 32, -1
    for rank in range(world):
        keys, mask = slices[rank], masks[rank]
        if mask.any():
            lowest_kept = min(lowest_kept, int(keys[mask].min()))
        if (~mask).any():
            highest_dropped = max(highest_dropped, int(keys[~mask].max()))
    prefix, dropped_tie_seen = True, False
    for rank in range(world):
        keys, mask = slices[rank], masks[rank]
        tie = mask[keys == lowest_kept]  # the threshold's ties in index order: kept ones first
        if tie.any() and dropped_tie_seen or (tie.size and not np.all(np.diff(tie.astype(np.int8)) <= 0)):
            prefix = False
        dropped_tie_seen |= bool((~tie).any())
    same = n_kept == k and lowest_kept >= highest_dropped and prefix
    del masks
    seconds = median_replay(recording, 0, slices.values(0), k, repeats)
    return {"world": world, "n": n, "k": k, "same": same, "check": "by the defining property, slice by slice",
            "seconds": seconds, "payload": recording.payload, "rounds": len(recording.sums), "unsharded_s": None,
            "state": per_rank_state(n, world)}


# -- the real run: 4 gloo processes ---------------------------------------------------------------------

def loss_of(idx: torch.Tensor) -> torch.Tensor:
    """A sample's loss from its index alone (every rank and the reference agree): 2^20 levels, so ties."""
    return (((idx * 2654435761) % (1 << 20)).float() / (1 << 18)).float()


def vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def worker(rank: int, world: int, n: int, port: int, out: str) -> None:
    from droppick import distributed

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    t0 = time.perf_counter()
    dap = DropAndPick(n, SCHEDULE, shard_state=True)
    built_s = time.perf_counter() - t0
    state = engine_state_bytes(dap)
    idx = dap.sampler().indices()
    values = loss_of(idx)
    for start in range(0, idx.numel(), 1 << 20):
        dap.record(idx[start:start + (1 << 20)], values[start:start + (1 << 20)])
    del idx, values
    dap.flush()
    # the parts of end_epoch, timed apart first: the records to their owners, then the decision
    recorded = dap._local_seen > 0
    dist.barrier()
    t0 = time.perf_counter()
    owned, _ = distributed.combine_owned_losses(dap._shard_samples[recorded.numpy()], dap._local_losses[recorded],
                                                dap._local_seen[recorded], slice_bounds(n, world), rank)
    exchange_s, records = time.perf_counter() - t0, int(recorded.sum())
    counted = {"payload": 0}

    def reduce(arrays):
        counted["payload"] += arrays[0].nbytes
        return distributed.all_reduce_counts(arrays)

    k = kept(n)
    dist.barrier()
    t0 = time.perf_counter()
    select_hardest_sharded([owned], [np.ones(owned.size, dtype=bool)], k, Ranks(reduce, rank, world))
    decision_s = time.perf_counter() - t0
    del owned
    dist.barrier()
    rss = vm("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass
    t0 = time.perf_counter()
    event = dap.end_epoch()
    end_epoch_s, peak = time.perf_counter() - t0, vm("VmHWM") - rss
    digest = hashlib.sha256(dap.gather_subset().numpy().tobytes()).hexdigest()
    Path(out, f"rank{rank}.json").write_text(json.dumps({
        "built_s": built_s, "state": state, "owned": dap.hi - dap.lo, "exchange_s": exchange_s, "records": records,
        "decision_s": decision_s, "decision_payload": counted["payload"], "end_epoch_s": end_epoch_s, "peak": peak,
        "event": event, "digest": digest}))
    dist.destroy_process_group()


def gloo_run(n: int, world: int) -> dict:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tempfile.mkdtemp(prefix="droppick-bench-sharded-")
    mp.spawn(worker, args=(world, n, port, out), nprocs=world, join=True)
    ranks = [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(world)]
    k = kept(n)
    expected = select_hardest(torch.arange(n), loss_of(torch.arange(n)), k)
    reference = hashlib.sha256(expected.numpy().tobytes()).hexdigest()
    del expected
    dense = DropAndPick(n, SCHEDULE)
    dense_state = engine_state_bytes(dense)
    del dense
    return {"n": n, "world": world, "ranks": ranks, "same": all(r["digest"] == reference for r in ranks),
            "dense_state": dense_state}


# -- report -------------------------------------------------------------------------------------------------

def mb(b: float) -> str:
    return f"{b / 1e6:,.1f} MB" if b >= 1e5 else f"{b / 1e3:,.1f} kB"


def ring(payload: int, world: int) -> float:
    return 2 * (world - 1) / world * payload


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    header("sharded selection (issue 33)", args.quick)
    if args.quick:
        sweep, lazy, real = [(4, 1_000_000), (16, 1_600_000)], (64, 64 * 50_000), 1_000_003
    else:
        sweep, lazy, real = [(4, 4_000_000), (4, 16_000_000), (4, 64_000_000), (16, 64_000_000)], \
            (64, 1_000_000_000), (1 << 26) + 3
    repeats = 3
    rows, lines = [], []

    def say(line: str) -> None:
        print(line)
        lines.append(line)

    results = [simulate(n, w, repeats) for w, n in sweep]
    print(f"simulated W = {lazy[0]}, N = {lazy[1]:,}: slices generated when read ...", flush=True)
    results.append(simulate_lazily(lazy[1], lazy[0], repeats))
    for r in results:
        per = r["n"] // r["world"]
        rows.append(f"| simulated | {r['world']} | {r['n']:,} | {per:,} | {r['seconds']:.2f} s | {r['rounds']} | "
                    f"{mb(r['payload'])} ({mb(ring(r['payload'], r['world']))} ring) | {r['state']:.2f} B "
                    f"({mb(r['state'] * per)}) | {'yes' if r['same'] else 'NO'}, {r['check']} |")
        say(f"W = {r['world']}, N = {r['n']:,} (N/W = {per:,}): one rank's decision {1e3 * r['seconds']:.0f} ms "
            f"(median of {repeats}; unsharded select_hardest over N in one process "
            + (f"{1e3 * r['unsharded_s']:.0f} ms)" if r["unsharded_s"] else "not run: N too large here)")
            + f"; {r['rounds']} all-reduces, payload {r['payload']:,} B per rank; state {r['state']:.2f} B per owned "
            f"sample; same subset: {r['same']}")
    print(f"real: {4} gloo processes, N = {real:,} ...", flush=True)
    g = gloo_run(real, 4)
    worst = {key: max(r[key] for r in g["ranks"]) for key in ("built_s", "exchange_s", "decision_s", "end_epoch_s",
                                                                "peak", "state", "decision_payload", "records")}
    per = g["ranks"][0]["owned"]
    rows.append(f"| gloo, 4 processes | 4 | {g['n']:,} | {per:,} | {worst['decision_s']:.2f} s (end_epoch "
                f"{worst['end_epoch_s']:.1f} s) | 4 | {mb(worst['decision_payload'])} | {worst['state'] / per:.2f} B "
                f"({mb(worst['state'])}; unsharded {mb(g['dense_state'])}) | {'yes' if g['same'] else 'NO'}, "
                "digest against select_hardest |")
    say(f"gloo, 4 processes, N = {g['n']:,}: slowest rank: decision {1e3 * worst['decision_s']:.0f} ms "
        f"(all-reduces included), records to their owners {1e3 * worst['exchange_s']:.0f} ms "
        f"({worst['records']:,} records, {9 * worst['records']:,} B sent), whole end_epoch "
        f"{worst['end_epoch_s']:.2f} s (the next epoch's order included), construction {worst['built_s']:.2f} s; "
        f"state {mb(worst['state'])} per rank (unsharded {mb(g['dense_state'])}); end_epoch's transient peak "
        f"{worst['peak'] / g['n']:.1f} B per sample of N (RSS high-water growth); event {g['ranks'][0]['event']}; "
        f"same subset on every rank as select_hardest: {g['same']}")

    cost = record_cost(lazy[1] // lazy[0])
    say(f"record() of a batch of 1024 in the sampler's order at N/W = {lazy[1] // lazy[0]:,}: sharded "
        f"{1e3 * cost['sharded']:.2f} ms (one comparison with the order; the batch is found in the shard at flush, "
        f"in end_epoch), unsharded {1e3 * cost['unsharded']:.2f} ms (engines of N/W samples in one process)")

    def judge(name: str, good: bool, detail: str) -> bool:
        lines.append(f"{'PASS' if good else 'FAIL'} {name}: {detail}")
        return verdict(name, good, detail)

    at = [r for r in results if r["n"] // r["world"] >= 0.9 * DECISION_AT] or [max(results, key=lambda r: r["n"] // r["world"])]
    widest = max(results, key=lambda r: (r["world"], r["n"]))
    ok = []
    for r in at:
        ok.append(judge(f"sharded decision N/W={r['n'] // r['world']:,} (W={r['world']})",
                          r["seconds"] <= DECISION_TARGET_S,
                          f"{r['seconds']:.2f} s of one rank's compute (target <= {DECISION_TARGET_S:.0f} s at N/W = 16M)"))
    exchanged = ring(widest["payload"], widest["world"])
    ok.append(judge(f"sharded exchange per decision W={widest['world']}", exchanged <= EXCHANGE_TARGET,
                      f"{widest['payload']:,} B all-reduced per rank, {exchanged:,.0f} B sent and as many received in a "
                      f"ring (target <= {EXCHANGE_TARGET:,})"))
    state_bytes = widest["state"] * (widest["n"] // widest["world"])
    limit = STATE_TARGET * (widest["n"] // widest["world"]) + STATE_SLACK
    ok.append(judge(f"sharded state W={widest['world']} N={widest['n']:,}", state_bytes <= limit,
                      f"{mb(state_bytes)} per rank, {widest['state']:.2f} B per owned sample "
                      f"(target <= 20 B x N/W + 1 MB = {mb(limit)})"))
    ok.append(judge("same subset as the unsharded engine", all(r["same"] for r in results) and g["same"],
                      ", ".join(f"W={r['world']} N={r['n']:,}: {r['same']}" for r in results) + f"; gloo: {g['same']}"))
    ema = per_rank_state(*reversed(sweep[0]), policy="ema")
    print(f"INFO sharded state with the ema rule: {ema:.2f} B per owned sample (its average adds 4)")
    if not args.quick:
        write_docs(rows, lines)
    return 0 if all(ok) else 1


def write_docs(rows: list[str], lines: list[str]) -> None:
    from droppick.train.rundir import code_version

    m, code = machine(), code_version()
    block = "\n".join([
        "| run | W | N | N/W | one rank's decision | all-reduces | exchanged per rank | state per owned sample "
        "(per rank) | same subset |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |",
        *rows,
        "",
        "```",
        *lines,
        "```",
        "",
        f"Written by `python bench/sharded_selection.py` on {m['date']} at commit {code['git_commit']}"
        + (" (with uncommitted changes)" if code["git_dirty"] else "") + f", on {m['nproc']} CPUs ({m['cpu']}), "
        f"torch {m['torch']}, load average {m['load_avg_1m']} at the end (the machine is shared).",
    ])
    text = DOCS.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOCS.write_text(head + START + "\n" + block + "\n" + END + tail)
    print(f"wrote the table of {DOCS.relative_to(REPO)}")


if __name__ == "__main__":
    raise SystemExit(main())
