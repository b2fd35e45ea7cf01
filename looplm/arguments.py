"""Checks of the Python API's arguments: counts, depths and exit rules, each an integer or number of the right
kind and range, refused in one ValueError naming the argument. Without them a bool passes as 1, a float is cut to
an int, and a negative count scores nothing and reports a result; torch's own errors come far from the argument.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

MAX_DEPTH = 1_000_000  # loops; a sweep to a million loops is already hours of work


def check_depths(depths: Any, what: str = "sweep") -> list[int]:
    """The depths an API call scores, as a list: increasing, distinct integers >= 1 (what `parse_depths` returns;
    numpy and torch integer arrays too). A repeated or non-positive depth would otherwise be a slot that no loop
    ever fills, reported as a score of 0."""
    out = int_list(depths, "depths")
    if not out:
        raise ValueError(f"no depths to {what}")
    if sorted(set(out)) != out or out[0] < 1:
        raise ValueError(f"depths must be increasing, distinct and >= 1, got {out[:8]!r}")
    if out[-1] > MAX_DEPTH:  # as the command line's depth specs: 2**40 loops ran on, silent, until killed
        raise ValueError(f"depths must be at most {MAX_DEPTH:,} loops, got {out[-1]:,}")
    return out


def int_list(v: Any, name: str) -> list[int]:
    """A list of depths (`name` in errors) as plain ints. A bare number or a depth spec given for the list was
    refused as "depths must be integers, got 8", which 8 is: say which container was wanted instead."""
    if isinstance(v, str):
        raise ValueError(f"{name} must be a list of loop counts, got the string {v!r:.80}; for a spec like '1:8', "
                         f"use looplm.parse_depths({v!r:.40})")
    try:
        one = strict_int(v)
    except TypeError:
        one = None
    if one is not None:
        raise ValueError(f"{name} must be a list of loop counts (e.g. [{one}]), got the int {one}")
    try:
        return [strict_int(d) for d in v]
    except TypeError:  # a float, a bool, a string among them, or not a sequence at all
        raise ValueError(f"{name} must be integers, got {v!r:.80}") from None


def check_count(name: str, v: Any, lo: int) -> int:
    """An API's count argument: an integer >= lo (numpy and torch integers too), never a bool (Python counts True
    as 1) nor a float; ValueError naming it. Otherwise a silent 1, or torch's own error far from the argument."""
    try:
        n = strict_int(v)
    except TypeError:
        n = None
    if n is None or n < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r:.80}")
    return n


def check_optional_count(name: str, v: Any, lo: int) -> int | None:
    """`check_count`, with None passed through (None: all there are)."""
    return None if v is None else check_count(name, v, lo)


def config_given(path: Any) -> Any:
    """A config path that is not empty: pathlib reads "" (or "  ") as ".", the current directory, so an empty path
    was refused as "config . is a directory"."""
    if isinstance(path, str) and not path.strip():
        raise ValueError(f"config {path!r} is empty; give a YAML file or a preset name")
    return path


def strict_int(v: Any) -> int:
    """`v` as a plain int: ints, numpy and torch integers; TypeError for a float (3.9 is no count nor token id) and
    for a bool (True and False are ints to Python, never a count nor a token)."""
    if isinstance(v, bool):
        raise TypeError
    return operator.index(v)


def finite_real(v: Any) -> float | None:
    """`v` as a plain float if it is a finite real number (ints, floats, numpy and torch numbers, a 0-d tensor too,
    as the counts take torch integers); None for NaN, inf, a bool, a string or anything else. A 0-d tensor was
    refused as "exit_tol must be a finite number >= 0, got tensor(0.1000)"."""
    if getattr(v, "ndim", None) == 0 and not isinstance(v, numbers.Real):
        v = v.item()  # a 0-d tensor or array (a bool one gives a bool, refused below)
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        return None
    return float(v)


def is_cpu_device(name: str) -> bool:
    """`cpu` or `cpu:N`, a device name torch takes (its index means nothing: a machine has one CPU device)."""
    kind, sep, index = name.partition(":")
    return kind == "cpu" and (not sep or (index.isascii() and index.isdigit()))


def check_exit_rule(exit_tol: Any, exit_stable: Any) -> tuple[float | None, int | None]:
    """An exit rule's settings (`sweep`, `generate`), as a plain float and int: a finite tolerance >= 0 (a negative
    or NaN one never fires, NaN is no JSON number, and inf exits every row at loop 1: the CLI's --exit-tol refuses
    it too) and a count of stable loops >= 1, neither a bool (numpy and torch numbers too)."""
    if exit_tol is not None:
        tol = finite_real(exit_tol)
        if tol is None or tol < 0:
            raise ValueError(f"exit_tol must be a finite number >= 0, got {exit_tol!r:.80}")
        exit_tol = tol
    return exit_tol, None if exit_stable is None else check_count("exit_stable", exit_stable, 1)
