"""The `looplm` console script's entry point: the command line's promise (Ctrl-C is one `error:` line and exit
130, never a traceback) holds from the first instant, while torch is still being imported.

A KeyboardInterrupt raised inside an import cannot be caught reliably: numpy's C extension turns it into an
ImportError, or swallows it and leaves a half-initialised module, and the command then runs on. So while the
imports run, Ctrl-C only sets a flag; once they are done the command stops there if it was pressed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from .errors import UserError, reader_gone


def _reopen_closed() -> None:
    """A standard stream the shell closed (`>&-`, `2>&-`) becomes /dev/null: otherwise Python leaves sys.stdout or
    sys.stderr None (a progress bar or an error line then fails), and the first file the command opens takes the
    free descriptor, so whatever a library writes to stderr lands in that file (a checkpoint, a result)."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            got = os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: this one
            if got != fd:
                os.dup2(got, fd)
                os.close(got)
            if getattr(sys, name) is None:
                setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))


class OutputError(UserError, OSError):  # still an OSError, which argparse's help printing expects
    """Standard output could not be written."""


class _Stdout:
    """sys.stdout, whose write errors say that they are standard output's: a full device behind `> file` was a bare
    "[Errno 28] No space left on device", read as the command's result not being saved."""

    def __init__(self, stream: object) -> None:
        self._stream = stream

    def _said(self, e: OSError) -> Exception:
        if isinstance(e, BrokenPipeError):  # the reader went away: errors.guarded's quiet exit 141
            return e
        return OutputError(f"could not write to standard output ({e.strerror or e})")

    def write(self, s: str) -> int:
        try:
            return self._stream.write(s)
        except OSError as e:
            raise self._said(e) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as e:
            raise self._said(e) from None

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def main() -> int:
    _reopen_closed()
    try:
        os.getcwd()
    except FileNotFoundError:  # (removed under the shell) torch's import then fails with a oneMKL "FATAL ERROR"
        print("error: the working directory no longer exists; cd to another one", file=sys.stderr)
        return 2
    # a path the locale cannot encode (PYTHONIOENCODING=ascii, a C locale) is printed escaped: its "wrote ..." line
    # failed after all the work was done and written, and the command exited 2 as if it had not been
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(errors="backslashreplace")
    sys.stdout = _Stdout(sys.stdout)
    pressed: list[int] = []
    on_main = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if on_main:
        signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        from .cli import main as cli_main
    finally:
        if on_main:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if pressed:
        print("error: interrupted", file=sys.stderr)
        return 130
    rc = cli_main()
    # The command is done and its results written; the interpreter's teardown (torch, lm-eval) can take a second.
    # A SIGTERM or Ctrl-C then must not end the process as 143 with no word: both are ignored, so it exits with
    # the command's own status. (A Python handler would not do: the teardown resets those to the default first.)
    try:
        sys.stdout.flush()
    except Exception as e:  # what the command printed last did not reach its reader (a UserError from _Stdout)
        if isinstance(e, BrokenPipeError):
            return reader_gone()
        print(f"error: {e}", file=sys.stderr)
        rc = rc or 2
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    return rc
