"""The ``llmpulse`` command: ``serve``, ``process``, ``demo``, ``replay``, ``query``, ``keys``,
``export`` and ``budgets``.

Exit status: 0 on success, 1 when the command failed or some events were rejected (one line on
stderr, no traceback), 2 for a usage error (bad flag, bad environment variable).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from llmpulse._version import __version__


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (and a hint), exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``prog: error: message`` on one line and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    from llmpulse.cli import _budgets, _demo, _export, _keys, _process, _query, _replay, _serve

    parser = _Parser(
        prog="llmpulse",
        description=(
            "LLM telemetry: run the server, send traffic, query windows, manage API keys, export calls,"
            " manage shared budgets."
        ),
    )
    parser.add_argument("--version", action="version", version=f"llmpulse {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _serve.add_parser(sub)
    _process.add_parser(sub)
    _demo.add_parser(sub)
    _replay.add_parser(sub)
    _query.add_parser(sub)
    _keys.add_parser(sub)
    _export.add_parser(sub)
    _budgets.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``llmpulse`` command line; returns the exit status. Blocks while the command runs."""
    from llmpulse.cli._http import CliError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except CliError as exc:
        print(f"llmpulse {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"llmpulse {args.command}: interrupted", file=sys.stderr)
        return 130
    return status


__all__ = ["build_parser", "main"]
