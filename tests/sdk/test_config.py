"""`TelemetryConfig`: validation naming the field, environment fallbacks naming the variable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from llmpulse.sdk import DEFAULT_REDACT, ENV_VARS, REDACTORS, TelemetryConfig


def test_defaults_are_valid_and_documented() -> None:
    config = TelemetryConfig()
    assert config.enabled is True
    assert config.sample_rate == 1.0
    assert config.sampling == "aggregate"
    assert config.redact == DEFAULT_REDACT
    assert config.flush_interval_s == config.flush_interval_ms / 1000


def test_config_is_frozen_and_tags_cannot_be_mutated() -> None:
    tags = {"env": "prod"}
    config = TelemetryConfig(tags=tags)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.sample_rate = 0.5  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.tags["env"] = "dev"  # type: ignore[index]
    tags["env"] = "dev"  # the caller's dict is copied, not shared
    assert config.tags["env"] == "prod"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"enabled": "yes"}, "enabled"),
        ({"buffer_size": 0}, "buffer_size"),
        ({"buffer_size": 1.5}, "buffer_size"),
        ({"flush_interval_ms": 0}, "flush_interval_ms"),
        ({"max_batch_size": True}, "max_batch_size"),
        ({"sample_rate": 1.5}, "sample_rate"),
        ({"sample_rate": -0.1}, "sample_rate"),
        ({"sample_rate": float("nan")}, "sample_rate"),
        ({"sampling": "keep"}, "sampling"),
        ({"tags": {"env": 1}}, "tags"),
        ({"redact": ("email", "ssn")}, "redact"),
        ({"redact": "email"}, "redact"),
        ({"mask": "not callable"}, "mask"),
        ({"shutdown_timeout_s": -1}, "shutdown_timeout_s"),
        ({"record_inputs": 0}, "record_inputs"),
        ({"user_id_salt": 5}, "user_id_salt"),
    ],
)
def test_bad_values_raise_value_error_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        TelemetryConfig(**kwargs)  # type: ignore[arg-type]


def test_from_env_reads_every_documented_variable() -> None:
    env = {
        "LLMPULSE_ENABLED": "false",
        "LLMPULSE_BUFFER_SIZE": "100",
        "LLMPULSE_FLUSH_INTERVAL_MS": "250",
        "LLMPULSE_MAX_BATCH_SIZE": "10",
        "LLMPULSE_SAMPLE_RATE": "0.25",
        "LLMPULSE_SAMPLING": "discard",
        "LLMPULSE_TAGS": "env=prod, version=1.0",
        "LLMPULSE_RECORD_INPUTS": "0",
        "LLMPULSE_RECORD_OUTPUTS": "no",
        "LLMPULSE_RECORD_METADATA": "off",
        "LLMPULSE_REDACT": "email,phone",
        "LLMPULSE_HASH_USER_IDS": "1",
        "LLMPULSE_USER_ID_SALT": "pepper",
        "LLMPULSE_SHUTDOWN_TIMEOUT_S": "2.5",
    }
    assert set(env) == set(ENV_VARS.values())
    config = TelemetryConfig.from_env(env)
    assert config == TelemetryConfig(
        enabled=False,
        buffer_size=100,
        flush_interval_ms=250,
        max_batch_size=10,
        sample_rate=0.25,
        sampling="discard",
        tags={"env": "prod", "version": "1.0"},
        record_inputs=False,
        record_outputs=False,
        record_metadata=False,
        redact=("email", "phone"),
        hash_user_ids=True,
        user_id_salt="pepper",
        shutdown_timeout_s=2.5,
    )


def test_from_env_keyword_arguments_win_and_empty_variables_are_ignored() -> None:
    env = {"LLMPULSE_SAMPLE_RATE": "0.5", "LLMPULSE_BUFFER_SIZE": "", "LLMPULSE_REDACT": "none"}
    config = TelemetryConfig.from_env(env, sample_rate=0.1)
    assert config.sample_rate == 0.1
    assert config.buffer_size == TelemetryConfig().buffer_size
    assert config.redact == ()
    assert TelemetryConfig.from_env({"LLMPULSE_REDACT": "all"}).redact == REDACTORS


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("LLMPULSE_BUFFER_SIZE", "lots"),
        ("LLMPULSE_BUFFER_SIZE", "-5"),
        ("LLMPULSE_SAMPLE_RATE", "2"),
        ("LLMPULSE_ENABLED", "maybe"),
        ("LLMPULSE_TAGS", "novalue"),
        ("LLMPULSE_REDACT", "email,ssn"),
    ],
)
def test_from_env_errors_name_the_variable(var: str, value: str) -> None:
    with pytest.raises(ValueError, match=var):
        TelemetryConfig.from_env({var: value})


def test_docs_list_every_environment_variable() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "sdk.md").read_text(encoding="utf-8")
    missing = [var for var in ENV_VARS.values() if f"`{var}`" not in doc]
    assert not missing
