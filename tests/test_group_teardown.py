"""droppick's shutdown really ends the process group, DistributedDataParallel or not.

torch.distributed.nn binds the live default group into ten default arguments when it is imported
while a group exists, and the first DistributedDataParallel of a process imports it: the group
then outlives destroy_process_group, its gloo threads run on into interpreter shutdown, and a
worker can abort there (bench/repro_gloo_exit_abort.py). droppick.distributed imports it before
any group; these workers check that nothing of the group is left after ``shutdown()``.
"""

import json
import os
from pathlib import Path

import pytest
import torch

from launch import free_port, spawn

# The threads a gloo group runs (its two work queues, its TCP transport) and rank 0's TCPStore server
GROUP_THREADS = ("pt_gloo_runloop", "gloo_tcp_loop", "pt_tcpstore_uv")


def threads() -> list[str]:
    return sorted(Path(f"/proc/self/task/{task}/comm").read_text().strip() for task in os.listdir("/proc/self/task"))


def ddp_then_shutdown_worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from droppick import distributed

    distributed.setup_from_env("cpu")
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 1))  # imports torch._dynamo
    model(torch.ones(3, 2)).sum().backward()
    during = threads()
    del model
    distributed.shutdown()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"during": during, "after": threads()}))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads thread names from Linux's /proc")
def test_shutdown_ends_the_group_and_its_threads_after_ddp(tmp_path):
    spawn(ddp_then_shutdown_worker, (2, free_port(), str(tmp_path)))
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"rank{rank}.json").read_text())
        # the names are this torch's: a renamed thread would make the check below vacuous
        assert {"pt_gloo_runloop", "gloo_tcp_loop"} <= set(seen["during"]), seen["during"]
        assert "pt_tcpstore_uv" in seen["during"] or rank != 0, seen["during"]
        assert not [t for t in seen["after"] if t in GROUP_THREADS], seen["after"]
