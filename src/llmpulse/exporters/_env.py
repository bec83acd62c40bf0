"""`from_env()`: the exporters the environment describes, as the seeds name the variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from llmpulse.exporters._helicone import HeliconeExporter
from llmpulse.exporters._kafka import KafkaExporter
from llmpulse.exporters._langfuse import LangfuseExporter
from llmpulse.exporters._logstash import LogstashExporter
from llmpulse.exporters._otlp import GenAISemconv, OTLPExporter
from llmpulse.exporters._pulse import PulseExporter
from llmpulse.exporters._syslog import SyslogExporter
from llmpulse.exporters._webhook import WebhookExporter

#: OpenTelemetry's opt-in to newer semantic conventions: a comma-separated list of categories.
ENV_SEMCONV_STABILITY_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"
#: The values of it that `genai_semconv` reads (any other category belongs to other instrumentations).
SEMCONV_GENAI_LATEST = "gen_ai_latest_experimental"
SEMCONV_GENAI_DUP = "gen_ai_latest_experimental/dup"

#: Where llmpulse's own server is, for the `PulseExporter`.
ENV_PULSE_URL = "LLMPULSE_EXPORT_URL"
ENV_PULSE_API_KEY = "LLMPULSE_API_KEY"


def genai_semconv(environ: Mapping[str, str] | None = None) -> GenAISemconv:
    """Which GenAI attribute names the OTLP exporter sends, from ``OTEL_SEMCONV_STABILITY_OPT_IN``.

    ``gen_ai_latest_experimental/dup`` in the list gives ``"dup"`` (current and previous names: it wins
    over ``gen_ai_latest_experimental``, as ``http/dup`` wins over ``http`` in the specification);
    otherwise ``"latest"``: with ``gen_ai_latest_experimental``, or unset, since the exporter has always
    sent the current names. Entries are trimmed and compared case-insensitively; other categories
    (``http``, ``database``, ...) are ignored. Never raises.
    """
    env = os.environ if environ is None else environ
    entries = {part.strip().lower() for part in env.get(ENV_SEMCONV_STABILITY_OPT_IN, "").split(",")}
    return "dup" if SEMCONV_GENAI_DUP in entries else "latest"


def from_env(environ: Mapping[str, str] | None = None) -> list[Any]:
    """Build every exporter whose variables are set, in a fixed order. Does not block or connect.

    `LLMPULSE_EXPORT_URL` (+ `LLMPULSE_API_KEY`) → `PulseExporter`; `WEBHOOK_URL` (+
    `WEBHOOK_AUTH_TOKEN`) → `WebhookExporter`; `OTEL_EXPORTER_OTLP_ENDPOINT` or
    `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (+ the other `OTEL_*` variables) → `OTLPExporter`;
    `HELICONE_API_KEY` (+ `HELICONE_BASE_URL`) → `HeliconeExporter`; `LOGSTASH_HOST` and
    `LOGSTASH_PORT` → `LogstashExporter`; `KAFKA_BOOTSTRAP_SERVERS` (+ the other `KAFKA_*` variables)
    → `KafkaExporter`; `LANGFUSE_PUBLIC_KEY` and `LANGFUSE_SECRET_KEY` (+
    `LANGFUSE_HOST`) → `LangfuseExporter`; `SYSLOG_HOST` (+ `SYSLOG_PORT`, `SYSLOG_PROTOCOL`,
    `SYSLOG_FACILITY`, `SYSLOG_APP_NAME`, `SYSLOG_FORMAT`) → `SyslogExporter`. An empty list when
    none is set.
    A malformed value raises `ValueError` naming the variable.
    """
    env = os.environ if environ is None else environ
    exporters: list[Any] = []
    if env.get(ENV_PULSE_URL, "").strip():
        exporters.append(
            PulseExporter(env[ENV_PULSE_URL].strip(), api_key=env.get(ENV_PULSE_API_KEY) or None)
        )
    factories = (
        WebhookExporter.from_env,
        OTLPExporter.from_env,
        HeliconeExporter.from_env,
        LogstashExporter.from_env,
        KafkaExporter.from_env,
        LangfuseExporter.from_env,
        SyslogExporter.from_env,
    )
    for factory in factories:
        exporter = factory(env)
        if exporter is not None:
            exporters.append(exporter)
    return exporters
