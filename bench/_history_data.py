"""The store of benchmark 7 (`bench/history.py`): one tenant's generated calls over a number of days,
committed through `Store.commit` as the processor's checkpoints would hold them.

The calls come in time order: 10 routes (Zipf-popular) × 5 models (uniform), log-normal time to first
token and sizes per model, latency = time to first token + output tokens × the model's per-token time,
2 % errors, 70 % streamed (with a time to first token), priced by genai-prices' linear rates. Every
user calls: 60 % of calls go to the users in a fixed stride order (each about as often), the rest to
Zipf-popular users, so the top spenders stand out from the long tail.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any, Final

import msgspec
import sqlalchemy as sa

from llmpulse.pricing import Pricer
from llmpulse.store import CallRecord, Checkpoint, Store, WindowDelta, WindowKey, bucket_of, roll_up
from llmpulse.testing.traffic import DEFAULT_MODELS, ROUTES

#: The one tenant of the store.
TENANT: Final = "tenant-history"
#: Calls per committed checkpoint.
CHUNK: Final = 20_000
SEED: Final = 11

_DAY = 86400

# (median ttft ms, ms per output token, median prompt tokens, median completion tokens) per model
_PROFILES: Final = {
    "gpt-4o-mini": (350.0, 8.0, 600.0, 180.0),
    "gpt-4o": (500.0, 14.0, 900.0, 250.0),
    "claude-3-5-haiku-latest": (450.0, 9.0, 700.0, 200.0),
    "claude-3-5-sonnet-latest": (700.0, 16.0, 1200.0, 300.0),
    "gemini-2.0-flash": (300.0, 5.0, 800.0, 220.0),
}
_ERRORS: Final = (("rate_limit_exceeded", "Rate limit reached"), ("server_error", "upstream timeout"))
_meta_encode: Final = msgspec.json.encode


def _zipf(n: int) -> list[float]:
    out, total = [], 0.0
    for k in range(1, n + 1):
        total += 1.0 / k
        out.append(total)
    return out


def build(store: Store, n_calls: int, n_users: int, days: int, end: float) -> dict[str, Any]:
    """Commit `n_calls` generated calls of `TENANT` over ``[end - days, end)`` (epoch seconds) into
    `store`, in checkpoints of `CHUNK` calls holding their records and minute-window deltas. Blocks
    (about a minute at 1M calls), then roll every hour that ended `ROLL_SETTLE_S` ago up into the
    hourly and daily rollups (`roll_up`, as a server's pruner thread does); returns what was built
    and how fast."""
    rng = random.Random(SEED)
    rand, gauss, exp, log = rng.random, rng.gauss, math.exp, math.log
    pricer = Pricer()
    models = list(DEFAULT_MODELS)
    profiles = [_PROFILES[m] for m in models]
    log_medians = [(log(p[0]), log(p[2]), log(p[3])) for p in profiles]
    rates = [pricer.linear_rates(m) for m in models]
    providers = [pricer.provider_of(m) for m in models]
    routes = list(ROUTES)
    route_weights = _zipf(len(routes))
    user_weights = _zipf(n_users)
    # every user calls: 60 % of calls go to users in a fixed stride order (each user about as often),
    # the rest to Zipf-popular users, so the top spenders stand out from the long tail
    stride = next(p for p in (7919, 7907, 7901, 1) if n_users % p)
    start = end - days * _DAY
    offsets = sorted(rand() * days * _DAY for _ in range(n_calls))
    now = time.time()
    windows_written = 0
    uniform_seen = 0
    started = time.perf_counter()
    for lo in range(0, n_calls, CHUNK):
        hi = min(n_calls, lo + CHUNK)
        windows: dict[WindowKey, WindowDelta] = {}
        records: dict[tuple[str, str], CallRecord] = {}
        pick_route = rng.choices(range(len(routes)), cum_weights=route_weights, k=hi - lo)
        pick_user = rng.choices(range(n_users), cum_weights=user_weights, k=hi - lo)
        for i in range(lo, hi):
            m = int(rand() * len(models))
            model, ms_per_token = models[m], profiles[m][1]
            mu_ttft, mu_prompt, mu_completion = log_medians[m]
            route = routes[pick_route[i - lo]]
            if rand() < 0.6:
                user = uniform_seen * stride % n_users
                uniform_seen += 1
            else:
                user = pick_user[i - lo]
            t = start + offsets[i]
            prompt = 1 + int(exp(mu_prompt + 0.8 * gauss()))
            ttft = exp(mu_ttft + 0.4 * gauss())
            failed = rand() < 0.02
            error_type: str | None = None
            error_message: str | None = None
            if failed:
                completion, latency, streamed = 0, ttft * (0.5 + rand()), False
                error_type, error_message = _ERRORS[int(rand() * len(_ERRORS))]
            else:
                completion = 1 + int(exp(mu_completion + 0.7 * gauss()))
                latency = ttft + completion * ms_per_token * (0.8 + 0.4 * rand())
                streamed = rand() < 0.7
            latency = round(latency, 3)
            ttft_ms = round(ttft, 3) if streamed else None
            r = rates[m]
            cost = None if r is None else r.cost(prompt, completion)
            key = WindowKey(TENANT, route, model, int(t) // 60 * 60)
            d = windows.get(key)
            if d is None:
                d = windows[key] = WindowDelta()
            d.requests += 1
            d.errors += failed
            d.prompt_tokens += prompt
            d.completion_tokens += completion
            d.latency_count += 1
            d.latency_sum_ms += latency
            b = bucket_of(latency)
            d.latency_hist[b] = d.latency_hist.get(b, 0) + 1
            if ttft_ms is not None:
                d.ttft_count += 1
                d.ttft_sum_ms += ttft_ms
                b = bucket_of(ttft_ms)
                d.ttft_hist[b] = d.ttft_hist.get(b, 0) + 1
            if cost is None:
                d.cost_unknown += 1
            else:
                d.cost_usd += cost
            user_id, org_id, feature = f"user-{user:06d}", f"org-{user % 1000:04d}", f"{route}-v{user % 3}"
            meta = {"user_id": user_id, "org_id": org_id, "feature": feature, "environment": "production"}
            request_id = f"{rng.getrandbits(128):032x}"
            records[(TENANT, request_id)] = CallRecord(
                TENANT, request_id, t, route, model, providers[m], "error" if failed else "ok",
                error_type, error_message, latency, ttft_ms, prompt, completion, 0, 0, 0, cost,
                None if cost is None else "genai-prices", user_id, None, org_id, None, feature, None,
                "production", None, None, _meta_encode(meta).decode(), now,
            )  # fmt: skip
        store.commit(Checkpoint("bench", offsets={0: hi}, windows=windows, calls=records, watermark=t))
        windows_written += len(windows)
    seconds = time.perf_counter() - started
    # the finished hours into the rollups, as a server's pruner thread does once they are over
    rolled = roll_up(store, time.time())
    return {
        "calls": n_calls,
        "users": n_users,
        "days": days,
        "window_rows_written": windows_written,
        "build_s": seconds,
        "build_calls_per_s": n_calls / seconds,
        "rolled_hours": rolled.hours,
        "roll_s": rolled.elapsed_s,
    }


def table_rows(store: Store) -> dict[str, int]:
    """Rows in each aggregate table and in ``calls``. Blocks."""
    with store.engine.connect() as conn:
        return {
            t: int(conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one())
            for t in ("windows", "rollups_hour", "rollups_day", "calls")
        }
