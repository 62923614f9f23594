"""The template spec's rules, as a user meets them."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from jobyard.spec import RunOverrides, TemplateSpec, parse_spec


def spec(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "nightly", "deployment": {"type": "script", "script": "true"}}
    base.update(extra)
    return base


def test_defaults_match_the_product() -> None:
    parsed = parse_spec(spec())
    assert parsed.replicas == 1
    assert parsed.timeout == 3600
    assert parsed.retries == 3
    assert parsed.retry_backoff == 10
    assert parsed.concurrency_policy == "Allow"
    assert parsed.instance_type == "default"
    assert parsed.deployment.shell == "/bin/sh"
    assert parsed.trigger is None


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"name": "Bad_Name"}, "name"),
        ({"replicas": 0}, "replicas"),
        ({"replicas": 101}, "replicas"),
        ({"timeout": 604801}, "timeout"),
        ({"timeout": -1}, "timeout"),
        ({"retries": 11}, "retries"),
        ({"concurrency_policy": "Sometimes"}, "concurrency_policy"),
        ({"instance_type": "spot"}, "instance_type"),
        ({"resources": {"cpu": 0, "memory_mb": 512}}, "resources"),
        ({"env": [{"name": "1BAD", "value": "x"}]}, "env"),
        ({"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "env"),
        ({"env": [{"name": "JOBYARD_TASK_ID", "value": "1"}]}, "env"),
        ({"sharding": {"enabled": True, "shards": []}}, "sharding"),
        ({"sharding": {"enabled": True, "shards": ["a", "a"]}}, "sharding"),
        ({"sharding": {"enabled": True, "shards": ["a,b"]}}, "sharding"),
        ({"trigger": {"type": "cron", "schedule": "61 * * * *"}}, "trigger"),
        (
            {"trigger": {"type": "cron", "schedule": "* * * * *", "timezone": "Mars/Base"}},
            "trigger",
        ),
        ({"trigger": {"type": "carrier-pigeon"}}, "trigger"),
        (
            {"trigger": {"type": "http", "security": {"mode": "ip", "ips": ["10.0.0.300"]}}},
            "trigger",
        ),
        ({"trigger": {"type": "http", "methods": ["BREW"]}}, "trigger"),
        ({"deployment": {"type": "script", "script": ""}}, "deployment"),
        ({"deployment": {"type": "script", "script": "x", "shell": "bash"}}, "deployment"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_input_names_the_field(extra: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_spec(spec(**extra))
    locations = [".".join(str(p) for p in error["loc"]) for error in info.value.errors()]
    assert any(loc.startswith(needle) for loc in locations), locations


def test_cron_and_http_triggers_are_stored() -> None:
    cron = parse_spec(
        spec(trigger={"type": "cron", "schedule": "0 9 * * MON-FRI", "timezone": "Asia/Shanghai"})
    )
    assert cron.trigger is not None and cron.trigger.type == "cron"
    http = parse_spec(
        spec(
            trigger={
                "type": "http",
                "methods": ["GET", "POST"],
                "security": {"mode": "ip", "ips": ["10.0.0.0/8", "::1"]},
            }
        )
    )
    assert http.trigger is not None and http.trigger.type == "http"


def test_spec_round_trips_through_json() -> None:
    original = parse_spec(
        spec(env=[{"name": "A", "value": "1"}], sharding={"enabled": True, "shards": ["x", "y"]})
    )
    assert TemplateSpec.model_validate_json(original.model_dump_json()) == original


def test_run_overrides_are_checked() -> None:
    assert RunOverrides.model_validate({"replicas": 3}).replicas == 3
    with pytest.raises(ValidationError):
        RunOverrides.model_validate({"replicas": 0})
    with pytest.raises(ValidationError):
        RunOverrides.model_validate({"envs": [{"name": "bad-name", "value": "x"}]})
