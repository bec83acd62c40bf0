"""The traffic generator the processor tests and benchmarks feed on (`llmpulse.testing.traffic`)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from llmpulse.events import Event, Limits, LLMCall, LLMRequest, LLMResponse, decode_batch
from llmpulse.pricing import Pricer
from llmpulse.testing.traffic import (
    DEFAULT_MODELS,
    UNKNOWN_MODEL,
    encode_batch_json,
    generate_events,
    iter_batches,
)

START = datetime(2025, 3, 1, tzinfo=UTC)


def test_same_seed_same_events_and_different_seed_different_events() -> None:
    a = generate_events(200, start=START, call_rate=0.3, duplicate_rate=0.1, shuffle=5, seed=7)
    b = generate_events(200, start=START, call_rate=0.3, duplicate_rate=0.1, shuffle=5, seed=7)
    c = generate_events(200, start=START, call_rate=0.3, duplicate_rate=0.1, shuffle=5, seed=8)
    assert encode_batch_json(a) == encode_batch_json(b)
    assert encode_batch_json(a) != encode_batch_json(c)


def test_pairs_join_with_response_after_request_and_plausible_figures() -> None:
    events = generate_events(2000, tenants=5, routes=3, start=START, duration_s=600, error_rate=0.1)
    requests = {e.request_id: e for e in events if isinstance(e, LLMRequest)}
    responses = {e.request_id: e for e in events if isinstance(e, LLMResponse)}
    assert len(requests) == len(responses) == 2000
    for rid, resp in responses.items():
        req = requests[rid]
        assert resp.timestamp - req.timestamp == timedelta(milliseconds=resp.latency_ms)
        assert START <= req.timestamp < START + timedelta(seconds=600)
        assert 0 < req.prompt_tokens < 1_000_000
    assert {e.tenant_id for e in requests.values()} == {f"tenant-{i}" for i in range(1, 6)}
    assert {e.route for e in requests.values()} == {"chat", "search", "summarize"}
    assert {e.model for e in requests.values()} == set(DEFAULT_MODELS)
    errors = sum(r.error is not None for r in responses.values())
    assert 100 < errors < 300
    # events come in send order: timestamps never go backwards without shuffle
    stamps = [e.timestamp for e in events]
    assert stamps == sorted(stamps)


def test_default_models_are_priced_and_the_unknown_one_is_not() -> None:
    pricer = Pricer()
    assert all(pricer.knows(m) for m in DEFAULT_MODELS)
    assert not pricer.knows(UNKNOWN_MODEL)


def test_orphans_duplicates_and_calls_in_the_asked_proportions() -> None:
    events = generate_events(
        4000,
        start=START,
        orphan_request_rate=0.1,
        orphan_response_rate=0.05,
        duplicate_rate=0.1,
        call_rate=0.25,
        seed=3,
    )
    kinds = Counter(type(e).__name__ for e in events)
    unique = {(type(e).__name__, e.request_id) for e in events}
    assert len(events) - len(unique) == pytest.approx(0.1 * len(unique), rel=0.2)
    calls = {e.request_id for e in events if isinstance(e, LLMCall)}
    assert len(calls) == pytest.approx(1000, rel=0.1)
    requests = {e.request_id for e in events if isinstance(e, LLMRequest)}
    responses = {e.request_id for e in events if isinstance(e, LLMResponse)}
    pairs = 4000 - len(calls)
    assert len(requests - responses) == pytest.approx(0.1 * pairs, rel=0.2)
    assert len(responses - requests) == pytest.approx(0.05 * pairs, rel=0.25)
    assert kinds["LLMCall"] > len(calls)  # some calls were re-sent
    call_events = [e for e in events if isinstance(e, LLMCall)]
    assert any(e.cached_input_tokens for e in call_events)
    assert any(e.reasoning_tokens for e in call_events)
    assert any(e.cost is not None for e in call_events)


def test_shuffle_moves_events_at_most_that_many_places() -> None:
    ordered = generate_events(500, start=START, seed=1)
    shuffled = generate_events(500, start=START, seed=1, shuffle=10)
    index = {msgspec.json.encode(e): i for i, e in enumerate(ordered)}
    moves = [abs(index[msgspec.json.encode(e)] - i) for i, e in enumerate(shuffled)]
    assert max(moves) <= 10
    assert any(moves)


def test_json_batches_decode_back_to_the_same_events() -> None:
    events = generate_events(300, start=START, call_rate=0.3, error_rate=0.2, seed=2)
    batches = list(iter_batches(events, 128))
    assert all(len(b) == 128 for b in batches[:-1])
    assert 0 < len(batches[-1]) <= 128
    assert sum(map(len, batches)) == len(events)
    decoded = []
    for batch in batches:
        result = decode_batch(encode_batch_json(batch), Limits(max_past_s=1e10), now=START)
        assert result.rejected == []
        decoded.extend(result.events)
    assert decoded == events


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_pairs": -1}, "n_pairs"),
        ({"error_rate": 1.5}, "error_rate"),
        ({"tenants": 0}, "tenants"),
        ({"start": datetime(2025, 1, 1)}, "start"),
        ({"shuffle": -1}, "shuffle"),
        ({"users": -1}, "users"),
    ],
)
def test_bad_arguments_raise_naming_them(kwargs: dict[str, object], name: str) -> None:
    args: dict[str, object] = {"n_pairs": 1, "start": START, **kwargs}
    with pytest.raises(ValueError, match=name):
        generate_events(**args)  # type: ignore[arg-type]


def _unattributed(event: Event) -> Event:
    copy = msgspec.structs.replace(event)
    if isinstance(copy, LLMCall):
        copy.user_id = copy.org_id = copy.session_id = copy.feature = None
        copy.environment = copy.endpoint = None
        copy.metadata = None
    elif isinstance(copy, LLMRequest):
        copy.user_id_hash = None
        copy.metadata = None
    return copy


def test_attribution_comes_from_its_own_generator_and_changes_nothing_else() -> None:
    kwargs = {"start": START, "call_rate": 0.4, "duplicate_rate": 0.1, "shuffle": 7, "seed": 5}
    plain = generate_events(1500, **kwargs)  # type: ignore[arg-type]
    assert encode_batch_json(generate_events(1500, users=0, **kwargs)) == encode_batch_json(plain)  # type: ignore[arg-type]
    attributed = generate_events(1500, users=40, **kwargs)  # type: ignore[arg-type]
    assert encode_batch_json(attributed) == encode_batch_json(generate_events(1500, users=40, **kwargs))  # type: ignore[arg-type]
    assert [_unattributed(e) for e in attributed] == [_unattributed(e) for e in plain]


def test_attributed_calls_name_zipf_users_orgs_sessions_features_and_environments() -> None:
    events = generate_events(6000, start=START, call_rate=0.5, users=50, seed=4)
    calls = [e for e in events if isinstance(e, LLMCall)]
    requests = [e for e in events if isinstance(e, LLMRequest)]
    users = Counter(c.user_id for c in calls)
    assert 0.02 < users[None] / len(calls) < 0.08  # some calls have no user
    named = [u for u, _ in users.most_common() if u is not None]
    assert len(named) > 30
    assert users[named[0]] > 5 * users[named[-1]]  # Zipf-like popularity
    for call in calls:
        if call.user_id is None:
            assert call.org_id is None
            assert call.session_id is None
            assert call.metadata is None
        else:
            assert call.org_id is not None
            assert call.org_id.startswith("org-")
            assert call.session_id is not None
            assert call.session_id.startswith(f"s-{call.user_id[5:]}-")
            assert call.metadata is not None
            assert call.metadata["plan"] in ("free", "pro", "enterprise")
        assert call.environment in ("production", "staging", "development")
        assert call.endpoint == f"/v1/{call.route}"
    assert len({c.org_id for c in calls if c.org_id}) == 6
    assert None in {c.feature for c in calls}
    hashes = Counter(r.user_id_hash for r in requests)
    assert None in hashes
    assert len(hashes) > 30
    for request in requests:
        assert request.metadata is not None
        assert request.metadata["environment"] in ("production", "staging", "development")
        assert ("plan" in request.metadata) == (request.user_id_hash is not None)
