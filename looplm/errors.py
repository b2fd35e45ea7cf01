"""The one user-error class, a mistake in what a user asked for (a config value, a path, a file, a device), and
how every error reaches the user: `guarded` runs a command and prints one `error:` line, exit code 2, with no
traceback, and `run_command` makes Ctrl-C and SIGTERM one line too. Anything else that escapes is a looplm bug.
"""

import contextlib
import errno
import os
import signal
import sys
import threading
from collections.abc import Iterator


class UserError(Exception):
    """Bad input from the user. The message says what is wrong and, where it can, what to do."""


class ConfigError(UserError, ValueError):
    """A config value or key is invalid. The message names the key."""


def guarded(body: object) -> int:
    """`body()` with every user error (looplm's, the OS's, YAML's, memory) as one `error:` line and exit 2."""
    from .train import Interrupted  # torch is imported by then: guarded runs commands

    try:
        body()
    except Interrupted as e:
        say(f"error: {e}")
        return e.code
    except BrokenPipeError:
        return reader_gone()
    except (UserError, ValueError, OSError) as e:
        # under torchrun every rank checks the same inputs and refuses them alike: rank 0 says it, once
        if isinstance(e, OSError) and e.errno == errno.ELOOP:
            say(f"error: {_symlink_loop(e.filename or e)}")
        elif isinstance(e, OSError) and e.errno == errno.ENAMETOOLONG:  # any path: --out, --config, --data, a child
            say(f"error: {name_too_long(e.filename or '')}")
        elif out_of_memory(e):  # "[Errno 12] Cannot allocate memory: 'run'" read as a problem with the run folder
            at = f" while using {e.filename}, which is not at fault" if e.filename else ""
            say(f"error: out of memory (the system refused an allocation{at}); {MEMORY_HINT}")
        elif not (isinstance(e, UserError) and not rank_zero()):
            say(f"error: {_one_line(e)}")
        return 2
    except RecursionError:  # a RuntimeError: JSON, YAML or a --set value nested thousands of levels deep
        say("error: an input is nested too deeply to read (a JSON or YAML value thousands of levels deep); "
             "flatten it")
        return 2
    except (MemoryError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and str(e).startswith(LOOP):  # pathlib's resolve() before Python 3.13
            say("error: " + _symlink_loop(str(e).removeprefix(LOOP).strip("'")))
            return 2
        if not out_of_memory(e):
            raise  # not a user error: a looplm bug, with its traceback
        say(f"error: out of memory ({_one_line(e) or 'MemoryError'}); {MEMORY_HINT}")
        return 2
    return 0


MEMORY_HINT = "lower the batch size, width or depths"


def out_of_memory(e: BaseException) -> bool:
    """Whether `e` says memory ran out: a MemoryError, an OSError with errno ENOMEM (a file operation, the cleanup
    after a step that took the memory, or a fork), or a RuntimeError from torch's allocator ("can't allocate
    memory") or from C++ (std::bad_alloc, which was a traceback)."""
    if isinstance(e, OSError):
        return e.errno == errno.ENOMEM
    return isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and any(
        word in str(e) for word in ("allocate", "bad_alloc")))


def reader_gone() -> int:
    """The exit code once stdout's reader went away (`| head`): what was written stays, and there is no one to
    tell; stdout becomes /dev/null, so the exit's flush raises no second error."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141  # a shell's code for a command stopped by SIGPIPE


LOOP = "Symlink loop from "


def _symlink_loop(path: object) -> str:
    return (f"{path} cannot be reached: it goes through symbolic links that point at each other (a loop); fix the "
            "links, or choose another path")


def name_too_long(path: object) -> str:
    """Why the OS refused `path` as too long ("[Errno 36] File name too long" named neither the part at fault
    nor the limit): the first name in it past its file system's limit (NAME_MAX, 255 bytes on most), else the
    whole path past PATH_MAX. A long name is shown shortened, so the line stays readable."""
    path = os.fspath(path)
    above = "/" if os.path.isabs(path) else "."
    for part in path.split(os.sep):
        limit = _pathconf(above, "PC_NAME_MAX", 255)  # of the nearest folder there is (as check_name_length)
        size = len(os.fsencode(part))
        if size > limit:
            short = shortened(part)
            which = "its name" if part == path else f"the name {shown_path(short)}"
            return (f"{shown_path(path.replace(part, short))}: {which} is {size} bytes, past this file system's "
                    f"limit of {limit} bytes for one name; choose a shorter name")
        if part and os.path.isdir(os.path.join(above, part)):
            above = os.path.join(above, part)
    return (f"a path of {len(os.fsencode(path))} bytes is past this system's limit of "
            f"{_pathconf('/', 'PC_PATH_MAX', 4096)} bytes for a whole path; choose a shorter path "
            f"({shown_path(path[:60])}…)")


def shortened(name: str) -> str:
    """A name of up to 40 characters as it is; a longer one as its start and end (a message about a 300-byte name
    need not spell it out)."""
    return name if len(name) <= 40 else f"{name[:20]}…{name[-10:]}"


def _pathconf(p: str, name: str, default: int) -> int:
    try:
        return os.pathconf(p, name)
    except (OSError, ValueError):
        return default


def dead_link(p: object) -> str:
    """What is wrong with `p`, a symbolic link that leads nowhere: its target is missing, or links point at each
    other."""
    try:
        os.stat(p)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"a symlink to {os.readlink(p)}, in a loop of links that point at each other"
    return f"a symlink to {os.readlink(p)}, which does not exist"


def special_kind(p: object) -> str | None:
    """What `p` is, after links, when it is neither a regular file nor a folder: "a FIFO (named pipe)", "a device"
    or "a socket"; None otherwise (a file, a folder, nothing). An error that called /dev/null or a FIFO "a file"
    sent the user looking for a file."""
    import stat
    from pathlib import Path

    try:
        mode = Path(p).stat().st_mode
    except (OSError, ValueError):
        return None
    for test, what in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return None


def a_device(p: object) -> bool:
    """`p` is a character or block device (/dev/zero, /dev/urandom: read whole, they never end). A FIFO is not:
    `--config <(...)` ends when its writer does."""
    return special_kind(p) == "a device"


def shown_path(p: object) -> str:
    """A path for a message: quoted (repr-style) when it begins or ends with whitespace, which a message would
    not show (`--out "o/sp "`, `sweep "base "`); as it is otherwise."""
    s = str(p)
    return repr(s) if s != s.strip() else s


def not_there(p: object, model: bool = False) -> str:
    """Why nothing can be read at `p`, to follow its name: "does not exist", or which symbolic link on its way
    leads nowhere (`exists()` is False for both, and "does not exist" sends the user looking for a file that
    `ls` shows). `model`: p names a model folder, where `org/name` is a hub id (`analyze ByteDance/Ouro-1.4B`)
    to a command that reads Hugging Face models (HUB_COMMANDS); sweep, generate and train.init_from refuse one, so
    their missing `runs/mine` was sent to download it from the hub."""
    import re
    from pathlib import Path

    p = Path(p)
    if str(p).startswith("~"):  # `--set data.path=~/x`, `--data=~/x`, load_config("~/x"): no shell expanded it
        return "starts with ~, which is not expanded here (no shell did it); give the full path"
    for a in (*reversed(p.parents), p):  # from the top: the first link that leads nowhere
        if a.is_symlink() and not a.exists():
            return f"is {dead_link(a)}" if a == p else f"cannot be reached: {a} is {dead_link(a)}"
    hub = model and _running and _running[-1] in HUB_COMMANDS
    if hub and re.fullmatch(r"[\w.-]+/[\w.-]+", str(p)) and not Path(p.parts[0]).exists():
        return (f"does not exist (if {p} is a hub id: this command reads a local folder; download it first, "
                f"`hf download {p} --local-dir DIR`)")
    return "does not exist"


def no_weights(p: object, weights: str, saved: list) -> str:
    """Why folder `p` holds no model. A run whose `checkpoint/` is gone (deleted, or a copy without it) still has
    its history (`saved`: (step, folder), oldest first): its newest entry can be read as it is, or made the run's
    checkpoint again by a resume. Such a run was called "not a looplm checkpoint or run directory"."""
    from pathlib import Path

    p = Path(p)
    if not saved:
        from .checkpoint import _history_entries, has_weights  # (checkpoint imports this module)

        # two near folders that were given the generic line: a run's history (checkpoints/, a slip for
        # checkpoint/) and a `looplm demo` --out, whose models are its stages
        steps = _history_entries(p)
        if steps:
            return (f"{p} is a run's checkpoint history, not a checkpoint: give the run ({p.parent}) for its "
                    f"latest checkpoint, or one of the saved ones (newest: {steps[-1][1]})")
        if (p / "stage1").is_dir():
            s1, s2 = p / "stage1", p / "stage2"
            said = (f"its model is {s2} (stage 1's: {s1})" if has_weights(s2 / "checkpoint") else
                    f"stage 2 has not trained; stage 1's model is {s1}")
            return f"{p} is a `looplm demo` folder, not a run: {said}"
        if p.parent.name == "runs" and (p / "result.json").is_file() and (p / "config.yaml").is_file():
            # a study's run kept without its weights (docs/results/addition/runs/*): a looplm run, not a stranger;
            # the study skips a finished run in its own folder, so it trains again in a new one
            return (f"{p} is a run of `looplm study addition` whose weights were not kept (its results only); "
                    f"train it again with `looplm study addition --out NEW_FOLDER --only {p.name}` and give "
                    f"NEW_FOLDER/runs/{p.name}")
        return f"no {weights} in {p} or {p / 'checkpoint'}: not a looplm checkpoint or run directory"
    run = p.parent if p.name == "checkpoint" else p
    step, newest = saved[-1]
    gone = f"holds no {weights}" if (run / "checkpoint").exists() else "is missing"
    return (f"{run} is a run without a current checkpoint ({run / 'checkpoint'} {gone}); its newest saved "
            f"checkpoint is {newest} (step {step}): give that folder to read it, or restore the run's checkpoint "
            f"with `looplm train --config {run / 'config.yaml'} --out {run} --resume`")


# what a checkpoint's files hold, for the message when one is missing ("data.json is missing" said nothing of it)
CHECKPOINT_FILES = {"data.json": "the record of the data it was trained on, checked by a sweep or analysis of its "
                    "held-out split", "tokenizer.json": "its tokenizer", "config.json": "its model's config",
                    "data_stats.json": "the fine-tune's data statistics", "module.json": "its module's class"}


def missing_file(f: object, manifest: str, same: list) -> str:
    """The message for a checkpoint file that its manifest lists but that is gone. Every listed file must be there
    even where the command does not read it: a reader takes a missing file for a checkpoint from before the file
    was written (a data.json gone skipped the data check). `same`: a copy in the run's history with the recorded
    SHA-256, which restores it exactly."""
    from pathlib import Path

    f = Path(f)
    what = f" ({CHECKPOINT_FILES[f.name]})" if f.name in CHECKPOINT_FILES else ""
    if same:
        return (f"{f}{what} is missing (listed in {manifest}); the run's history holds the same file: restore it with "
                f"`cp {same[0]} {f}`")
    return (f"{f}{what} is missing (listed in {manifest}); restore it, or copy the model's files without {manifest} "
            "to a folder of their own to use the checkpoint without it")


DISTRIBUTED_COMMANDS = ("train", "finetune")  # the commands torchrun runs on every rank, which refuse alike
_running: list[str] = []  # the command of the CLI that runs (none: a call from Python)
# the commands that read a Hugging Face model folder, where `org/name` may be a hub id not yet downloaded
HUB_COMMANDS = ("analyze", "eval-lm", "finetune")


@contextlib.contextmanager
def command(name: str) -> Iterator[None]:
    """While command `name` runs: a command torchrun does not launch (sweep, analyze, plot, ...) is a process of
    its own, and a RANK in its environment (a cluster job's shell) must not silence its error lines."""
    _running.append(name)
    try:
        yield
    finally:
        _running.pop()


_demo: list[bool] = []  # set while `looplm demo` trains its stages


@contextlib.contextmanager
def demo_stages() -> Iterator[None]:
    """While the demo trains its stages: it resumes them unasked (resume=True, no --resume given) and --force
    replaces only its results, so a run's words about --resume speak of the demo instead (`rundir`)."""
    _demo.append(True)
    try:
        yield
    finally:
        _demo.pop()


def in_demo() -> bool:
    return bool(_demo)


def in_command() -> bool:
    """Whether a command of the CLI is running (its errors name flags), not a call from Python (keyword arguments)."""
    return bool(_running)


def rank_zero() -> bool:
    """Whether this process speaks for the job: the only one, or rank 0 under torchrun. A RANK left in the
    environment without a WORLD_SIZE above 1 (a cluster's worker shell) is a world of one, as `distributed.init`
    takes it, and that one process must speak."""
    if _running and _running[-1] not in DISTRIBUTED_COMMANDS:
        return True
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:  # distributed.init refuses it, and this process is the one to say so
        size = 1
    return size <= 1 or os.environ.get("RANK", "0") in ("", "0")


def say(line: str) -> None:
    """The error line, on a line of its own and last: a progress bar (ours, lm-eval's) that the error left open is
    closed first (in a log its last refresh has no newline, and it would refresh again when collected), and on a
    terminal the cursor's line is cleared."""
    std = sys.modules.get("tqdm.std")
    for bar in list(getattr(getattr(std, "tqdm", None), "_instances", ())):
        if not getattr(bar, "disable", True):
            bar.close()
    try:
        if sys.stderr.isatty():
            sys.stderr.write("\r\033[K")
        print(line, file=sys.stderr, flush=True)
    except OSError:  # stderr on a full device: nowhere left to say it, and the exit status still does
        pass


MAX_ERROR_CHARS = 600  # an error line echoes the user's input: a megabyte value must not become a megabyte line


def _one_line(e: BaseException) -> str:
    """An exception as one line: a multi-line message's lines joined with '; ' (a space after a colon), cut to
    MAX_ERROR_CHARS."""
    out = ""
    for ln in (x.strip() for x in str(e).splitlines()):
        if ln:
            out += ("" if not out else " " if out.endswith(":") else "; ") + ln
        if len(out) > MAX_ERROR_CHARS:
            return out[:MAX_ERROR_CHARS] + " … (cut)"
    return out


def _terminated(signum: int, frame: object) -> None:
    code = getattr(frame, "f_code", None)
    if code is not None and (code.co_name == "__del__" or code.co_filename.endswith(("weakref.py", "_weakrefset.py"))):
        # an exception raised inside a finalizer or a weakref callback (matplotlib frees its figures through them)
        # is printed and dropped by Python, and the command ran on to exit 0: the signal is sent again a moment
        # later, from another thread (sent from here, it would be taken inside this handler), to land once the
        # callback has returned
        threading.Timer(0.01, os.kill, (os.getpid(), signum)).start()
        return
    from .train import Terminated  # (imported by then: run_command runs commands)

    raise Terminated


def _default_in_child() -> None:
    """A forked child (lm-eval's bootstrap pool, a data loader's worker) is stopped by its parent with SIGTERM: with
    the handler above inherited, each one printed a `Terminated` traceback at the end of a run that went well."""
    if signal.getsignal(signal.SIGTERM) is _terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_default_in_child)


@contextlib.contextmanager
def signals_held(redeliver: bool = True) -> Iterator[dict]:
    """Ctrl-C and SIGTERM held off while a cleanup that must finish runs (earlier results put back, a handler
    restored): a second Ctrl-C (a quick double press, or `timeout` forwarding the one the terminal also sent) stopped
    the restore part way, leaving old and new results mixed, or came out of run_command as a traceback. A signal
    that came meanwhile is sent again afterwards when `redeliver` (not when the command is already stopping).
    Yields the handlers it puts back (signal -> handler): the cleanup may change them."""
    if threading.current_thread() is not threading.main_thread():  # (signals are handled only there)
        yield {}
        return
    came: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    prev = {s: signal.signal(s, lambda signum, frame: came.append(signum)) for s in held}
    try:
        yield prev
    finally:
        for s, h in prev.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        if came and redeliver:
            os.kill(os.getpid(), came[0])


def _stopped(e: KeyboardInterrupt) -> int:
    from .train import Terminated

    term = isinstance(e, Terminated)
    say(f"error: {str(e) or ('terminated (SIGTERM)' if term else 'interrupted')}")
    return 143 if term else 130


def run_command(body: object) -> int:
    """Run `body()` (-> exit code) as a command: user errors as one `error:` line and exit 2, Ctrl-C as
    `error: interrupted` and exit 130, SIGTERM as `error: terminated` and exit 143 (training saves a checkpoint
    first). The CLI, and a study's worker processes (looplm.experiments.addition), use it."""
    on_main = threading.current_thread() is threading.main_thread()  # only there can signals be handled
    prev = signal.signal(signal.SIGTERM, _terminated) if on_main else None
    try:
        try:
            return body()
        except KeyboardInterrupt as e:
            with signals_held(redeliver=False):  # the one line, not a traceback of a second Ctrl-C
                return _stopped(e)
    except KeyboardInterrupt as e:  # a second one in the instant before they were held: still the one line
        with signals_held(redeliver=False):
            return _stopped(e)
    finally:
        with signals_held(redeliver=False) as back:  # (a Ctrl-C here gave a traceback from signal.signal, once
            if on_main:  # exit 1): SIGTERM's handler from before the command, put back as the hold ends
                back[signal.SIGTERM] = prev


def emptiness(value: str) -> str:
    """How a message says an empty or blank value (pathlib reads "" as the working folder): "empty", or "blank"
    with the value quoted, whose spaces a message would not show."""
    return "empty" if not value else f"blank ({value!r})"
