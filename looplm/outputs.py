"""Where a command's results go: checked before any work (no output may destroy an input or an earlier
result without --force), defaulting to the run's own directory, and written whole or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from . import checkpoint as ckpt
from . import rundir
from .errors import UserError


def write_json(path: Path, obj: dict, replace: bool = True) -> None:
    ckpt.write_result(path, lambda f: f.write_text(json.dumps(obj, indent=1) + "\n"), replace)


def _is_input(out: Path, inp: Path) -> bool:
    """`out` names the input file `inp` (by any path: links, `..`), or lies inside the input folder `inp`."""
    if not inp.exists():
        return False
    if inp.is_dir():
        return inp.resolve() in out.resolve().parents
    return out.resolve() == inp.resolve() or (out.exists() and os.path.samefile(out, inp))


def fresh_outputs(paths: list[Path], force: bool, inputs: dict[Path, str] | None = None) -> None:
    """Refuse, before any work, an output that would be lost or would destroy something: one of the command's
    own inputs (`inputs`: path -> what it is; a data folder's inside too), even with --force; one inside a
    run's checkpoint folders (training replaces and prunes them); one whose folder is a file; a directory;
    and (unless --force) an earlier result."""
    for p in paths:
        for inp, what in (inputs or {}).items():
            if _is_input(p, Path(inp)):
                raise UserError(f"--out {p} would write {'over' if not Path(inp).is_dir() else 'into'} {what} "
                                f"({inp}), an input of this command; write the result somewhere else")
        inside = ckpt.enclosing_checkpoint(p)
        if inside is not None:
            raise UserError(f"--out {p} is inside {inside}, which training replaces and prunes; write it "
                            "somewhere else (e.g. the run directory)")
        own = next((a for a in (p, *p.parents) if a.name in rundir.RUN_FILES and a.parent.is_dir()
                    and {"config.yaml", "checkpoint", "metrics.jsonl"} & {x.name for x in a.parent.iterdir()}), None)
        if own is not None:  # --force replaces an earlier result, never the run's own files
            raise UserError(f"--out {p} would write {'into' if own != p else 'over'} {own}, which belongs to the "
                            f"run in {own.parent}; write beside the run's files (e.g. {own.parent / 'sweep.json'})")
        above = next((a for a in p.parents if a.exists()), None)
        if above is not None and not above.is_dir():
            raise UserError(f"cannot write {p}: {above} is a file, not a directory; choose another --out")
        if above is not None:  # found now, not after the work: a test file made and removed in the same breath
            try:
                tempfile.TemporaryFile(dir=above).close()
            except OSError as e:
                raise UserError(f"cannot write {p}: {above} is not writable ({e.strerror or e}); choose another "
                                "--out") from None
        if p.is_dir():
            raise UserError(f"--out {p} is a directory; give the path of the file to write")
        if p.exists() and not force:
            raise UserError(f"{p} already exists (an earlier result); pass --force to replace it, or --out "
                            "somewhere else")


@contextlib.contextmanager
def all_or_nothing(paths: list[Path]) -> Iterator[None]:
    """A command's outputs are written whole or not at all: if it stops part way (Ctrl-C between the JSON and
    its figure, a full disk), the files it wrote are removed and the earlier results it was replacing (--force)
    are put back, so neither a half result nor a lost one is left. The earlier files are kept by a hard link
    beside them while the command runs (same folder, same file system: no copy)."""
    kept: dict[Path, Path] = {}
    try:
        for p in paths:
            if p.is_file() and not p.is_symlink():
                k = p.with_name(f".{p.name}.kept-{uuid.uuid4().hex[:8]}")
                os.link(p, k)
                kept[p] = k
        yield
    except BaseException:
        for p in paths:
            if p in kept:
                if not (p.exists() and os.path.samefile(p, kept[p])):
                    os.replace(kept[p], p)  # the earlier result, back under its name
            elif p.exists() or p.is_symlink():
                p.unlink()  # a file this command wrote
        raise
    finally:
        for k in kept.values():
            k.unlink(missing_ok=True)


def default_out_dir(checkpoint: str) -> Path:
    """Where outputs go by default: the run directory of a checkpoint (the latest or one of the history), or an
    HF model directory of its own (Ouro, an export)."""
    from .hf.analysis import find_model_dir

    hf_dir = find_model_dir(checkpoint)
    if hf_dir is not None and hf_dir.name != "checkpoint" and hf_dir.parent.name != ckpt.HISTORY:
        return hf_dir
    d = (hf_dir or ckpt.resolve(checkpoint)).parent
    return d.parent if d.name == ckpt.HISTORY else d
