"""Capacity and instance types on a real server with a small configured node.

The node has 2 CPU and 1024 MiB. Instances hold their requested CPU while they
run; each script waits for a gate file the test creates, so the test decides
when room is freed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import JobyardServer, script_template, start_server, stop_server, wait_for

WAIT_FOR_GATE = 'while [ ! -e "$GATE" ]; do sleep 0.05; done'


@pytest.fixture
def node(database_url: str, tmp_path: Path) -> Iterator[JobyardServer]:
    options = ["--capacity-cpu", "2", "--capacity-memory-mb", "1024"]
    (tmp_path / "data").mkdir()
    server = start_server(tmp_path / "data", database_url, extra_args=options)
    try:
        yield server
    finally:
        stop_server(server)


def gated(name: str, gate: Path, cpu: float, **extra: Any) -> dict[str, Any]:
    return script_template(
        name,
        WAIT_FOR_GATE,
        resources={"cpu": cpu, "memory_mb": 128},
        env=[{"name": "GATE", "value": str(gate)}],
        termination_grace_period=1,
        retry_backoff=0,
        **extra,
    )


def attempts(server: JobyardServer, task_id: int) -> list[tuple[int, int, str, str]]:
    return [(i["index"], i["attempt"], i["status"], i["run_as"]) for i in server.instances(task_id)]


def statuses(server: JobyardServer, task_id: int) -> list[str]:
    return sorted(i["status"] for i in server.instances(task_id))


def reasons(server: JobyardServer, task_id: int) -> list[str]:
    return [e["reason"] for e in server.events(task_id=task_id)]


def two_running(
    server: JobyardServer, spec: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run ``spec`` (gated instances of 0.75 CPU on 2) until two of its instances run:
    the task, and its instances left pending."""
    server.create_template(spec)
    task = server.run(spec["name"])
    wait_for(lambda: statuses(server, task["id"]).count("running") == 2 or None)
    return task, [i for i in server.instances(task["id"]) if i["status"] == "pending"]


def test_default_instances_wait_for_room_and_say_what_is_short(
    node: JobyardServer, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    task, [waiting] = two_running(node, gated("wide", gate, cpu=0.75, replicas=3))
    assert waiting["waiting_reason"] == "InsufficientCapacity"
    [event] = [e for e in node.events(task_id=task["id"]) if e["reason"] == "InsufficientCapacity"]
    assert event["message"].endswith(
        "waits: a default instance needs 0.75 CPU, 128 MiB; 0.5 CPU, 768 MiB free of 2 CPU, "
        "1024 MiB"
    )
    info = node.api("GET", "/info", expect=200)["instances"]
    assert info["capacity"] == {"cpu": 2.0, "memory_mb": 1024}
    assert info["held"]["default"] == {"cpu": 1.5, "memory_mb": 256, "instances": 2}

    gate.touch()  # the first two end, and the third gets its turn
    assert node.wait_task(task["id"])["status"] == "succeeded"
    assert [i["waiting_reason"] for i in node.instances(task["id"])] == [None] * 3


def test_instances_waiting_together_each_get_their_reason_and_one_event(
    node: JobyardServer, tmp_path: Path
) -> None:
    # Written together, in one statement each for the reasons and the events.
    gate = tmp_path / "gate"
    task, waiting = two_running(node, gated("wider", gate, cpu=0.75, replicas=5))
    assert len(waiting) == 3
    assert {i["waiting_reason"] for i in waiting} == {"InsufficientCapacity"}
    events = [e for e in node.events(task_id=task["id"]) if e["reason"] == "InsufficientCapacity"]
    assert sorted(e["source_name"].rsplit("-", 1)[1] for e in events) == sorted(
        str(i["index"]) for i in waiting
    )
    assert all(e["severity"] == "warning" for e in events)

    gate.touch()
    assert node.wait_task(task["id"])["status"] == "succeeded"
    assert [i["waiting_reason"] for i in node.instances(task["id"])] == [None] * 5
    assert reasons(node, task["id"]).count("InsufficientCapacity") == 3


def test_a_request_larger_than_the_node_waits_with_a_clear_message(
    node: JobyardServer, tmp_path: Path
) -> None:
    node.create_template(gated("huge", tmp_path / "gate", cpu=4))
    task = node.run("huge")
    message = wait_for(
        lambda: next(
            (e["message"] for e in node.events(task_id=task["id"])
             if e["reason"] == "InsufficientCapacity"),
            None,
        )
    )  # fmt: skip
    assert "more than the node's whole capacity of 2 CPU, 1024 MiB" in message
    node.api("POST", f"/tasks/{task['id']}/stop", expect=200)
    assert node.wait_task(task["id"])["status"] == "stopped"


def test_default_work_preempts_best_effort_which_comes_back_without_using_retries(
    node: JobyardServer, tmp_path: Path
) -> None:
    spare, urgent = tmp_path / "spare", tmp_path / "urgent"
    node.create_template(
        gated("spare", spare, cpu=1, replicas=2, instance_type="best-effort", retries=0)
    )
    node.create_template(gated("urgent", urgent, cpu=1))
    background = node.run("spare")
    wait_for(lambda: statuses(node, background["id"]) == ["running", "running"] or None)
    assert {i["run_as"] for i in node.instances(background["id"])} == {"best-effort"}

    task = node.run("urgent")
    wait_for(lambda: statuses(node, task["id"]) == ["running"] or None)
    # The newest best-effort instance made room. It comes back as a new attempt
    # that waits, best-effort, for room: with retries=0, so no retry was used.
    history = wait_for(
        lambda: (
            (h := attempts(node, background["id"]))
            and ("preempted" in [s for _, _, s, _ in h] and len(h) == 3)
            and h
        )
    )
    assert sorted(history) == [
        (0, 0, "running", "best-effort"),
        (1, 0, "preempted", "best-effort"),
        (1, 1, "pending", "best-effort"),
    ]
    assert "Preempted" in reasons(node, background["id"])
    assert node.task(background["id"])["status"] == "running"

    urgent.touch()
    assert node.wait_task(task["id"])["status"] == "succeeded"
    wait_for(lambda: statuses(node, background["id"]).count("running") == 2 or None)
    spare.touch()
    assert node.wait_task(background["id"])["status"] == "succeeded"


def test_best_effort_first_falls_back_to_default_when_preempted(
    node: JobyardServer, tmp_path: Path
) -> None:
    batch, flexible, urgent = tmp_path / "batch", tmp_path / "flexible", tmp_path / "urgent"
    node.create_template(gated("batch", batch, cpu=1, instance_type="best-effort"))
    node.create_template(gated("flexible", flexible, cpu=1, instance_type="best-effort-first"))
    node.create_template(gated("urgent", urgent, cpu=1))
    first = node.run("batch")
    wait_for(lambda: statuses(node, first["id"]) == ["running"] or None)
    second = node.run("flexible")
    wait_for(lambda: statuses(node, second["id"]) == ["running"] or None)
    assert attempts(node, second["id"]) == [(0, 0, "running", "best-effort")]

    # A default instance needs room: the newest best-effort instance (flexible)
    # goes, comes back as a default instance, and that one preempts batch.
    task = node.run("urgent")
    wait_for(lambda: statuses(node, task["id"]) == ["running"] or None)
    wait_for(lambda: attempts(node, second["id"])[-1][2] == "running" or None)
    assert attempts(node, second["id"]) == [
        (0, 0, "preempted", "best-effort"),
        (0, 1, "running", "default"),
    ]
    assert "FellBackToDefault" in reasons(node, second["id"])
    wait_for(
        lambda: [a[2] for a in attempts(node, first["id"])] == ["preempted", "pending"] or None
    )
    for gate in (urgent, flexible, batch):
        gate.touch()
    for each in (task, second, first):
        assert node.wait_task(each["id"])["status"] == "succeeded"


def test_stopping_a_task_whose_preempted_attempt_waits_ends_it_cleanly(
    node: JobyardServer, tmp_path: Path
) -> None:
    urgent = tmp_path / "urgent"
    node.create_template(gated("spare", tmp_path / "spare", cpu=2, instance_type="best-effort"))
    node.create_template(gated("urgent", urgent, cpu=2))
    background = node.run("spare")
    wait_for(lambda: statuses(node, background["id"]) == ["running"] or None)
    task = node.run("urgent")
    wait_for(lambda: statuses(node, task["id"]) == ["running"] or None)
    wait_for(lambda: statuses(node, background["id"]) == ["pending", "preempted"] or None)

    node.api("POST", f"/tasks/{background['id']}/stop", expect=200)
    done = node.wait_task(background["id"])
    assert (done["status"], done["reason"]) == ("stopped", "Stopped")
    assert attempts(node, background["id"]) == [
        (0, 0, "preempted", "best-effort"),
        (0, 1, "killed", "best-effort"),  # never started
    ]
    urgent.touch()
    assert node.wait_task(task["id"])["status"] == "succeeded"
