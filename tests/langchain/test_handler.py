"""`LlmpulseCallbackHandler` driven by real langchain-core runs of a fake chat model."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
from typing import Any

import pytest
from langchain_core.runnables import RunnableConfig, RunnableLambda

from llmpulse.pricing import Pricer
from llmpulse.sdk._budget import Budget, BudgetExceeded, Budgets
from llmpulse.sdk.langchain import LlmpulseCallbackHandler
from llmpulse.testing import InMemoryExporter
from tests.langchain.conftest import FakeChatModel, ProviderError, Recorder, usage

PRICER = Pricer()


def _config(handler: LlmpulseCallbackHandler, **metadata: Any) -> RunnableConfig:
    return {"callbacks": [handler], "metadata": metadata}


def test_invoke_records_one_call_with_usage_cost_and_attributes(recorder: Recorder) -> None:
    handler = LlmpulseCallbackHandler(recorder, tenant_id="acme", route="chat", team="search")
    model = FakeChatModel(usage=usage(1_000, 200, cache_read=600, reasoning=50))
    answer = model.invoke("What is the capital of France?", config=_config(handler, user_id="u1", ticket=7))

    assert answer.content == "Paris is the capital of France"
    [call] = recorder.calls
    assert (call.model, call.response_model) == ("gpt-4o-mini", "gpt-4o-mini-2024-07-18")
    assert (call.input_tokens, call.output_tokens, call.total_tokens) == (1_000, 200, 1_200)
    assert (call.cached_input_tokens, call.reasoning_tokens) == (600, 50)
    expected = PRICER.cost(
        "gpt-4o-mini-2024-07-18",
        input_tokens=1_000,
        output_tokens=200,
        cached_input_tokens=600,
        reasoning_tokens=50,
    )
    assert expected is not None
    assert call.cost == pytest.approx(expected)
    assert call.cost_source == "genai-prices"
    assert call.status == "ok"
    assert call.error is None
    assert call.finish_reason == "stop"
    assert call.latency_ms is not None
    assert call.latency_ms > 0
    assert call.ttft_ms is None  # not streamed
    assert (call.tenant_id, call.route, call.user_id, call.org_id) == ("acme", "chat", "u1", None)
    assert call.metadata == {"team": "search", "ticket": 7}
    assert call.provider == "fakechatmodel"  # LangChain's ls_provider, from the class name
    assert handler.total_cost == pytest.approx(expected)
    assert handler.total_tokens == 1_200
    assert handler.calls == 1


def test_streaming_sets_time_to_first_content_and_takes_usage_from_the_final_chunk(
    recorder: Recorder,
) -> None:
    handler = LlmpulseCallbackHandler(recorder)
    model = FakeChatModel(usage=usage(40, 6))
    text = "".join(str(chunk.content) for chunk in model.stream("hi", config=_config(handler)))

    assert text == "Paris is the capital of France"
    [call] = recorder.calls
    assert (call.input_tokens, call.output_tokens) == (40, 6)
    assert call.ttft_ms is not None
    assert call.latency_ms is not None
    assert 0 < call.ttft_ms <= call.latency_ms
    assert call.status == "ok"
    assert call.cost == pytest.approx(PRICER.cost("gpt-4o-mini-2024-07-18", input_tokens=40, output_tokens=6))


def test_role_only_chunks_do_not_count_as_first_token(recorder: Recorder) -> None:
    handler = LlmpulseCallbackHandler(recorder)
    model = FakeChatModel(reply="", usage=usage(5, 0))
    list(model.stream("hi", config=_config(handler)))
    [call] = recorder.calls
    assert call.ttft_ms is None


def test_error_run_is_recorded_with_status_and_releases_the_budget(recorder: Recorder) -> None:
    budget = Budget(1.0)
    handler = LlmpulseCallbackHandler(recorder, budget=budget)
    with pytest.raises(ProviderError, match="exploded"):
        FakeChatModel(fail=True).invoke("hi", config=_config(handler))

    [call] = recorder.calls
    assert call.status == "error"
    assert call.error == {"type": "ProviderError", "message": "provider exploded"}
    assert call.cost is None
    assert budget.reserved() == 0.0
    assert budget.spent() == 0.0
    assert handler.calls == 1


def test_stream_failing_after_output_charges_the_budget_for_what_was_produced(recorder: Recorder) -> None:
    budget = Budget(10.0)
    handler = LlmpulseCallbackHandler(recorder, budget=budget)
    model = FakeChatModel(fail_after_chunks=3)
    with pytest.raises(ProviderError, match="cut off"):
        list(model.stream("hi", config=_config(handler)))

    [call] = recorder.calls
    assert call.status == "error"
    assert call.ttft_ms is not None
    assert budget.reserved() == 0.0
    assert budget.spent() > 0.0  # estimated from the streamed text: output was billed by the provider


def test_abandoned_stream_is_recorded_as_cancelled(recorder: Recorder) -> None:
    handler = LlmpulseCallbackHandler(recorder)
    stream = FakeChatModel().stream("hi", config=_config(handler))
    next(stream)
    next(stream)
    stream.close()

    [call] = recorder.calls
    assert call.status == "cancelled"
    assert call.error == {"type": "GeneratorExit", "message": ""}


def test_concurrent_runs_in_threads_never_mix(recorder: Recorder) -> None:
    handler = LlmpulseCallbackHandler(recorder, tenant_id="t")
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        model = FakeChatModel(usage=usage(100 + i, 10 + i), reply=f"answer {i}", delay_s=0.01)
        barrier.wait()
        try:
            if i % 2:
                list(model.stream("q", config=_config(handler, user_id=f"u{i}")))
            else:
                model.invoke("q", config=_config(handler, user_id=f"u{i}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    calls = recorder.calls
    assert len(calls) == 16
    assert len({call.request_id for call in calls}) == 16
    for call in calls:
        assert call.user_id is not None
        i = int(call.user_id[1:])
        assert (call.input_tokens, call.output_tokens) == (100 + i, 10 + i)
        assert (call.ttft_ms is not None) == bool(i % 2)
    by_user = handler.get_costs_by_user()
    assert set(by_user) == {f"u{i}" for i in range(16)}
    assert sum(by_user.values()) == pytest.approx(handler.total_cost)


def test_concurrent_runs_under_asyncio_gather_never_mix(recorder: Recorder) -> None:
    handler = LlmpulseCallbackHandler(recorder)

    async def one(i: int) -> str:
        model = FakeChatModel(usage=usage(200 + i, 20 + i), reply=f"reply {i}", delay_s=0.005)
        config = _config(handler, session_id=f"s{i}")
        if i % 2:
            return "".join([str(chunk.content) async for chunk in model.astream("q", config=config)])
        return str((await model.ainvoke("q", config=config)).content)

    async def main() -> list[str]:
        return await asyncio.gather(*(one(i) for i in range(20)))

    replies = asyncio.run(main())
    assert replies == [f"reply {i}" for i in range(20)]
    calls = recorder.calls
    assert len(calls) == 20
    for call in calls:
        assert call.session_id is not None
        i = int(call.session_id[1:])
        assert (call.input_tokens, call.output_tokens) == (200 + i, 20 + i)
        assert call.status == "ok"
        assert (call.ttft_ms is not None) == bool(i % 2)


def test_budget_limit_stops_the_chain_with_budget_exceeded(recorder: Recorder) -> None:
    # 500k output tokens of gpt-4o-mini ($0.60/M) cost $0.30; each call reserves that much: a $1 budget
    # admits three calls and stops the fourth before the model is called
    handler = LlmpulseCallbackHandler(recorder, budget_limit=1.0, reserve_usd=0.3)
    chain = RunnableLambda(lambda question: f"Q: {question}") | FakeChatModel(usage=usage(0, 500_000))
    for question in "abc":
        chain.invoke(question, config=_config(handler))
    assert handler.total_cost == pytest.approx(0.9)
    assert handler.get_remaining_budget() == pytest.approx(0.1)
    with pytest.raises(BudgetExceeded) as info:
        chain.invoke("d", config=_config(handler))
    assert (info.value.limit, info.value.requested) == (1.0, 0.3)
    assert info.value.spent == pytest.approx(0.9)
    assert handler.calls == len(recorder.calls) == 3
    assert isinstance(handler.budget, Budget)
    assert handler.budget.reserved() == 0.0
    assert handler.budget.spent() == pytest.approx(0.9)
    # the chain that was stopped recorded an error span
    assert recorder.spans[-1].status == "error"
    assert recorder.spans[-1].error == {"type": "BudgetExceeded", "message": str(info.value)}


def test_estimated_reservation_uses_max_tokens_and_the_models_price(recorder: Recorder) -> None:
    seen: list[BudgetExceeded] = []
    budget = Budget(0.0, on_exceed=seen.append)  # every call "exceeds", and reports what it asked for
    handler = LlmpulseCallbackHandler(recorder, budget=budget)
    FakeChatModel(max_tokens=1_000).invoke("x" * 300, config=_config(handler))
    [exceeded] = seen
    # 300 characters at 3 per token is 100 prompt tokens (plus the message framing); 1000 output tokens
    low = PRICER.cost("gpt-4o-mini", input_tokens=100, output_tokens=1_000)
    high = PRICER.cost("gpt-4o-mini", input_tokens=120, output_tokens=1_000)
    assert low is not None
    assert high is not None
    assert low <= exceeded.requested <= high


def test_per_user_budgets_are_independent(recorder: Recorder) -> None:
    budgets = Budgets([Budget(100.0), Budget(0.5, scope="user")])
    handler = LlmpulseCallbackHandler(recorder, budget=budgets, reserve_usd=0.3)
    model = FakeChatModel(usage=usage(0, 500_000))  # $0.30 a call
    model.invoke("q", config=_config(handler, user_id="alice"))
    with pytest.raises(BudgetExceeded) as info:
        model.invoke("q", config=_config(handler, user_id="alice"))
    assert (info.value.scope, info.value.key) == ("user", "alice")
    model.invoke("q", config=_config(handler, user_id="bob"))
    assert handler.get_remaining_budget({"user_id": "carol"}) == pytest.approx(0.5)
    assert set(handler.get_costs_by_user()) == {"alice", "bob"}


def test_stream_is_cut_off_when_the_budget_runs_out_mid_way(recorder: Recorder) -> None:
    # a zero reservation; at gpt-4o's $10/M output the streamed text passes $0.0001 after ~10 tokens
    handler = LlmpulseCallbackHandler(recorder, budget=Budget(1e-4), reserve_usd=0.0)
    model = FakeChatModel(reply=" ".join(["word"] * 200), model_name="gpt-4o")
    received: list[str] = []

    def consume() -> None:
        for chunk in model.stream("hi", config=_config(handler)):
            received.append(str(chunk.content))

    with pytest.raises(BudgetExceeded):
        consume()
    assert 3 < len(received) < 50
    [call] = recorder.calls
    assert call.status == "error"
    assert call.error is not None
    assert isinstance(call.error, dict)
    assert call.error["type"] == "BudgetExceeded"


def test_parent_chain_and_model_runs_link_span_ids(recorder: Recorder) -> None:
    handler = LlmpulseCallbackHandler(recorder)
    chain = RunnableLambda(lambda question: question).with_config(run_name="prepare") | FakeChatModel()
    chain.invoke("q", config=_config(handler))

    [call] = recorder.calls
    spans = {span.name: span for span in recorder.spans}
    root = spans["RunnableSequence"]
    assert root.parent_span_id is None
    assert spans["prepare"].parent_span_id == root.span_id
    assert call.parent_span_id == root.span_id
    assert call.trace_id == root.trace_id == spans["prepare"].trace_id
    assert call.span_id is not None
    assert len(call.span_id) == 16
    assert call.trace_id is not None
    assert len(call.trace_id) == 32
    assert call.span_id not in {span.span_id for span in recorder.spans}
    assert all(span.status == "ok" and span.duration_ms is not None for span in recorder.spans)


def test_unknown_model_costs_none_and_warns_once(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    budget = Budget(1.0)
    handler = LlmpulseCallbackHandler(recorder, budget=budget)
    model = FakeChatModel(model_name="acme-llm-9000", response_model="acme-llm-9000")
    with caplog.at_level(logging.WARNING, logger="llmpulse.sdk.langchain"):
        model.invoke("q", config=_config(handler))
        model.invoke("q", config=_config(handler))
    assert [call.cost for call in recorder.calls] == [None, None]
    assert caplog.text.count("no price for model 'acme-llm-9000'") == 1
    assert handler.total_cost == 0.0
    assert budget.spent() == 0.0


def test_a_failing_collector_never_breaks_the_run(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def record(self, item: object, /) -> None:
            raise RuntimeError("queue on fire")

    handler = LlmpulseCallbackHandler(Broken())
    with caplog.at_level(logging.ERROR, logger="llmpulse.sdk.langchain"):
        answer = FakeChatModel().invoke("q", config=_config(handler))
    assert answer.content == "Paris is the capital of France"
    assert "queue on fire" in caplog.text
    assert handler.raise_error is True


def test_exporters_build_a_collector_that_exports_the_call_event() -> None:
    exporter = InMemoryExporter()
    handler = LlmpulseCallbackHandler(exporters=[exporter], user_id="u1", environment="prod", team="x")
    chain = RunnableLambda(lambda question: question) | FakeChatModel(usage=usage(30, 6, cache_read=10))
    chain.invoke("q", config={**_config(handler), "tags": ["beta"]})
    assert handler.shutdown(timeout=5.0)

    [event] = [item for item in exporter.items if item["type"] == "llm.call"]
    assert event["event_type"] == "llm_cost"
    assert (event["model"], event["input_tokens"], event["output_tokens"]) == ("gpt-4o-mini", 30, 6)
    assert (event["cached_input_tokens"], event["total_tokens"]) == (10, 36)
    assert event["cost"] == pytest.approx(handler.total_cost)
    assert (event["user_id"], event["environment"], event["status"]) == ("u1", "prod", "ok")
    assert event["metadata"] == {"team": "x", "tags": ["beta"]}  # LangChain's "seq:step:2" left out
    spans = [item for item in exporter.items if item["type"] == "span"]
    assert [span["span_id"] for span in spans if span["name"] == "RunnableSequence"] == [
        event["parent_span_id"]
    ]


def test_without_collector_the_handler_only_keeps_totals() -> None:
    handler = LlmpulseCallbackHandler()
    FakeChatModel(usage=usage(10, 5)).invoke("q", config=_config(handler, org_id="o1"))
    assert handler.calls == 1
    assert handler.get_costs_by_org() == {"o1": pytest.approx(handler.total_cost)}
    assert handler.get_costs_by("model") == {"gpt-4o-mini": pytest.approx(handler.total_cost)}
    with pytest.raises(ValueError, match="field"):
        handler.get_costs_by("color")
    assert handler.get_remaining_budget() == float("inf")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"reserve_usd": -1.0}, "reserve_usd"),
        ({"default_max_output_tokens": -5}, "default_max_output_tokens"),
    ],
)
def test_invalid_arguments_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        LlmpulseCallbackHandler(**kwargs)


def test_sdk_imports_without_langchain_and_the_integration_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['langchain_core'] = None\n"
        "import llmpulse.sdk, llmpulse.sdk._budget\n"
        "try:\n"
        "    import llmpulse.sdk.langchain\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'llmpulse[langchain]'" in out.stdout
