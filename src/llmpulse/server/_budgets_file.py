"""The budgets file of ``serve --budgets FILE`` (``LLMPULSE_BUDGETS_FILE``): shared budgets defined
at start.

YAML (or JSON, which is YAML)::

    budgets:
      - id: acme-daily
        amount_usd: 25.0
        period: day              # day | week | month | total (default month)
        timezone: Europe/Paris   # IANA name (default UTC)
        hard: true               # default true
        scope: {tenant_id: acme, feature: chat}   # tenant_id required; user_id, org_id, feature,
        reservation_ttl_s: 600                    #   environment optional

The whole file is checked before the server starts: an error names the file, the budget (its id,
or its place in the list) and the field. At start each budget is created or replaced (`PUT`
semantics: its ledger and open reservations stay); budgets created through the API and absent from
the file are left alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml

from llmpulse.store import BudgetSpec

_FIELDS: Final = frozenset({"id", "amount_usd", "period", "timezone", "hard", "scope", "reservation_ttl_s"})
#: Largest budgets file read (a typo pointing at a log file should not be parsed for minutes).
MAX_BUDGETS_FILE_BYTES: Final = 1 << 20


def load_budgets(path: str | Path) -> tuple[BudgetSpec, ...]:
    """Every budget the file defines, validated. Blocks (reads the file).

    Raises:
        ValueError: the file cannot be read or parsed, or a budget is invalid; the message names
            the file, the budget and the field.
    """
    where = f"budgets file {str(path)!r}"
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if len(raw) > MAX_BUDGETS_FILE_BYTES:
        raise ValueError(f"{where}: larger than {MAX_BUDGETS_FILE_BYTES} bytes")
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ValueError(f"{where}: not valid YAML ({exc})") from None
    if doc is None:
        return ()
    if not isinstance(doc, Mapping) or set(doc) - {"budgets"}:
        raise ValueError(f"{where}: must be a mapping with one key, `budgets` (a list)")
    items = doc.get("budgets") or []
    if not isinstance(items, list):
        raise ValueError(f"{where}: `budgets` must be a list")
    specs: list[BudgetSpec] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        label = f"budgets[{index}]"
        if isinstance(item, Mapping) and isinstance(item.get("id"), str):
            label = f"budget {item['id']!r}"
        try:
            spec = _spec(item)
        except ValueError as exc:
            raise ValueError(f"{where}: {label}: {exc}") from None
        if spec.budget_id in seen:
            raise ValueError(f"{where}: {label}: id is defined twice")
        seen.add(spec.budget_id)
        specs.append(spec)
    return tuple(specs)


def _spec(item: Any) -> BudgetSpec:
    if not isinstance(item, Mapping):
        raise ValueError("must be a mapping of id, amount_usd, period, timezone, hard, scope")
    unknown = sorted(str(k) for k in set(item) - _FIELDS)
    if unknown:
        raise ValueError(f"{unknown[0]} is not a budget field (one of {', '.join(sorted(_FIELDS))})")
    for name in ("id", "amount_usd", "scope"):
        if name not in item:
            raise ValueError(f"{name} is required")
    scope = item["scope"]
    if not isinstance(scope, Mapping) or "tenant_id" not in scope:
        raise ValueError("scope.tenant_id is required")
    return BudgetSpec(
        budget_id=item["id"],
        tenant_id=scope["tenant_id"],
        amount_usd=item["amount_usd"],
        period=item.get("period", "month"),
        timezone=item.get("timezone", "UTC"),
        hard=item.get("hard", True),
        scope={str(k): v for k, v in scope.items() if k != "tenant_id"},
        reservation_ttl_s=item.get("reservation_ttl_s", 600.0),
    )
