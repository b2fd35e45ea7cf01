"""Where a training step's record goes: `metrics.jsonl` always (the run's own log, which a resume truncates and
continues), and TensorBoard event files or a Weights & Biases run as well (`train.logger`).

Every numeric field of the record is logged as a scalar under its own name at its step, so the names and
meanings are those of metrics.jsonl (docs/training.md).
"""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Any

from .errors import UserError

LOGGERS = ("jsonl", "tensorboard", "wandb")
WANDB_MODES = ("online", "offline", "shared", "disabled", "dryrun", "run")  # what wandb's settings accept


def json_record(rec: dict[str, Any]) -> str:
    """One metrics line, strict JSON: a non-finite number is written as null and its key listed in `nonfinite`."""
    bad = [k for k, v in rec.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        rec = {**{k: None if k in bad else v for k, v in rec.items()}, "nonfinite": bad}
    return json.dumps(rec, allow_nan=False)


def truncate_metrics(path: Path, last_step: int) -> int:
    """On resume, drop log lines from steps after the checkpoint (they will be redone) and a torn last line, and
    rewrite what is kept as strict JSON (a log written before non-finite numbers became null holds `NaN`).
    Returns how many records were dropped."""
    if not path.exists():
        return 0
    keep, dropped = [], 0
    # utf-8-sig: a BOM (an editor's) would make the first record unreadable and so look like a torn line
    for line in path.read_text(encoding="utf-8-sig", errors="replace").splitlines():
        if not line.strip():
            continue  # a blank line (an editor's): not a torn one, and records may follow it
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            break  # a torn last line from a crash (rundir.check_metrics refused any other bad line)
        if rec.get("step", 0) <= last_step:
            keep.append(json_record(rec))
        else:
            dropped += 1
    tmp = path.with_name(path.name + ".tmp")  # rewrite by rename, so a kill here cannot lose the log
    try:
        tmp.write_text("".join(k + "\n" for k in keep))
        tmp.replace(path)
    except OSError as e:  # (an immutable log, a full disk: the .tmp was left and errno's line named only it)
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot rewrite the training log {path} for the resume ({e.strerror or e}); the log is as "
                        "it was") from None
    return dropped


def check_available(kind: str) -> None:
    """Refuse, before a run starts, a logger whose package is not installed."""
    try:
        if kind == "tensorboard":
            import torch.utils.tensorboard  # noqa: F401  (needs the tensorboard package)
        elif kind == "wandb":
            import wandb  # noqa: F401
    except ImportError:
        raise UserError(f"train.logger={kind} needs the {kind} package (pip install {kind})") from None
    mode = os.environ.get("WANDB_MODE")
    if kind == "wandb" and mode and mode not in WANDB_MODES:  # wandb.init would refuse it after the run began
        raise UserError(f"WANDB_MODE={mode!r} is not a wandb mode; use one of {', '.join(WANDB_MODES)} (or unset it: "
                        "offline unless WANDB_API_KEY is set)")


class MetricsLog:
    """metrics.jsonl, plus the chosen tracker. `rank_writes=False` (ranks other than 0) writes nothing.

    The tracker starts here, before the run's files are touched (the log is opened at its first record), so a
    tracker that cannot start (wandb without a login, say) is one error line. `start_step`: the step a resume
    continues from; TensorBoard drops what it holds past it, as metrics.jsonl does (those steps are redone)."""

    def __init__(self, out: Path, kind: str, config: dict[str, Any], rank_writes: bool = True, start_step: int = 0):
        self.kind, self.writes, self.path = kind, rank_writes, out / "metrics.jsonl"
        self.f: Any = None
        self.tracker: Any = None
        if not rank_writes or kind == "jsonl":
            return
        try:
            if kind == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter

                self.tracker = SummaryWriter(log_dir=str(out / "tensorboard"), purge_step=start_step + 1)
            else:
                import wandb

                # Offline unless the user has set a mode or logged in. A resumed run continues its own wandb run; a
                # new run gets a new one, even in a directory an earlier run used (the same id would merge them).
                mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
                id_file = out / "wandb" / "looplm-run-id"
                run_id = id_file.read_text().strip() if start_step and id_file.is_file() else uuid.uuid4().hex[:16]
                self.tracker = wandb.init(project=os.environ.get("WANDB_PROJECT", "looplm"), dir=str(out), id=run_id,
                                          name=out.name, config=config, mode=mode, resume="allow")
                id_file.parent.mkdir(parents=True, exist_ok=True)
                id_file.write_text(run_id + "\n")
        except Exception as e:  # the tracker's own error (login, settings, a path it cannot use): the user's to fix
            raise UserError(f"train.logger={kind}: the {kind} logger could not start ({type(e).__name__}: "
                            f"{str(e).strip() or 'no message'})") from None

    def write(self, rec: dict[str, Any]) -> None:
        if not self.writes:
            return
        if self.f is None:
            self.f = self.path.open("a")
        self.f.write(json_record(rec) + "\n")
        self.f.flush()
        scalars = {k: float(v) for k, v in rec.items()
                   if k != "step" and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}
        if self.kind == "tensorboard":
            for k, v in scalars.items():
                self.tracker.add_scalar(k, v, rec["step"])
            self.tracker.flush()
        elif self.kind == "wandb":
            self.tracker.log(scalars, step=rec["step"])

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
        if self.kind == "tensorboard" and self.tracker is not None:
            self.tracker.close()
        elif self.kind == "wandb" and self.tracker is not None:
            self.tracker.finish()
