"""``llmpulse keys``: create, list and revoke the API keys a server checks (docs/security.md).

``keys create --tenant T`` prints the new key alone on the last line (on stdout; the notes before it
go to stderr, so ``KEY=$(llmpulse keys create --tenant T)`` captures only the key). It is shown this
once: the store keeps only its SHA-256. ``keys list`` shows each key's id, tenant, creation, last use
and revocation, never the key. ``keys revoke ID`` revokes one; a running server refuses it within
``LLMPULSE_KEY_CACHE_S`` seconds (5 by default).

The commands work on the store directly (``--db URL``, else ``LLMPULSE_DB`` / ``POSTGRES_DSN``, else
``sqlite:///llmpulse.db``), like the server: run them where the server's database is reachable.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from llmpulse.cli._common import Subcommands
from llmpulse.cli._http import CliError
from llmpulse.cli._store import open_store, usage
from llmpulse.store import ApiKey, StoreError

#: The store when neither ``--db`` nor an environment variable names one (as ``llmpulse serve``).


def add_parser(sub: Subcommands) -> None:
    """Register ``keys`` and its subcommands ``create``, ``list`` and ``revoke``."""
    parser = sub.add_parser(
        "keys",
        help="create, list and revoke API keys",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    db_help = "store URL (default: $LLMPULSE_DB, $POSTGRES_DSN or sqlite:///llmpulse.db)"

    create = actions.add_parser("create", help="create a key for a tenant and print it (once)")
    create.add_argument("--tenant", required=True, help="the tenant the key reads and writes")
    create.add_argument("--db", metavar="URL", help=db_help)
    create.set_defaults(func=run_create, parser=create)

    listing = actions.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--tenant", help="only this tenant's keys")
    listing.add_argument("--db", metavar="URL", help=db_help)
    listing.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    listing.set_defaults(func=run_list, parser=listing)

    revoke = actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id", metavar="ID", help="the key's id, as `keys list` shows it")
    revoke.add_argument("--db", metavar="URL", help=db_help)
    revoke.set_defaults(func=run_revoke, parser=revoke)


def _time(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%SZ")


def run_create(args: argparse.Namespace) -> int:
    """Create a key and print it last, alone on its line. Blocks (the store)."""
    with open_store(args) as store:
        try:
            info, key = store.keys.create(args.tenant)
        except ValueError as exc:
            usage(args, str(exc))
        except StoreError as exc:
            raise CliError(f"cannot create the key: {exc}") from None
    print(f"created API key {info.key_id} for tenant {info.tenant_id!r}", file=sys.stderr)
    print(
        "it is shown only now (the store keeps a hash); send it as `Authorization: Bearer <key>`:",
        file=sys.stderr,
    )
    sys.stderr.flush()
    print(key, flush=True)
    return 0


def _row(info: ApiKey) -> dict[str, Any]:
    return {
        "id": info.key_id,
        "tenant": info.tenant_id,
        "created": _time(info.created_at),
        "last_used": _time(info.last_used_at),
        "revoked": _time(info.revoked_at),
    }


def run_list(args: argparse.Namespace) -> int:
    """Print every key's id, tenant, creation, last use and revocation (never the key). Blocks."""
    with open_store(args) as store:
        try:
            keys = store.keys.all(args.tenant)
        except StoreError as exc:
            raise CliError(f"cannot list the keys: {exc}") from None
    rows = [_row(k) for k in keys]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    if not rows:
        print("no API keys", file=sys.stderr)
        return 0
    headers = {
        "id": "ID",
        "tenant": "TENANT",
        "created": "CREATED",
        "last_used": "LAST USED",
        "revoked": "REVOKED",
    }
    widths = {name: max(len(title), *(len(str(r[name])) for r in rows)) for name, title in headers.items()}
    print("  ".join(title.ljust(widths[name]) for name, title in headers.items()).rstrip())
    for row in rows:
        print("  ".join(str(row[name]).ljust(widths[name]) for name in headers).rstrip())
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    """Revoke the key `args.key_id`; exit status 1 when no key has that id. Blocks."""
    with open_store(args) as store:
        try:
            info = store.keys.revoke(args.key_id)
        except StoreError as exc:
            raise CliError(f"cannot revoke the key: {exc}") from None
    if info is None:
        raise CliError(f"no API key has the id {args.key_id!r} (see `llmpulse keys list`)")
    print(
        f"revoked API key {info.key_id} of tenant {info.tenant_id!r}; running servers refuse it within "
        "their key cache time (LLMPULSE_KEY_CACHE_S, 5 s by default)"
    )
    return 0
