"""Opening the store from a command's ``--db`` flag, for the commands that read it directly.

The URL is ``--db``, else ``LLMPULSE_DB``, else ``POSTGRES_DSN``, else the embedded default: the
order `llmpulse.server.ServerSettings.from_env` uses, without importing the server (about a second
of start-up).
"""

from __future__ import annotations

import argparse
import os
from typing import Final, NoReturn

from llmpulse.cli._http import CliError
from llmpulse.store import Store, StoreError

#: The store's URL when neither ``--db`` nor the environment names one (as ``llmpulse serve``).
DEFAULT_DB_URL: Final = "sqlite:///llmpulse.db"


def usage(args: argparse.Namespace, message: str) -> NoReturn:
    """Exit with status 2 and the one-line usage error of the command's parser."""
    args.parser.error(message)
    raise SystemExit(2)  # not reached: the parser exits


def store_url(args: argparse.Namespace) -> str:
    """The URL of the store a command reads (see the module docstring)."""
    return str(args.db or os.environ.get("LLMPULSE_DB") or os.environ.get("POSTGRES_DSN") or DEFAULT_DB_URL)


def open_store(args: argparse.Namespace) -> Store:
    """Open (and migrate) the command's store. Blocks.

    Exits 2 for a URL of an unknown scheme; raises `CliError` (exit 1) naming the URL when the store
    cannot be opened, its message on one line.
    """
    url = store_url(args)
    try:
        return Store.open(url)
    except ValueError as exc:
        usage(args, str(exc))
    except StoreError as exc:
        raise CliError(f"cannot open the store {url}: {' '.join(str(exc).split())}") from None
