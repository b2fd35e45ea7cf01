"""Checkpoints, one layout for every model kind: the model's files + `trainer_state.pt` + `manifest.json`,
written atomically.

The model's files are
- looplm's own model: `model.safetensors` and `config.json` (the run's looplm config);
- a pretrained HF model: an HF model directory (`config.json`, safetensors weights, generation config,
  tokenizer), loadable as it is with `from_pretrained`, plus `looplm_config.json` (the run's looplm config).

Layout of a run directory (`train.keep_checkpoints` = K):

    checkpoint/                  the latest checkpoint (what `--resume`, `sweep` and `generate` read)
    checkpoints/step-00000500/   the K-1 checkpoints before it, oldest pruned first (only when K > 1)

Writing (`write_checkpoint`): the new checkpoint is built in `checkpoint.tmp/`, every file fsynced,
`manifest.json` (size and SHA-256 of each file, and the step) written last. Then `checkpoint/` is renamed to
`checkpoint.old/`, `checkpoint.tmp/` to `checkpoint/`, and `checkpoint.old/` is retired: renamed into
`checkpoints/step-N/` when K > 1, deleted otherwise. Every step is a rename of a complete directory, so a crash
at any point leaves either the previous or the new checkpoint whole; `recover` (run at the start of every save
and of training) finishes or rolls back an interrupted swap. Directories are deleted by first renaming them to
`.trash-*`, so a crash mid-delete never leaves a half-deleted directory under a name that looks like a
checkpoint.

Reading: weights load through safetensors only and the trainer state through `torch.load(weights_only=True)`,
so no file in a checkpoint ever runs code. Each file is checked against the manifest before it is parsed:
a truncated or bit-flipped file raises `CheckpointError` naming the file instead of loading garbage (tensor
bytes carry no checksum of their own). Checkpoints without a manifest (written by other tools) still load,
with safetensors' and torch's own format checks only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import weightfit
from .config import Config, ConfigError
from .errors import UserError, emptiness, missing_file, no_weights, not_there, shown_path, special_kind
from .model import LoopedTransformer

T = TypeVar("T")
WEIGHTS, CONFIG, STATE, MANIFEST = "model.safetensors", "config.json", "trainer_state.pt", "manifest.json"
RUN_CONFIG = "looplm_config.json"  # the run's looplm config, where config.json is the HF model's own
SHARD_INDEX = "model.safetensors.index.json"  # sharded HF weights
HISTORY = "checkpoints"  # sibling of the latest checkpoint's folder, holding the older ones
MANIFEST_FORMAT = "looplm-checkpoint/1"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_EDITED = ("it changed since the checkpoint was written (edited, or damaged); restore it, or copy the model's files "
           "without manifest.json to a folder of their own to use an edited one")
_EXIT_HINT = " (an early_exit_threshold needs no edit: eval-lm --exit-threshold, the adapter's exit_threshold=)"


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, unreadable, corrupted, or does not match the requested model."""


def _damaged(d: Path, msg: str) -> CheckpointError:
    """The error for a damaged file in checkpoint folder `d`, pointing at the older checkpoints if any."""
    from .rundir import resume_flag  # (lazy: rundir imports this module); fit(resume=True) was told of --resume

    older = [h for _, h in history(d) if h != d]
    if older:
        msg += (f". Older checkpoints: {', '.join(h.name for h in older)} in {older[0].parent} (load one directly; "
                f"{resume_flag()} continues from the newest whole one)")
    return CheckpointError(msg)


def _torch_load_detail(e: Exception) -> str:
    """The informative line of a torch.load or torch.save error, without torch's advice to retry with
    weights_only=False."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    keep = [ln for ln in lines if not ln.startswith(("Weights only load failed", "Check the documentation"))
            and "weights_only" not in ln]
    return f"{type(e).__name__}: {(keep or lines or [''])[0]}"


# --- paths --------------------------------------------------------------------------------------------------
def _old(ckpt_dir: Path) -> Path:
    return ckpt_dir.with_name(ckpt_dir.name + ".old")


def _tmp(ckpt_dir: Path) -> Path:
    return ckpt_dir.with_name(ckpt_dir.name + ".tmp")


def history_dir(ckpt_dir: str | Path) -> Path:
    return Path(ckpt_dir).parent / HISTORY


def resolve(path: str | Path) -> Path:
    """The weights folder of a run, its checkpoint/ or a checkpoints/step-N/ (read-only: checkpoint.old/ as it is)."""
    if not str(path).strip():  # pathlib reads "" as the working folder, which was searched for a run
        raise CheckpointError(f"the checkpoint path is {emptiness(str(path))}; give a run directory")
    p = Path(path)
    cands = [p, p / "checkpoint", _old(p / "checkpoint")] + ([_old(p)] if p.name == "checkpoint" else [])
    for cand in cands:
        if has_weights(cand):
            return cand
    if not p.exists():
        raise CheckpointError(f"checkpoint {shown_path(p)} {not_there(p, model=True)}")
    odd = special_kind(p)
    if odd:  # /dev/null or a FIFO was "a file", with a hint to give /dev
        raise CheckpointError(f"checkpoint {p} is {odd}, not a run directory; give the run directory (train's "
                              f"--out) or the folder that holds {WEIGHTS}")
    if not p.is_dir():  # (model.safetensors itself was "no model.safetensors in .../model.safetensors")
        # the folder it sits in is suggested only when it is a checkpoint or run (a data file's folder was `.`)
        if any(has_weights(c) for c in (p.parent, p.parent / "checkpoint", _old(p.parent / "checkpoint"))):
            raise CheckpointError(f"checkpoint {p} is a file; give the run directory or the folder that holds "
                                  f"{WEIGHTS} ({p.parent})")
        data = " (a data file? pass it with --data)" if p.suffix.lower() in (".jsonl", ".json", ".txt") else ""
        raise CheckpointError(f"checkpoint {p} is a file, not a run directory{data}; give the run directory "
                              f"(train's --out) or the folder that holds {WEIGHTS}")
    raise CheckpointError(no_weights(p, WEIGHTS, history(p)))


def has_weights(d: Path) -> bool:
    return (d / WEIGHTS).is_file() or (d / SHARD_INDEX).is_file()


def history(path: str | Path) -> list[tuple[int, Path]]:
    """The older checkpoints kept next to a run's `checkpoint/` folder, as (step, folder), oldest first."""
    p = Path(path)
    if p.name == "checkpoint" or has_weights(p):  # a checkpoint folder, latest or from the history
        h = p.parent if p.parent.name == HISTORY else history_dir(p)
    else:  # a run directory
        h = p / HISTORY
    return sorted(_history_entries(h))


def _history_entries(h: Path) -> list[tuple[int, Path]]:
    """The `step-N` folders of history folder `h` whose manifest says step N. Anything else there (a folder
    copied in by hand, `step-99999999` with no manifest) is no checkpoint of this run: it is neither resumed
    from nor counted nor pruned, so it cannot push a real checkpoint out of the history."""
    out = []
    if h.is_dir():
        for d in h.iterdir():
            m = _STEP_DIR.match(d.name)
            if m and d.is_dir() and not d.is_symlink() and saved_step(d) == int(m.group(1)):
                out.append((int(m.group(1)), d))
    return out


# --- filesystem helpers ---------------------------------------------------------------------------------------
def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # e.g. platforms that cannot open directories
        return
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)


def _fsync_file(f: Path) -> None:
    with f.open("rb") as fh:
        os.fsync(fh.fileno())


def _discard(p: Path) -> None:
    """Delete directory `p`; it is first renamed to `.trash-*`, so a crash midway leaves no partial directory
    under a meaningful name."""
    if not p.exists():
        return
    trash = p.with_name(f".trash-{p.name}-{uuid.uuid4().hex[:8]}")
    p.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def write_result(path: str | Path, write: Callable[[Path], None], replace: bool = False) -> Path:
    """Write a result file (a sweep, dynamics, a figure) so that it is whole or absent: `write(tmp)` fills a
    temporary file in the same folder, which then takes the name `path`. A failure (a full disk) leaves nothing.
    Without `replace` the name is taken with a hard link, which fails if `path` appeared while the work ran (a
    second command writing the same --out): the earlier result is never silently replaced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}")  # the suffix names the format
    try:
        try:
            write(tmp)
            _fsync_file(tmp)
        except OSError as e:
            raise UserError(f"cannot write {path}: {e.strerror or e}") from None
        if replace:
            tmp.replace(path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise UserError(f"{path} appeared while this command ran (another command writing the same --out?); "
                                "pass --force to replace it, or --out somewhere else") from None
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


def run_label(path: str | Path) -> str:
    """How results name a checkpoint: its run's folder name for a run or its `checkpoint/`, `RUN/step-N` for one
    of the history, the folder's own name otherwise (an HF model directory)."""
    p = Path(path).resolve()
    if p.name == "checkpoint":
        return p.parent.name
    if p.parent.name == HISTORY:
        return f"{p.parent.parent.name}/{p.name}"
    return p.name


def enclosing_checkpoint(path: str | Path) -> Path | None:
    """A run's `checkpoint/` or `checkpoints/` folder that `path` lies inside, or None. Training replaces the
    checkpoint and prunes the history, so a file written there would be lost."""
    for d in Path(path).resolve().parents:
        if d.name in ("checkpoint", HISTORY) and (has_weights(d) or any((d.parent / f).exists() for f in
                                                                          ("config.yaml", "metrics.jsonl"))):
            return d
    return None


def _sha256(f: Path) -> str:
    with f.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def saved_step(d: str | Path) -> int | None:
    """The training step a checkpoint directory was saved at (from its manifest), or None if unreadable."""
    d = Path(d)
    try:
        step = json.loads((d / MANIFEST).read_text()).get("step")
    except (OSError, ValueError, AttributeError):
        return None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def loaded_at_step(d: str | Path, load: Callable[[], T]) -> tuple[T, int | None]:
    """`load()`, the weights of checkpoint folder `d`, and the step they were saved at. A run still training into the
    folder replaces it as it goes: the step is read before and after, so a result never names a step its weights
    are not from (a change in between is refused)."""
    before = saved_step(d)
    obj = load()
    after = saved_step(d)
    if before != after:
        raise CheckpointError(f"{d} was replaced while it was read (step {before}, then {after}: a run is still "
                              "training into it); run the command again, or score a checkpoint of its history")
    return obj, after


def _retire(old: Path, keep: int | None) -> None:
    """Move the previous latest checkpoint into the history (K > 1) or delete it (K = 1), then prune.
    With `keep=None` (K unknown) it joins the history if there is one, and nothing is pruned."""
    into_history = history_dir(old).is_dir() if keep is None else keep > 1
    if into_history and has_weights(old):
        hist = history_dir(old)
        hist.mkdir(exist_ok=True)
        step = saved_step(old)
        dest = hist / (f"step-{step:08d}" if step is not None else f"step-unknown-{uuid.uuid4().hex[:8]}")
        if saved_step(dest) == step:
            _discard(dest)  # the same step saved twice (e.g. a finished run resumed): the newer copy wins
        elif dest.exists() or dest.is_symlink():  # not ours (see _history_entries): moved aside, not deleted
            dest.rename(dest.with_name(f"{dest.name}.displaced-{uuid.uuid4().hex[:8]}"))
        old.rename(dest)
        _fsync_dir(hist)
        _fsync_dir(old.parent)
    else:
        _discard(old)
    _prune(history_dir(old), keep)


def _prune(hist: Path, keep: int | None) -> None:
    if keep is None or not hist.is_dir():
        return
    # Only this run's checkpoints count: its step-N folders, and the step-unknown-* ones _retire names (oldest).
    entries = [d for d in hist.iterdir() if d.is_dir() and d.name.startswith("step-unknown-") and has_weights(d)]
    entries += [d for _, d in sorted(_history_entries(hist))]
    for d in hist.glob(".trash-*"):
        shutil.rmtree(d, ignore_errors=True)
    for d in entries[: max(0, len(entries) - (keep - 1))]:
        _discard(d)
    if keep <= 1:
        try:
            hist.rmdir()
        except OSError:  # not empty: something else lives there
            pass


# --- writing ----------------------------------------------------------------------------------------------------
def recover(ckpt_dir: str | Path, keep: int | None = None) -> None:
    """Finish or roll back a save interrupted by a crash. Idempotent, and safe to interrupt itself.
    `keep` is the run's K; with None (unknown) the history is left as it is.

    - only `<name>.old` survives (crash between the two renames): it becomes the checkpoint again;
    - both survive (crash after the swap): `.old` is retired as `save` would have done;
    - a `<name>.tmp` or `.trash-*` leftover is deleted.
    """
    ckpt_dir = Path(ckpt_dir)
    old = _old(ckpt_dir)
    if old.exists():
        if not ckpt_dir.exists():
            old.rename(ckpt_dir)
            _fsync_dir(ckpt_dir.parent)
        else:
            _retire(old, keep)
    tmp = _tmp(ckpt_dir)
    if tmp.exists():
        _discard(tmp)
    if ckpt_dir.parent.is_dir():
        for d in ckpt_dir.parent.glob(".trash-*"):
            shutil.rmtree(d, ignore_errors=True)
    _prune(history_dir(ckpt_dir), keep)


def write_checkpoint(ckpt_dir: str | Path, weights: dict[str, torch.Tensor],
                     write_model: Callable[[Path, dict[str, torch.Tensor]], None],
                     state: dict[str, Any] | None = None, keep: int = 1) -> Path:
    """Atomically write a checkpoint to `ckpt_dir`, keeping the `keep - 1` previous ones in `checkpoints/`.

    `write_model(folder, weights)` writes the model's own files; the trainer state and the manifest (every
    file's size and SHA-256) are added here. Refuses (CheckpointError, nothing written) to save weights that
    are not finite, so a diverged model can never replace the last good checkpoint.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    ckpt_dir = Path(ckpt_dir)
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        kept = "the previous checkpoint is kept" if has_weights(ckpt_dir) else "no checkpoint had been written yet"
        raise CheckpointError(f"refusing to write {ckpt_dir}: non-finite values in {', '.join(bad)}; {kept}")
    ckpt_dir.parent.mkdir(parents=True, exist_ok=True)
    recover(ckpt_dir, keep)
    tmp = _tmp(ckpt_dir)
    tmp.mkdir()
    step = state.get("step") if state is not None else None
    try:
        write_model(tmp, weights)
        if state is not None:
            torch.save(state, tmp / STATE)
        files = {}
        for f in sorted(tmp.rglob("*")):
            if f.is_file():
                _fsync_file(f)
                files[f.relative_to(tmp).as_posix()] = {"bytes": f.stat().st_size, "sha256": _sha256(f)}
        manifest = {"format": MANIFEST_FORMAT, "step": int(step) if step is not None else None, "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        _fsync_file(tmp / MANIFEST)
        for name in [n for n in user_files(ckpt_dir) if not (tmp / n).exists()]:  # unlisted: the user's still
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ckpt_dir / name, tmp / name, follow_symlinks=False)
    except (OSError, RuntimeError, SafetensorError) as e:  # a full disk: torch.save says so as a RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)  # nothing has been swapped yet
        kept = f"the previous checkpoint in {ckpt_dir} is kept" if ckpt_dir.exists() else "no checkpoint is written"
        raise CheckpointError(f"could not write the checkpoint of step {step} ({_torch_load_detail(e)}); is the disk "
                              f"full? {kept}") from None
    _fsync_dir(tmp)
    # The swap. A crash between the two renames leaves only `.old`, which `recover` puts back.
    old = _old(ckpt_dir)
    if ckpt_dir.exists():
        ckpt_dir.rename(old)
    tmp.rename(ckpt_dir)
    _fsync_dir(ckpt_dir.parent)
    if old.exists():
        _retire(old, keep)
    else:
        _prune(history_dir(ckpt_dir), keep)
    return ckpt_dir


def user_files(d: Path) -> list[str]:
    """Files in checkpoint folder `d` its manifest does not list (a model card README.md, a .gitattributes added
    before an upload): a new checkpoint carries them over, as the old one is pruned. None without a manifest."""
    try:
        listed = set(json.loads((d / MANIFEST).read_text())["files"]) | {MANIFEST}
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return sorted(f.relative_to(d).as_posix() for f in d.rglob("*")
                  if (f.is_file() or f.is_symlink()) and f.relative_to(d).as_posix() not in listed)


def cpu_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict on the CPU, each name with memory of its own: safetensors refuses tensors that share memory,
    as tied weights do (an output layer that is the embedding), so a second name gets a copy; loading writes the
    same values into the one shared tensor."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in state.items():
        t = v.detach().contiguous().cpu()
        where = t.untyped_storage().data_ptr()
        out[k] = t.clone() if where in seen else t
        seen.add(where)
    return out


MODULE = "module.json"  # in a checkpoint of a user's own module: its class, which config.json does not describe


def write_native(folder: Path, weights: dict[str, torch.Tensor], cfg: Config, module: type | None = None) -> None:
    """looplm's own model files: safetensors weights and the run config; `module`, a user's module class the
    weights belong to (not the LoopedTransformer that config.json's model section describes)."""
    # One metadata key only: safetensors writes a metadata map in arbitrary order, and identical weights should
    # give identical bytes (and SHA-256s).
    save_file(weights, str(folder / WEIGHTS), metadata={"format": "pt"})
    from .outputs import umask_mode  # (lazy: outputs imports this module)
    umask_mode(folder / WEIGHTS)
    (folder / CONFIG).write_text(cfg.to_json())
    if module is not None:
        (folder / MODULE).write_text(json.dumps({"module": f"{module.__module__}.{module.__qualname__}"}) + "\n")


def save(ckpt_dir: str | Path, model: LoopedTransformer, cfg: Config, state: dict[str, Any] | None = None,
         keep: int = 1) -> Path:
    """`write_checkpoint` for looplm's own model."""
    return write_checkpoint(ckpt_dir, cpu_weights(model.state_dict()), lambda d, w: write_native(d, w, cfg), state,
                            keep)


# --- reading ----------------------------------------------------------------------------------------------------
def verify(path: str | Path, names: tuple[str, ...] | None = None) -> None:
    """Check files against `manifest.json` (size, then SHA-256): `names`, or every file it lists. A checkpoint
    without a manifest passes; a file the manifest does not list (e.g. a weights-only checkpoint has no trainer
    state) is skipped. Whatever `names` asks for, the manifest must list the weights, and every file it lists
    must be there (a manifest that vouches for less than the checkpoint holds would let a loss pass), but the
    trainer state unless `names` asks for it: only a resume reads it (`load_state`), and it is dropped to share."""
    d = resolve(path)
    mf = d / MANIFEST
    if not mf.is_file():
        return
    try:
        manifest = json.loads(mf.read_text())
        files = manifest["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not a mapping")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise _damaged(d, f"{mf} is unreadable ({type(e).__name__}: {e}); the file is corrupted") from None
    if WEIGHTS not in files and SHARD_INDEX not in files:
        raise _damaged(d, f"{mf} lists no weights ({WEIGHTS}); the file is corrupted")
    for name, rec in files.items():
        ok = (isinstance(rec, dict) and not Path(name).is_absolute() and ".." not in Path(name).parts
              and type(rec.get("bytes")) is int and isinstance(rec.get("sha256"), str))
        if not ok:
            raise _damaged(d, f"{mf} is unreadable (its entry for {name!r} is not a file record of an integer "
                              "`bytes` and a string `sha256`); the file is corrupted")
        if not (d / name).is_file() and (name != STATE or STATE in (names or ())):
            same = [c / name for _, c in history(d) if (c / name).is_file() and _sha256(c / name) == rec["sha256"]]
            raise _damaged(d, missing_file(d / name, MANIFEST, same[-1:]))
    for name in [n for n in (files if names is None else names) if n in files and (d / n).is_file()]:
        f, rec, binary = d / name, files[name], name.endswith((".safetensors", ".pt"))
        edited = _EDITED + (_EXIT_HINT if name == CONFIG and RUN_CONFIG in files else "")
        size = f.stat().st_size
        # a text file (config, template) is edited by hand (docs/hf.md's early_exit_threshold): not said corrupted
        if size != rec.get("bytes"):
            raise _damaged(d, f"{f} has {size} bytes but {MANIFEST} records {rec.get('bytes')}: "
                              f"{'the file is truncated or was overwritten' if binary else edited}")
        if _sha256(f) != rec.get("sha256"):
            raise _damaged(d, f"{f} does not match its SHA-256 in {MANIFEST}: "
                              f"{'the file is corrupted' if binary else edited}")


def load_config(path: str | Path) -> Config:
    """The run config saved with a checkpoint (either model kind)."""
    d = resolve(path)
    name = RUN_CONFIG if (d / RUN_CONFIG).is_file() else CONFIG
    f = d / name
    if not f.is_file():
        raise _damaged(d, f"{f} is missing")
    verify(d, (name,))
    try:
        raw = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _damaged(d, f"{f} is not valid JSON ({e}); the file is corrupted") from None
    if name == CONFIG and isinstance(raw, dict) and "model_type" in raw:  # export-hf output, Ouro, any HF model
        raise CheckpointError(f"{d} is a Hugging Face model directory (model_type {raw['model_type']!r}), not a looplm "
                              "run: `looplm analyze`, `looplm eval-lm` and `looplm finetune` (model.name_or_path) read "
                              "it; sweep, generate, export-hf and train.init_from need a looplm run")
    t = raw.get("train") if isinstance(raw, dict) else None
    if isinstance(t, dict) and t.get("steps") and t.get("epochs"):  # a record of a run from before that was refused:
        raw = {**raw, "train": {**t, "epochs": 0}}                     # its steps set its length, as they did then
    try:
        return Config.from_dict(raw)
    except ConfigError as e:
        raise CheckpointError(f"{f}: {e}") from None


# Model fields that change only how a run trains, not the weights or what Φ computes: a fine-tune
# (train.init_from) may set them anew (dropout on, random positions as the chain/parity presets train).
TRAINING_ONLY = ("dropout", "random_positions")


def config_changes(a: Config, b: Config, sections: tuple[str, ...] = ("model",)) -> list[tuple[str, Any, Any]]:
    """(section.key, a's value, b's value) for every differing field of the given sections."""
    da, db = a.to_dict(), b.to_dict()
    return [(f"{s}.{k}", da[s][k], db[s][k]) for s in sections for k in da[s] if da[s][k] != db[s][k]]


def describe_change(key: str, old: Any, new: Any) -> str:
    return f"{key}: checkpoint {old!r} vs requested {new!r}"


def config_diff(a: Config, b: Config, sections: tuple[str, ...] = ("model",)) -> list[str]:
    """`section.key: checkpoint a vs requested b` for every differing field of the given sections."""
    return [describe_change(*c) for c in config_changes(a, b, sections)]


def module_name(d: Path) -> str | None:
    """The class a checkpoint of a user's module records (`module.json`: "package.Class"); None when it records
    none (looplm's LoopedTransformer) or the record is unreadable."""
    if not (d / MODULE).is_file():
        return None
    verify(d, (MODULE,))
    try:
        name = json.loads((d / MODULE).read_text()).get("module")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return name if isinstance(name, str) else None


def load_model(path: str | Path, device: str | torch.device = "cpu", expect: Config | None = None
               ) -> tuple[LoopedTransformer, Config]:
    """Build the model from `config.json` and load `model.safetensors` strictly.

    With `expect`, the checkpoint's model section must equal `expect.model` but for TRAINING_ONLY fields, which are
    taken from `expect`; mismatched fields are listed.
    """
    d = resolve(path)
    cfg = load_config(d)
    if cfg.kind != "native":
        raise CheckpointError(f"{d} holds a pretrained HF model ({cfg.model.name_or_path} fine-tuned); load it with "
                              "transformers' from_pretrained or the looplm.hf commands")
    if (d / MODULE).is_file():  # its weights are not a LoopedTransformer's: say so, not as a key mismatch
        name = module_name(d)
        raise CheckpointError(f"{d} holds the weights of a module of your own ({name or 'unreadable ' + MODULE}), "
                              "not of the LoopedTransformer its config describes; build that module and load them "
                              "with looplm.checkpoint.load_weights, then use the Python API")
    model = cfg.model
    if expect is not None:
        diff = [describe_change(*c) for c in config_changes(cfg, expect) if c[0][len("model."):] not in TRAINING_ONLY]
        if diff:
            raise CheckpointError(f"checkpoint {d} does not match the requested model:\n  " + "\n  ".join(diff))
        model = dataclasses.replace(model, **{k: getattr(expect.model, k) for k in TRAINING_ONLY})
    return load_weights(d, LoopedTransformer(model)).to(device), cfg


def load_weights(path: str | Path, model: torch.nn.Module) -> torch.nn.Module:
    """Load a checkpoint's `model.safetensors` into `model` strictly (checked against the manifest first)."""
    d = resolve(path)
    f = d / WEIGHTS
    verify(d, (WEIGHTS,))
    try:
        weights = load_file(str(f))
    except (SafetensorError, OSError, ValueError) as e:
        raise _damaged(d, f"{f} is unreadable ({e}); the file is truncated or corrupted") from None
    missing, unexpected = set(model.state_dict()) - set(weights), set(weights) - set(model.state_dict())
    held, given = module_name(d) or "looplm.model.LoopedTransformer", type(model).__qualname__
    if (missing or unexpected) and not held.endswith(f".{given}"):  # another class (by name, as a resume compares)
        raise CheckpointError(f"{d} holds the weights of {held}, not of {type(model).__module__}.{given}: load them "
                              f"into a {held.rsplit('.', 1)[-1]}, or start from a run of {given}")
    # keys and shapes first, in one line: torch lists every size mismatch, and the caller's model may be what differs
    problem = weightfit.mismatch(f, model, weights, lambda: load_config(d))
    if problem:
        raise CheckpointError(problem)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{f} does not fit {type(model).__name__}: {e}") from None
    return model


def check_state(state: dict[str, Any], d: Path) -> None:
    """The shape of a looplm trainer state: a step, an optimizer state dict and the two saved generator states."""
    opt, gens = state.get("optimizer"), state.get("generators")
    ok = (isinstance(state.get("step"), int) and state["step"] >= 0 and isinstance(opt, dict)
          and isinstance(opt.get("state"), dict) and isinstance(opt.get("param_groups"), list)
          and isinstance(gens, dict) and all(isinstance(gens.get(k), torch.Tensor) for k in ("data", "loops")))
    if not ok:
        raise CheckpointError(f"{d / STATE} is not a looplm trainer state (step, optimizer, generators)")


def load_state(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """The trainer state; `mmap=True` maps tensors lazily (a cheap look at a large optimizer state)."""
    d = resolve(path)
    f = d / STATE
    if not f.is_file():
        raise CheckpointError(f"{f} is missing: this checkpoint holds weights only and cannot be resumed")
    verify(d, (STATE,))
    try:
        state = torch.load(f, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # torch raises several types for a damaged zip or a refused pickle
        raise _damaged(d, f"{f} is unreadable ({_torch_load_detail(e)}); the file is truncated, corrupted or not "
                          "a looplm trainer state") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{f} is not a looplm trainer state (expected a mapping with a 'step' entry)")
    return state
