"""Distributed gather: ``distributed.combine_losses`` for 2 ranks under gloo, in time and bytes.

No target: a measurement. Two processes (``torch.multiprocessing.spawn``, gloo over TCP on
localhost) each hold a loss vector of N = 1.28M samples, of which each rank saw its own
shard (every other sample). ``combine_losses`` merges them (maximum over the ranks that saw a
sample). Timed after a warm-up call, with a barrier before each call; rank 0 reports the
median. Beside it, as a floor, a single ``all_reduce`` of N float32 values (the least any
merge of N losses has to move), interleaved with it.

Bytes: the payload is what the two all-reduces carry per rank (N float32 + N uint8 = 5 B per
sample); the bytes that actually crossed the loopback interface (``/proc/net/dev``, both ranks
together, everything on ``lo`` in that window) are measured too.
"""

from __future__ import annotations

import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from _common import header, parse_args


def loopback_bytes() -> int:
    for line in Path("/proc/net/dev").read_text().splitlines():
        if line.strip().startswith("lo:"):
            fields = line.split(":", 1)[1].split()
            return int(fields[0])  # received bytes (on lo every byte sent is received)
    return 0


def worker(rank: int, world: int, n: int, repeats: int, port: int, out: str) -> None:
    from droppick import distributed

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    gen = torch.Generator().manual_seed(rank)
    losses = torch.rand(n, generator=gen)
    seen = torch.zeros(n, dtype=torch.bool)
    seen[rank::world] = True
    floor_buf = torch.rand(n, generator=gen)
    merged, seen_all = distributed.combine_losses(losses.clone(), seen.clone())  # warm-up, and checked
    assert bool(seen_all.all())
    assert torch.equal(merged[rank::world], losses[rank::world])
    times = {"combine_losses": [], "one float32 all_reduce": []}
    lo_bytes = []
    for r in range(repeats):
        names = list(times) if r % 2 == 0 else list(times)[::-1]
        for name in names:
            dist.barrier()
            before = loopback_bytes()
            t0 = time.perf_counter()
            if name == "combine_losses":
                distributed.combine_losses(losses.clone(), seen.clone())
            else:
                dist.all_reduce(floor_buf, op=dist.ReduceOp.MAX)
            dt = time.perf_counter() - t0
            dist.barrier()
            times[name].append(dt)
            if name == "combine_losses":
                lo_bytes.append(loopback_bytes() - before)
    # Every rank must hold the same merged vector (what makes every rank select the same subset).
    digest = torch.tensor([float(merged.double().sum())])
    gathered = [torch.zeros(1, dtype=digest.dtype) for _ in range(world)]
    dist.all_gather(gathered, digest)
    if rank == 0:
        identical = all(torch.equal(g, gathered[0]) for g in gathered)
        with open(out, "w") as f:
            for name, ts in times.items():
                f.write(f"{name}\t{statistics.median(ts)}\t{min(ts)}\n")
            ratios = [a / b for a, b in zip(times["combine_losses"], times["one float32 all_reduce"])]
            f.write(f"ratio\t{statistics.median(ratios)}\t0\n")
            f.write(f"lo_bytes\t{statistics.median(lo_bytes)}\t0\n")
            f.write(f"identical\t{int(identical)}\t0\n")
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    header("distributed gather: combine_losses, 2 ranks, gloo", args.quick)
    n, repeats = (200_000, 5) if args.quick else (1_280_000, 15)
    out = os.path.join(tempfile.mkdtemp(prefix="droppick-bench-dist-"), "result.tsv")
    mp.spawn(worker, args=(2, n, repeats, free_port(), out), nprocs=2, join=True)
    rows = {line.split("\t")[0]: [float(x) for x in line.split("\t")[1:]] for line in Path(out).read_text().splitlines()}
    payload = 5 * n
    print(f"N = {n:,}, 2 ranks (processes), gloo over loopback TCP, {repeats} timed calls each")
    for name in ("combine_losses", "one float32 all_reduce"):
        med, best = rows[name]
        print(f"  {name:<24s} median {1e3 * med:7.1f} ms (min {1e3 * best:.1f})")
    print(f"  combine_losses / one float32 all_reduce: median ratio {rows['ratio'][0]:.2f}")
    print(f"  payload per rank: {payload / 1e6:.2f} MB (N float32 losses + N uint8 flags = 5 B/sample); "
          f"measured on loopback per call, both ranks together: {rows['lo_bytes'][0] / 1e6:.2f} MB "
          f"({rows['lo_bytes'][0] / n:.1f} B/sample)")
    print(f"  merged vectors identical on both ranks: {bool(rows['identical'][0])}")
    print(f"INFO distributed gather: {1e3 * rows['combine_losses'][0]:.1f} ms and {payload / 1e6:.1f} MB payload per rank "
          f"for N={n:,} ({rows['ratio'][0]:.2f}x one float32 all_reduce)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
