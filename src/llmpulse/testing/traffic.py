"""A deterministic generator of realistic LLM traffic, for tests, `llmpulse demo` and the benchmarks.

`generate_events` returns StreamLens request/response pairs and combined call events as the ingest API
would receive them: tenants and routes with skewed (Zipf-like) popularity, real model names that
genai-prices knows, plausible prompt and completion sizes, a latency made of a log-normal time to first
token plus a per-token generation time, some errors, and optionally exact duplicates, orphans of
either kind and out-of-order delivery. The same arguments (and `seed`) always give the same events.

With ``users`` > 0 the calls are also attributed (users from a Zipf-like pool, their organisations,
sessions, features, environments and a ``plan`` in the metadata), drawn from a random generator of
their own: the events of ``users=0`` are exactly those of a generator without attribution.
"""

from __future__ import annotations

import gc
import itertools
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple

import msgspec

from llmpulse.events import Event, LLMCall, LLMRequest, LLMResponse

#: Models used by default: five real models that genai-prices prices.
DEFAULT_MODELS: Final[tuple[str, ...]] = (
    "gpt-4o-mini",
    "gpt-4o",
    "claude-3-5-haiku-latest",
    "claude-3-5-sonnet-latest",
    "gemini-2.0-flash",
)
#: A model name genai-prices does not know (its cost is unknown); add it to `models` to exercise that.
UNKNOWN_MODEL: Final = "acme-llm-1"
#: Route names in order of popularity; more routes than these are named ``route-N``.
ROUTES: Final[tuple[str, ...]] = (
    "chat",
    "search",
    "summarize",
    "classify",
    "extract",
    "translate",
    "code",
    "agent",
    "rag",
    "moderation",
)

_ERRORS: Final[tuple[Any, ...]] = (
    "rate_limit_exceeded",
    "upstream timeout",
    {"type": "server_error", "code": 500, "message": "The server had an error processing your request."},
    {"type": "invalid_request_error", "code": 400, "message": "maximum context length exceeded"},
    {"type": "overloaded_error", "message": "Overloaded"},
)


#: Features attributed to calls (``users`` > 0), most popular first.
FEATURES: Final[tuple[str, ...]] = ("chat", "search", "summarize", "autocomplete", "agent")
#: Environments attributed to calls, with their weights.
_ENVIRONMENTS: Final[tuple[tuple[str, float], ...]] = (
    ("production", 0.85),
    ("staging", 0.1),
    ("development", 0.05),
)
#: Plans (metadata ``plan``) of users, by user number.
_PLANS: Final[tuple[str, ...]] = ("free", "pro", "enterprise")
#: Share of attributed calls made without a user (no user id nor hash), and without a feature.
_ANONYMOUS_RATE: Final = 0.05
_NO_FEATURE_RATE: Final = 0.1


class _Attribution(NamedTuple):
    user_id: str | None
    user_id_hash: str | None
    org_id: str | None
    session_id: str | None
    feature: str | None
    environment: str
    plan: str | None


class _Attributor:
    """Draws who made each call, from a generator of its own (so the rest of the traffic is unchanged)."""

    def __init__(self, users: int, n_pairs: int, seed: int) -> None:
        rng = random.Random(f"llmpulse-traffic-attribution-{seed}")
        self._rng = rng
        self._users = rng.choices(range(users), cum_weights=_zipf_cum_weights(users), k=n_pairs)
        self._orgs = max(1, users // 8)
        self._features = _zipf_cum_weights(len(FEATURES))
        self._environments = list(itertools.accumulate(w for _, w in _ENVIRONMENTS))

    def draw(self, i: int) -> _Attribution:
        """The attribution of call `i` (draws the same numbers whatever the call becomes)."""
        rng = self._rng
        user = self._users[i]
        anonymous = rng.random() < _ANONYMOUS_RATE
        no_feature = rng.random() < _NO_FEATURE_RATE
        (feature,) = rng.choices(FEATURES, cum_weights=self._features)
        (environment,) = rng.choices([e for e, _ in _ENVIRONMENTS], cum_weights=self._environments)
        session = rng.randrange(4)
        if anonymous:
            return _Attribution(None, None, None, None, None if no_feature else feature, environment, None)
        return _Attribution(
            user_id=f"user-{user + 1:04d}",
            user_id_hash=f"h{(user + 1) * 2654435761 % 2**32:08x}",
            org_id=f"org-{user % self._orgs + 1}",
            session_id=f"s-{user + 1:04d}-{session}",
            feature=None if no_feature else feature,
            environment=environment,
            plan=_PLANS[user % len(_PLANS)],
        )


def _request_metadata(who: _Attribution) -> dict[str, Any]:
    meta: dict[str, Any] = {"environment": who.environment}
    if who.feature is not None:
        meta["feature"] = who.feature
    if who.plan is not None:
        meta["plan"] = who.plan
    return meta


class _Profile(NamedTuple):
    ttft_ms: float  # median time to first token
    ms_per_token: float  # generation time per output token
    prompt: float  # median prompt tokens
    completion: float  # median completion tokens
    provider: str


_PROFILES: Final[dict[str, _Profile]] = {
    "gpt-4o-mini": _Profile(350.0, 8.0, 600.0, 180.0, "openai"),
    "gpt-4o": _Profile(500.0, 14.0, 900.0, 250.0, "openai"),
    "claude-3-5-haiku-latest": _Profile(450.0, 9.0, 700.0, 200.0, "anthropic"),
    "claude-3-5-sonnet-latest": _Profile(700.0, 16.0, 1200.0, 300.0, "anthropic"),
    "gemini-2.0-flash": _Profile(300.0, 5.0, 800.0, 220.0, "google"),
}
_DEFAULT_PROFILE: Final = _Profile(600.0, 12.0, 800.0, 200.0, "acme")


def _profile(model: str) -> _Profile:
    found = _PROFILES.get(model)
    if found is not None:
        return found
    if model.startswith(("gpt", "o1", "o3", "o4")):
        return _Profile(500.0, 12.0, 800.0, 220.0, "openai")
    if model.startswith("claude"):
        return _Profile(600.0, 12.0, 900.0, 250.0, "anthropic")
    if model.startswith("gemini"):
        return _Profile(350.0, 6.0, 800.0, 220.0, "google")
    return _DEFAULT_PROFILE


def _zipf_cum_weights(n: int, s: float = 1.0) -> list[float]:
    total = 0.0
    out: list[float] = []
    for k in range(1, n + 1):
        total += 1.0 / k**s
        out.append(total)
    return out


def _check_rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be within [0, 1], got {value!r}")


def generate_events(
    n_pairs: int,
    *,
    tenants: int = 3,
    routes: int = 4,
    models: Sequence[str] = DEFAULT_MODELS,
    start: datetime,
    duration_s: float = 3600,
    error_rate: float = 0.02,
    duplicate_rate: float = 0.0,
    orphan_request_rate: float = 0.0,
    orphan_response_rate: float = 0.0,
    call_rate: float = 0.0,
    shuffle: int = 0,
    seed: int = 0,
    users: int = 0,
) -> list[Event]:
    """Generate `n_pairs` model calls as events, deterministically from `seed`. Pure CPU; no I/O.

    Each call becomes an `LLMRequest` + `LLMResponse` pair (response timestamp = request timestamp +
    latency), or, with probability `call_rate`, one `LLMCall` (sometimes with cached, cache-write or
    reasoning tokens, sometimes with a provider-reported `cost`). Request timestamps are spread at
    random over `duration_s` seconds from `start`. A fraction `error_rate` of calls fail (`error` set).
    A fraction `orphan_request_rate` of pairs lose their response, `orphan_response_rate` lose their
    request. Each event is re-sent as an exact copy with probability `duplicate_rate`, a few seconds
    later. Events come in the order they would be sent (requests at their timestamp, responses and
    calls when the call ends); `shuffle` > 0 then moves each event at most `shuffle` positions.

    Tenants are ``tenant-1`` … ``tenant-N`` and routes come from `ROUTES`, both with Zipf-like
    popularity; models are picked uniformly from `models`. Request ids are unique per `seed`.
    About 4 µs per event (a million pairs in under ten seconds).

    With `users` > 0 each call is attributed to one of `users` users (``user-0001`` …, Zipf-like
    popularity; 5 % of calls have no user), with the user's organisation (``org-N``, a user in eight
    shares one), a session (``s-<user>-<k>``), a feature (`FEATURES`; 10 % none), an environment
    (``production``, ``staging``, ``development``) and the user's ``plan``. A call event carries them
    as `user_id`, `org_id`, `session_id`, `feature`, `environment`, `endpoint` (``/v1/<route>``) and
    ``metadata={"plan": …}``; a request carries `user_id_hash` and ``metadata`` with ``feature``,
    ``environment`` and ``plan``. These come from a second generator seeded from `seed`, so the events
    of ``users=0`` are unchanged.
    """
    if n_pairs < 0:
        raise ValueError(f"n_pairs must be >= 0, got {n_pairs!r}")
    if tenants < 1:
        raise ValueError(f"tenants must be >= 1, got {tenants!r}")
    if routes < 1:
        raise ValueError(f"routes must be >= 1, got {routes!r}")
    if not models:
        raise ValueError("models must not be empty")
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    if not duration_s > 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s!r}")
    if shuffle < 0:
        raise ValueError(f"shuffle must be >= 0, got {shuffle!r}")
    if users < 0:
        raise ValueError(f"users must be >= 0, got {users!r}")
    for name, value in (
        ("error_rate", error_rate),
        ("duplicate_rate", duplicate_rate),
        ("orphan_request_rate", orphan_request_rate),
        ("orphan_response_rate", orphan_response_rate),
        ("call_rate", call_rate),
    ):
        _check_rate(name, value)

    # millions of new objects would trigger many full collections; none of them form cycles
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _generate(
            n_pairs,
            tenants=tenants,
            routes=routes,
            models=models,
            start=start,
            duration_s=duration_s,
            error_rate=error_rate,
            duplicate_rate=duplicate_rate,
            orphan_request_rate=orphan_request_rate,
            orphan_response_rate=orphan_response_rate,
            call_rate=call_rate,
            shuffle=shuffle,
            seed=seed,
            users=users,
        )
    finally:
        if gc_was_enabled:
            gc.enable()


def _generate(
    n_pairs: int,
    *,
    tenants: int,
    routes: int,
    models: Sequence[str],
    start: datetime,
    duration_s: float,
    error_rate: float,
    duplicate_rate: float,
    orphan_request_rate: float,
    orphan_response_rate: float,
    call_rate: float,
    shuffle: int,
    seed: int,
    users: int,
) -> list[Event]:
    rng = random.Random(seed)
    attributor = _Attributor(users, n_pairs, seed) if users else None
    rand = rng.random
    gauss = rng.gauss
    exp = math.exp
    log = math.log
    # aware datetime + timedelta is ~10x cheaper than datetime.fromtimestamp(t, UTC)
    base = start.astimezone(UTC)
    micro = timedelta(microseconds=1)

    tenant_names = [f"tenant-{i + 1}" for i in range(tenants)]
    route_names = [ROUTES[i] if i < len(ROUTES) else f"route-{i + 1}" for i in range(routes)]
    model_names = list(models)
    profiles = [_profile(m) for m in model_names]
    # log-normal parameters per model: (log median ttft, log median prompt, log median completion)
    log_medians = [(log(p.ttft_ms), log(p.prompt), log(p.completion)) for p in profiles]
    pick_tenant = rng.choices(range(tenants), cum_weights=_zipf_cum_weights(tenants), k=n_pairs)
    pick_route = rng.choices(range(routes), cum_weights=_zipf_cum_weights(routes), k=n_pairs)
    pick_model = rng.choices(range(len(model_names)), k=n_pairs)
    t0 = base.timestamp()
    offsets = sorted(rand() * duration_s for _ in range(n_pairs))

    # (send time, event); sorted by send time at the end
    sends: list[tuple[float, Event]] = []
    push = sends.append

    for i in range(n_pairs):
        m = pick_model[i]
        profile = profiles[m]
        model = model_names[m]
        mu_ttft, mu_prompt, mu_completion = log_medians[m]
        tenant = tenant_names[pick_tenant[i]]
        route = route_names[pick_route[i]]
        offset_us = int(offsets[i] * 1e6)
        t = t0 + offset_us / 1e6
        ts = base + offset_us * micro
        rid = f"{seed:x}-{i:08x}"
        prompt = 1 + int(exp(mu_prompt + 0.8 * gauss()))
        failed = rand() < error_rate
        ttft = exp(mu_ttft + 0.4 * gauss())
        if failed:
            completion = 0
            latency = ttft * (0.5 + rand())
            error: Any = _ERRORS[int(rand() * len(_ERRORS))]
        else:
            completion = 1 + int(exp(mu_completion + 0.7 * gauss()))
            latency = ttft + completion * profile.ms_per_token * (0.8 + 0.4 * rand())
            error = None
        latency_us = int(latency * 1000.0)
        latency = latency_us / 1000.0
        end = t + latency_us / 1e6
        streamed = not failed and rand() < 0.7
        who = attributor.draw(i) if attributor is not None else None
        if call_rate and rand() < call_rate:
            reasoning = int(completion * 0.4 * rand()) if rand() < 0.2 else 0
            cached = int(prompt * rand()) if rand() < 0.3 else 0
            cache_write = 0
            if profile.provider == "anthropic" and rand() < 0.1:
                cache_write = int((prompt - cached) * rand())
            call = LLMCall(
                model=model,
                timestamp=ts,
                input_tokens=prompt,
                output_tokens=completion + reasoning,
                cost=round((prompt + 4 * completion) * 1e-6, 9) if rand() < 0.25 else None,
                request_id=rid,
                tenant_id=tenant,
                route=route,
                provider=profile.provider,
                latency_ms=latency,
                ttft_ms=round(ttft, 3) if streamed else None,
                cached_input_tokens=cached,
                cache_write_tokens=cache_write,
                reasoning_tokens=reasoning,
                finish_reason=None if failed else "stop",
                error=error,
            )
            if who is not None:
                call.user_id = who.user_id
                call.org_id = who.org_id
                call.session_id = who.session_id
                call.feature = who.feature
                call.environment = who.environment
                call.endpoint = f"/v1/{route}"
                call.metadata = None if who.plan is None else {"plan": who.plan}
            event: Event = call
            push((end, event))
            if duplicate_rate and rand() < duplicate_rate:
                push((end + 0.1 + 5.0 * rand(), msgspec.structs.replace(event)))
            continue
        drop = rand()
        if drop >= orphan_response_rate:  # the request is sent
            request = LLMRequest(
                request_id=rid,
                tenant_id=tenant,
                route=route,
                model=model,
                timestamp=ts,
                prompt_tokens=prompt,
                user_id_hash=f"u{int(rand() * 1000):03d}",
            )
            if who is not None:
                request.user_id_hash = who.user_id_hash
                request.metadata = _request_metadata(who)
            push((t, request))
            if duplicate_rate and rand() < duplicate_rate:
                push((t + 0.1 + 5.0 * rand(), msgspec.structs.replace(request)))
        if drop < orphan_response_rate or drop >= orphan_response_rate + orphan_request_rate:
            response = LLMResponse(
                request_id=rid,
                timestamp=ts + latency_us * micro,
                latency_ms=latency,
                completion_tokens=completion,
                finish_reason=None if failed else ("stop" if rand() < 0.95 else "length"),
                error=error,
                ttft_ms=round(ttft, 3) if streamed else None,
            )
            push((end, response))
            if duplicate_rate and rand() < duplicate_rate:
                push((end + 0.1 + 5.0 * rand(), msgspec.structs.replace(response)))

    sends.sort(key=lambda item: item[0])
    events = [event for _, event in sends]
    if shuffle and len(events) > 1:
        # key i + U(0, shuffle): an event can only overtake or fall behind events within `shuffle` places
        keys = [i + shuffle * rand() for i in range(len(events))]
        order = sorted(range(len(events)), key=keys.__getitem__)
        events = [events[j] for j in order]
    return events


def iter_batches(events: Sequence[Event], size: int) -> Iterator[list[Event]]:
    """Yield consecutive batches of at most `size` events (the last one may be shorter)."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size!r}")
    for i in range(0, len(events), size):
        yield list(events[i : i + size])


_json_encoder: Final = msgspec.json.Encoder()


def encode_batch_json(events: Iterable[Event]) -> bytes:
    """A `/v1/events` body: the events as one JSON array, each with its `type` tag. Pure CPU."""
    return _json_encoder.encode(events if isinstance(events, list) else list(events))
