"""Sending batches and keeping the tally: what `demo` and `replay` share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import httpx
from rich.console import Console

from llmpulse.cli._common import endpoint
from llmpulse.cli._http import RetryPolicy, batch_outcome, post_with_retry

#: Content type of a JSON array body.
JSON: Final = "application/json"
#: Content type of an NDJSON body.
NDJSON: Final = "application/x-ndjson"


@dataclass(slots=True)
class Tally:
    """Totals over a run: items sent, accepted, and each rejected item's label and reason."""

    sent: int = 0
    accepted: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)


class BatchSender:
    """Posts bodies to ``/v1/events`` with retries and adds each answer to a `Tally`. Blocks."""

    def __init__(self, client: httpx.Client, base_url: str, policy: RetryPolicy | None = None) -> None:
        self._client = client
        self._url = endpoint(base_url, "/v1/events")
        self._policy = policy or RetryPolicy()
        self.tally = Tally()

    def send(self, body: bytes, labels: list[str], content_type: str) -> None:
        """Post one batch whose items are named `labels` (line numbers, event numbers).

        Raises `CliError` when the server cannot be reached after every retry.
        """
        response = post_with_retry(
            self._client, self._url, body, {"content-type": content_type}, self._policy
        )
        outcome = batch_outcome(response)
        self.tally.sent += len(labels)
        self.tally.accepted += outcome.accepted
        if outcome.failed is not None:
            self.tally.rejected.extend((label, outcome.failed) for label in labels)
            return
        for index, reason in outcome.rejected:
            label = labels[index] if 0 <= index < len(labels) else f"item {index}"
            self.tally.rejected.append((label, reason))


def report(console: Console, tally: Tally, *, what: str, max_listed: int) -> int:
    """Print the run's summary and up to `max_listed` rejections; return the exit status (0 or 1)."""
    style = "green" if not tally.rejected else "yellow"
    console.print(
        f"[{style}]{what}: sent {tally.sent}, accepted {tally.accepted}, rejected {len(tally.rejected)}[/]"
    )
    for label, reason in tally.rejected[:max_listed]:
        console.print(f"  {label}: {reason}", markup=False, highlight=False)
    if len(tally.rejected) > max_listed:
        console.print(f"  … and {len(tally.rejected) - max_listed} more")
    return 0 if not tally.rejected else 1
