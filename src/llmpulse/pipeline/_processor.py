"""The processor core: events in, window deltas, pending joins and dedup keys out. Pure.

No I/O, no threads, no clock reads: the caller passes `now` (its wall clock, epoch seconds) to every
call, and commits what `checkpoint` returns together with the log offsets it covers.

Rules (see issue 2):

* Identity is per tenant: ``(tenant_id, request_id)`` names one model call, whichever form it
  arrives in (a request and its response, or a call event); the first request or call seen for a key
  claims it and any later one is a duplicate. A request and its response join in either order; a
  call event needs no join. The pair (or call) counts in the one-minute window of the request's
  (call's) timestamp, keyed by tenant, route and model: one request, an error if the response (call)
  failed, its tokens, its latency and time to first token in the sums and histograms, and its cost (a
  call's own `cost` from its provider wins, an estimated one as `ProcessorConfig.estimate_cost` says,
  `llmpulse.pipeline._records.call_cost`; else genai-prices through `Pricer`; unknown →
  `cost_unknown` + 1, never $0).
* A response that names its tenant (`LLMResponse.tenant_id`; ingest sets it from the API key)
  joins that tenant's request only. One that names none (the StreamLens body) is resolved through
  the tenants that used its `request_id` within the dedup horizon: none yet → it waits for its
  request (which may come from any tenant); exactly one → that tenant's; more than one → it is
  ambiguous and joins nothing (`counters["ambiguous_responses"]`; the requests then time out), so it
  is never attached to the wrong tenant.
* Every counted call becomes a `CallRecord` in `Checkpoint.calls` (a timeout too, replaced when its
  response comes). A call event without a `request_id` gets a generated id (``~`` + 32 hex digits),
  cannot be recognised as a duplicate, and always counts.
* Duplicates count once: while pending, once counted, and after a restart (dedup keys travel through
  `Checkpoint.dedup_keys` and `ProcessorState.dedup_keys`, one ``k:`` key per counted call).
* A request without its response `orphan_timeout_s` after the processor first saw it counts in its
  window as a request, an error and a timeout, with its prompt tokens, no latency, and the cost of its
  prompt tokens alone (unknown model: `cost_unknown`). It stays pending, marked expired; if the
  response comes later a correction makes the window equal to the joined result (errors and timeouts
  − 1, the response's figures and the rest of the cost added). A response whose request has not come
  in that time counts in `counters["orphan_responses"]`; if the request comes later the counter goes
  back down and the pair counts normally.
* The watermark is the highest event time seen (request and call timestamps, the times that place
  calls in windows). A contribution to a window is late when, as it is counted, the window's end is at
  or before `watermark - allowed_lateness_s`; it is counted anyway, and `late` (window) and
  `counters["late_events"]` record it. Timeouts are not arrivals and are never late.
* Expired pending entries and dedup keys are recognised for `dedup_ttl_s` after they were first seen
  or counted. Memory holds them for `hot_s` once committed; after that the `KeyFilter` holds their
  request ids and `probe`/`prime` bring them back from the store (which forgets them past the
  horizon: `Checkpoint.forget_before`). Keys restored without a time are timed from the first call
  after the restart.

The processor's clock is made monotonic (a `now` earlier than one already seen counts as that one).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, TypeVar

from llmpulse.events import Event, LLMCall, LLMRequest, LLMResponse, decode_log, encode_log
from llmpulse.pipeline._records import (
    ESTIMATE_COSTS,
    EstimateCost,
    call_cost,
    call_record,
    pair_record,
    timeout_record,
)
from llmpulse.pricing import Pricer
from llmpulse.store import (
    WINDOW_SECONDS,
    CallRecord,
    Checkpoint,
    ColdProbe,
    ColdState,
    KeyFilter,
    PendingEntry,
    PendingKind,
    ProcessorState,
    WindowDelta,
    WindowKey,
    dedup_key,
    parse_dedup_key,
)
from llmpulse.store._histogram import GAMMA, MIN_VALUE, ZERO_BUCKET

#: Seconds either side of a response's timestamp less its latency where `ProcessorCore.probe` looks
#: for its request's record (clocks of the two halves' senders may differ by this much).
RESPONSE_PROBE_SLACK_S: Final = 60.0

#: Prefixes of the dedup keys written before identity was per tenant (a pair's, a call's): restored
#: as "counted, for whichever tenant" until they expire.
LEGACY_PAIR_KEY_PREFIX: Final = "p:"
LEGACY_CALL_KEY_PREFIX: Final = "c:"
#: The tenant of a pending response that named none.
NO_TENANT: Final = ""
#: `_owners` value of a request id used by more than one tenant.
_MANY: Final = "\x00many"

_INV_LOG_GAMMA: Final = 1.0 / math.log(GAMMA)
_W: Final = WINDOW_SECONDS

# (event, seen_at on the processor's clock, checkpoint generation that created it, window start)
_ReqEntry = tuple[LLMRequest, float, int, int]
_RespEntry = tuple[LLMResponse, float, int, int]
_Key = tuple[str, str, str, int]
# (tenant_id, request_id): the identity of a call; a pending response's tenant may be NO_TENANT
_Id = tuple[str, str]
_E = TypeVar("_E", _ReqEntry, _RespEntry)
# builds a WindowKey from a plain tuple without NamedTuple's Python-level constructor
_new_key: Final = tuple.__new__
# per-model (base, per input token, per output token); None: price through Pricer.cost
_PairRates = tuple[float, float, float] | None
_UNSEEN: Final = (0.0, 0.0, 0.0)  # marker: model not looked up yet


def _finite(value: object) -> bool:
    """Whether `value` is a finite int or float (not a bool). Pure."""
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


@dataclass(frozen=True, slots=True)
class ProcessorConfig:
    """Settings of the processor core, validated on construction (`ValueError` naming the field).

    Attributes:
        orphan_timeout_s: how long after the processor first saw a request (its own clock, not event
            time, so a backfill of old events is not orphaned) it counts it as a timeout; likewise for
            a response without its request.
        dedup_ttl_s: how long duplicates are recognised after an event is counted (and expired
            pending entries kept for a late other half); at least `orphan_timeout_s`.
        allowed_lateness_s: how far behind the watermark a window may end before contributions to
            it are counted as late.
        hot_s: how long a counted call's key, and a timed-out half, stay in memory once committed
            (at most `dedup_ttl_s`);
            after that the store holds them and a `KeyFilter` remembers their request ids, and the
            processor asks the store (`probe`, `prime`) when one of those ids comes again.
        calls_retention_s: how long call records are kept (`llmpulse.store.RetentionPolicy`); when
            set, each checkpoint asks its commit to delete its tenants' records older than that
            (`Checkpoint.expire_calls_before`), so the store sheds them as fast as they come. None:
            kept until the retention pruner deletes them.
        estimate_cost: which figure counts for a call event's estimated cost (``cost_source``
            ``estimate`` or none, as token-copilot sends): ``genai-prices`` (default: genai-prices'
            figure when it knows the model, else the event's) or ``event`` (the event's own). A
            provider's figure always counts; the record keeps the event's own figure either way.
    """

    orphan_timeout_s: float = 300.0
    dedup_ttl_s: float = 86400.0
    allowed_lateness_s: float = 60.0
    hot_s: float = 120.0
    calls_retention_s: float | None = None
    estimate_cost: EstimateCost = "genai-prices"

    def __post_init__(self) -> None:
        for name in ("orphan_timeout_s", "dedup_ttl_s", "allowed_lateness_s", "hot_s"):
            value = getattr(self, name)
            if not _finite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.orphan_timeout_s <= 0:
            raise ValueError(f"orphan_timeout_s must be > 0, got {self.orphan_timeout_s!r}")
        if self.dedup_ttl_s < self.orphan_timeout_s:
            raise ValueError(
                f"dedup_ttl_s ({self.dedup_ttl_s!r}) must be >= orphan_timeout_s ({self.orphan_timeout_s!r})"
            )
        if self.allowed_lateness_s < 0:
            raise ValueError(f"allowed_lateness_s must be >= 0, got {self.allowed_lateness_s!r}")
        kept = self.calls_retention_s
        if kept is not None and not (_finite(kept) and kept > 0):
            raise ValueError(f"calls_retention_s must be a positive number of seconds or None, got {kept!r}")
        if self.hot_s < 0:
            raise ValueError(f"hot_s must be >= 0, got {self.hot_s!r}")
        if self.estimate_cost not in ESTIMATE_COSTS:
            raise ValueError(f"estimate_cost must be one of {ESTIMATE_COSTS}, got {self.estimate_cost!r}")


def new_key_filter(config: ProcessorConfig) -> KeyFilter:
    """An empty `KeyFilter` for a core of `config`: generations of half the dedup TTL (a lookup
    checks two or three of them; ids are kept up to half a TTL past their expiry)."""
    return KeyFilter(config.dedup_ttl_s / 2)


def _window_start(ts: datetime) -> int:
    return int(ts.timestamp() // _W) * _W


class ProcessorCore:
    """Joins, deduplicates and windows events; hands changes over in checkpoints. Pure; never blocks.

    Not thread-safe: one core per worker thread (or partition). Every method is CPU-only.

    Memory: every pending half holds its event until it joins or times out; a counted call's key
    and a timed-out half stay in memory `hot_s` after they were committed, then only their request
    id stays, in the `KeyFilter` (about 1.2 bytes a key until `dedup_ttl_s` has passed). So memory
    grows with the traffic in flight and in the last `hot_s`, not with the dedup horizon. Before
    `process`, ask `probe` which request ids of a batch the store must be asked about, and hand the
    answer to `prime`. `stats()` reports the sizes.
    """

    def __init__(
        self,
        config: ProcessorConfig,
        pricer: Pricer,
        state: ProcessorState | None = None,
        *,
        new_id: Callable[[], str] | None = None,
        key_filter: KeyFilter | None = None,
    ) -> None:
        """Start empty, or resume from `state` (pending joins, dedup keys and watermark).

        `new_id` makes the ids of call events sent without one (default ``~`` + a random UUID's hex).
        `key_filter` holds the request ids the store knows (`Store.load_state` fills it on a
        restart); a new one when None.
        """
        self._config = config
        self._pricer = pricer
        self._estimate_cost: EstimateCost = config.estimate_cost
        self._new_id = new_id or _random_id
        self._rates: dict[str, _PairRates] = {}
        self._req: dict[_Id, _ReqEntry] = {}
        self._resp: dict[_Id, _RespEntry] = {}
        self._req_expired: dict[_Id, _ReqEntry] = {}
        self._resp_expired: dict[_Id, _RespEntry] = {}
        self._done: dict[_Id, float] = {}
        self._owners: dict[str, str] = {}
        self._legacy: set[str] = set()
        self._legacy_until = math.inf
        self._new_done: dict[_Id, None] = {}
        self._filter = key_filter if key_filter is not None else new_key_filter(config)
        self._primed: dict[str, float] = {}
        self._restored: list[str] = []
        self._cold_lookups = 0
        self._last_forget = -math.inf
        self._records: dict[_Id, CallRecord] = {}
        self._windows: dict[WindowKey, WindowDelta] = {}
        self._deletes: list[tuple[str, str, PendingKind]] = []
        self._expired_since: dict[tuple[_Id, PendingKind], None] = {}
        self._gen = 0
        self._now = -math.inf
        self._anchored = True
        self._watermark = 0.0
        self._totals: dict[str, int] = {}
        self._delta: dict[str, int] = {}
        if state is not None:
            self._restore(state)

    # ------------------------------------------------------------------ restore

    def _restore(self, state: ProcessorState) -> None:
        self._watermark = state.watermark
        for entry in sorted(state.pending, key=lambda e: e.seen_at):
            (event,) = decode_log(entry.payload)
            if entry.kind == "request":
                if not isinstance(event, LLMRequest):
                    raise ValueError(f"pending request {entry.request_id!r} holds a {type(event).__name__}")
                target_req = self._req_expired if entry.expired else self._req
                key = (event.tenant_id, entry.request_id)
                target_req[key] = (event, entry.seen_at, -1, _window_start(event.timestamp))
                self._own(key)
            else:
                if not isinstance(event, LLMResponse):
                    raise ValueError(f"pending response {entry.request_id!r} holds a {type(event).__name__}")
                target_resp = self._resp_expired if entry.expired else self._resp
                target_resp[(entry.tenant_id, entry.request_id)] = (event, entry.seen_at, -1, 0)
        for text in state.dedup_keys:
            if text.startswith((LEGACY_PAIR_KEY_PREFIX, LEGACY_CALL_KEY_PREFIX)):
                self._legacy.add(text[2:])
                continue
            self._restored.append(parse_dedup_key(text)[1])
        self._anchored = not (self._legacy or self._restored)

    def _own(self, key: _Id) -> None:
        """Note that tenant key[0] uses request id key[1] (for responses that name no tenant)."""
        tenant, rid = key
        owner = self._owners.get(rid)
        if owner is None:
            self._owners[rid] = tenant
        elif owner != tenant:
            self._owners[rid] = _MANY

    def _disown(self, key: _Id) -> None:
        # a request id used by several tenants stays ambiguous until one of them is forgotten; after
        # that a response naming no tenant waits as an orphan rather than risk the wrong tenant
        if self._owners.get(key[1]) in (key[0], _MANY):
            del self._owners[key[1]]

    def _clock(self, now: float) -> float:
        if now < self._now:
            return self._now
        self._now = now
        if not self._anchored:
            # restored keys carry no time: their TTL runs from the first call after the restart
            self._legacy_until = now + self._config.dedup_ttl_s
            for rid in self._restored:
                self._filter.add(rid, self._legacy_until)
            self._restored = []
            self._anchored = True
        elif self._legacy and now >= self._legacy_until:
            self._legacy.clear()
        return now

    def _count(self, name: str, n: int) -> None:
        if n:
            self._delta[name] = self._delta.get(name, 0) + n

    def _window(self, key: _Key) -> WindowDelta:
        delta: WindowDelta | None = self._windows.get(key)  # type: ignore[call-overload]  # equal to a WindowKey
        if delta is None:
            delta = self._windows[_new_key(WindowKey, key)] = WindowDelta()
        return delta

    def _pair_rates(self, model: str) -> _PairRates:
        rates = self._pricer.linear_rates(model)
        found = self._rates[model] = None if rates is None else (rates.base, rates.input, rates.output)
        return found

    def _price(self, model: str, input_tokens: int, output_tokens: int, at: datetime) -> float | None:
        rates = self._rates[model] if model in self._rates else self._pair_rates(model)
        if rates is None:
            return self._pricer.cost(model, input_tokens=input_tokens, output_tokens=output_tokens, at=at)
        return rates[0] + rates[1] * input_tokens + rates[2] * output_tokens

    def _price_call(self, call: LLMCall) -> float | None:
        """genai-prices' figure for a call event (None: unknown model)."""
        return self._pricer.cost(
            call.model,
            provider=call.provider,
            input_tokens=call.input_tokens,
            output_tokens=call.output_tokens,
            cached_input_tokens=call.cached_input_tokens,
            cache_write_tokens=call.cache_write_tokens,
            reasoning_tokens=call.reasoning_tokens,
            at=call.timestamp,
        )

    def _seen(self, key: _Id) -> bool:
        """True when the call `key` is already claimed: pending, counted, or timed out."""
        return (
            key in self._req
            or key in self._done
            or key in self._req_expired
            or (bool(self._legacy) and key[1] in self._legacy)
        )

    # ------------------------------------------------------------------ hot path

    def _add_call(self, call: LLMCall, ws: int, late_cut: float, now: float) -> None:
        """Count one call event in its window and record it."""
        d = self._window((call.tenant_id, call.route, call.model, ws))
        d.requests += 1
        if call.is_error:
            d.errors += 1
        d.prompt_tokens += call.input_tokens
        d.completion_tokens += call.output_tokens
        d.cached_input_tokens += call.cached_input_tokens
        d.cache_write_tokens += call.cache_write_tokens
        d.reasoning_tokens += call.reasoning_tokens
        _add_timing(d, call.latency_ms, call.ttft_ms)
        cost, source = call_cost(call, self._estimate_cost, self._price_call)
        if cost is None:
            d.cost_unknown += 1
            self._count("unknown_cost", 1)
        else:
            d.cost_usd += cost
        if ws <= late_cut:
            d.late += 1
            self._count("late_events", 1)
        rid = call.request_id if call.request_id is not None else self._new_id()
        self._records[(call.tenant_id, rid)] = call_record(call, rid, cost, source, now)

    def _add_timeout(self, req: LLMRequest, ws: int, now: float) -> None:
        """Count a request whose response did not come in time: request, error, timeout, prompt cost."""
        d = self._window((req.tenant_id, req.route, req.model, ws))
        d.requests += 1
        d.errors += 1
        d.timeouts += 1
        d.prompt_tokens += req.prompt_tokens
        cost = self._price(req.model, req.prompt_tokens, 0, req.timestamp)
        if cost is None:
            d.cost_unknown += 1
            self._count("unknown_cost", 1)
        else:
            d.cost_usd += cost
        self._records[(req.tenant_id, req.request_id)] = timeout_record(req, cost, now)

    def _correct_timeout(
        self, req: LLMRequest, ws: int, resp: LLMResponse, late_cut: float, now: float
    ) -> None:
        """Turn a counted timeout into the joined pair: its window ends up as if it had joined."""
        d = self._window((req.tenant_id, req.route, req.model, ws))
        d.timeouts -= 1
        if resp.error is None:
            d.errors -= 1
        d.completion_tokens += resp.completion_tokens
        _add_timing(d, resp.latency_ms, resp.ttft_ms)
        full = self._price(req.model, req.prompt_tokens, resp.completion_tokens, req.timestamp)
        prompt_only = self._price(req.model, req.prompt_tokens, 0, req.timestamp)
        if full is not None and prompt_only is not None:
            d.cost_usd += full - prompt_only
        if ws <= late_cut:
            d.late += 1
            self._count("late_events", 1)
        self._count("timeouts", -1)
        self._count("timeouts_corrected", 1)
        record = pair_record(req, resp, full, now, req.timestamp.timestamp())
        self._records[(req.tenant_id, req.request_id)] = record

    def process(self, events: Sequence[Event], now: float) -> None:
        """Count `events` (in delivery order) as seen at `now` (processor clock, epoch seconds).

        Does not expire anything; call `expire` for that. CPU-only, never blocks.
        """
        now = self._clock(now)
        gen = self._gen
        req_pending = self._req
        resp_pending = self._resp
        req_expired = self._req_expired
        resp_expired = self._resp_expired
        done = self._done
        owners = self._owners
        legacy = self._legacy
        new_done = self._new_done
        counted: list[str] = []  # request ids counted in this call: into the filter at the end
        remember = counted.append
        records = self._records
        deletes = self._deletes
        windows = self._windows
        # a WindowKey hashes and compares equal to the plain tuple of its fields: look up without one
        get_window: Callable[[_Key], WindowDelta | None] = windows.get  # type: ignore[assignment]
        rates_get = self._rates.get
        log = math.log
        ceil = math.ceil
        inv_log_gamma = _INV_LOG_GAMMA
        wm = self._watermark
        lateness = self._config.allowed_lateness_s + _W
        late_cut = wm - lateness
        duplicates = joined = calls = orphans_resolved = unknown = late = 0
        for ev in events:
            # Find the two halves of a pair (or count a call, a duplicate or a lone half and move on);
            # the joined pair is counted inline below, the hot path.
            if type(ev) is LLMResponse:
                resp = ev
                rid = ev.request_id
                tenant = ev.tenant_id
                if tenant is None:
                    tenant = owners.get(rid)
                    if tenant is None:
                        tenant = NO_TENANT
                    elif tenant == _MANY:
                        self._count("ambiguous_responses", 1)
                        continue
                key = (tenant, rid)
                req_entry = req_pending.pop(key, None)
                if req_entry is None:
                    if (
                        key in resp_pending
                        or key in done
                        or key in resp_expired
                        or (legacy and rid in legacy)
                        or (tenant != NO_TENANT and (NO_TENANT, rid) in resp_pending)
                    ):
                        duplicates += 1
                        continue
                    req_entry = req_expired.pop(key, None)
                    if req_entry is None:
                        resp_pending[key] = (ev, now, gen, 0)
                        continue
                    req, _, req_gen, ws = req_entry
                    if req_gen != gen:
                        deletes.append((tenant, rid, "request"))
                    self._correct_timeout(req, ws, ev, late_cut, now)
                    done[key] = now
                    new_done[key] = None
                    remember(rid)
                    joined += 1
                    continue
                req, _, req_gen, ws = req_entry
                if req_gen != gen:
                    deletes.append((tenant, rid, "request"))
            elif type(ev) is LLMRequest:
                req = ev
                rid = ev.request_id
                tenant = ev.tenant_id
                t = ev.timestamp.timestamp()
                if t > wm:
                    wm = t
                    late_cut = wm - lateness
                key = (tenant, rid)
                if key in req_pending or key in done or key in req_expired or (legacy and rid in legacy):
                    duplicates += 1
                    continue
                owner = owners.get(rid)
                if owner is None:
                    owners[rid] = tenant
                elif owner != tenant:
                    owners[rid] = _MANY
                ws = int(t // _W) * _W
                rkey = key
                resp_entry = resp_pending.pop(key, None)
                if resp_entry is None:
                    rkey = (NO_TENANT, rid)
                    resp_entry = resp_pending.pop(rkey, None)
                if resp_entry is None:
                    rkey = key
                    resp_entry = resp_expired.pop(key, None)
                    if resp_entry is None:
                        rkey = (NO_TENANT, rid)
                        resp_entry = resp_expired.pop(rkey, None)
                    if resp_entry is None:
                        req_pending[key] = (ev, now, gen, ws)
                        continue
                    orphans_resolved += 1
                if resp_entry[2] != gen:
                    deletes.append((rkey[0], rid, "response"))
                resp = resp_entry[0]
            elif type(ev) is LLMCall:
                call_id = ev.request_id
                if call_id is not None:
                    key = (ev.tenant_id, call_id)
                    if self._seen(key):
                        duplicates += 1
                        continue
                    done[key] = now
                    new_done[key] = None
                    remember(call_id)
                    self._own(key)
                t = ev.timestamp.timestamp()
                if t > wm:
                    wm = t
                    late_cut = wm - lateness
                self._add_call(ev, int(t // _W) * _W, late_cut, now)
                calls += 1
                continue
            else:
                raise TypeError(f"not an llmpulse event: {type(ev).__name__}")

            # count the joined pair `req` + `resp` (identity `key`) in the window starting at `ws`
            done[key] = now
            new_done[key] = None
            remember(rid)
            joined += 1
            model = req.model
            wkey = (key[0], req.route, model, ws)
            d = get_window(wkey)
            if d is None:
                d = windows[_new_key(WindowKey, wkey)] = WindowDelta()
            d.requests += 1
            if resp.error is not None:
                d.errors += 1
            prompt = req.prompt_tokens
            completion = resp.completion_tokens
            d.prompt_tokens += prompt
            d.completion_tokens += completion
            lat = resp.latency_ms
            d.latency_count += 1
            d.latency_sum_ms += lat
            b = ceil(log(lat) * inv_log_gamma) if lat > MIN_VALUE else ZERO_BUCKET
            h = d.latency_hist
            h[b] = h.get(b, 0) + 1
            ttft = resp.ttft_ms
            if ttft is not None:
                d.ttft_count += 1
                d.ttft_sum_ms += ttft
                b = ceil(log(ttft) * inv_log_gamma) if ttft > MIN_VALUE else ZERO_BUCKET
                h = d.ttft_hist
                h[b] = h.get(b, 0) + 1
            rates = rates_get(model, _UNSEEN)
            if rates is _UNSEEN:
                rates = self._pair_rates(model)
            cost: float | None
            if rates is not None:
                cost = rates[0] + rates[1] * prompt + rates[2] * completion
                d.cost_usd += cost
            else:
                cost = self._pricer.cost(
                    model, input_tokens=prompt, output_tokens=completion, at=req.timestamp
                )
                if cost is None:
                    d.cost_unknown += 1
                    unknown += 1
                else:
                    d.cost_usd += cost
            if ws <= late_cut:
                d.late += 1
                late += 1
            records[key] = pair_record(req, resp, cost, now, req.timestamp.timestamp())
        self._watermark = wm
        self._filter.add_many(counted, now + self._config.dedup_ttl_s)
        self._count("events", len(events))
        self._count("duplicates", duplicates)
        self._count("joined", joined)
        self._count("calls", calls)
        self._count("unknown_cost", unknown)
        self._count("late_events", late)
        self._count("orphan_responses", -orphans_resolved)
        self._count("orphan_responses_resolved", orphans_resolved)

    # ------------------------------------------------------------------ time-driven

    def expire(self, now: float) -> None:
        """Count what is due at `now`: requests without a response as timeouts, responses without a
        request as orphans; let go of what the store holds and was not used for `hot_s` (committed
        dedup keys, expired halves) and of request ids past `dedup_ttl_s`. CPU-only.
        """
        now = self._clock(now)
        cfg = self._config
        self._evict(now - min(cfg.hot_s, cfg.dedup_ttl_s))
        self._filter.expire(now)
        cutoff = now - cfg.orphan_timeout_s
        due_req = _due(self._req, cutoff)
        for key in due_req:
            entry = self._req.pop(key)
            self._req_expired[key] = entry
            self._expired_since[(key, "request")] = None
            self._filter.add(key[1], entry[1] + cfg.dedup_ttl_s)
            self._add_timeout(entry[0], entry[3], now)
        self._count("timeouts", len(due_req))
        due_resp = _due(self._resp, cutoff)
        for key in due_resp:
            resp_entry = self._resp.pop(key)
            self._resp_expired[key] = resp_entry
            self._expired_since[(key, "response")] = None
            self._filter.add(key[1], resp_entry[1] + cfg.dedup_ttl_s)
        self._count("orphan_responses", len(due_resp))

    def _evict(self, cut: float) -> None:
        """Let go of the committed dedup keys counted at or before `cut`, the expired halves whose
        timeout fell at or before it, and the ids primed then: the store holds them all (they were
        in an earlier checkpoint), and the filter remembers their request ids."""
        stale: list[_Id] = []
        for key, t in self._done.items():
            if t > cut or key in self._new_done:
                break
            stale.append(key)
        for key in stale:
            del self._done[key]
            if key not in self._req and key not in self._req_expired:
                self._disown(key)
        timeout = self._config.orphan_timeout_s
        for kind, expired in (("request", self._req_expired), ("response", self._resp_expired)):
            gone: list[_Id] = []
            for key, entry in expired.items():
                if entry[1] + timeout > cut or (key, kind) in self._expired_since:
                    break
                gone.append(key)
            for key in gone:
                del expired[key]
                if kind == "request" and key not in self._done and key not in self._req:
                    self._disown(key)
        primed = [rid for rid, t in self._primed.items() if t <= cut]
        for rid in primed:
            del self._primed[rid]

    # ------------------------------------------------------------------ cold state

    def probe(self, events: Sequence[Event], now: float) -> list[ColdProbe]:
        """What to ask the store about `events` (sorted, once each): the request ids the `KeyFilter`
        holds whose call is neither pending, nor counted, nor timed out in memory, each with where
        its record would start (a request's or call's own timestamp; for a response, its timestamp
        less its latency, give or take `RESPONSE_PROBE_SLACK_S`). Ask the store
        (`Store.lookup_cold`) and hand its answer to `prime` before `process`. CPU-only; the common
        case (a new call, a response to a pending request) costs one filter lookup. A response
        that names no tenant is resolved among the tenants memory holds for its id when there are
        any (those that used it within `hot_s` or still wait on it), and through the store only
        when there are none.

        So a copy of a counted request or call is recognised for the whole ``dedup_ttl_s`` when it
        carries the original's timestamp (a re-sent event does), and a copy of a counted response
        when its request started within the slack of its timestamp less its latency; one that is
        not found is counted as new (a request, a call) or waits as an orphan response.
        """
        self._clock(now)
        kf = self._filter
        if not len(kf):
            return []
        done, req, req_expired, primed = self._done, self._req, self._req_expired, self._primed
        owners = self._owners
        out: set[ColdProbe] = set()
        for ev in events:
            rid = ev.request_id
            if rid is None or rid in primed:
                continue
            tenant = ev.tenant_id
            if tenant is not None:
                key = (tenant, rid)
                if key in done or key in req or key in req_expired:
                    continue
            elif rid in owners:
                continue  # a response naming no tenant, of an id a tenant in memory uses
            if rid in kf:
                at = ev.timestamp.timestamp()
                if isinstance(ev, LLMResponse):
                    start = at - (ev.latency_ms or 0.0) / 1000.0
                    out.add(ColdProbe(rid, start - RESPONSE_PROBE_SLACK_S, at + RESPONSE_PROBE_SLACK_S))
                else:
                    out.add(ColdProbe(rid, at, at))
        return sorted(out)

    def prime(self, probes: Sequence[ColdProbe], cold: ColdState, now: float) -> None:
        """Take the store's answer about `probes` (what `probe` asked): the calls counted with
        those ids become counted in memory again, the expired halves waiting again, for `hot_s`.
        CPU-only."""
        now = self._clock(now)
        for entry in cold.expired:
            key = (entry.tenant_id, entry.request_id)
            (event,) = decode_log(entry.payload)
            if entry.kind == "request":
                if key in self._req_expired or key in self._done or key in self._req:
                    continue
                if not isinstance(event, LLMRequest):
                    raise ValueError(f"pending request {entry.request_id!r} holds a {type(event).__name__}")
                self._req_expired[key] = (event, entry.seen_at, -1, _window_start(event.timestamp))
                self._own(key)
            else:
                if key in self._resp_expired or key in self._resp:
                    continue
                if not isinstance(event, LLMResponse):
                    raise ValueError(f"pending response {entry.request_id!r} holds a {type(event).__name__}")
                self._resp_expired[key] = (event, entry.seen_at, -1, 0)
        for tenant, rid, counted_at in cold.counted:
            key = (tenant, rid)
            # a timed-out request has a record too, but its expired entry says it may still join
            if key in self._req_expired or key in self._done or key in self._req:
                continue
            self._done[key] = min(counted_at, now)  # let go of at the next expiry once that is old
            self._own(key)
        rids = {p.request_id for p in probes}
        for rid in rids:
            self._primed[rid] = now
        self._cold_lookups += len(rids)

    # ------------------------------------------------------------------ checkpoint

    def checkpoint(self, consumer: str, offsets: dict[int, int], now: float) -> Checkpoint:
        """Hand over every change since the last checkpoint (and start a new interval). CPU-only.

        `offsets` are the log offsets the changes cover (partition → next offset to read); they are
        copied into the checkpoint unchanged. The caller commits the checkpoint in one transaction.
        """
        now = self._clock(now)
        gen = self._gen
        upserts = _created_in(self._req, "request", gen)
        upserts.extend(_created_in(self._resp, "response", gen))
        for key, kind in self._expired_since:
            expired_entry = (self._req_expired if kind == "request" else self._resp_expired).get(key)
            if expired_entry is not None:
                upserts.append(
                    PendingEntry(key[1], kind, encode_log([expired_entry[0]]), expired_entry[1], True, key[0])
                )
        deletes = self._deletes
        if deletes and upserts:
            replaced = {(e.tenant_id, e.request_id, e.kind) for e in upserts}
            deletes = [k for k in deletes if k not in replaced]
        dedup_keys = [dedup_key(t, rid) for t, rid in self._new_done]
        counters = {name: n for name, n in self._delta.items() if n}
        for name, n in counters.items():
            self._totals[name] = self._totals.get(name, 0) + n
        result = Checkpoint(
            consumer=consumer,
            offsets=dict(offsets),
            windows=self._windows,
            pending_upserts=upserts,
            pending_deletes=deletes,
            dedup_keys=dedup_keys,
            dedup_expires_at=now + self._config.dedup_ttl_s,
            calls=self._records,
            counters=counters,
            watermark=self._watermark,
        )
        if self._config.calls_retention_s is not None:
            result.expire_calls_before = now - self._config.calls_retention_s
        if now - self._last_forget >= _FORGET_EVERY_S:  # the store forgets what left the horizon
            result.forget_before = now - self._config.dedup_ttl_s
            result.purge_chunks_at = now
            self._last_forget = now
        self._windows = {}
        self._records = {}
        self._deletes = []
        self._expired_since = {}
        self._new_done = {}
        self._delta = {}
        self._gen = gen + 1
        return result

    def stats(self) -> dict[str, int]:
        """Sizes of the pending state and cumulative counters since this core started. CPU-only.

        Keys: ``pending_requests``, ``pending_responses``, ``expired_requests``, ``expired_responses``,
        ``dedup_keys`` (held in memory), ``filter_keys`` and ``filter_bytes`` (the `KeyFilter`),
        ``cold_lookups`` (request ids asked of the store), ``windows_open`` (windows changed since
        the last checkpoint), and the counters
        ``events``, ``joined``, ``calls``, ``duplicates``, ``timeouts``, ``timeouts_corrected``,
        ``orphan_responses``, ``orphan_responses_resolved``, ``ambiguous_responses``,
        ``late_events``, ``unknown_cost``.
        """
        out = {
            "pending_requests": len(self._req),
            "pending_responses": len(self._resp),
            "expired_requests": len(self._req_expired),
            "expired_responses": len(self._resp_expired),
            "dedup_keys": len(self._done) + len(self._legacy),
            "filter_keys": len(self._filter),
            "cold_lookups": self._cold_lookups,
            "filter_bytes": self._filter.size_bytes,
            "windows_open": len(self._windows),
        }
        for name in _COUNTERS:
            out[name] = self._totals.get(name, 0) + self._delta.get(name, 0)
        return out

    @property
    def watermark(self) -> float:
        """The highest event time seen (epoch seconds)."""
        return self._watermark


#: How often a checkpoint asks the store to forget expired halves and dedup chunks past the horizon.
_FORGET_EVERY_S: Final = 60.0


def _random_id() -> str:
    return "~" + uuid.uuid4().hex


_COUNTERS: Final = (
    "events",
    "joined",
    "calls",
    "duplicates",
    "timeouts",
    "timeouts_corrected",
    "orphan_responses",
    "orphan_responses_resolved",
    "ambiguous_responses",
    "late_events",
    "unknown_cost",
)


def _add_timing(d: WindowDelta, latency_ms: float | None, ttft_ms: float | None) -> None:
    """Count a latency and a time to first token (either may be missing) in a window's histograms.

    `process` inlines the same arithmetic for joined pairs, its hot path; this serves the rest.
    """
    if latency_ms is not None:
        d.latency_count += 1
        d.latency_sum_ms += latency_ms
        b = ZERO_BUCKET if latency_ms <= MIN_VALUE else math.ceil(math.log(latency_ms) * _INV_LOG_GAMMA)
        d.latency_hist[b] = d.latency_hist.get(b, 0) + 1
    if ttft_ms is not None:
        d.ttft_count += 1
        d.ttft_sum_ms += ttft_ms
        b = ZERO_BUCKET if ttft_ms <= MIN_VALUE else math.ceil(math.log(ttft_ms) * _INV_LOG_GAMMA)
        d.ttft_hist[b] = d.ttft_hist.get(b, 0) + 1


def _created_in(pending: dict[_Id, _E], kind: PendingKind, gen: int) -> list[PendingEntry]:
    """Pending entries created in checkpoint generation `gen` (a suffix of `pending`), oldest first."""
    created: list[PendingEntry] = []
    for (tenant, rid), entry in reversed(pending.items()):
        if entry[2] != gen:
            break
        created.append(PendingEntry(rid, kind, encode_log([entry[0]]), entry[1], False, tenant))
    created.reverse()
    return created


def _due(pending: Mapping[_Id, tuple[Event, float, int, int]], cutoff: float) -> list[_Id]:
    """Keys of the entries at the front of `pending` (oldest first) seen at or before `cutoff`."""
    due: list[_Id] = []
    for key, entry in pending.items():
        if entry[1] > cutoff:
            break
        due.append(key)
    return due
