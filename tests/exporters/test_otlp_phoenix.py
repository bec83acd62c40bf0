"""OTLPExporter's spans decoded by a receiver nobody here wrote: Arize Phoenix, run on loopback.

Phoenix (``arize-phoenix`` from PyPI, in its own virtualenv ``.venv-phoenix/`` built by
``scripts/phoenix-venv.sh``, which ``make test`` runs) reads the current GenAI conventions
(``gen_ai.*``) into its own model: the model name, token counts (cache reads included), message
content, and a cost it prices itself from those tokens. Each test exports one call over OTLP/HTTP or
OTLP/gRPC and reads it back through Phoenix's GraphQL API.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from llmpulse.events import to_dict
from llmpulse.exporters import OTLPExporter
from llmpulse.pricing import Pricer
from tests.sdk.test_pipeline import call

ROOT = Path(__file__).resolve().parents[2]
PHOENIX = ROOT / ".venv-phoenix" / "bin" / "phoenix"
START = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
#: Phoenix's spans as GraphQL gives them, with its own reading of tokens and cost.
QUERY = """
query($name: String!) { projects(filter: {col: name, value: $name}) { edges { node { name
  spans(first: 10) { edges { node {
    name spanKind latencyMs attributes tokenCountPrompt tokenCountCompletion
    costSummary { total { cost tokens } prompt { cost } completion { cost } }
  } } }
} } } }
"""


@dataclass
class Phoenix:
    """A running ``phoenix serve``: its OTLP/HTTP and OTLP/gRPC endpoints and GraphQL URL."""

    http: str
    grpc: str

    def spans(self, project: str) -> list[dict[str, Any]]:
        """The spans of `project` as Phoenix's GraphQL API returns them ([] before it exists)."""
        body = json.dumps({"query": QUERY, "variables": {"name": project}}).encode()
        request = urllib.request.Request(
            f"{self.http}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            document = json.loads(answer.read())
        assert "errors" not in document, document
        edges = document["data"]["projects"]["edges"]
        return [e["node"] for p in edges if p["node"]["name"] == project for e in p["node"]["spans"]["edges"]]

    def wait_for_spans(self, project: str, count: int, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        """Poll until Phoenix has ingested `count` spans of `project` (it writes them asynchronously)."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.spans(project)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    if not PHOENIX.exists():
        pytest.fail(f"{PHOENIX} is missing: run `bash scripts/phoenix-venv.sh` (make test does)")
    workdir = tmp_path_factory.mktemp("phoenix")
    http_port, grpc_port = _free_port(), _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "OTEL_"))},
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(http_port),
        "PHOENIX_GRPC_HOST": "127.0.0.1",
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_WORKING_DIR": str(workdir),
        "PHOENIX_TELEMETRY_ENABLED": "false",  # nothing leaves the machine
    }
    log = (workdir / "serve.log").open("wb")
    process = subprocess.Popen([str(PHOENIX), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Phoenix(f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{grpc_port}")
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"phoenix serve exited with {process.returncode}: see {workdir / 'serve.log'}")
            try:
                with urllib.request.urlopen(f"{server.http}/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"phoenix serve did not answer within 120 s: see {workdir / 'serve.log'}")
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


def _priced_call(request_id: str) -> dict[str, Any]:
    """One gpt-4o-mini call with cache reads, priced by llmpulse (genai-prices), content recorded."""
    usage = {"input_tokens": 2000, "output_tokens": 400, "cached_input_tokens": 1500}
    cost = Pricer().cost("gpt-4o-mini", provider="openai", **usage)
    assert cost is not None
    return to_dict(
        call(
            0,
            request_id=request_id,
            timestamp=START,
            provider="openai",
            latency_ms=1500.0,
            ttft_ms=300.0,
            finish_reason="stop",
            cost=cost,
            cost_source="genai-prices",
            metadata={"input": "Weather in Paris?", "output": "Rainy, 14 C."},
            **usage,
        )
    )


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_phoenix_shows_the_model_tokens_cost_and_messages(phoenix: Phoenix, protocol: Any) -> None:
    project = f"llmpulse-{protocol.replace('/', '-')}"
    item = _priced_call(f"phoenix-{project}")
    exporter = OTLPExporter(
        phoenix.grpc if protocol == "grpc" else phoenix.http,
        protocol=protocol,
        resource_attributes={"openinference.project.name": project},
    )
    try:
        assert exporter.export([item]) is None
    finally:
        exporter.shutdown(1.0)

    (span,) = phoenix.wait_for_spans(project, 1)
    attributes = json.loads(span["attributes"])
    # Phoenix read the model, the provider and the tokens from the gen_ai.* names
    assert (span["name"], span["spanKind"]) == ("chat gpt-4o-mini", "llm")
    assert attributes["llm"]["model_name"] == "gpt-4o-mini"
    assert attributes["llm"]["provider"] == "openai"
    assert (span["tokenCountPrompt"], span["tokenCountCompletion"]) == (2000, 400)
    assert attributes["llm"]["token_count"]["prompt_details"]["cache_read"] == 1500
    assert span["latencyMs"] == pytest.approx(1500.0)
    # Phoenix prices the tokens itself: its figure is llmpulse's (cache reads at their own rate)
    assert span["costSummary"]["total"]["cost"] == pytest.approx(item["cost"], rel=1e-9)
    assert span["costSummary"]["total"]["tokens"] == 2400
    # and shows the cost llmpulse sent, with its source
    cost = attributes["gen_ai"]["usage"]["cost"]
    assert cost == {"amount": pytest.approx(item["cost"]), "currency": "USD", "source": "local"}
    assert attributes["llmpulse"]["cost_source"] == "genai-prices"
    assert attributes["gen_ai"]["response"]["time_to_first_chunk"] == pytest.approx(0.3)
    # message content, sent as gen_ai.input.messages / gen_ai.output.messages attributes
    (prompt,) = attributes["llm"]["input_messages"]
    assert prompt["message"] == {"role": "user", "content": "Weather in Paris?"}
    (answer,) = attributes["llm"]["output_messages"]
    assert (answer["message"]["role"], answer["message"]["content"]) == ("assistant", "Rainy, 14 C.")
