"""`SharedBudget` against the real llmpulse server (`llmpulse serve` subprocesses on loopback, SQLite).

Processes share one budget through the server's ledger: 8 processes x 100 concurrent calls never pass
a $5 hard budget by more than the calls that cost more than their estimates, and use at least 95 % of
it, with plain calls and with streams cut mid-flight. The server going down meets the policy
(fail_closed refuses, fail_open allows, both counted; fail-open costs reach the ledger when it is back);
reservations of a killed client expire; `instrument()` and the LangChain handler use a shared budget as
they use a local one.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from llmpulse.sdk import BudgetExceeded, BudgetUnavailable, Collector, SharedBudget, SharedBudgetExceeded
from llmpulse.sdk.instrument import instrument
from tests.e2e._server import ServerProcess
from tests.instrument.conftest import MESSAGES, ListRecorder
from tests.instrument.fake_provider import FakeProvider

pytestmark = pytest.mark.slow

AMOUNT = 5.0
PROCESSES = 8
THREADS = 100
#: Half the threads of every process call at once (400 reservations racing for a budget they over-ask
#: 1.4 times); the other half arrive over this many seconds and use what commits below estimates free.
SPREAD_S = 2.5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("shared-budget")
    proc = ServerProcess(workdir, "--db", f"sqlite:///{workdir / 'budgets.db'}").start()
    try:
        yield proc
    finally:
        proc.stop()


def _budget(url: str, budget_id: str, amount: float, **kwargs: Any) -> SharedBudget:
    budget = SharedBudget(budget_id, url=url, on_unavailable="fail_closed", timeout_s=10.0, **kwargs)
    budget.define(amount, scope={"tenant_id": "acme"})
    return budget


def _view(url: str, budget_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{url}/v1/budgets/{budget_id}", timeout=10).json()
    return answer


# -- one process ------------------------------------------------------------------------------------


def test_reserve_commit_and_release_reach_the_ledger(server: ServerProcess) -> None:
    collector = Collector()
    budget = _budget(server.url, "one-process", 1.0, collector=collector)
    kept = budget.reserve({}, 0.3)
    dropped = budget.reserve({}, 0.25)
    assert kept.backed
    view = _view(server.url, "one-process")
    assert view["reserved_usd"] == pytest.approx(0.55)
    assert view["remaining_usd"] == pytest.approx(0.45)
    kept.settle(0.2)
    dropped.release()
    kept.settle(0.9)  # only the first settle counts
    assert budget.flush(10)
    view = _view(server.url, "one-process")
    assert (view["committed_usd"], view["reserved_usd"]) == (pytest.approx(0.2), pytest.approx(0.0))
    stats = collector.stats()["budgets"]["one-process"]
    assert (stats["reserved"], stats["committed"], stats["released"], stats["settle_failed"]) == (2, 1, 1, 0)
    assert budget.remaining() == pytest.approx(0.8)  # the latest answer's figure, no round trip
    budget.close()
    collector.shutdown(1.0)


def test_a_reservation_that_does_not_fit_is_refused_with_what_is_left(server: ServerProcess) -> None:
    collector = Collector()
    budget = _budget(server.url, "refusals", 0.1, collector=collector)
    budget.reserve({}, 0.08)
    with pytest.raises(SharedBudgetExceeded) as caught:
        budget.reserve({}, 0.05)
    assert caught.value.remaining_usd == pytest.approx(0.02)
    assert (caught.value.requested, caught.value.budget_id, caught.value.scope) == (
        0.05,
        "refusals",
        "shared",
    )
    assert collector.stats()["budget_refused"] == 1
    assert budget.reserve({}, 0.02).backed  # what is left still fits
    budget.close()
    collector.shutdown(1.0)


def test_a_stream_grows_its_reservation_in_few_round_trips_and_is_cut_when_refused(
    server: ServerProcess,
) -> None:
    budget = _budget(server.url, "one-stream", 0.05)
    reservation = budget.reserve({}, 0.001)
    cost, cut = 0.0, None
    for _ in range(1000):
        cost += 0.0001
        cut = reservation.check_progress(cost)
        if cut is not None:
            break
    assert isinstance(cut, SharedBudgetExceeded)
    assert 0.045 <= cost <= 0.05  # cut when the next chunk would not fit, not before
    stats = budget.stats()
    assert 3 <= stats["extended"] <= 8  # doubling: a few round trips for ~500 chunks
    assert stats["cut"] == 1
    reservation.settle(cost)
    assert budget.flush(10)
    view = _view(server.url, "one-stream")
    assert view["committed_usd"] == pytest.approx(cost)
    assert view["overrun_usd"] == pytest.approx(0.0)
    budget.close()


# -- many processes ---------------------------------------------------------------------------------


#: One client process (run with `python -c`, so it imports only the SDK): THREADS threads making a
#: call each against the shared budget; prints what it committed as JSON.
_CLIENT = """
import json, random, sys, threading, time
from llmpulse.sdk import SharedBudget, SharedBudgetExceeded

url, budget_id = sys.argv[1:3]
seed, threads, start_at, spread, streams = int(sys.argv[3]), int(sys.argv[4]), *map(float, sys.argv[5:8])
budget = SharedBudget(budget_id, url=url, on_unavailable="fail_closed", timeout_s=30.0)
lock = threading.Lock()
committed, overruns, refused = [], [], 0

def one_call(rng):
    global refused
    estimate = rng.uniform(0.005, 0.03)
    try:
        reservation = budget.reserve({}, estimate)
    except SharedBudgetExceeded:
        with lock:
            refused += 1
        return
    if streams:
        per_chunk, cost = rng.uniform(0.0005, 0.002), 0.0
        for _ in range(rng.randint(5, 40)):  # 2.5x the estimate on average: most streams grow
            cost += per_chunk
            if reservation.check_progress(cost) is not None:
                break  # cut mid-flight
            time.sleep(0.0005)
    else:
        time.sleep(rng.uniform(0.001, 0.02))  # the model call
        cost = estimate * rng.uniform(0.5, 1.2)  # a sixth of the calls cost more than estimated
    held = reservation.reserved_usd
    reservation.settle(cost)
    with lock:
        committed.append(cost)
        overruns.append(max(0.0, cost - held))

def thread(i):
    rng = random.Random(seed * 1000 + i)
    time.sleep(max(0.0, start_at - time.time()) + (0.0 if i < threads // 2 else rng.uniform(0.0, spread)))
    one_call(rng)

workers = [threading.Thread(target=thread, args=(i,)) for i in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
called = time.time() - start_at
flushed = budget.flush(60)
stats = budget.stats()
budget.close()
print(json.dumps({"committed": sum(committed), "overrun": sum(overruns), "refused": refused,
                  "stats": stats, "flushed": flushed, "seconds": (called, time.time() - start_at)}))
"""


def _run_processes(url: str, budget_id: str, streams: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    budget = _budget(url, budget_id, AMOUNT)
    budget.close()
    start_at = time.time() + 1.5  # every process starts its threads together
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CLIENT, url, budget_id]
            + [str(arg) for arg in (seed, THREADS, start_at, SPREAD_S, int(streams))],
            stdout=subprocess.PIPE,
        )
        for seed in range(PROCESSES)
    ]
    results = [json.loads(proc.communicate(timeout=120)[0]) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    return results, _view(url, budget_id)


@pytest.mark.parametrize("streams", [False, True], ids=["calls", "streams"])
def test_eight_processes_never_pass_a_hard_budget_and_use_it(server: ServerProcess, streams: bool) -> None:
    results, view = _run_processes(server.url, f"fleet-{'streams' if streams else 'calls'}", streams)
    committed = sum(r["committed"] for r in results)
    overrun = sum(r["overrun"] for r in results)
    # every commit landed once (the ledger keeps nanodollars: each commit is rounded to 1e-9)
    assert view["committed_usd"] == pytest.approx(committed, abs=1e-6)
    assert view["reserved_usd"] == pytest.approx(0.0, abs=1e-9)
    assert committed <= AMOUNT + overrun + 1e-6  # the documented bound
    assert committed >= 0.95 * AMOUNT, (committed, results)
    assert view["overrun_usd"] == pytest.approx(overrun, abs=1e-6)
    assert sum(r["refused"] for r in results) > 0  # the budget was contended
    if streams:
        assert overrun == 0.0  # a stream grows before its next chunk would pass its reservation
        assert sum(r["stats"]["cut"] for r in results) > 0
        assert sum(r["stats"]["extended"] for r in results) > 0
    else:
        assert overrun > 0.0
    assert all(
        r["flushed"] and r["stats"]["settle_failed"] == 0 and r["stats"]["fail_closed"] == 0 for r in results
    )


# -- the server goes away ---------------------------------------------------------------------------


def test_while_the_server_is_down_fail_closed_refuses_and_fail_open_allows(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'down.db'}"
    server = ServerProcess(tmp_path, "--db", db).start()
    collector = Collector()
    kwargs: dict[str, Any] = {
        "url": server.url,
        "timeout_s": 0.5,
        "retry_interval_s": 0.0,
        "collector": collector,
    }
    closed = SharedBudget("down", on_unavailable="fail_closed", **kwargs)
    opened = SharedBudget("down", on_unavailable="fail_open", **kwargs)
    closed.define(1.0)
    assert closed.reserve({}, 0.1).backed
    server.kill()
    with pytest.raises(BudgetUnavailable):
        closed.reserve({}, 0.1)
    allowed = opened.reserve({}, 0.1)
    assert not allowed.backed
    allowed.settle(0.07)
    stats = collector.stats()
    assert (stats["budget_fail_closed"], stats["budget_fail_open"]) == (1, 1)
    assert stats["budgets"]["down#2"]["fail_open_usd"] == pytest.approx(0.07)
    # back up on the same port and database: the fail-open cost reaches the ledger
    server = ServerProcess(tmp_path, "--db", db, port=server.port).start()
    try:
        assert opened.flush(30)
        assert opened.stats()["backfilled"] == 1
        view = _view(server.url, "down")
        assert view["committed_usd"] == pytest.approx(0.07)
        assert view["reserved_usd"] == pytest.approx(0.1)  # the killed server's open reservation
    finally:
        closed.close()
        opened.close()
        collector.shutdown(1.0)
        server.stop()


_KILLED_CLIENT = """
import os, signal, sys
from llmpulse.sdk import SharedBudget
budget = SharedBudget(sys.argv[2], url=sys.argv[1], reservation_ttl_s=1.0)
held = [budget.reserve({}, 0.2) for _ in range(3)]
print("reserved", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_reservations_of_a_killed_client_expire(server: ServerProcess) -> None:
    budget = _budget(server.url, "killed", 1.0)
    budget.close()
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_CLIENT, server.url, "killed"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout.strip() == "reserved"
    assert _view(server.url, "killed")["reserved_usd"] == pytest.approx(0.6)
    deadline = time.monotonic() + 15  # the server's TTL (1 s) runs on its own clock
    view = _view(server.url, "killed")
    while view["reservations_expired"] < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
        view = _view(server.url, "killed")
    assert view["reservations_expired"] == 3
    assert (view["reserved_usd"], view["remaining_usd"]) == (pytest.approx(0.0), pytest.approx(1.0))


# -- the instrumentation ----------------------------------------------------------------------------


def test_instrumented_calls_reserve_and_commit_and_streams_are_cut(server: ServerProcess) -> None:
    budget = _budget(server.url, "instrumented", 5e-5)
    recorder = ListRecorder()
    received: list[Any] = []
    with FakeProvider() as fake:
        client = openai.OpenAI(api_key="k", base_url=fake.openai_url, max_retries=0)
        instrument(client, recorder, budget=budget)
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=5)  # type: ignore[arg-type]
        assert budget.flush(10)
        first = _view(server.url, "instrumented")["committed_usd"]
        assert first > 0

        def consume() -> None:
            stream = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
                max_tokens=2,
                extra_headers={"x-fake": "chunks=400"},
            )
            for chunk in stream:
                received.append(chunk)

        with pytest.raises(BudgetExceeded):
            consume()
    assert 4 <= len(received) < 100  # cut mid-flight
    assert recorder.items[-1].error["type"] == "SharedBudgetExceeded"  # type: ignore[index]
    assert budget.flush(10)
    view = _view(server.url, "instrumented")
    assert view["reserved_usd"] == pytest.approx(0.0)
    assert first < view["committed_usd"] <= 5e-5 * 1.05  # what was streamed, within the budget
    budget.close()


def test_the_langchain_handler_takes_a_shared_budget(server: ServerProcess) -> None:
    from langchain_core.runnables import RunnableLambda

    from llmpulse.sdk.langchain import LlmpulseCallbackHandler
    from tests.langchain.conftest import FakeChatModel, usage

    budget = _budget(server.url, "langchain", 1.0)
    handler = LlmpulseCallbackHandler(ListRecorder(), budget=budget, reserve_usd=0.3)  # type: ignore[arg-type]
    chain = RunnableLambda(lambda question: f"Q: {question}") | FakeChatModel(usage=usage(0, 500_000))
    for question in "abc":  # each costs $0.30 (500k output tokens of gpt-4o-mini)
        chain.invoke(question, config={"callbacks": [handler]})
    assert budget.flush(10)
    assert handler.get_remaining_budget() == pytest.approx(0.1)
    with pytest.raises(BudgetExceeded):
        chain.invoke("d", config={"callbacks": [handler]})
    assert _view(server.url, "langchain")["committed_usd"] == pytest.approx(0.9)
    budget.close()


# -- added latency ----------------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def test_added_latency_per_call_is_one_round_trip(server: ServerProcess) -> None:
    """p50/p99 of an instrumented call with and without a shared budget, on loopback (printed)."""
    budget = _budget(server.url, "latency", 1000.0)
    with FakeProvider() as fake:
        client = openai.OpenAI(api_key="k", base_url=fake.openai_url, max_retries=0)
        plain = openai.OpenAI(api_key="k", base_url=fake.openai_url, max_retries=0)
        instrument(client, ListRecorder(), budget=budget)
        instrument(plain, ListRecorder())
        timings: dict[str, list[float]] = {"plain": [], "shared": [], "reserve": []}
        for i in range(400):
            for name, c in (("plain", plain), ("shared", client)):
                t0 = time.perf_counter()
                c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=5)  # type: ignore[arg-type]
                if i >= 50:  # warm-up: connections, price table
                    timings[name].append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            budget.reserve({}, 0.0).release()
            if i >= 50:
                timings["reserve"].append((time.perf_counter() - t0) * 1000)
    assert budget.flush(30)
    figures = {name: (_percentile(v, 0.5), _percentile(v, 0.99)) for name, v in timings.items()}
    added = (figures["shared"][0] - figures["plain"][0], figures["shared"][1] - figures["plain"][1])
    print(f"\nshared-budget latency (ms, p50/p99): {figures}; added {added[0]:.2f}/{added[1]:.2f}")
    assert figures["reserve"][0] < 20.0
    assert added[0] < 2 * figures["reserve"][0] + 1.0  # one round trip, not two
    budget.close()


def test_async_clients_await_their_reservation_without_blocking_the_loop(server: ServerProcess) -> None:
    import asyncio
    import socket

    async def main(budget: SharedBudget, fake: FakeProvider) -> tuple[int, float]:
        client = openai.AsyncOpenAI(api_key="k", base_url=fake.openai_url, max_retries=0)
        instrument(client, ListRecorder(), budget=budget)
        ticks = 0
        done = asyncio.Event()

        async def heartbeat() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        beat = asyncio.create_task(heartbeat())
        started = time.perf_counter()
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=5)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - started
        done.set()
        await beat
        await client.close()
        return ticks, elapsed

    with FakeProvider() as fake:
        # against the real server: the call reserves, then commits
        live = _budget(server.url, "async-live", 1.0)
        asyncio.run(main(live, fake))
        assert live.flush(10)
        assert _view(server.url, "async-live")["committed_usd"] > 0
        live.close()
        # a server that never answers: the reservation waits its 0.5 s timeout (then fails open)
        # while the loop goes on running other tasks
        with socket.socket() as sock:  # accepts connections (the kernel's backlog), never answers
            sock.bind(("127.0.0.1", 0))
            sock.listen(64)
            url = f"http://127.0.0.1:{sock.getsockname()[1]}"
            silent = SharedBudget("async-silent", url=url, on_unavailable="fail_open", timeout_s=0.5)
            ticks, elapsed = asyncio.run(main(silent, fake))
            silent.close(0.1)
    assert elapsed >= 0.5
    assert ticks >= 20  # a blocked loop would have ticked once or twice in those 0.5 s
