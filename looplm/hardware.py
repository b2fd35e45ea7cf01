"""Where a job runs: its torch device, and how many CPU threads torch may use."""

from __future__ import annotations

import os

import torch

from .arguments import is_cpu_device
from .errors import UserError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto`, `cpu` (or `cpu:N`, as torch), `cuda` or `cuda:N` -> a device that exists here (UserError otherwise)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if is_cpu_device(name):
        return torch.device("cpu")  # (torch ignores a CPU index: one name for it in every record)
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} asked for, but CUDA is not available on this machine; use cpu")
        dev = torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)
        if dev.index >= torch.cuda.device_count():
            raise UserError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return dev
    raise UserError(f"unknown device {name!r}; choose auto, cpu, cuda or cuda:N")


def cpu_cores() -> int:
    """The CPU cores this process may run on: its affinity where the system says (a container's or taskset's
    share), else the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cores_said() -> str:
    """`cpu_cores()` in words: the machine's cores, or the share of them this process may run on (taskset, a
    container); "this machine's 1 CPU cores" was said of a share of one."""
    n, total = cpu_cores(), os.cpu_count() or 0
    cores = f"{n} CPU core" + "s" * (n != 1)
    share = f"the {cores} this process may run on (of the machine's {total})"
    return f"this machine's {cores}" if n >= total else share


def set_threads(n: int, name: str) -> None:
    """torch's CPU threads (0: its default). More than the process's cores is refused: torch crashes (a segfault)
    on absurd counts, and more threads than cores only slow a job down."""
    if n > cpu_cores():
        raise UserError(f"{name}={n} exceeds {cores_said()} (0 = torch's default)")
    if n:
        torch.set_num_threads(n)
