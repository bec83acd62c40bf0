"""Tracing: `observe`, `Collector.span()`, `Collector.generation()`, parents through contextvars."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from llmpulse.sdk import Collector, TelemetryConfig, current_collector, current_span, observe
from llmpulse.testing import InMemoryExporter

HEX32 = re.compile(r"[0-9a-f]{32}")
HEX16 = re.compile(r"[0-9a-f]{16}")


@pytest.fixture
def sink() -> InMemoryExporter:
    return InMemoryExporter()


@pytest.fixture
def collector(sink: InMemoryExporter) -> Iterator[Collector]:
    c = Collector(TelemetryConfig(flush_interval_ms=10, redact=()), [sink])
    yield c
    c.shutdown(5.0)


def exported(collector: Collector, sink: InMemoryExporter) -> list[dict[str, Any]]:
    assert collector.flush(5.0)
    return list(sink.items)


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item.get("name") or item.get("model"): item for item in items}


def test_observe_without_any_collector_is_a_plain_call() -> None:
    calls = []

    @observe
    def f(x: int) -> int:
        calls.append(x)
        return x * 2

    assert current_collector() is None
    assert f(21) == 42
    assert calls == [21]
    assert f.__name__ == "f"


def test_observe_records_a_span_with_duration_to_the_bound_collector(
    collector: Collector, sink: InMemoryExporter
) -> None:
    @observe(name="work", team="search")
    def work() -> str:
        return "done"

    with collector.bind():
        assert current_collector() is collector
        assert work() == "done"
    assert current_collector() is None
    assert work() == "done"  # unbound again: not recorded
    [span] = exported(collector, sink)
    assert span["type"] == "span"
    assert span["name"] == "work"
    assert HEX32.fullmatch(span["trace_id"])
    assert HEX16.fullmatch(span["span_id"])
    assert span["parent_span_id"] is None
    assert span["status"] == "ok"
    assert span["duration_ms"] >= 0
    assert span["attributes"] == {"team": "search"}


def test_errors_mark_the_span_and_propagate_unchanged(collector: Collector, sink: InMemoryExporter) -> None:
    @observe(collector=collector)
    def fail() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        fail()
    [span] = exported(collector, sink)
    assert span["status"] == "error"
    assert span["error"] == "KeyError: 'missing'"


def test_nested_spans_and_generations_form_one_trace(collector: Collector, sink: InMemoryExporter) -> None:
    @observe
    def retrieve() -> list[str]:
        return ["doc"]

    with collector.span("request", route="chat") as root:
        assert current_span() is not None
        retrieve()  # no bind(): the current span's collector is used
        with collector.generation("gpt-4o-mini", tenant_id="acme", user_id="u1", temperature=0.2) as gen:
            gen.set_input([{"role": "user", "content": "hi"}])
            gen.first_token()
            gen.set_usage(12, 3, cached_input_tokens=2)
            gen.set_output("hello", finish_reason="stop")
            gen.set_response_model("gpt-4o-mini-2024-07-18")
    assert current_span() is None
    items = by_name(exported(collector, sink))
    [retrieved] = [v for k, v in items.items() if k.endswith("<locals>.retrieve")]  # qualified name
    request, call = items["request"], items["gpt-4o-mini"]
    assert retrieved["trace_id"] == call["trace_id"] == request["trace_id"] == root.trace_id
    assert retrieved["parent_span_id"] == call["parent_span_id"] == request["span_id"]
    assert call["type"] == "llm.call"
    assert (call["tenant_id"], call["user_id"], call["finish_reason"]) == ("acme", "u1", "stop")
    assert (call["input_tokens"], call["output_tokens"], call["cached_input_tokens"]) == (12, 3, 2)
    assert call["response_model"] == "gpt-4o-mini-2024-07-18"
    assert call["metadata"] == {
        "temperature": 0.2,
        "input": [{"role": "user", "content": "hi"}],
        "output": "hello",
    }
    assert call["latency_ms"] >= call["ttft_ms"] >= 0
    assert call["status"] == "ok"
    assert call["cost"] is not None
    assert call["cost_source"] == "genai-prices"  # no cost given to set_usage: priced by the worker


def test_generation_status_follows_errors_and_cancellation(
    collector: Collector, sink: InMemoryExporter
) -> None:
    with pytest.raises(TimeoutError), collector.generation("m-error"):
        raise TimeoutError("slow")

    async def cancelled() -> None:
        with collector.generation("m-cancel"):
            await asyncio.sleep(10)

    async def main() -> None:
        task = asyncio.create_task(cancelled())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    items = by_name(exported(collector, sink))
    assert (items["m-error"]["status"], items["m-error"]["error"]) == ("error", "TimeoutError: slow")
    assert items["m-cancel"]["status"] == "cancelled"


def test_record_inputs_false_keeps_content_out_of_generations(sink: InMemoryExporter) -> None:
    collector = Collector(
        TelemetryConfig(flush_interval_ms=10, record_inputs=False, record_outputs=False), [sink]
    )
    with collector.generation("gpt-4o-mini", input="secret prompt") as gen:
        gen.set_output("secret answer")
    [call] = exported(collector, sink)
    assert call["metadata"] is None
    assert "secret" not in str(call)
    collector.shutdown(2.0)


def test_async_spans_keep_their_parents_across_concurrent_tasks(
    collector: Collector, sink: InMemoryExporter
) -> None:
    @observe(capture_input=True, capture_output=True)
    async def leaf(n: int) -> int:
        await asyncio.sleep(0.001 * (5 - n))  # finish out of order
        return n * 10

    @observe
    async def branch(n: int) -> int:
        return await leaf(n)

    async def main() -> list[int]:
        with collector.bind(), collector.span("root"):
            return list(await asyncio.gather(*(branch(n) for n in range(5))))

    assert asyncio.run(main()) == [0, 10, 20, 30, 40]
    items = exported(collector, sink)
    root = next(i for i in items if i["name"] == "root")
    branches = {i["span_id"]: i for i in items if i["name"].endswith("branch")}
    leaves = [i for i in items if i["name"].endswith("leaf")]
    assert len(branches) == 5
    assert len(leaves) == 5
    assert all(b["parent_span_id"] == root["span_id"] for b in branches.values())
    assert {leaf["parent_span_id"] for leaf in leaves} == set(branches)
    assert {i["trace_id"] for i in items} == {root["trace_id"]}
    for leaf in leaves:  # each leaf's input and output belong together
        n = leaf["attributes"]["input"]["args"][0]
        assert leaf["attributes"]["output"] == n * 10


def test_threads_start_without_a_parent(collector: Collector, sink: InMemoryExporter) -> None:
    seen: list[object] = []
    with collector.span("main"):
        thread = threading.Thread(target=lambda: seen.append(current_span()))
        thread.start()
        thread.join()
    assert seen == [None]


def test_generator_spans_last_until_exhaustion_and_parent_inner_spans(
    collector: Collector, sink: InMemoryExporter
) -> None:
    @observe(collector=collector)
    def numbers() -> Iterator[int]:
        for i in range(3):
            with collector.span(f"inner{i}"):
                pass
            yield i
        return None

    gen = numbers()
    assert current_span() is None
    assert next(gen) == 0
    assert current_span() is None  # the generator's span is not current between steps
    assert list(gen) == [1, 2]
    items = by_name(exported(collector, sink))
    outer = next(v for k, v in items.items() if k.endswith("numbers"))
    assert outer["status"] == "ok"
    assert all(items[f"inner{i}"]["parent_span_id"] == outer["span_id"] for i in range(3))


def test_generator_errors_and_early_close(collector: Collector, sink: InMemoryExporter) -> None:
    @observe(name="broken", collector=collector)
    def broken() -> Iterator[int]:
        yield 1
        raise ValueError("bad")

    @observe(name="endless", collector=collector)
    def endless() -> Iterator[int]:
        while True:
            yield 1

    with pytest.raises(ValueError, match="bad"):
        list(broken())
    gen = endless()
    next(gen)
    gen.close()
    items = by_name(exported(collector, sink))
    assert items["broken"]["status"] == "error"
    assert items["endless"]["status"] == "ok"


def test_async_generator_spans(collector: Collector, sink: InMemoryExporter) -> None:
    @observe(name="agen", collector=collector)
    async def agen() -> AsyncIterator[int]:
        for i in range(3):
            yield i

    async def main() -> list[int]:
        return [i async for i in agen()]

    assert asyncio.run(main()) == [0, 1, 2]
    [span] = exported(collector, sink)
    assert (span["name"], span["status"]) == ("agen", "ok")


def test_a_failing_record_never_breaks_the_observed_function(sink: InMemoryExporter) -> None:
    def explode(item: Any) -> Any:
        raise RuntimeError("processor bug")

    collector = Collector(TelemetryConfig(flush_interval_ms=10), [sink], processors=[explode])

    @observe(collector=collector)
    def work() -> int:
        return 7

    assert work() == 7
    with collector.generation("m") as gen:
        gen.set_usage(1, 5, reasoning_tokens=9)  # inconsistent: LLMCall rejects it on exit
    assert collector.stats()["errors"] == 2
    collector.shutdown(2.0)


def test_bind_as_a_statement_lasts_for_the_context() -> None:
    collector = Collector(TelemetryConfig(flush_interval_ms=10))

    def inner() -> object:
        collector.bind()
        return current_collector()

    import contextvars

    ctx = contextvars.copy_context()
    assert ctx.run(inner) is collector
    assert current_collector() is None  # it was bound only inside that context
    collector.shutdown(1.0)


def test_a_cost_given_to_set_usage_is_sent_as_the_providers(
    collector: Collector, sink: InMemoryExporter
) -> None:
    with collector.generation("gpt-4o-mini") as gen:
        gen.set_usage(12, 3, cost=0.0421)
    [call] = [item for item in exported(collector, sink) if item["type"] == "llm.call"]
    assert (call["cost"], call["cost_source"]) == (0.0421, "provider")
