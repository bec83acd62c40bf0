"""Demo mode: a background task that posts realistic live traffic to the server itself over HTTP.

With ``settings.demo`` the lifespan starts `start_demo`, which every half second generates a few
request/response pairs timestamped now (3 tenants, 4 routes, 5 real models, about 3 % errors,
10 pairs/s on average, rising and falling over a few minutes) with `llmpulse.testing.traffic` and
posts them to ``/v1/events``, exactly as an application would. Numbers appear in ``/v1/metrics`` at
once, so a newcomer sees the whole pipeline working.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Final

import httpx

from llmpulse.server._run import base_url
from llmpulse.server._settings import ServerSettings
from llmpulse.testing import DEFAULT_MODELS, encode_batch_json, generate_events

_log = logging.getLogger("llmpulse.server.demo")

#: Seconds between two demo posts.
DEMO_TICK_S: Final = 0.5
#: Average request/response pairs per second the demo posts.
DEMO_PAIRS_PER_S: Final = 10.0
#: Fraction of demo calls that fail.
DEMO_ERROR_RATE: Final = 0.03
DEMO_TENANTS: Final = 3
DEMO_ROUTES: Final = 4
#: Users the demo attributes calls to (with orgs, features and environments), for "who spent what".
DEMO_USERS: Final = 200
#: Fraction of demo calls sent as one `llm.call` event (the SDK's form) rather than a pair.
DEMO_CALL_RATE: Final = 0.3


def demo_batch(tick: int, base_seed: int, now: datetime, pairs: int) -> bytes:
    """One demo post: `pairs` calls that started during the last tick, as a `/v1/events` body."""
    events = generate_events(
        pairs,
        tenants=DEMO_TENANTS,
        routes=DEMO_ROUTES,
        models=DEFAULT_MODELS,
        start=now - timedelta(seconds=DEMO_TICK_S),
        duration_s=DEMO_TICK_S,
        error_rate=DEMO_ERROR_RATE,
        call_rate=DEMO_CALL_RATE,
        users=DEMO_USERS,
        seed=base_seed + tick,
    )
    return encode_batch_json(events)


def _pairs_now(rng: random.Random, elapsed_s: float) -> int:
    # a slow swell (period 5 minutes) so the windows differ from one minute to the next
    mean = DEMO_PAIRS_PER_S * DEMO_TICK_S * (1.0 + 0.5 * math.sin(2 * math.pi * elapsed_s / 300.0))
    return max(0, round(rng.gauss(mean, math.sqrt(mean))))


async def _post_forever(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> None:
    rng = random.Random()
    base_seed = rng.getrandbits(40) << 20  # request ids differ from any earlier run's
    started = time.monotonic()
    tick = 0
    warned = False
    while True:
        await asyncio.sleep(DEMO_TICK_S)
        tick += 1
        pairs = _pairs_now(rng, time.monotonic() - started)
        if not pairs:
            continue
        body = demo_batch(tick, base_seed, datetime.now(UTC), pairs)
        try:
            response = await client.post(url, content=body, headers=headers)
        except httpx.TransportError as exc:
            if not warned and tick * DEMO_TICK_S > 5:
                _log.warning("demo traffic cannot reach %s yet: %s", url, exc)
                warned = True
            continue
        if response.status_code == 503:
            await asyncio.sleep(float(response.headers.get("retry-after", "1")))
        elif response.status_code >= 300:
            _log.warning("demo post answered %s: %s", response.status_code, response.text[:200])


@contextlib.asynccontextmanager
async def start_demo(settings: ServerSettings, token: str | None = None) -> AsyncIterator[str]:
    """Post live demo traffic to the server described by `settings` until the context exits.

    `token` is sent as ``Authorization: Bearer`` (the server's `Gate.demo_token`, so the traffic is
    accepted when API keys are configured). Yields the base URL it posts to. The task tolerates the
    server not listening yet (it only starts listening after the lifespan's startup) and stops on
    exit.
    """
    url = base_url(settings)
    headers = {"content-type": "application/json"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient(timeout=10.0) as client:
        task = asyncio.create_task(_post_forever(client, f"{url}/v1/events", headers), name="llmpulse-demo")
        try:
            yield url
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
