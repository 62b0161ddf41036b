"""What every console script shares: logging set-up and turning expected errors into exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from edge_runtime.errors import EdgeRuntimeError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults, except None, empty ones, on/off switches and help that already names its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, ()) or isinstance(action.default, bool) or "(default" in text:
            return text
        return super()._get_help_string(action)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def dispatch(argv: list[str], commands: dict[str, Callable[[list[str]], int]], default: Callable[[list[str]], int],
             log: logging.Logger) -> int:
    """Run ``commands[argv[0]]`` (or ``default``); user-facing errors become exit 2 with a one-line message."""
    try:
        if argv and argv[0] in commands:
            return commands[argv[0]](argv[1:])
        return default(argv)
    except (EdgeRuntimeError, ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.warning("interrupted")
        return 130
    except BrokenPipeError:  # whoever read stdout went away (``| head``): nothing more to tell them, no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the interpreter flushes stdout at exit
        return 141  # 128 + SIGPIPE, what a shell reports for a program killed by it
