"""A run directory: either new or a whole looplm run, and written by one process at a time.

`resume_point` decides, reading only, what a training command may do with `--out`: start fresh in a new or
empty directory, or continue the newest whole checkpoint of a looplm run (`--resume`), falling back to the
history in `checkpoints/` when `checkpoint/` is gone or damaged. Anything in between (a run's files without
`--resume`, a directory of other files, a `checkpoint` symlink) is refused before anything on disk changes.

`check_resume` and `already_done` decide what a resume may change and whether anything is left to train, again
before anything is touched.

`lock` holds an exclusive lock (`.looplm.lock`, flock) for a run's lifetime, so a second process on the same
directory stops at once with one line that names the holder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import checkpoint as ckpt
from .config import Config, ConfigError
from .config_files import MODULE_MODEL, own_module
from .errors import UserError, in_demo, rank_zero, special_kind
from .records import not_carried, result_of
from .resume_rules import RESUMABLE, effect, resume_note, rules, same_template  # noqa: F401 (resume_note: train's)

LOCK = ".looplm.lock"
# What a looplm run leaves in its directory (the rest are outputs: sweeps, plots).
RUN_FILES = ("config.yaml", "metrics.jsonl", "metrics.jsonl.tmp", "checkpoint", "checkpoint.old", "checkpoint.tmp",
             ckpt.HISTORY, LOCK, "tensorboard", "wandb")


class RunExists(UserError, FileExistsError):
    """--out holds a run and --resume was not asked for (a user error: said once, by rank 0, under torchrun)."""


def _whole(d: Path) -> str | None:
    """None when every file of checkpoint folder `d` matches its manifest, else what is wrong."""
    try:
        ckpt.verify(d)
        ckpt.load_config(d)
        ckpt.check_state(ckpt.load_state(d, mmap=True), d)
    except ckpt.CheckpointError as e:
        return str(e).split(". Older checkpoints")[0]
    return None


def latest_step(out: str | Path) -> int | None:
    """The step of the checkpoint in the run directory `out` (None: none), to tell whether a command trained."""
    d = Path(out) / "checkpoint"
    return ckpt.saved_step(d) if d.is_dir() else None


def check_out_of_data(out: Path, cfg: Config) -> None:
    """Refuse a run directory inside the run's own data folder (or on its data file): the folder is read whole, so
    the run's logs and checkpoint files would be read as data by its resume and by any later run on that data."""
    from .outputs import check_outside_data
    from .records import data_folders

    d = cfg.data
    for key in ("source", "path", "test_path"):
        data = getattr(d, key, "")
        p = Path(data) if data else None
        # the folders its reader walks: a folder linked into the data is read too
        for f in (data_folders(p) if p is not None and p.is_dir() else [p.resolve()] if p and p.exists() else []):
            if out.resolve() == f or f in out.resolve().parents:
                via = "" if f == p.resolve() else f", through {f}, a folder linked into it"
                raise UserError(f"{out_flag()} {out} is inside data.{key} ({data}{via}), which is read whole: the "
                                "run's own files would be read as data; put the run outside its data")
    check_outside_data(out, cfg)  # nor inside the data of the train.init_from run it starts from (its corpus)


def resume_point(out: Path, resume: bool, held: bool = False) -> Path | None:
    """The checkpoint folder a run in `out` continues from (None: start fresh). Reads only; UserError otherwise.
    held=True: this process holds the lock (the call under the lock repeats the check quietly)."""
    from .outputs import check_out_folder

    check_out_folder(out)
    if out.exists() and not out.is_dir():
        # /dev/null: "a file"
        raise UserError(f"{out_flag()} {out} is {special_kind(out) or 'a file'}, not a run directory")
    inside = ckpt.enclosing_checkpoint(out / "config.yaml")
    if inside is not None:  # that run's next save or prune would delete this one
        raise UserError(f"{out_flag()} {out} is inside {inside}, which its run replaces and prunes; choose a directory "
                        "outside any run's checkpoint folders")
    if not out.exists():
        return None
    if not held:
        with lock(out, create=False):  # another process writing here is the first thing to say
            pass
    latest = out / "checkpoint"
    for d in (latest, out / "checkpoint.old", out / "checkpoint.tmp", out / ckpt.HISTORY):  # folders looplm renames
        if d.is_symlink():
            raise UserError(f"{d} is a symbolic link; looplm writes {d.name}/ itself (replace the link with the "
                            f"folder it points to, or choose another {out_flag()})")
        if d.exists() and not d.is_dir():
            raise UserError(f"{d} is a file; looplm writes {d.name}/ there itself (move the file away, or choose "
                            f"another {out_flag()})")
    names = {p.name for p in out.iterdir()}
    try:
        found = ckpt.resolve(latest)
    except ckpt.CheckpointError:
        found = None
    history = ckpt.history(out)
    if not resume:
        if found is not None or history:
            raise RunExists(f"{out} already holds a checkpoint; pass {resume_flag()} to continue it, or choose "
                            f"another {out_flag()}")
        partial = sorted(names & {"config.yaml", "metrics.jsonl"})
        if partial and _own_config(out):
            raise UserError(f"{out} holds a looplm run that has no checkpoint yet ({', '.join(partial)}); pass "
                            f"{resume_flag()} to start it again, or choose another {out_flag()}")
        if names - {LOCK}:
            raise _not_empty(out, names, "a looplm run")
        return None
    if found is None and not history and names - {LOCK} and not _own_config(out):
        raise _not_empty(out, names, "a looplm run")  # a config.yaml or metrics.jsonl of someone else's
    check_metrics(out / "metrics.jsonl")
    problems = []
    if found is None and history:
        problems.append(f"{latest} {'holds no weights' if latest.exists() else 'is missing'}")
    for d in ([found] if found is not None else []) + [d for _, d in reversed(history)]:
        why = _whole(d)
        if why is None:
            if problems and not held:  # not the latest checkpoint: say which one, and why
                print(_fallback(d, latest, problems), file=sys.stderr)
            return d
        problems.append(why)
    if problems:
        raise ckpt.CheckpointError(f"no checkpoint in {out} is whole: " + "; ".join(problems))
    if names - {LOCK} and not names & {"config.yaml", "metrics.jsonl"}:
        raise _not_empty(out, names, "a looplm run")
    due = _save_was_due(out)
    if due is not None:  # its checkpoint was written once and is gone: starting over would replace the log
        raise UserError(f"{out} logged training to step {due}, past a checkpoint it saved, but holds no checkpoint "
                        f"now ({latest} is missing); {resume_flag()} would start the run over and replace its log. Put "
                        f"the checkpoint back, or choose another {out_flag()}")
    return None  # a run that stopped before its first checkpoint: --resume starts it again


def _fallback(d: Path, latest: Path, problems: list[str]) -> str:
    """What a resume from the history's checkpoint `d` says: why the newer ones are not used, the step it goes on
    from, and that a damaged `checkpoint/` is kept aside (`claimed` names the folder). A missing file's `cp` advice
    is left out: the resume replaces checkpoint/, so the command would restore nothing by then."""
    why = "; ".join(p.split("; the run's history holds the same file")[0] for p in problems)
    step = ckpt.saved_step(d)
    if not latest.exists():
        return f"resuming from {d}: {why}; training goes on from its step {step}"
    return (f"resuming from {d}: {why}; training goes on from its step {step}, and the damaged {latest} is moved "
            f"aside as {latest.name}.damaged-<time>")


def holds_run(d: Path) -> bool:
    """`d` holds a looplm run: its own config.yaml (`_own_config`) or a checkpoint with weights. Names alone are no
    run: a project's config.yaml, or the `checkpoint` folder a new run named so had just made, made a folder's
    `checkpoint`/`tensorboard`/`wandb` "a run's own", refused as --out."""
    return _own_config(d) or any(ckpt.has_weights(c) for c in (d / "checkpoint", d / "checkpoint.old",
                                                                 *(c for _, c in ckpt.history(d))))


def _own_config(out: Path) -> bool:
    """`out/config.yaml` is a looplm run's resolved config (every run writes one as it starts): a whole dump, every
    key of every section, exactly as `Config.save_yaml` writes it. A config the user wrote there by hand (a few
    keys, comments) loaded too, and was then called a run and replaced by --resume."""
    from .config import load_config

    if not (out / "config.yaml").is_file():  # a FIFO of that name blocked the read: no run writes one
        return False
    try:
        text = (out / "config.yaml").read_text()
        return text == load_config(out / "config.yaml").to_yaml()
    except (ValueError, OSError):
        return False


def _save_was_due(out: Path) -> int | None:
    """The last logged step of a run in `out` if its own config (config.yaml) shows a checkpoint was saved whole
    before it, else None. A step's record is written before its save, so only a record past the first save step
    proves that save finished (a kill inside the first save leaves a log at that step and no checkpoint); a log
    that reached the run's last step belongs to a run that saved at its end. A skipped step (non-finite) saves
    nothing, and a run none of whose steps applied an update saved nothing at its end either (its records made a
    run stopped by a non-finite start look like one whose checkpoint had been lost, so --resume was refused)."""
    from .config import load_config

    steps = _logged_steps(out / "metrics.jsonl")
    skipped = set(_logged_steps(out / "metrics.jsonl", skipped=True))  # every skipped step writes its record
    if not steps or not (out / "config.yaml").is_file():
        return None
    try:
        t = load_config(out / "config.yaml").train
    except (ValueError, OSError):
        return None
    if any((out / f"checkpoint.{x}").exists() for x in ("tmp", "old")):
        return None  # a save was cut short: the run may never have had a whole checkpoint
    last = max(steps)
    # a record past a periodic save step that applied its update, or the run's last step (it saved at its end,
    # whatever checkpoint_every, unless no step updated)
    every = t.checkpoint_every
    periodic = every and any(k not in skipped for k in range(every, last, every))  # (stops at the first saved)
    return last if periodic or (t.steps and last >= t.steps and set(steps) - skipped) else None


def origin(path: str | Path) -> dict[str, Any]:
    """What a run started from checkpoint `path` (train.init_from) records of it: its step and its weights' SHA-256
    (the manifest's, else computed), so a resume can tell that the checkpoint has changed since (trained on), and
    the path made absolute (a resume from another working directory looks up the same checkpoint)."""
    d = ckpt.resolve(path)
    try:
        digest = json.loads((d / ckpt.MANIFEST).read_text())["files"][ckpt.WEIGHTS]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):  # a checkpoint of another tool: no manifest
        digest = ckpt._sha256(d / ckpt.WEIGHTS)
    return {"step": ckpt.saved_step(d), "sha256": digest, "path": str(Path(path).absolute())}


def origin_change(src: Path, init_from: str, gone: bool = False) -> str | None:
    """How the checkpoint that the run resumed from `src` started from (train.init_from) has changed since (its step,
    "step 2 -> 3"), or None: unchanged, or not recorded (a run from before the record). It is looked up at the path
    the run recorded (absolute: the check does not depend on the working directory), else at `init_from` as given;
    with `gone`, a source that is not there any more is "no longer exists" (else None: a resume needs only its own
    checkpoint)."""
    try:
        began = ckpt.load_state(src, mmap=True).get("init_from") if init_from else None
    except (ckpt.CheckpointError, OSError):
        return None
    if not began:
        return None
    where = began.get("path") or init_from
    try:
        now = origin(where)
    except (ckpt.CheckpointError, OSError):
        return "no longer exists" if gone and not Path(where).exists() else None
    if (now["step"], now["sha256"]) == (began.get("step"), began.get("sha256")):
        return None
    same = began.get("step") == now["step"]
    return f"step {began.get('step')} -> {now['step']}" + (", other weights" if same else "")


def _logged_steps(log: Path, skipped: bool = False) -> list[int]:
    """The steps of the log's records (skipped=True: of those that applied no update)."""
    steps = []
    for line in log.read_text(encoding="utf-8-sig", errors="replace").splitlines() if log.is_file() else []:
        try:
            rec = json.loads(line)
            if not skipped or rec.get("skipped"):
                steps.append(int(rec["step"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # a torn last line (check_metrics refused any other)
    return steps


def log_gap(out: Path, step: int, t: Any) -> str | None:
    """A note when the run's log ends before the checkpoint it resumes from (a run copied without its log, a log
    cut short by a full disk): the steps in between keep no record, and the resume cannot bring them back. `t` is
    the train section the checkpoint was trained with (its schedule says which steps wrote a line)."""
    log = out / "metrics.jsonl"
    last = max((s for s in _logged_steps(log) if s <= step), default=0)
    if last >= _last_due(step, t):  # the steps after the last logged one were not due a record
        return None
    what = (f"{log} is missing" if not log.is_file() else f"{log} ends at step {last}" if _logged_steps(log) else
            f"{log} is empty" if not log.stat().st_size else f"{log} holds no step's record")  # (not "at step 0")
    return (f"note: {what}, but the checkpoint is at step {step}; steps {last + 1}-{step} have no log lines (the "
            "resume goes on from the checkpoint, and the log from there)")


def _last_due(step: int, t: Any) -> int:
    """The last step up to `step` that wrote a line to metrics.jsonl: every train.log_every steps, every
    evaluation, and the run's final step (train.steps: the run ended at the checkpoint)."""
    if t.steps and step >= t.steps:
        return step
    return max(step - step % every for every in (t.log_every, t.eval_every) if every)


def flag(cli: str, api: str) -> str:
    """How a message names what the caller passed: `cli`, the flag, in a command; `api`, fit's argument, from
    Python (a notebook calling fit was told to pass --resume, or to choose another --out)."""
    from .errors import in_command

    return cli if in_command() else api


def resume_flag() -> str:
    return flag("--resume", "resume=True")


def out_flag() -> str:
    return flag("--out", "out")


def never_updated(out: Path, state: dict[str, Any] | None, cfg: Config, n: int) -> str:
    """Why a run none of whose `n` steps applied an update stopped, and what it left. Every step then ran on the
    weights it started from, so the learning rate cannot be the cause (the message blamed train.lr); those weights
    (of train.init_from, of the checkpoint resumed, or a fresh initialization), the data or the model settings can.
    It said "nothing was saved" of a run that left config.yaml and metrics.jsonl, so that the same command, fixed,
    was refused as a run without a checkpoint: say what is there and how to start again."""
    t = cfg.train
    if state is not None:
        start = f"the weights of its checkpoint at step {int(state['step'])}"
        kept = (f"that checkpoint is kept as it was, and {out / 'metrics.jsonl'} records the skipped steps (a later "
                f"{resume_flag()} runs them again)")
    else:
        start = (f"the weights of train.init_from {t.init_from}" if t.init_from else
                 f"the weights of model.name_or_path {cfg.model.name_or_path}" if cfg.kind == "hf" else
                 "freshly initialized weights")
        names = sorted(p.name for p in out.iterdir() if p.name != LOCK) if out.is_dir() else []
        kept = (f"no checkpoint was written, but {out} keeps {', '.join(names)}: pass {resume_flag()} to start it "
                f"again (with other settings), or choose another {out_flag()}")
    return (f"no step of this run applied an update: all {n} were non-finite (max_bad_steps={t.max_bad_steps}), "
            f"from the first on, with {start}. The learning rate is not the cause (every step ran on those same "
            f"weights): check them, the data and the model settings; {kept}")


def _not_empty(out: Path, names: set[str], what: str) -> UserError:
    return UserError(f"{out} is not empty and is not {what} ({', '.join(sorted(names)[:3])}"
                     f"{', ...' if len(names) > 3 else ''}); choose a new or empty {out_flag()}")


def check_owned(out: Path, names: tuple[str, ...], what: str) -> None:
    """Refuse, reading only, an --out that is a file or a directory holding anything but `names` (what `what`
    writes there): a command that writes a tree of its own must not mix it into other files."""
    from .outputs import check_out_folder

    check_out_folder(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out_flag()} {out} is a file, not a directory")
    foreign = {p.name for p in out.iterdir()} - set(names) if out.is_dir() else set()
    if foreign:
        raise _not_empty(out, foreign, what)


def check_metrics(path: Path) -> None:
    """Refuse a training log a resume could not extend: every line must be a JSON object with an integer step,
    except a torn last line (a crash in mid-write), which the resume drops."""
    if not path.exists():
        return
    if not path.is_file():  # a FIFO would block the read
        kind = "a directory" if path.is_dir() else "not a regular file (a FIFO, device or socket)"
        raise UserError(f"{path} is {kind}; a run writes its log there")
    lines = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()  # -sig: as truncate_metrics reads
    # blank lines are skipped (an editor or `echo >>` leaves them), as truncate_metrics skips them
    numbered = [(i, line) for i, line in enumerate(lines, 1) if line.strip()]
    for i, line in numbered:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == numbered[-1][0]:
                return
            raise UserError(f"{path}:{i}: not valid JSON, and not the last line (which a crash can tear); repair or "
                            "delete that line, then try again") from None
        if not isinstance(rec, dict) or type(rec.get("step")) is not int:  # (not a bool: {"step": true} is none)
            raise UserError(f"{path}:{i}: not a looplm metrics record (a JSON object with an integer step)")


def read_log(path: Path) -> list[dict]:
    """The records of a run's metrics.jsonl as a resume reads them: blank lines skipped, a torn last line dropped,
    any other bad line refused (check_metrics, naming the file and line); [] when there is no log."""
    check_metrics(path)
    lines = path.read_text(encoding="utf-8-sig", errors="replace").splitlines() if path.is_file() else []
    records = []
    for line in (x for x in lines if x.strip()):
        with contextlib.suppress(json.JSONDecodeError):  # the torn last line (check_metrics refused any other)
            records.append(json.loads(line))
    return records


@contextlib.contextmanager
def lock(out: Path, create: bool = True) -> Iterator[None]:
    """Hold the run directory's exclusive lock (POSIX flock) while the body runs; UserError if it is taken.
    create=False only looks (and changes nothing) when there is no lock file yet."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): one writer is the user's business
        yield
        return
    if not create and not (out / LOCK).exists():
        yield
        return
    if (out / LOCK).is_dir():  # (open said only "[Errno 21] Is a directory")
        raise UserError(f"{out / LOCK}, the run's lock file, is a folder; remove it (looplm writes that file itself)")
    f = (out / LOCK).open("a+" if create else "r")
    try:
        try:  # a look takes the lock shared, so that the ranks of one job looking at once do not collide
            fcntl.flock(f, (fcntl.LOCK_EX if create else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise UserError(f"{out} is in use by {holder}; wait for it to finish, or choose another {out_flag()}"
                            ) from None
        if create:
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            f.flush()
        yield
    finally:
        f.close()  # closing releases the lock


@contextlib.contextmanager
def claimed(out: Path, resume: bool, src: Path | None, keep: int) -> Iterator[None]:
    """A training command's hold on its run directory `out`, for its lifetime: created (with its parents) if
    new, locked, checked again under the lock (another process may have written there since `resume_point`),
    and a crash's half-done save finished. The claim is made while holding the folder's own lock, the one that
    sweep, analyze and plot take while they write into a folder, so a run never starts in a folder whose results
    are being written. A claim refused, or a fresh run that stops before it has saved or logged anything (a full
    disk), leaves `out` as it was: no lock file, config or folder of its own is left to block the next try."""
    from .outputs import folders_held  # (outputs reads run directories: imported here, not at the top)

    had_lock = (out / LOCK).exists()
    made = [a for a in (out, *out.parents) if not a.exists() and not a.is_symlink()]
    with contextlib.ExitStack() as held:
        with folders_held([out / LOCK]):  # creates out; removes it again if the claim is refused
            try:
                held.enter_context(lock(out))
                if resume_point(out, resume, held=True) != src:
                    raise UserError(f"another process changed {out} while this one was starting; run the command "
                                    "again")
                if src is not None and src.parent.name == ckpt.HISTORY and (out / "checkpoint").exists():
                    # keep it, out of the history's way, and say where (resume_point said why)
                    aside = out / f"checkpoint.damaged-{int(time.time())}"
                    (out / "checkpoint").rename(aside)
                    print(f"moved the damaged {out / 'checkpoint'} aside as {aside}; the run goes on from {src}",
                          file=sys.stderr)
                ckpt.recover(out / "checkpoint", keep=keep)  # finish a save a crash interrupted
            except BaseException as e:
                if not had_lock:  # removed while still held: no other process can have taken it meanwhile
                    (out / LOCK).unlink(missing_ok=True)
                held.close()
                if isinstance(e, OSError) and not isinstance(e, UserError):  # a full or read-only disk: say where
                    raise UserError(f"cannot start the run in {out}: {e.strerror or e}") from None
                raise
        try:
            yield
        except BaseException:
            if src is None and out.is_dir() and {p.name for p in out.iterdir()} <= {LOCK, "config.yaml"}:
                # a fresh run that left nothing but its claim: nothing of value to keep
                for name in ("config.yaml", *(() if had_lock else (LOCK,))):
                    (out / name).unlink(missing_ok=True)
                held.close()
                for d in made:
                    with contextlib.suppress(OSError):
                        d.rmdir()
            raise


UNREAD_INIT = "note: train.init_from="  # on_resume's note, which already_done repeats
RESULTS = ("sweep.json", "dynamics.json", "eval-lm/eval_lm.json")  # what sweep, analyze, eval-lm write by default


def fresh_start(out: Path, resume: bool) -> list[str]:
    """The note a --resume that finds nothing to continue gives (resume_point returned None): it starts a new run,
    as a restart script needs, and a typo in the run path then trained from scratch beside the real run unsaid."""
    if not resume or in_demo():  # (the demo resumes its stages unasked: a new stage is no --resume to speak of)
        return []
    held = out.is_dir() and {p.name for p in out.iterdir()} - {LOCK}
    what = "holds no checkpoint yet" if held else "does not exist" if not out.exists() else "is empty"
    return [f"note: {resume_flag()}: nothing to resume in {out} (it {what}); starting a new run"]


def on_resume(src: Path, cfg: Config, out: Path) -> tuple[Config, list[str]]:
    """What a resume keeps of the run's record, and notes that say so: the train.init_from of the run (a resume
    loads its own checkpoint, so another init_from would not be read, yet it would be recorded as where the run
    started; a study resumed from another directory spells the same path otherwise: a note, not a refusal), and
    the results already in the run directory, which score an earlier step than the one training goes on to."""
    began = ckpt.load_config(src).train.init_from
    notes = []
    if cfg.train.init_from != began:
        notes.append(f"{UNREAD_INIT}{cfg.train.init_from or '(none)'} is not read: a resume continues its "
                     f"own checkpoint; the run's record keeps where it started ({began or 'its own initialisation'})")
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, init_from=began))
    gap = log_gap(out, ckpt.saved_step(src) or 0, ckpt.load_config(src).train)
    notes += [gap] if gap else []
    change = origin_change(src, cfg.train.init_from, gone=True)
    if change:  # the resume never reads the source: it goes on from the run's own checkpoint, as continuing means
        began = ckpt.load_state(src, mmap=True)["init_from"]
        source = f"train.init_from {began.get('path') or cfg.train.init_from}"
        notes.append(f"note: {source} no longer exists; the resume goes on from this run's own checkpoint"
                     if change == "no longer exists" else
                     f"note: {source} has changed since this run started from it ({change}); the resume goes on "
                     "from this run's own checkpoint, which started from the old weights; start a new run to "
                     "fine-tune from the new ones")
    added = ckpt.user_files(out / "checkpoint")
    if added:  # a model card written before an upload was lost with the checkpoint the first save replaced
        notes.append(f"note: {out / 'checkpoint'} holds files looplm did not write ({', '.join(added[:5])}"
                     f"{', ...' if len(added) > 5 else ''}); each new checkpoint carries them over")
    lost = not_carried(out / "checkpoint")
    if lost:  # an empty folder or a FIFO put there vanished at the next save, unsaid
        notes.append(f"note: {out / 'checkpoint'} holds {', '.join(lost[:5])}{', ...' if len(lost) > 5 else ''}, "
                     "which a new checkpoint does not carry over (only files and links are); keep them elsewhere")
    found = {f: result_of(out / f) for f in RESULTS if (out / f).is_file()}
    ours = {f for f, (_, run) in found.items() if run in (None, out.resolve().name)}
    other = [f"{f} (run {run}, step {step or '?'})" for f, (step, run) in found.items() if f not in ours]
    if other:  # `sweep j4 --out fr1/sweep.json` was called this run's result of an earlier step
        notes.append(f"note: {' and '.join(other)} in {out} are results of another run (their label names it), "
                     "not of this one")
    kept = [f"{f} (step {found[f][0] or '?'})" for f in RESULTS if f in ours]
    if kept:  # each result's own step: it may score a checkpoint of the history, not the latest
        # by step, not "earlier": a resume from the history (the latest checkpoint damaged) is behind the results
        notes.append(f"note: {' and '.join(kept)} in {out} score other weights than this run will have (it resumes "
                     f"from step {ckpt.saved_step(src)} and trains on); rerun them with --force once it has")
    return cfg, notes


def _run_config(src: Path) -> str:
    """The file in a checkpoint that holds its run's settings (a fine-tune's config.json is the model's)."""
    return ckpt.RUN_CONFIG if (src / ckpt.RUN_CONFIG).is_file() else ckpt.CONFIG


def demo_refusal(out: Path, changes: list[str]) -> ConfigError:
    """A demo stage trained with other settings (the model's too): the demo resumes its stages, and its --force
    replaces only its results, so the one fix is another folder."""
    return ConfigError(f"{out} was trained with other settings ({'; '.join(changes)}); the demo's stages resume, even "
                       f"with {flag('--force', 'force=True')} (which replaces only its results): use another "
                       f"{out_flag()}")


def check_resume(src: Path, cfg: Config, out: Path) -> list[tuple[str, str]]:
    """The changed settings a resume may take (resume_rules.rules, and a larger train.keep_checkpoints), described,
    each with what it does to the training (resume_rules.effect: "differs", "rounding", "memory", "inert"); any
    other change is refused (ConfigError) before anything is touched. A train.device that resolves to the device
    the run's did (auto and cpu on a CPU machine) is no change, nor a path that names the same data or model folder
    (tasks.same_data) or chat template (same_template). The model's other changes are fitcheck.check_model's."""
    from .tasks import same_data

    saved = ckpt.load_config(src)
    resumable, inert = rules(saved, cfg, src)
    changes = [c for c in ckpt.config_changes(saved, cfg, ("model", "loops", "reg", "data", "train"))
               if (c[0] in RESUMABLE or not c[0].startswith("model."))
               and not (c[0] == "train.device" and _same_device(c[1], c[2])) and not same_data(src, *c)
               and not same_template(src, *c)]

    def allowed(key: str, old: Any, new: Any) -> bool:
        return key in resumable or (key == "train.keep_checkpoints" and new > old)

    refused = [ckpt.describe_change(*c) + (" (fewer would delete checkpoints)" if c[0] == "train.keep_checkpoints"
                                           else "") for c in changes if not allowed(*c)]
    if refused and in_demo():
        raise demo_refusal(out, refused)
    if refused:
        raise ConfigError(f"{resume_flag()} would change the run in {out}, not continue it: {'; '.join(refused)}. "
                          f"Resume with the settings it was trained with (its checkpoint's, {src / _run_config(src)}; "
                          f"{out / 'config.yaml'} holds them unless it was edited), or choose another {out_flag()}")
    return [(ckpt.describe_change(*c), effect(c[0], inert)) for c in changes if allowed(*c)]


def _same_device(old: Any, new: Any) -> bool:
    from .hardware import resolve_device  # (torch: not at import)

    try:
        return resolve_device(str(old)) == resolve_device(str(new))
    except UserError:  # a device this machine lacks (the run trained elsewhere): a change
        return False


def already_done(out: Path, src: Path, step: int, cfg: Config, total: int, changed: list[tuple[str, str]] = (),
                 notes: list[str] = ()) -> str | None:
    """What to say when the checkpoint a resume starts from has nothing left to train (None: it has). A schedule
    that ends before the checkpoint is refused: a resume continues a run, it never cuts one short. `changed`
    (check_resume's) and on_resume's init_from note: the settings given that a complete run does not use."""
    t = cfg.train
    if step > total:
        asked = f"train.steps={t.steps}" if t.steps else f"train.epochs={t.epochs} ({total} steps)"
        raise ConfigError(f"{asked} ends before the checkpoint's step {step} ({src}); a resume continues a run: ask "
                          f"for at least {step} steps, or choose another {out_flag()}")
    if step == total:  # (settings given with it went unsaid: a resume that trains notes them)
        unused = [n for n in notes if n.startswith(UNREAD_INIT)] + [
            f"note: not used (the run is complete): {'; '.join(d for d, _ in changed)}"] * bool(changed)
        return "\n".join([f"{out} is already complete (step {step} of {total}): nothing to train; nothing was "
                          "changed", *unused])
    log = out / "metrics.jsonl"
    for line in log.read_text().splitlines() if t.stop_at_acc and log.exists() else []:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a torn last line
            continue
        if rec.get("step") == step and "stopped" in rec and (rec.get("acc") or 0) >= t.stop_at_acc:
            return (f"{out} is already complete (it stopped at step {step} on train.stop_at_acc={t.stop_at_acc}): "
                    "nothing to train; nothing was changed")
    return None


def noted_config(config: Any) -> Any:
    """train's --config as given, after a note when it is the config.yaml of a run that trained a module of its own:
    training from it builds the LoopedTransformer its model section describes, and that was said nowhere."""
    p = Path(config)
    own = own_module(p.parent) if p.name == "config.yaml" and p.is_file() else None
    if own and rank_zero():  # (once under torchrun)
        print(f"note: {p} is the config of a run {MODULE_MODEL.format(own)}; this trains a LoopedTransformer "
              "from that section (to train the module again, call fit(cfg, out, model=...))", file=sys.stderr)
    return config
