"""Exporters: where the SDK's telemetry goes, one module per destination behind one protocol.

Each exporter implements `llmpulse.sdk._exporter.Exporter` (`name`, `export(items)`,
`force_flush(timeout)`, `shutdown(timeout)`) and runs on its own `ExportPipeline` worker, which
batches, retries with backoff and jitter, honours `Retry-After` and counts every drop; exporters only
say whether a failure is retryable. They never run on the application's thread.

- `ConsoleExporter`: JSON lines (or short human lines) on stderr or any text stream.
- `FileExporter`: JSON lines in a file, with size-based rotation.
- `PulseExporter`: batches to the llmpulse server's `POST /v1/events` (stdlib HTTP).
- `WebhookExporter`: batches as a JSON array or NDJSON to any URL.
- `OTLPExporter`: OpenTelemetry spans following the GenAI conventions (OTLP/HTTP protobuf or JSON,
  or OTLP/gRPC).
- `HeliconeExporter`: Helicone's async logging API; `helicone_headers` for its proxy mode.
- `LangfuseExporter`: traces, generations and spans through Langfuse's batch ingestion API.
- `KafkaExporter`: one message per item on a Kafka topic (confluent-kafka, the ``llmpulse[kafka]`` extra).
- `LogstashExporter`: JSON lines over TCP or TLS, for Logstash's `json_lines` codec.
- `PrometheusExporter`: counters and histograms for a Prometheus scrape.
- `SyslogExporter`: RFC 5424 syslog messages over UDP, TCP or TLS (rsyslog, syslog-ng, SIEMs).
- `from_env()`: the set the environment describes.

Errors, as the delivery core understands them: `RetryableError` (transient, retried), `ExportError`
and any other exception (permanent for that batch); `ExportResult` reports a partial success.
"""

from __future__ import annotations

from llmpulse.exporters._console import ConsoleExporter
from llmpulse.exporters._env import from_env
from llmpulse.exporters._file import FileExporter
from llmpulse.exporters._helicone import HeliconeExporter, helicone_headers
from llmpulse.exporters._kafka import KafkaExporter
from llmpulse.exporters._langfuse import LangfuseExporter
from llmpulse.exporters._logstash import LogstashExporter
from llmpulse.exporters._otlp import OTLPExporter
from llmpulse.exporters._prometheus import PrometheusExporter
from llmpulse.exporters._pulse import PulseExporter
from llmpulse.exporters._syslog import SyslogExporter
from llmpulse.exporters._webhook import WebhookExporter
from llmpulse.sdk._exporter import Exporter, ExportError, ExportResult, RetryableError, as_exporter

__all__ = [
    "ConsoleExporter",
    "ExportError",
    "ExportResult",
    "Exporter",
    "FileExporter",
    "HeliconeExporter",
    "KafkaExporter",
    "LangfuseExporter",
    "LogstashExporter",
    "OTLPExporter",
    "PrometheusExporter",
    "PulseExporter",
    "RetryableError",
    "SyslogExporter",
    "WebhookExporter",
    "as_exporter",
    "from_env",
    "helicone_headers",
]
