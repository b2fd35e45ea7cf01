"""The `looplm` console script's entry point: the command line's promise (Ctrl-C is one `error:` line and exit
130, never a traceback) holds from the first instant, while torch is still being imported.

A KeyboardInterrupt raised inside an import cannot be caught reliably: numpy's C extension turns it into an
ImportError, or swallows it and leaves a half-initialised module, and the command then runs on. So while the
imports run, Ctrl-C only sets a flag; once they are done the command stops there if it was pressed.
"""

from __future__ import annotations

import signal
import sys


def main() -> int:
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
    if sys.stdout is not None:  # None when the shell started us with stdout closed (`>&-`): print() then writes nothing
        sys.stdout.flush()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    return rc
