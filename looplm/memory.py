"""How much memory a job may use: refuse one that cannot fit before it starts, saying what it needed."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from .errors import UserError, out_of_memory


def available_bytes() -> int | None:
    """Memory free for a new allocation (Linux MemAvailable), or None where the system does not say; at most what
    the process's address-space limit (`ulimit -v`) leaves it, where one is set: below that limit the machine's
    free memory was compared, and a job that could not fit ran until it failed."""
    free = _system_free()
    left = _address_space_left()
    return left if free is None else free if left is None else min(free, left)


def _system_free() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _address_space_left() -> int | None:
    """RLIMIT_AS less the process's mapped size (VmSize), or None without a limit or where the system does not say."""
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit == resource.RLIM_INFINITY:
            return None
        with open("/proc/self/status") as f:
            size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
        return max(0, limit - size)
    except (ImportError, OSError, ValueError, StopIteration):
        return None


# Host memory that autograd keeps for each layer a training step runs with a graph, whatever the layer's width or
# the tokens: its graph nodes and their saved-tensor records, and under torch.utils.checkpoint (non-reentrant: the
# nodes stay, only the saved tensors are dropped) the holders that stand in for them. It is host memory on a GPU
# too. Measured (peak RSS over 2,000, 5,000 and 10,000 loops, one step, OMP_NUM_THREADS=1): `looplm finetune` of a
# width-32 one-block looplm export with loops.checkpoint_loops grew 47 KiB a loop; in-process run_loop: 56-64 KB a
# looplm block at widths 32 and 128 (checkpointed or not), 93-124 KB an Ouro layer. A lower bound below them all:
# the estimates that left it out counted one state a loop under checkpoint_loops (1.8 KB there), so a million loops
# passed a check of 1.7 GiB and needed ~50 GB.
GRAPH_BYTES_PER_LAYER = 40 * 2**10


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def require(nbytes: float, what: str, device: torch.device | str | None = None) -> None:
    """UserError if at least `nbytes` are needed for `what` and the machine (or the CUDA `device`, where the
    tensors live) has fewer free. Host memory alone was compared for a GPU run: a run the GPU could not hold
    passed, and one it could was refused on a small host."""
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        free, where = torch.cuda.mem_get_info(device)[0], f" on {device}"
    else:
        free, where = available_bytes(), ""
    if free is not None and nbytes > free:
        raise UserError(f"not enough memory: {what} need at least {gib(nbytes)}, and {gib(free)} are free{where}")


def require_training(nbytes: float, passes: int, what: str, device: torch.device | str | None = None) -> None:
    """`require` for a training step whose tensors take `nbytes` and which runs `passes` layers with a graph:
    autograd's records of those (GRAPH_BYTES_PER_LAYER each) are added, in host memory even where the tensors are
    on a GPU. The refusal says how much of the need the records alone are (a narrow model at many loops is mostly
    records)."""
    graph = GRAPH_BYTES_PER_LAYER * passes
    gpu = device is not None and torch.device(device).type == "cuda"
    try:
        if gpu:
            require(graph, what)
        require(nbytes + (0 if gpu else graph), what, device)
    except UserError as e:
        raise UserError(f"{e} (autograd's records of its {passes:,} layer passes alone: {gib(graph)})") from None


@contextlib.contextmanager
def out_of_memory_hint(hint: str | None) -> Iterator[None]:
    """Running out of memory inside the block as a UserError that ends with `hint` (what to lower); None: as it is.
    The command line's general line ("lower the batch size, width or depths") names settings that may not change
    what the block holds."""
    try:
        yield
    except (MemoryError, RuntimeError, OSError) as e:
        if hint is None or not out_of_memory(e):
            raise
        raise UserError(f"out of memory ({' '.join(str(e).split())[:300] or 'MemoryError'}); {hint}") from None
