"""`llmpulse.exporters.from_env()` builds exactly the exporters the environment describes."""

from __future__ import annotations

import pytest

from llmpulse.exporters import (
    HeliconeExporter,
    KafkaExporter,
    LangfuseExporter,
    LogstashExporter,
    OTLPExporter,
    PulseExporter,
    SyslogExporter,
    WebhookExporter,
    from_env,
)


def test_nothing_set_means_no_exporters() -> None:
    assert from_env({}) == []


def test_each_variable_set_builds_its_exporter() -> None:
    exporters = from_env(
        {
            "LLMPULSE_EXPORT_URL": "http://127.0.0.1:8080",
            "WEBHOOK_URL": "http://127.0.0.1:9/hook",
            "WEBHOOK_AUTH_TOKEN": "t",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
            "HELICONE_API_KEY": "sk-helicone-test",
            "LOGSTASH_HOST": "127.0.0.1",
            "LOGSTASH_PORT": "5044",
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
            "LANGFUSE_PUBLIC_KEY": "pk-lf-test",
            "LANGFUSE_SECRET_KEY": "sk-lf-test",
            "SYSLOG_HOST": "127.0.0.1",
        }
    )
    assert [type(e) for e in exporters] == [
        PulseExporter,
        WebhookExporter,
        OTLPExporter,
        HeliconeExporter,
        LogstashExporter,
        KafkaExporter,
        LangfuseExporter,
        SyslogExporter,
    ]


def test_a_malformed_value_names_the_variable() -> None:
    with pytest.raises(ValueError, match="WEBHOOK_URL"):
        from_env({"WEBHOOK_URL": "ftp://nope"})
