"""Helpers shared by the subcommands: argument types, the default server URL, consoles, progress."""

from __future__ import annotations

import argparse
import math
import os
from typing import Any, Final, TypeAlias

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: What a subcommand module's ``add_parser`` receives.
Subcommands: TypeAlias = "argparse._SubParsersAction[Any]"

#: Environment variable naming the server the client commands talk to.
ENV_URL: Final = "LLMPULSE_URL"
#: The API key the client commands send when ``--api-key`` is not given (the SDK's name too).
ENV_API_KEY: Final = "LLMPULSE_API_KEY"
#: The server the client commands talk to when neither ``--url`` nor ``LLMPULSE_URL`` is given.
DEFAULT_URL: Final = "http://127.0.0.1:8080"


def default_url() -> str:
    """``$LLMPULSE_URL`` or `DEFAULT_URL`."""
    return os.environ.get(ENV_URL) or DEFAULT_URL


def add_url(parser: argparse.ArgumentParser) -> None:
    """Add the ``--url`` option (the server's base URL) and ``--api-key`` (its API key, if any)."""
    parser.add_argument(
        "--url",
        default=default_url(),
        help=f"the server's base URL (default: ${ENV_URL} or {DEFAULT_URL})",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get(ENV_API_KEY) or None,
        metavar="KEY",
        help=f"sent as Authorization: Bearer KEY, for a server with API keys (default: ${ENV_API_KEY})",
    )


def auth_headers(args: argparse.Namespace) -> dict[str, str]:
    """The ``Authorization`` header for the ``--api-key`` of `args`, or no header without one."""
    key = getattr(args, "api_key", None)
    return {"Authorization": f"Bearer {key}"} if key else {}


def positive_int(text: str) -> int:
    """An argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number ≥ 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    """An argparse type: a number within [0, 1]."""
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a number within [0, 1], got {text!r}")
    return value


def endpoint(base: str, path: str) -> str:
    """`path` under the server's base URL (``http://host:8080`` + ``/v1/events``)."""
    return base.rstrip("/") + path


def err_console() -> Console:
    """The console for progress and diagnostics (stderr)."""
    return Console(stderr=True)


def progress(console: Console, *, unit: str = "") -> Progress:
    """A progress bar with counts (or percentage for bytes), elapsed and remaining time."""
    count = TaskProgressColumn() if unit == "bytes" else MofNCompleteColumn()
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        count,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
