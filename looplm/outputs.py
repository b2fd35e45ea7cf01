"""Where a command's results go: checked before any work (no output may destroy an input or an earlier
result without --force), defaulting to the run's own directory, and written whole or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from . import checkpoint as ckpt
from . import rundir
from .errors import UserError, dead_link, shortened, shown_path, signals_held, special_kind


def write_json(path: Path, obj: dict, replace: bool = True) -> None:
    ckpt.write_result(path, lambda f: f.write_text(json.dumps(obj, indent=1) + "\n"), replace)


def _is_input(out: Path, inp: Path) -> bool:
    """`out` names the input file `inp` (by any path: links, `..`), or lies inside the input folder `inp`."""
    if not inp.exists():
        return False
    if inp.is_dir():
        return inp.resolve() in out.resolve().parents
    return out.resolve() == inp.resolve() or (out.exists() and os.path.samefile(out, inp))


def data_flag_input(data: str | Path) -> str:
    """How an --out refusal names the --data input: "file" said of a folder misled (hs_copy/ read as a file)."""
    return f"the --data {'folder' if Path(data).is_dir() else 'file'}"


def check_not_input(out: Path, inputs: dict[Path, str], why: str) -> None:
    """Refuse an --out that names one of `inputs` (path -> what it is) or lies inside one of its folders."""
    for inp, what in inputs.items():
        if _is_input(out, Path(inp)):
            raise UserError(f"{rundir.out_flag()} {shown_path(out)} would write "
                            f"{'over' if not Path(inp).is_dir() else 'into'} "
                            f"{what} ({inp}), {why}")


def _data_of(cfg: object, what: str) -> dict[Path, str]:
    d = getattr(cfg, "data", None)
    return {Path(getattr(d, k)): f"{what} (data.{k})" for k in ("path", "test_path") if getattr(d, k, None)}


def run_data(cfg: object, whose: str = "the run's") -> dict[Path, str]:
    """The data a run reads (data.path, data.test_path: a file, or a text corpus's folder, read whole), and the
    data of every run its train.init_from chain started from (the run it fine-tuned, that run's own init_from, and
    so on): each reads its corpus whole on its own resume, sweep and analyze, so an export or a result of the
    fine-tune written there broke them (one level only let a fine-tune of a fine-tune overwrite the first run's
    training file)."""
    found = _data_of(cfg, f"{whose} data")
    seen: set[Path] = set()  # the runs walked: a chain that leads back to itself (a copied run) ends
    while getattr(cfg, "kind", "") == "native" and getattr(getattr(cfg, "train", None), "init_from", ""):
        init_from = Path(cfg.train.init_from)
        if init_from.resolve() in seen:
            break
        seen.add(init_from.resolve())
        try:
            cfg = ckpt.load_config(init_from)
        except UserError:  # (gone or no run: nothing of it, or above it, to protect)
            break
        label = ("the train.init_from run's data" if len(seen) == 1 else
                 f"the data of {init_from}, a run further up the train.init_from chain")
        for p, what in _data_of(cfg, label).items():
            found.setdefault(p, what)
    return found


def check_outside_data(out: Path, cfg: object, whose: str = "the run's") -> None:
    """Refuse a new --out (an export, a fine-tune) inside the data of the run it reads: a corpus folder is read
    whole, so the run's sweep, analyze and --resume then refused the folder's new files (sweep and analyze refuse
    such an --out through `fresh_outputs`)."""
    check_not_input(out, run_data(cfg, whose), "which that run reads whole (its sweep, analyze and --resume would "
                                               "read these files as data); write it somewhere else")


def check_reachable(p: Path) -> Path | None:
    """Refuse, in one line before any work, a path to write under a symbolic link that leads nowhere (a link to an
    unmounted drive, links that point at each other) or under a file. Returns the nearest thing above `p` that
    is there (None: nothing is)."""
    above = next((a for a in p.parents if a.exists() or a.is_symlink()), None)
    if above is not None and not above.exists():
        raise UserError(f"cannot write {shown_path(p)}: {shown_path(above)} is {dead_link(above)}")
    if above is not None and not above.is_dir():
        raise UserError(f"cannot write {shown_path(p)}: {shown_path(above)} is a file, not a directory; choose "
                        f"another {rundir.out_flag()}")
    return above


def run_part(p: Path) -> Path | None:
    """The file or folder of a run's own that `p` is or lies in (`run/config.yaml`, `run/tensorboard/x`: a name
    of `rundir.RUN_FILES` in a folder that holds a run, `rundir.holds_run`), else None. `p` is resolved first:
    `run/checkpoint/../sweep.json` is beside the run's files, not in them."""
    real = p.resolve()
    return next((a for a in (real, *real.parents) if a.name in rundir.RUN_FILES and a.parent.is_dir()
                 and rundir.holds_run(a.parent)), None)


def check_name_length(p: Path) -> None:
    """Refuse, before any work, an output whose name leaves no room for the names looplm writes beside it (a
    temporary file, a kept earlier result, an export in progress: up to 16 bytes longer). A valid 253-byte name
    failed after the work, with errno's line naming a hidden file the user never gave."""
    above = next((a for a in p.parents if a.is_dir()), Path("/"))
    try:
        limit = os.pathconf(above, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    size = len(os.fsencode(p.name))
    if size + 16 > limit:
        shown = shown_path(p.with_name(shortened(p.name)))  # (a 300-byte name need not be spelled out)
        raise UserError(f"{rundir.out_flag()} {shown}: its name is {size} bytes, and looplm writes beside it under "
                        f"names up to 16 bytes longer, past this file system's limit of {limit}; choose a shorter "
                        "name")


def unexpanded_home(out: str) -> str | None:
    """Why an --out that starts with ~ is refused (a folder named ~ or ~user would be made here), else None. A
    shell expands ~, ~/x and ~user/x of a user that exists, but not after --out=; a ~name of no user it leaves
    as it is, so "write it with a space" was wrong there (`--out ~s.json`). (./~x is no way out: pathlib makes it
    ~x again.)"""
    if not out.startswith("~"):
        return None
    if os.path.expanduser(out) != out:
        return "the shell did not expand ~ (it does not after --out=); write --out ~/... with a space, or the full path"
    head = out.split(os.sep)[0]
    return (f"{head} is no home folder (there is no user {head[1:]!r}), and a name that starts with ~ is taken for "
            f"one; to write a file or folder of that name here, give its full path ({Path.cwd() / out})")


def check_out_folder(out: Path) -> None:
    """An --out folder a command creates or writes a tree into (a run, a study, an export): not a link that leads
    nowhere, reachable (`check_reachable`), and not a folder of another run's own (`run/tensorboard`: that run's
    logger writes into it)."""
    if str(out).startswith("~"):  # the API's `fit(cfg, "~/runs/x")`: no shell expands it (the CLI says so earlier)
        raise UserError(f"{out}: a path that starts with ~ is not expanded here, so a folder named "
                        f"{Path(out).parts[0]} would be made in {Path.cwd()}; give the full path (os.path.expanduser)")
    check_name_length(out)  # first: is_symlink() raises on a name past the limit
    if out.is_symlink() and not out.exists():
        raise UserError(f"{rundir.out_flag()} {shown_path(out)} is {dead_link(out)}")
    own = run_part(out)
    if own is not None and ckpt.enclosing_checkpoint(out / "config.yaml") is None:  # (checkpoints: said by name)
        where = f"{'inside ' if own != out.resolve() else ''}{own.name}{'' if own.is_file() else '/'}"
        raise UserError(f"{rundir.out_flag()} {shown_path(out)} is {where} of the run in {own.parent}, which that run "
                        "writes; choose a directory outside it")
    above = check_reachable(out)
    if above is not None and not out.exists():  # made after the work's checks: found now, by a folder made and removed
        try:
            os.rmdir(tempfile.mkdtemp(dir=above))
        except OSError as e:  # /proc ("No such file or directory": the folder is not expected to exist), read-only
            raise UserError(f"cannot create {rundir.out_flag()} {shown_path(out)}: {above} does not allow making a "
                            f"folder in it ({e.strerror or e}); choose another {rundir.out_flag()}") from None


def fresh_outputs(paths: list[Path], force: bool, inputs: dict[Path, str] | None = None,
                  has_force: bool = True) -> None:
    """Refuse, before any work, an output that would be lost or would destroy something: one of the command's
    own inputs (`inputs`: path -> what it is; a data folder's inside too), even with --force; one inside a
    run's checkpoint folders (training replaces and prunes them); one whose folder is a file; a directory;
    a file looplm did not write (`is_result`), even with --force; and (unless --force) an earlier result.
    `has_force`: False for a command with no --force that always rebuilds its own results (a study)."""
    seen = [p.resolve() for p in paths]
    if len(set(seen)) < len(seen):  # the JSON and its figure under one name: the second would replace the first
        raise UserError(f"--out {paths[0]} would be written twice (the result and its figure, "
                        f"{', '.join(str(p) for p in paths)}); give a .json path")
    for p in paths:
        q = shown_path(p)  # (edge spaces quoted: an error line is stripped, and named "two.json" for "  two.json")
        check_name_length(p)
        odd = not_a_file(p)
        if odd:
            raise UserError(f"--out {q} is {odd}, not a file to write a result to (a result is written whole, "
                            "through a temporary file beside it, then put in place); give a file path")
        check_not_input(p, inputs or {}, "an input of this command; write the result somewhere else")
        inside = ckpt.enclosing_checkpoint(p)
        if inside is not None:
            raise UserError(f"--out {q} is inside {inside}, which training replaces and prunes; write it "
                            "somewhere else (e.g. the run directory)")
        own = run_part(p)
        if own is not None:  # --force replaces an earlier result, never the run's own files
            # (no file named as the way out: analyze, which writes a folder, was told to write "run/sweep.json")
            into = own != p.resolve()  # (own is resolved: a relative --out run/config.yaml was said to write "into")
            if into and own.is_file():  # analyze's --out run/metrics.jsonl was told "outside its metrics.jsonl/"
                raise UserError(f"--out {q} would write under {own}, a file of the run in {own.parent} (its own, not "
                                "a folder); give --out a new name beside the run's files")
            how = f"outside its {own.name}/" if into else "under another name"
            raise UserError(f"--out {q} would write {'into' if into else 'over'} {own}, which belongs to the run in "
                            f"{own.parent}; write the result beside the run's files, {how}")
        above = check_reachable(p)
        if above is not None:  # found now, not after the work: a test file made and removed in the same breath
            try:
                tempfile.TemporaryFile(dir=above).close()
            except OSError as e:
                raise UserError(f"cannot write {q}: {above} is not writable ({e.strerror or e}); choose another "
                                "--out") from None
        if p.is_dir():
            raise UserError(f"--out {q} is a directory; give the path of the file to write")
        if p.is_symlink() and not p.exists() and not force:  # not the result of another command: the user's link
            raise UserError(f"{q} is {dead_link(p)}; pass --force to replace the "
                            "link, or --out somewhere else")
        # another file first, with or without --force: it was called "an earlier result" with --force as the way
        # out, which then refused it (the path may be a default or derived one, so it is named, not as --out)
        if p.exists() and not is_result(p):  # (a run's relative data.path, seen from another folder, was not
            # found as an input there, and --force replaced the training file: no path check protects every file)
            how = "--force replaces only an earlier result" if has_force else "it replaces only its own results"
            raise UserError(f"{q} exists and is not a looplm {_kind_of(p)}; {how}, never another file: move it, or "
                            "choose another --out")
        if p.exists() and not force:
            raise UserError(f"{q} already exists (an earlier result); pass --force to replace it, or --out "
                            "somewhere else")


FIGURE_MAGIC = {".png": (b"\x89PNG",), ".pdf": (b"%PDF",), ".svg": (b"<?xml", b"<svg"),
                ".jpg": (b"\xff\xd8\xff",), ".jpeg": (b"\xff\xd8\xff",)}
# The first line of each Markdown file looplm writes: eval-lm's table and the studies' report.md
# (looplm/experiments), whose headings name them as the figures' first bytes name a figure
MARKDOWN_HEADS = (b"# lm-eval by loop count", b"# Addition study (", b"# ouro-mini: the Ouro experiment")


def _kind_of(p: Path) -> str:
    return ("figure" if p.suffix.lower() in FIGURE_MAGIC else "report (eval-lm's table, a study's report.md)"
            if p.suffix.lower() == ".md" else
            "result (the JSON of sweep, analyze or eval-lm)")


def is_result(p: Path) -> bool:
    """Whether the file at `p` is one looplm writes, so that --force may replace it: a figure (by its format's
    first bytes), eval-lm's table or a study's report (by its heading, `MARKDOWN_HEADS`), or a result's JSON (an
    object with its "depths"). Anything else is the user's (a run's training file, a config) and is never
    replaced, wherever the command runs."""
    suffix = p.suffix.lower()
    if suffix in FIGURE_MAGIC or suffix == ".md":
        try:
            with open(p, "rb") as f:
                head = f.read(64)
        except OSError:
            return False
        return head.lstrip().startswith(FIGURE_MAGIC.get(suffix, MARKDOWN_HEADS))
    return "depths" in _record(p)


def check_study_outputs(out: Path) -> None:
    """Refuse, before a study trains anything, a report.md in `out` it did not write (a draft of the user's) and a
    figure in out/figures that is not looplm's: the study rewrites both at its end, and has no --force (it
    rebuilds its own report and figures on every call, so a finished study is regenerated or resumed)."""
    figures = out / "figures"
    found = sorted(f for f in figures.iterdir() if f.suffix.lower() in FIGURE_MAGIC) if figures.is_dir() else []
    fresh_outputs([out / "report.md", *dict.fromkeys([figures / "accuracy.png", figures / "dynamics.png", *found])],
                  True, has_force=False)


def not_a_file(p: Path) -> str | None:
    """What `p` is when it can hold no result, else None: a FIFO, a device or a socket (reading it blocks; putting
    a file in its place breaks it for everyone), or a name under /dev or /proc (`/dev/stdout` is a link to the
    terminal, a pipe, or the file the shell redirected to: --force would replace the link)."""
    if not (p.exists() or p.is_symlink()):  # nothing there to read or replace (and /proc/x cannot be made)
        return None
    names = [os.path.abspath(p)]
    if p.is_symlink():
        names.append(os.path.join(os.path.dirname(names[0]), os.readlink(p)))
    for name in names:
        if name.startswith(("/dev/", "/proc/")) and not name.startswith("/dev/shm/"):  # (/dev/shm: a RAM disk)
            return f"a name under /{name.split('/')[1]}"
    return special_kind(p)


def with_stale(paths: list[Path], family: list[Path]) -> list[Path]:
    """`paths` (what a command writes) plus the files of the same result `family` it will not write that an
    earlier command left (a heatmap beside a sweep that now has none, trajectories beside an analysis run with
    --pca-n 0): they are checked like the outputs (replaced only with --force), and `drop_stale` removes them
    inside `all_or_nothing`, so no figure of an earlier result is left beside the new one."""
    return [*paths, *(p for p in family if p not in paths and (p.is_file() or p.is_symlink()))]


def _record(path: Path) -> dict:
    """The JSON object of an earlier result at `path`, or {} (none, or not one): only a regular file of a result's
    size is read (a FIFO or /dev/stdout blocked the read)."""
    try:
        if not path.is_file() or path.stat().st_size > 64 * 2**20:
            return {}
        doc = json.loads(path.read_text())
    except (OSError, ValueError, TypeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def sizes_figure(sweep_json: Path) -> list[Path]:
    """The heatmap beside an earlier --sizes sweep at this path ([] for any other sweep, or none): the .png goes
    with that result; any other .png there is not looplm's to remove (any JSON that held the word "sizes" had its
    neighbour .png deleted)."""
    ours = {"sizes", "accuracy_by_size", "depths", "scored_by"} <= _record(sweep_json).keys()
    return [sweep_json.with_suffix(".png")] if ours else []


def dynamics_figures(out_dir: Path) -> list[Path]:
    """The figures of an earlier analysis in `out_dir`: those its dynamics.json says `analyze` drew (a record
    from before it said: both names), [] when the record is none. A dynamics.png of the user's own beside no
    analysis, or beside one run with --no-plot, was deleted by `analyze --force`."""
    rec = _record(out_dir / "dynamics.json")
    if rec.get("kind") != "looplm.dynamics":
        return []
    drawn = rec.get("figures", ["dynamics.png", "trajectories.png"])
    return [out_dir / f for f in ("dynamics.png", "trajectories.png") if isinstance(drawn, list) and f in drawn]


def drop_stale(outs: list[Path], written: list[Path]) -> None:
    for p in outs:
        if p not in written:
            p.unlink(missing_ok=True)


KEPT = ".kept-"  # `.<name>.kept-<id>`: an earlier result held beside itself while a command replaces it


def _keep(p: Path) -> Path:
    """A copy of the earlier result `p` beside it: a hard link (no copy), or a real copy on a file system without
    links (FAT, many network and object-store mounts)."""
    k = p.with_name(f".{p.name}{KEPT}{uuid.uuid4().hex[:8]}")
    try:
        os.link(p, k)
    except OSError:
        shutil.copy2(p, k)
    return k


def _recover(p: Path) -> None:
    """A command that was killed (SIGKILL, out of memory) while replacing `p` left its earlier result kept beside
    it: that result comes back, so a half-replaced set of outputs does not pass for a whole one."""
    # names compared, not globbed: `s[1].json` as a pattern matched `.s1.json.kept-*`, another output's backup,
    # which was then moved in (and lost with --force)
    head = f".{p.name}{KEPT}"
    kept = sorted((k for k in p.parent.iterdir() if k.name.startswith(head) and re.fullmatch(
        "[0-9a-f]{8}", k.name[len(head):])), key=lambda k: k.stat().st_mtime_ns) if p.parent.is_dir() else []
    if kept:
        os.replace(kept[-1], p)
        for k in kept[:-1]:
            k.unlink(missing_ok=True)
        print(f"note: {p} was being replaced by a command that was killed; its earlier content is back",
              file=sys.stderr)



def umask_mode(path: Path) -> None:
    """Give a file written by safetensors the mode every other file gets (0666 less the umask). save_file makes
    0600 whatever the umask, so in a group-shared run or export only the weights were unreadable. The umask is
    read by setting it, to 077 for that moment (a file another thread makes then is only stricter)."""
    mask = os.umask(0o077)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)

@contextlib.contextmanager
def folders_held(paths: list[Path]) -> Iterator[None]:
    """An exclusive lock (POSIX flock, on the folder itself: no lock file is left) on each folder that `paths` lie
    in, waited for: two commands writing the same outputs take turns, so neither takes the other's files for its
    own (a refused command's cleanup deleted the result the other had just written and reported)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows)
        yield
        return
    fds: list[int] = []
    made: list[Path] = []  # folders this command creates: a refused or stopped one leaves none of them behind
    try:
        for d in sorted({p.parent for p in paths}):  # one order for every command: no two wait on each other
            made += reversed([a for a in (d, *d.parents) if not a.exists() and not a.is_symlink()])
            d.mkdir(parents=True, exist_ok=True)
            fds.append(os.open(d, os.O_RDONLY))
            fcntl.flock(fds[-1], fcntl.LOCK_EX)
        yield
    except BaseException:
        for fd in fds:
            os.close(fd)
        fds = []
        for d in reversed(made):
            with contextlib.suppress(OSError):  # not empty: a file that is not this command's (kept)
                d.rmdir()
        raise
    finally:
        for fd in fds:
            os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def all_or_nothing(paths: list[Path]) -> Iterator[None]:
    """A command's outputs are written whole or not at all: if it stops part way (Ctrl-C between the JSON and
    its figure, a full disk), the files it wrote are removed and the earlier results it was replacing (--force)
    are put back, so neither a half result nor a lost one is left. The earlier files are kept beside themselves
    while the command runs; a kill that skips this cleanup is repaired by the next command on the same outputs.
    Commands writing into the same folders take turns (`folders_held`)."""
    with folders_held(paths):
        yield from _all_or_nothing(paths)


def _all_or_nothing(paths: list[Path]) -> Iterator[None]:
    for p in paths:
        _recover(p)
    existed = {p: p.is_file() and not p.is_symlink() for p in paths}
    present = {p: p.exists() or p.is_symlink() for p in paths}  # (a link --force replaces is the user's until then)
    kept: dict[Path, Path] = {}
    try:
        for p in paths:
            if existed[p]:
                kept[p] = _keep(p)
    except OSError as e:  # nothing replaced yet: drop the copies made, keep every earlier result as it is
        for k in kept.values():
            k.unlink(missing_ok=True)
        raise UserError(f"cannot keep a copy of an earlier result beside it ({e.strerror or e}); nothing was "
                        "changed") from None
    try:
        yield
    except BaseException:
        # every earlier result back, whole: a second Ctrl-C here stopped the loop part way (old and new mixed)
        with signals_held(redeliver=False):
            for p in paths:
                if p in kept:
                    if not (p.exists() and os.path.samefile(p, kept[p])):
                        os.replace(kept[p], p)  # the earlier result, back under its name
                elif not present[p] and (p.exists() or p.is_symlink()):
                    p.unlink()  # a file this command wrote
            for k in kept.values():
                k.unlink(missing_ok=True)
        raise
    # (a copy left by a Ctrl-C here would be taken for a killed command's, and put back over the new result)
    with signals_held():
        for k in kept.values():
            k.unlink(missing_ok=True)


def default_out_dir(checkpoint: str) -> Path:
    """Where outputs go by default: the run directory of a checkpoint (the latest or one of the history), or an
    HF model directory of its own (Ouro, an export)."""
    from .hf.analysis import find_model_dir

    hf_dir = find_model_dir(checkpoint)
    weights = hf_dir or ckpt.resolve(checkpoint)
    # a run's folders are known by their names: a link to a run's checkpoint/ is read as that folder (the link's
    # own name made it a model directory of its own, and the default output fell inside the checkpoint, refused)
    in_run = [w.name == "checkpoint" or w.parent.name == ckpt.HISTORY for w in (weights, weights.resolve())]
    if in_run == [False, True]:
        weights = weights.resolve()
    if hf_dir is not None and weights.name != "checkpoint" and weights.parent.name != ckpt.HISTORY:
        snap = hf_dir.absolute()
        # the hub's cache (models--ORG--NAME/snapshots/REV/): a result written there sits among the cached files of
        # every user of that cache, and a later download of the revision does not expect it
        if snap.parent.name == "snapshots" and snap.parent.parent.name.startswith("models--"):
            raise UserError(f"{checkpoint} is a snapshot in the Hugging Face cache; give --out, a folder for the "
                            "results (they are not written into the cache)")
        return hf_dir
    d = weights.parent
    return d.parent if d.name == ckpt.HISTORY else d
