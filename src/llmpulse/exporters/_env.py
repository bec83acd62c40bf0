"""`from_env()`: the exporters the environment describes, as the seeds name the variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from llmpulse.exporters._helicone import HeliconeExporter
from llmpulse.exporters._kafka import KafkaExporter
from llmpulse.exporters._langfuse import LangfuseExporter
from llmpulse.exporters._logstash import LogstashExporter
from llmpulse.exporters._otlp import OTLPExporter
from llmpulse.exporters._pulse import PulseExporter
from llmpulse.exporters._syslog import SyslogExporter
from llmpulse.exporters._webhook import WebhookExporter

#: Where llmpulse's own server is, for the `PulseExporter`.
ENV_PULSE_URL = "LLMPULSE_EXPORT_URL"
ENV_PULSE_API_KEY = "LLMPULSE_API_KEY"


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
