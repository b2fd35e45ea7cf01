"""Process-group plumbing for `torchrun ... -m looplm train`: PyTorch's own engine, nothing home-made.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK (and the rendezvous address); a plain `looplm train` has none
of them and runs as a world of one, with no process group at all.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def init(device_type: str) -> World:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA); a world of one otherwise."""
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1:
        return World()
    if "RANK" not in os.environ:  # torchrun sets both; WORLD_SIZE alone is a leftover, not a job to join
        raise ValueError(f"WORLD_SIZE={size} is set but RANK is not; run under torchrun (which sets both), or "
                        "unset WORLD_SIZE")
    w = World(_env_int("RANK", 0), size, _env_int("LOCAL_RANK", 0))
    if not 0 <= w.rank < size:
        raise ValueError(f"RANK={w.rank} is not a rank of WORLD_SIZE={size} (0 to {size - 1})")
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(w.local_rank)
        _rendezvous(backend, w)
    return w


WAIT_NOTE_S = 15.0  # a torchrun job's ranks meet within seconds; a longer wait is worth a word


def _rendezvous(backend: str, w: World) -> None:
    """dist.init_process_group, waited for from the main thread: the wait for the other ranks runs inside torch's
    C++ store, where Python's Ctrl-C and SIGTERM handlers never run, so a shell that kept a job's RANK,
    WORLD_SIZE and MASTER_ADDR hung silently, deaf to both, for torch's 30-minute timeout. From a helper thread,
    the main thread stays free to take a signal (the one `error:` line, 130 or 143), and says what it waits for."""
    done: list[BaseException | None] = []

    def join() -> None:
        try:
            dist.init_process_group(backend=backend)
            done.append(None)
        except BaseException as e:  # handed to the main thread, which raises it
            done.append(e)

    helper = threading.Thread(target=join, name="looplm-rendezvous", daemon=True)
    helper.start()
    start = time.monotonic()
    said = False
    while helper.is_alive():
        helper.join(0.5)
        if not said and time.monotonic() - start > WAIT_NOTE_S:
            said = True
            where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
            print(f"note: rank {w.rank} is waiting for the other {w.size - 1} process(es) of a WORLD_SIZE={w.size} "
                  f"job at {where} (RANK, WORLD_SIZE and MASTER_ADDR are set in this environment; unset them to "
                  "train alone; Ctrl-C stops)", file=sys.stderr, flush=True)
    if done and done[0] is not None:
        raise done[0]


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name, "")
    try:
        return int(v) if v.strip() else default
    except ValueError:
        raise ValueError(f"environment variable {name}={v!r} is not an integer (torchrun sets it)") from None


def shutdown(world: World) -> None:
    if world.active and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_sum(x: torch.Tensor, world: World) -> torch.Tensor:
    """Sum a tensor over ranks (a no-op in a world of one)."""
    if world.active:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def broadcast_int(value: int, world: World, device: torch.device | str = "cpu") -> int:
    """Rank 0's value on every rank: a guard that all ranks agree on the loop count."""
    if not world.active:
        return value
    t = torch.tensor([value], dtype=torch.long, device=device)
    dist.broadcast(t, src=0)
    return int(t.item())


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()


def stream_seed(stream: str, seed: int, step: int, rank: int) -> int:
    """A seed for one rank's private random stream at one step (probes, dropout).

    Hashed rather than an affine mix like `seed * A + B * rank + step`, which collides (rank 1 at step 0 would
    replay rank 0 at step B). Derived from (seed, step, rank) alone, so a resume, even with another world size,
    gives every rank the same stream an uninterrupted run would have.
    """
    key = f"{stream}/{seed}/{step}/{rank}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=7).digest(), "big")

