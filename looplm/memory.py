"""How much memory a job may use: refuse one that cannot fit before it starts, saying what it needed."""

from __future__ import annotations

import os

import torch

from .errors import UserError


def available_bytes() -> int | None:
    """Memory free for a new allocation (Linux MemAvailable), or None where the system does not say."""
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
