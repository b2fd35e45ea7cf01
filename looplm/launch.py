"""The `looplm` console script's entry point: the command line's promise (Ctrl-C is one `error:` line and exit
130, never a traceback) holds from the first instant, while torch is still being imported."""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from .cli import main as cli_main
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return cli_main()
