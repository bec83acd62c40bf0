"""The deployment files: every llmpulse command in the compose file is one the CLI accepts, with the
environment the file gives it (no Docker engine runs here, so the stack itself is not started)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from llmpulse.cli import build_parser
from llmpulse.cli._serve import settings_from_args
from llmpulse.pipeline._kafka_log import parse_brokers

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _llmpulse_services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return {name: s for name, s in compose["services"].items() if "build" in s}


def test_the_compose_file_runs_ingest_nodes_and_workers_on_kafka_and_postgres() -> None:
    services = _llmpulse_services()
    commands = {name: s["command"][0] for name, s in services.items()}
    assert sorted(commands.values()) == ["process", "serve", "serve"]
    build = next(iter(services.values()))["build"]
    # the context is relative to the compose file, the Dockerfile to the context
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"


@pytest.mark.parametrize("name", sorted(_llmpulse_services()))
def test_each_service_command_parses_with_its_environment(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    service = _llmpulse_services()[name]
    for key, value in service["environment"].items():
        monkeypatch.setenv(key, str(value))
    args = build_parser().parse_args(service["command"])
    assert parse_brokers(service["environment"]["KAFKA_BROKERS"]) == "redpanda:9092"
    if service["command"][0] == "serve":
        settings = settings_from_args(args)
        assert settings.broker_url == "redpanda:9092"
        assert settings.db_url.startswith("postgresql://")
        assert settings.run_processor is False  # workers aggregate; serve --no-processor never does
    else:
        assert args.broker is None  # taken from KAFKA_BROKERS, as the file sets it
