"""How much memory a job may use: refuse one that cannot fit before it starts, saying what it needed."""

from __future__ import annotations

import os

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


def require(nbytes: float, what: str) -> None:
    """UserError if at least `nbytes` are needed for `what` and the machine has fewer free."""
    free = available_bytes()
    if free is not None and nbytes > free:
        raise UserError(f"not enough memory: {what} need at least {gib(nbytes)}, and {gib(free)} are free")
