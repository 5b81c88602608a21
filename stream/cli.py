"""The `stream` command: a thin layer that parses options and calls the service.

Bad input ends in one line on stderr and a non-zero exit (2 for usage and
configuration, 1 for a runtime failure), never a traceback. The grammar is
:mod:`stream.cli_args`, the subcommands' bodies :mod:`stream.commands`, the log set-up
:mod:`stream.logs`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence

from stream.cli_args import build_parser
from stream.commands import COMMANDS
from stream.errors import EXIT_RUNTIME, EXIT_USAGE, StreamError


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (the console script exits with it)."""
    # User transforms given as package.module:function are looked up from here, as
    # `python -m` would.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    args = build_parser().parse_args(argv)
    prog = f"stream {args.command}"
    from transforms import UnknownTransformError  # noqa: PLC0415

    try:
        return COMMANDS[args.command](args)
    except StreamError as exc:
        _say(prog, exc)
        return exc.exit_code
    except UnknownTransformError as exc:
        _say(prog, exc)
        return EXIT_USAGE
    except BrokenPipeError:  # `stream try ... | head`: the reader has what it wanted
        _quiet_stdout()
        return 0
    except OSError as exc:
        _say(prog, exc)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return 130


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises nothing more."""
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _say(prog: str, exc: BaseException) -> None:
    text = str(exc) or type(exc).__name__
    sys.stderr.write(f"{prog}: error: {text}\n")


if __name__ == "__main__":
    sys.exit(main())
