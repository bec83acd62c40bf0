"""Makes model calls under one real GenAI instrumentation and exports its spans over OTLP/HTTP.

Runs in ``.venv-otlp-clients`` (see `requirements.txt`, built by ``scripts/otlp-clients-venv.sh``),
not in the main virtualenv: the instrumentations need ``openai<3`` and their own OpenTelemetry.

    drive.py CLIENT OPENAI_BASE_URL SERVER_URL

CLIENT is one of `CLIENTS`. The calls go through the real ``openai`` client to the fake provider at
OPENAI_BASE_URL (``tests/instrument/fake_provider.py``); the instrumentation exports to
``SERVER_URL/v1/traces`` the way its documentation says to (its own endpoint setting where it has
one, else the OpenTelemetry SDK's OTLP/HTTP exporter). The script makes `CALLS` in order, flushes,
and prints one JSON line naming the package versions. Everything stays on loopback: the caller sets
the proxy variables so that any other address fails at once.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

#: (name, model, streamed, x-fake header, fails): what each call asks of the fake provider.
CALLS: list[tuple[str, str, bool, str, bool]] = [
    ("plain", "gpt-4o-mini", False, "prompt=30,cached=10,reasoning=3,chunks=5", False),
    ("stream", "gpt-4o-mini", True, "prompt=25,cached=5,reasoning=2,chunks=4,delay=0.3", False),
    ("fail", "gpt-4o", False, "error=500", True),
    ("fail-stream", "gpt-4o", True, "error=500", True),
]

#: The PyPI package whose version each client reports.
PACKAGES = {
    "openllmetry": "opentelemetry-instrumentation-openai",
    "openai-v2": "opentelemetry-instrumentation-openai-v2",
    "openinference": "openinference-instrumentation-openai",
    "openlit": "openlit",
    "traceloop": "traceloop-sdk",
    "logfire": "logfire",
}
CLIENTS = tuple(PACKAGES)


def _otel_provider(server: str) -> Any:
    """A global TracerProvider exporting with the OpenTelemetry SDK's OTLP/HTTP exporter."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "otlp-clients"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(f"{server}/v1/traces")))
    trace.set_tracer_provider(provider)
    return provider


def _setup(client: str, server: str) -> Callable[[], None]:
    """Instrument `openai` with `client`; returns the function that flushes its spans."""
    if client == "openllmetry":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor

        provider = _otel_provider(server)
        OpenAIInstrumentor().instrument(tracer_provider=provider)
        return lambda: provider.shutdown()
    if client == "openai-v2":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as V2Instrumentor

        provider = _otel_provider(server)
        V2Instrumentor().instrument(tracer_provider=provider)
        return lambda: provider.shutdown()
    if client == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor as OIInstrumentor

        provider = _otel_provider(server)
        OIInstrumentor().instrument(tracer_provider=provider)
        return lambda: provider.shutdown()
    if client == "openlit":
        import openlit
        from opentelemetry import trace

        # a local (empty) price list: openlit otherwise downloads one
        prices = os.path.join(tempfile.mkdtemp(), "pricing.json")
        with open(prices, "w") as f:
            json.dump({"chat": {}, "embeddings": {}, "images": {}, "audio": {}}, f)
        openlit.init(
            otlp_endpoint=server,
            application_name="otlp-clients",
            disable_metrics=True,
            disable_events=True,
            pricing_json=prices,
        )
        return lambda: trace.get_tracer_provider().shutdown()  # type: ignore[attr-defined]
    if client == "traceloop":
        from opentelemetry import trace
        from traceloop.sdk import Traceloop
        from traceloop.sdk.instruments import Instruments

        Traceloop.init(
            app_name="otlp-clients",
            api_endpoint=server,
            disable_batch=True,
            telemetry_enabled=False,
            instruments={Instruments.OPENAI},
            metrics_exporter=None,
        )
        return lambda: trace.get_tracer_provider().shutdown()  # type: ignore[attr-defined]
    if client == "logfire":
        import logfire

        os.environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = f"{server}/v1/traces"
        logfire.configure(send_to_logfire=False, service_name="otlp-clients", console=False)
        logfire.instrument_openai()
        return lambda: logfire.shutdown()
    raise SystemExit(f"unknown client {client!r}; one of {', '.join(CLIENTS)}")


def _call(openai_client: Any, model: str, stream: bool, fake: str) -> None:
    kwargs: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "hello"}],
        "extra_headers": {"x-fake": fake},
    }
    if stream:
        chunks = openai_client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
        for _ in chunks:
            pass
    else:
        openai_client.chat.completions.create(**kwargs)


def main(argv: list[str]) -> int:
    """Run the calls of `CALLS` under the client named in `argv`; 0 when each behaved as expected."""
    client, base_url, server = argv
    flush = _setup(client, server)
    import openai

    openai_client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)
    for name, model, stream, fake, fails in CALLS:
        try:
            _call(openai_client, model, stream, fake)
        except openai.APIStatusError:
            if not fails:
                raise
        else:
            if fails:
                raise SystemExit(f"call {name!r} should have failed")
    flush()
    versions = {p: importlib.metadata.version(p) for p in (PACKAGES[client], "openai")}
    print(json.dumps({"client": client, "versions": versions}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
