"""The one user-error class, a mistake in what a user asked for (a config value, a path, a file, a device), and
how every error reaches the user: `guarded` runs a command and prints one `error:` line, exit code 2, with no
traceback. Anything else that escapes is a looplm bug.
"""

import errno
import os
import sys


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
    except BrokenPipeError:  # the reader went away (`| head`): what was written stays, and there is no one to tell
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (no second error at the exit's flush)
        return 141  # a shell's code for a command stopped by SIGPIPE
    except (UserError, ValueError, OSError) as e:
        # under torchrun every rank checks the same inputs and refuses them alike: rank 0 says it, once
        if isinstance(e, OSError) and e.errno == errno.ELOOP:
            say(f"error: {_symlink_loop(e.filename or e)}")
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
        if isinstance(e, RuntimeError) and "allocate" not in str(e):
            raise  # not a user error: a looplm bug, with its traceback
        say(f"error: out of memory ({_one_line(e) or 'MemoryError'}); lower the batch size, width or depths")
        return 2
    return 0


LOOP = "Symlink loop from "


def _symlink_loop(path: object) -> str:
    return (f"{path} cannot be reached: it goes through symbolic links that point at each other (a loop); fix the "
            "links, or choose another path")


def dead_link(p: object) -> str:
    """What is wrong with `p`, a symbolic link that leads nowhere: its target is missing, or links point at each
    other."""
    try:
        os.stat(p)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"a symlink to {os.readlink(p)}, in a loop of links that point at each other"
    return f"a symlink to {os.readlink(p)}, which does not exist"


def not_there(p: object) -> str:
    """Why nothing can be read at `p`, to follow its name: "does not exist", or which symbolic link on its way
    leads nowhere (`exists()` is False for both, and "does not exist" sends the user looking for a file that
    `ls` shows)."""
    from pathlib import Path

    p = Path(p)
    for a in (*reversed(p.parents), p):  # from the top: the first link that leads nowhere
        if a.is_symlink() and not a.exists():
            return f"is {dead_link(a)}" if a == p else f"cannot be reached: {a} is {dead_link(a)}"
    return "does not exist"


def rank_zero() -> bool:
    """Whether this process speaks for the job: the only one, or rank 0 under torchrun."""
    return os.environ.get("RANK", "0") in ("", "0")


def say(line: str) -> None:
    """The error line, on a line of its own and last: a progress bar (ours, lm-eval's) that the error left open is
    closed first (in a log its last refresh has no newline, and it would refresh again when collected), and on a
    terminal the cursor's line is cleared."""
    std = sys.modules.get("tqdm.std")
    for bar in list(getattr(getattr(std, "tqdm", None), "_instances", ())):
        if not getattr(bar, "disable", True):
            bar.close()
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
    print(line, file=sys.stderr)


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
