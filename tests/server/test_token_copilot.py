"""token-copilot 1.0.2 as it really sends, to a running llmpulse server on loopback.

Its `WebhookStreamer` posts one event as a bare object and a batch as ``{"events": [...]}``, each
with a timestamp without a UTC offset (``datetime.now()``) and a cost from its own static price
table without a source. Its LangChain callback (`TokenCoPilotCallback(streamer=...)`) posts the same
events from a real LangChain run. None may be refused; the counted figure follows the estimate
policy (`LLMPULSE_ESTIMATE_COST`) and the sender's own is kept beside it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from token_copilot.langchain import TokenCoPilotCallback
from token_copilot.streaming import WebhookStreamer
from token_copilot.streaming.base import StreamEvent
from token_copilot.utils.pricing import calculate_cost

from llmpulse.events import Limits
from llmpulse.pricing import Pricer
from llmpulse.server import ServerSettings, create_app
from tests.server.conftest import MakeClient, now_iso, request_body, response_body
from tests.server.live_server import live_server

PRICER = Pricer()
#: (model, input tokens, output tokens): gpt-4o and gpt-4o-mini are in both price tables, the last
#: model in neither (token-copilot sends $0 for it).
CALLS = [("gpt-4o", 1000, 160), ("gpt-4o-mini", 2000, 300), ("gpt-4o", 500, 40), ("acme-llm-1", 100, 10)]


@pytest.fixture(params=["genai-prices", "event"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A running server with the estimate policy of the parameter: (base URL, policy)."""
    settings = ServerSettings(
        db_url=f"sqlite:///{tmp_path / 'tc.db'}",
        log_sync="NORMAL",
        checkpoint_interval_s=0.05,
        estimate_cost=request.param,
    )
    with live_server(create_app(settings)) as url:
        yield url, request.param


def _event(model: str, inp: int, out: int, user: str) -> StreamEvent:
    return StreamEvent(
        timestamp=datetime.now(),  # naive local time, as token-copilot's tracker makes it
        model=model,
        input_tokens=inp,
        output_tokens=out,
        total_tokens=inp + out,
        cost=calculate_cost(model, inp, out),
        user_id=user,
        org_id="org-1",
        feature="chat",
        environment="test",
        metadata={},
    )


def _calls(url: str, n: int) -> list[dict[str, Any]]:
    """The tenant's calls once the processor has counted `n` of them (15 s at most)."""
    deadline = time.monotonic() + 15
    while True:
        page = httpx.get(f"{url}/v1/calls", params={"tenant_id": "default", "limit": 100}, timeout=5).json()
        if page["count"] >= n or time.monotonic() > deadline:
            return list(page["calls"])
        time.sleep(0.05)


def _expected(model: str, inp: int, out: int, policy: str) -> tuple[float, str]:
    sent = calculate_cost(model, inp, out)
    priced = PRICER.cost(model, input_tokens=inp, output_tokens=out, at=datetime.now(UTC))
    if policy == "genai-prices" and priced is not None:
        return priced, "genai-prices"
    return sent, "estimate"


def _check(url: str, policy: str, sent: list[tuple[str, int, int]]) -> None:
    calls = _calls(url, len(sent))
    assert len(calls) == len(sent)  # not one refused, none counted twice
    stats = httpx.get(f"{url}/v1/stats", timeout=5).json()
    assert stats["ingest"]["naive_timestamps"] == len(sent)
    got = sorted((c["model"], c["input_tokens"], c["output_tokens"]) for c in calls)
    assert got == sorted(sent)
    for c in calls:
        cost, source = _expected(c["model"], c["input_tokens"], c["output_tokens"], policy)
        assert c["cost_usd"] == pytest.approx(cost, rel=1e-12)
        assert c["cost_source"] == source
        assert c["sender_cost_usd"] == calculate_cost(c["model"], c["input_tokens"], c["output_tokens"])
        started = datetime.fromisoformat(c["started_at"].replace("Z", "+00:00"))
        assert abs((datetime.now(UTC) - started).total_seconds()) < 120  # read in UTC, as the host's clock
    costs = httpx.get(f"{url}/v1/costs", params={"tenant_id": "default", "group_by": "user_id"}, timeout=5)
    body = costs.json()
    want = math.fsum(_expected(m, i, o, policy)[0] for m, i, o in sent)
    assert body["total"]["requests"] == len(sent)
    assert body["total"]["cost_usd"] == pytest.approx(want, rel=1e-9)
    groups = math.fsum(g["cost_usd"] or 0.0 for g in body["groups"]) + (
        (body["other"] or {}).get("cost_usd") or 0.0
    )
    assert groups == pytest.approx(body["total"]["cost_usd"], rel=1e-9)


def test_webhook_streamer_one_event_a_post(server: tuple[str, str]) -> None:
    url, policy = server
    streamer = WebhookStreamer(url=f"{url}/v1/events", async_mode=False, max_retries=1)
    for n, (model, inp, out) in enumerate(CALLS):
        assert streamer.send(_event(model, inp, out, f"user-{n}"))
    streamer.close()
    _check(url, policy, CALLS)


def test_webhook_streamer_batched_posts_the_events_envelope(server: tuple[str, str]) -> None:
    url, policy = server
    streamer = WebhookStreamer(url=f"{url}/v1/events", batch_size=3, flush_interval=0.5, max_retries=1)
    for n, (model, inp, out) in enumerate(CALLS):  # its worker thread posts 3, then 1 on close
        assert streamer.send(_event(model, inp, out, f"user-{n % 2}"))
    # token-copilot's close() drops what its worker has not taken off its queue yet, and waits only
    # 5 s for a worker blocked flush_interval in its queue (its own limits)
    deadline = time.monotonic() + 10
    while not streamer._queue.empty() and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.01)
    streamer.close()
    _check(url, policy, CALLS)


class _ChatModel(BaseChatModel):
    """A LangChain chat model answering with the usage an OpenAI model reports (no network)."""

    usage: dict[str, int]
    model_name: str

    @property
    def _llm_type(self) -> str:
        return "llmpulse-test"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        return ChatResult(
            generations=[ChatGeneration(message=AIMessage(content="hello"))],
            llm_output={"token_usage": self.usage, "model_name": self.model_name},
        )


def test_langchain_callback_with_streamer(server: tuple[str, str]) -> None:
    url, policy = server
    streamer = WebhookStreamer(url=f"{url}/v1/events", async_mode=False, max_retries=1)
    callback = TokenCoPilotCallback(streamer=streamer)
    for model, inp, out in CALLS:
        llm = _ChatModel(usage={"prompt_tokens": inp, "completion_tokens": out}, model_name=model)
        llm.invoke("hi", config={"callbacks": [callback], "metadata": {"user_id": "u-lc"}})
    streamer.close()
    assert callback.get_total_cost() == pytest.approx(math.fsum(calculate_cost(*c) for c in CALLS))
    _check(url, policy, CALLS)


# -- what stays refused -----------------------------------------------------------------------------


def test_naive_timestamps_on_requests_and_responses_are_still_refused(make_client: MakeClient) -> None:
    client = make_client()
    naive = now_iso().removesuffix("Z")
    one = client.post("/v1/llm/request", json=request_body(timestamp=naive))
    assert one.status_code == 422
    assert "timestamp" in one.json()["error"]
    batch = client.post(
        "/v1/events",
        json={
            "events": [
                {"type": "llm.request", **request_body(request_id="r1", timestamp=naive)},
                {"type": "llm.response", **response_body(request_id="r1", timestamp=naive)},
            ]
        },
    )
    assert batch.status_code == 422
    assert [r["index"] for r in batch.json()["rejected"]] == [0, 1]
    assert all("timestamp" in r["error"] for r in batch.json()["rejected"])


def test_naive_call_timestamps_follow_the_configured_zone_or_are_refused(make_client: MakeClient) -> None:
    from llmpulse.events import parse_naive_timestamp_tz

    event = {"event_type": "llm_cost", "model": "gpt-4o", "input_tokens": 1, "output_tokens": 1}
    refusing = make_client(limits=Limits(naive_timestamp_tz=None))
    answer = refusing.post("/v1/events", json={**event, "timestamp": now_iso().removesuffix("Z")})
    assert answer.status_code == 422
    assert "`timestamp`" in answer.json()["rejected"][0]["error"]
    plus_two = make_client(limits=Limits(naive_timestamp_tz=parse_naive_timestamp_tz("+02:00")))
    local = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=2)  # the wall clock at +02:00
    ok = plus_two.post("/v1/events", json={**event, "timestamp": local.isoformat()})
    assert ok.status_code == 200
    [record] = [e for r in plus_two.app.state.llmpulse.log.read(0, 0, 10) for e in r.events]
    assert (
        abs((datetime.now(UTC) - record.timestamp).total_seconds()) < 60
    )  # +02:00 wall clock read back as UTC


def test_an_events_envelope_that_is_not_an_array_is_422_naming_it(make_client: MakeClient) -> None:
    answer = make_client().post("/v1/events", json={"events": "nope"})
    assert answer.status_code == 422
    assert "`events`" in answer.json()["error"]
