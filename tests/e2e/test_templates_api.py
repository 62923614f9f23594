"""End-to-end: namespaces, templates, versions, schedules and validation over the REST API.

Every test drives a real ``jobyard server`` process (SQLite and PostgreSQL) the
way a user would: JSON in, status codes and JSON out.
"""

from __future__ import annotations

import copy
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support import JobyardServer, script_template

TEMPLATES = "/namespaces/{ns}/templates"
TEMPLATE = "/namespaces/{ns}/templates/{name}"

# What a template spec says when the user leaves a field out.
DEFAULTS: dict[str, Any] = {
    "description": "",
    "replicas": 1,
    "resources": {"cpu": 0.5, "memory_mb": 512},
    "instance_type": "default",
    "trigger": None,
    "concurrency_policy": "Allow",
    "timeout": 3600,
    "retries": 3,
    "retry_backoff": 10,
    "termination_grace_period": 10,
    "sharding": {"enabled": False, "shards": []},
    "env": [],
}


def minimal_spec(name: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "deployment": {"type": "script", "script": "true"}}
    spec.update(extra)
    return spec


def names(templates: list[dict[str, Any]]) -> list[str]:
    return [t["name"] for t in templates]


def utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() == timedelta(0), text
    return moment


def field_names(answer: dict[str, Any]) -> list[str]:
    return [detail["field"] for detail in answer.get("details", [])]


# -- namespaces ---------------------------------------------------------------------------


def test_namespaces(server: JobyardServer) -> None:
    namespaces = server.api("GET", "/namespaces", expect=200)
    default = [n for n in namespaces if n["name"] == "default"]
    assert len(default) == 1
    assert default[0]["template_count"] == 0
    # It cannot be deleted: every server relies on it.
    answer = server.api("DELETE", "/namespaces/default", expect=409)
    assert "default" in answer["message"]

    created = server.api(
        "POST", "/namespaces", expect=201, json={"name": "team-a", "description": "the A team"}
    )
    assert created["name"] == "team-a"
    assert created["description"] == "the A team"
    assert created["template_count"] == 0
    assert {"default", "team-a"} <= set(names(server.api("GET", "/namespaces", expect=200)))

    duplicate = server.api("POST", "/namespaces", expect=409, json={"name": "team-a"})
    assert "team-a" in duplicate["message"]

    for bad in ("Team_A", "-lead", "trail-", "", "a" * 64, "has space"):
        answer = server.api("POST", "/namespaces", expect=422, json={"name": bad})
        assert "name" in field_names(answer), (bad, answer)
        assert answer["message"]
    assert "Team_A" not in names(server.api("GET", "/namespaces", expect=200))

    # A namespace holding templates is not deleted from under them.
    server.create_template(minimal_spec("job"), namespace="team-a")
    listed = {n["name"]: n for n in server.api("GET", "/namespaces", expect=200)}
    assert listed["team-a"]["template_count"] == 1
    busy = server.api("DELETE", "/namespaces/team-a", expect=409)
    assert "team-a" in busy["message"]
    server.api("DELETE", TEMPLATE.format(ns="team-a", name="job"), expect=204)

    server.api("DELETE", "/namespaces/team-a", expect=204)
    assert "team-a" not in names(server.api("GET", "/namespaces", expect=200))
    gone = server.api("DELETE", "/namespaces/team-a", expect=404)
    assert "team-a" in gone["message"]


# -- templates: create, read, list ------------------------------------------------------


def test_create_get_and_list_templates(server: JobyardServer) -> None:
    spec = minimal_spec("hello", description="says hello")
    created = server.create_template(spec)
    assert created["id"]
    assert created["namespace"] == "default"
    assert created["name"] == "hello"
    assert created["version"] == 1
    assert created["suspended"] is False
    assert created["schedule"] is None  # no cron trigger, nothing to preview
    assert utc(created["created_at"]) == utc(created["updated_at"])
    expected = {**DEFAULTS, **spec, "description": "says hello"}
    expected["deployment"] = {"type": "script", "script": "true", "shell": "/bin/sh"}
    assert created["spec"] == expected

    fetched = server.api("GET", TEMPLATE.format(ns="default", name="hello"), expect=200)
    assert fetched == created

    # The name is taken in this namespace; the first template stays as it was.
    duplicate = server.api(
        "POST", TEMPLATES.format(ns="default"), expect=409, json=minimal_spec("hello")
    )
    assert duplicate["error"] == "already_exists"
    assert "hello" in duplicate["message"]
    assert server.api("GET", TEMPLATE.format(ns="default", name="hello"), expect=200) == created

    # Listing: per namespace, across namespaces, by name.
    server.api("POST", "/namespaces", expect=201, json={"name": "other"})
    for name in ("etl-daily", "etl-hourly", "report"):
        server.create_template(minimal_spec(name))
    server.create_template(minimal_spec("etl-daily"), namespace="other")

    listed = server.api("GET", TEMPLATES.format(ns="default"), expect=200)
    assert names(listed) == ["etl-daily", "etl-hourly", "hello", "report"]
    assert {t["namespace"] for t in listed} == {"default"}
    assert names(server.api("GET", TEMPLATES.format(ns="other"), expect=200)) == ["etl-daily"]

    found = server.api("GET", TEMPLATES.format(ns="default"), expect=200, params={"q": "etl"})
    assert names(found) == ["etl-daily", "etl-hourly"]
    hourly = server.api("GET", TEMPLATES.format(ns="default"), expect=200, params={"q": "hour"})
    assert names(hourly) == ["etl-hourly"]
    none = server.api("GET", TEMPLATES.format(ns="default"), expect=200, params={"q": "nothing"})
    assert none == []

    page = server.api(
        "GET", TEMPLATES.format(ns="default"), expect=200, params={"limit": 1, "offset": 1}
    )
    assert names(page) == ["etl-hourly"]

    everywhere = server.api("GET", "/templates", expect=200, params={"q": "etl-daily"})
    assert sorted((t["namespace"], t["name"]) for t in everywhere) == [
        ("default", "etl-daily"),
        ("other", "etl-daily"),
    ]


def test_unknown_template_or_namespace_is_404_with_message(server: JobyardServer) -> None:
    missing = TEMPLATE.format(ns="default", name="ghost")
    calls = [
        ("GET", missing, None),
        ("PUT", missing, minimal_spec("ghost")),
        ("DELETE", missing, None),
        ("GET", missing + "/versions", None),
        ("POST", missing + "/rollback", {"version": 1}),
        ("POST", missing + "/suspend", None),
        ("POST", missing + "/resume", None),
        ("POST", missing + "/run", None),
        ("POST", missing + "/stop", None),
        ("GET", missing + "/tasks", None),
    ]
    for method, path, body in calls:
        answer = server.api(method, path, expect=404, json=body)
        assert answer["error"] == "not_found", (method, path, answer)
        assert "ghost" in answer["message"], (method, path, answer)

    for method, path, body in [
        ("GET", TEMPLATES.format(ns="nowhere"), None),
        ("POST", TEMPLATES.format(ns="nowhere"), minimal_spec("x")),
        ("GET", TEMPLATE.format(ns="nowhere", name="x"), None),
        ("DELETE", "/namespaces/nowhere", None),
    ]:
        answer = server.api(method, path, expect=404, json=body)
        assert "nowhere" in answer["message"], (method, path, answer)


# -- validation ---------------------------------------------------------------------------

BAD_SPECS: list[tuple[str, dict[str, Any], str, str]] = [
    # (case, fields to set, a details[].field prefix, a word the message must contain)
    ("replicas 0", {"replicas": 0}, "replicas", "replicas"),
    ("replicas 101", {"replicas": 101}, "replicas", "replicas"),
    ("timeout too long", {"timeout": 604801}, "timeout", "timeout"),
    ("retries 11", {"retries": 11}, "retries", "retries"),
    ("bad cron", {"trigger": {"type": "cron", "schedule": "61 * * * *"}}, "trigger", "minute"),
    ("bad cron words", {"trigger": {"type": "cron", "schedule": "every day"}}, "trigger", "cron"),
    (
        "bad timezone",
        {"trigger": {"type": "cron", "schedule": "0 9 * * *", "timezone": "Mars/Olympus"}},
        "trigger",
        "Mars/Olympus",
    ),
    ("unknown field", {"colour": "blue"}, "colour", "colour"),
    ("bad env name", {"env": [{"name": "1BAD", "value": "x"}]}, "env[0].name", "env"),
    (
        "duplicate env",
        {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
        "env",
        "A",
    ),
    ("reserved env", {"env": [{"name": "JOBYARD_X", "value": "1"}]}, "env", "JOBYARD_"),
    ("bad name", {"name": "Not_A_Name"}, "name", "name"),
    ("negative backoff", {"retry_backoff": -1}, "retry_backoff", "retry_backoff"),
]


def test_invalid_specs_are_422_naming_the_field_and_change_nothing(server: JobyardServer) -> None:
    server.create_template(minimal_spec("keep"))
    before = server.api("GET", TEMPLATES.format(ns="default"), expect=200)
    for case, fields, field, word in BAD_SPECS:
        spec = {**minimal_spec("rejected"), **fields}
        answer = server.api("POST", TEMPLATES.format(ns="default"), expect=422, json=spec)
        assert answer["error"] == "invalid", case
        assert word in answer["message"], (case, answer)
        assert any(f.startswith(field) for f in field_names(answer)), (case, answer)
        # Only the broken field is blamed, not the valid rest of the spec.
        assert all(not f.startswith("deployment") for f in field_names(answer)), (case, answer)
    assert server.api("GET", TEMPLATES.format(ns="default"), expect=200) == before
    server.api("GET", TEMPLATE.format(ns="default", name="rejected"), expect=404)

    # The same specs as an edit of an existing template: no new version.
    spec = minimal_spec("stable", env=[{"name": "A", "value": "1"}])
    created = server.create_template(spec)
    path = TEMPLATE.format(ns="default", name="stable")
    for _, fields, field, word in BAD_SPECS:
        if "name" in fields:
            continue
        answer = server.api("PUT", path, expect=422, json={**spec, **fields})
        assert word in answer["message"], answer
        assert any(f.startswith(field) for f in field_names(answer)), answer

    renamed = server.api("PUT", path, expect=422, json={**spec, "name": "other"})
    assert field_names(renamed) == ["name"]
    assert "other" in renamed["message"] and "stable" in renamed["message"]

    assert server.api("GET", path, expect=200) == created
    versions = server.api("GET", path + "/versions", expect=200)
    assert [v["version"] for v in versions] == [1]
    server.api("GET", TEMPLATE.format(ns="default", name="other"), expect=404)


def test_validation_field_paths_match_the_json(server: JobyardServer) -> None:
    """Fields inside the trigger union are named by their JSON path, without the union tag."""
    cases = [
        (
            {"trigger": {"type": "cron", "schedule": "* * * * *", "starting_deadline": 0}},
            "trigger.starting_deadline",
        ),
        ({"trigger": {"type": "http", "methods": ["FETCH"]}}, "trigger.methods[0]"),
    ]
    for fields, field in cases:
        spec = {**minimal_spec("x"), **fields}
        answer = server.api("POST", TEMPLATES.format(ns="default"), expect=422, json=spec)
        assert field_names(answer) == [field], answer


# -- versions and rollback ------------------------------------------------------------------


def test_versions_and_rollback(server: JobyardServer) -> None:
    path = TEMPLATE.format(ns="default", name="evolving")
    v1 = server.create_template(script_template("evolving", "echo one"))
    v2 = server.api("PUT", path, expect=200, json=script_template("evolving", "echo two"))
    assert v2["version"] == 2
    assert v2["id"] == v1["id"]
    assert v2["spec"]["deployment"]["script"] == "echo two"
    assert utc(v2["updated_at"]) >= utc(v1["updated_at"])
    assert v2["created_at"] == v1["created_at"]
    v3 = server.api(
        "PUT", path, expect=200, json=script_template("evolving", "echo three", replicas=2)
    )
    assert v3["version"] == 3
    assert server.api("GET", path, expect=200)["spec"] == v3["spec"]

    versions = server.api("GET", path + "/versions", expect=200)
    assert [v["version"] for v in versions] == [3, 2, 1]
    assert [v["spec"] for v in versions] == [v3["spec"], v2["spec"], v1["spec"]]
    times = [utc(v["created_at"]) for v in versions]
    assert times == sorted(times, reverse=True)

    # Rollback: a new version whose spec equals the old one's.
    path = TEMPLATE.format(ns="default", name="rolling")
    v1 = server.create_template(script_template("rolling", "echo one", retries=1))
    server.api("PUT", path, expect=200, json=script_template("rolling", "echo two", replicas=3))

    rolled = server.api("POST", path + "/rollback", expect=200, json={"version": 1})
    assert rolled["version"] == 3
    assert rolled["spec"] == v1["spec"]
    versions = server.api("GET", path + "/versions", expect=200)
    assert [v["version"] for v in versions] == [3, 2, 1]
    assert versions[0]["spec"] == versions[2]["spec"] == v1["spec"]
    assert versions[1]["spec"]["replicas"] == 3

    missing = server.api("POST", path + "/rollback", expect=404, json={"version": 7})
    assert "7" in missing["message"]
    server.api("POST", path + "/rollback", expect=422, json={"version": 0})
    server.api("POST", path + "/rollback", expect=422, json={})
    assert server.api("GET", path, expect=200)["version"] == 3

    reasons = [e["reason"] for e in server.events(template="rolling")]
    assert reasons.count("RolledBack") == 1
    assert reasons.count("Updated") == 1
    assert reasons.count("Created") == 1


# -- cron schedule preview ------------------------------------------------------------------


def shanghai_nine(name: str) -> dict[str, Any]:
    trigger = {"type": "cron", "schedule": "0 9 * * *", "timezone": "Asia/Shanghai"}
    return script_template(name, "true", trigger=trigger)


def assert_daily_at_one_utc(schedule: dict[str, Any]) -> None:
    times = [utc(t) for t in schedule["next_fire_times"]]
    assert len(times) == 5
    assert times[0] > datetime.now(UTC)
    assert times[0] - datetime.now(UTC) <= timedelta(days=1)
    for earlier, later in itertools.pairwise(times):
        assert later - earlier == timedelta(days=1)
    # 09:00 in Shanghai (UTC+8, no DST) is 01:00 UTC.
    assert all((t.hour, t.minute, t.second) == (1, 0, 0) for t in times)


def test_cron_schedule_preview_suspend_and_resume(server: JobyardServer) -> None:
    created = server.create_template(shanghai_nine("morning"))
    schedule = created["schedule"]
    assert schedule["timezone"] == "Asia/Shanghai"
    assert schedule["description"]
    assert "9" in schedule["description"]
    assert_daily_at_one_utc(schedule)
    fetched = server.api("GET", TEMPLATE.format(ns="default", name="morning"), expect=200)
    assert fetched["schedule"] == schedule

    listed = server.api("GET", TEMPLATES.format(ns="default"), expect=200)
    assert listed[0]["schedule"]["next_fire_times"] == schedule["next_fire_times"]

    every_minute = copy.deepcopy(shanghai_nine("morning"))
    every_minute["trigger"]["schedule"] = "*/15 * * * *"
    changed = server.api(
        "PUT", TEMPLATE.format(ns="default", name="morning"), expect=200, json=every_minute
    )
    times = [utc(t) for t in changed["schedule"]["next_fire_times"]]
    assert len(times) == 5
    assert all(t.minute % 15 == 0 for t in times)
    assert times == sorted(times) and len(set(times)) == 5

    # Suspend hides the next fire times; resume brings them back.
    server.create_template(shanghai_nine("pausable"))
    path = TEMPLATE.format(ns="default", name="pausable")

    suspended = server.api("POST", path + "/suspend", expect=200)
    assert suspended["suspended"] is True
    assert suspended["schedule"]["next_fire_times"] == []
    assert suspended["schedule"]["description"]
    assert server.api("GET", path, expect=200)["schedule"]["next_fire_times"] == []
    assert suspended["version"] == 1  # suspending is not an edit of the spec

    resumed = server.api("POST", path + "/resume", expect=200)
    assert resumed["suspended"] is False
    assert_daily_at_one_utc(resumed["schedule"])
    assert server.api("GET", path, expect=200)["schedule"] == resumed["schedule"]

    reasons = [e["reason"] for e in server.events(template="pausable")]
    assert reasons[:2] == ["Resumed", "Suspended"]

    # Suspending pauses the schedule only: a manual run still works.
    server.api("POST", path + "/suspend", expect=200)
    task = server.run("pausable")
    assert server.wait_task(task["id"])["status"] == "succeeded"


# -- delete, docs -------------------------------------------------------------------------------


def test_delete_template(server: JobyardServer) -> None:
    server.create_template(minimal_spec("doomed"))
    server.create_template(minimal_spec("stays"))
    path = TEMPLATE.format(ns="default", name="doomed")
    response = server.client.delete("/api/v1" + path)
    assert response.status_code == 204
    assert response.content == b""
    assert "doomed" in server.api("GET", path, expect=404)["message"]
    server.api("DELETE", path, expect=404)
    server.api("GET", path + "/versions", expect=404)
    assert names(server.api("GET", TEMPLATES.format(ns="default"), expect=200)) == ["stays"]

    # The name is free again, and starts over at version 1.
    again = server.create_template(minimal_spec("doomed"))
    assert again["version"] == 1


def test_openapi_and_docs_are_served(server: JobyardServer) -> None:
    docs = server.client.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "openapi.json" in docs.text

    schema = server.client.get("/openapi.json")
    assert schema.status_code == 200
    document = schema.json()
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "jobyard"
    for path in (
        "/api/v1/namespaces",
        "/api/v1/namespaces/{namespace}/templates",
        "/api/v1/namespaces/{namespace}/templates/{name}/run",
        "/api/v1/tasks/{task_id}",
        "/api/v1/instances/{instance_id}/logs",
        "/api/v1/events",
    ):
        assert path in document["paths"], path
