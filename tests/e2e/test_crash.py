"""The server killed with SIGKILL (and stopped with SIGTERM) while tasks run.

After a restart on the same data directory and database: no task stays
running forever, instances whose processes are gone are marked lost and
retried under the template's rules, processes of the old server are adopted
(watched again) rather than left unobserved, and no cron firing runs twice.

Scripts wait for a "go" file the test creates, so what happens while the
server is down is decided by the test, not by a race against a sleep.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support import (
    TERMINAL,
    JobyardServer,
    instance_dir,
    processes_using,
    script_template,
    wait_for,
)

WAIT_FOR_GO = 'while [ ! -e "$GO" ]; do sleep 0.05; done\n'
TEMPLATE = "/namespaces/default/templates/{}"


def with_go(name: str, script: str, go: Path, **extra: Any) -> dict[str, Any]:
    env = [{"name": "GO", "value": str(go)}, *extra.pop("env", [])]
    return script_template(name, script, env=env, **extra)


def running_instance(server: JobyardServer, task_id: int) -> dict[str, Any]:
    """Wait until the task's (single) instance runs and its wrapper wrote its pid."""

    def running() -> dict[str, Any] | None:
        for instance in server.instances(task_id):
            pid_file = instance_dir(server, task_id, instance["id"]) / "pid"
            # A spare run directory holds an empty pid file: written means non-empty.
            if instance["status"] == "running" and _written(pid_file):
                return dict(instance)
        return None

    return wait_for(running)


def _written(path: Path) -> bool:
    try:
        return path.read_text().strip() != ""
    except FileNotFoundError:
        return False


def wrapper_pid(server: JobyardServer, task_id: int, instance_id: int) -> int:
    return int((instance_dir(server, task_id, instance_id) / "pid").read_text())


def instance_processes(server: JobyardServer) -> list[psutil.Process]:
    """Processes of our instances (the server itself aside)."""
    server_pid = server.process.pid if server.process else None
    return [proc for proc in processes_using(server.data_dir) if proc.pid != server_pid]


def reasons(server: JobyardServer, task_id: int) -> list[str]:
    return [event["reason"] for event in server.events(task_id=task_id, limit=1000)]


def recovered_message(server: JobyardServer) -> str:
    [event] = server.events(reason="Recovered")
    return str(event["message"])


@pytest.mark.parametrize("shutdown", ["sigkill", "sigterm"])
def test_a_running_instance_is_adopted_after_a_restart(
    jobyard: JobyardServer, tmp_path: Path, shutdown: str
) -> None:
    go = tmp_path / "go"
    jobyard.create_template(with_go("adopt", WAIT_FOR_GO + "echo done", go))
    task = jobyard.run("adopt")
    instance = running_instance(jobyard, task["id"])
    pid = wrapper_pid(jobyard, task["id"], instance["id"])

    if shutdown == "sigkill":
        jobyard.crash()
    else:
        assert jobyard.terminate() in (0, -signal.SIGTERM)  # the exit code: see below
    assert psutil.pid_exists(pid), "the instance died with the server"
    assert psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    jobyard.start()

    assert "InstanceAdopted" in reasons(jobyard, task["id"])
    assert "1 instance(s) still running and adopted" in recovered_message(jobyard)
    assert jobyard.task(task["id"])["status"] == "running"
    go.touch()
    ended = jobyard.wait_task(task["id"])
    assert ended["status"] == "succeeded", ended
    [after] = jobyard.instances(task["id"])
    assert (after["id"], after["status"], after["exit_code"]) == (instance["id"], "succeeded", 0)
    assert "done" in jobyard.log(after["id"])
    assert not instance_processes(jobyard)


def test_sigterm_shutdown_exits_with_code_0(jobyard: JobyardServer) -> None:
    assert jobyard.terminate() == 0


@pytest.mark.parametrize("retries", [1, 0])
def test_an_instance_gone_while_the_server_was_down_is_lost_and_retried(
    jobyard: JobyardServer, retries: int
) -> None:
    script = 'echo "attempt $JOBYARD_ATTEMPT"\n[ "$JOBYARD_ATTEMPT" = 0 ] && sleep 600\nexit 0\n'
    jobyard.create_template(script_template("vanish", script, retries=retries))
    task = jobyard.run("vanish")
    instance = running_instance(jobyard, task["id"])
    pid = wrapper_pid(jobyard, task["id"], instance["id"])

    jobyard.crash()
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: not instance_processes(jobyard))
    jobyard.start()

    ended = jobyard.wait_task(task["id"])
    assert "0 instance(s) still running and adopted" in recovered_message(jobyard)
    assert "1 gone" in recovered_message(jobyard)
    attempts = sorted(jobyard.instances(task["id"]), key=lambda i: i["attempt"])
    lost = attempts[0]
    assert (lost["id"], lost["status"], lost["reason"]) == (instance["id"], "lost", "Lost")
    assert lost["exit_code"] is None
    assert lost["finished_at"] is not None
    assert "InstanceLost" in reasons(jobyard, task["id"])
    if retries:
        assert ended["status"] == "succeeded", ended
        assert [(i["attempt"], i["status"]) for i in attempts] == [(0, "lost"), (1, "succeeded")]
        assert "attempt 1" in jobyard.log(attempts[1]["id"])
    else:
        assert (ended["status"], ended["reason"]) == ("failed", "BackoffLimitExceeded"), ended
        assert len(attempts) == 1
    assert not instance_processes(jobyard)


@pytest.mark.parametrize("code", [0, 7])
def test_an_instance_that_ended_while_the_server_was_down_keeps_its_exit_code(
    jobyard: JobyardServer, tmp_path: Path, code: int
) -> None:
    go = tmp_path / "go"
    # A background child outlives the script: the restart must not leave it behind.
    script = (
        "sleep 600 &\n"
        + WAIT_FOR_GO
        + (
            'echo "attempt $JOBYARD_ATTEMPT ended"\n'
            f'[ "$JOBYARD_ATTEMPT" = 0 ] && exit {code}\n'
            "exit 0\n"
        )
    )
    jobyard.create_template(with_go("ended", script, go, retries=1))
    task = jobyard.run("ended")
    instance = running_instance(jobyard, task["id"])
    pid_file = instance_dir(jobyard, task["id"], instance["id"]) / "pid"

    jobyard.crash()
    go.touch()
    wait_for(lambda: "\nexit " in pid_file.read_text())  # the wrapper recorded its code
    assert instance_processes(jobyard), "the background child should still be there"
    jobyard.start()
    wait_for(lambda: not instance_processes(jobyard), timeout=10)

    ended = jobyard.wait_task(task["id"])
    assert ended["status"] == "succeeded", ended
    assert "1 ended while the server was down" in recovered_message(jobyard)
    attempts = sorted(jobyard.instances(task["id"]), key=lambda i: i["attempt"])
    first = attempts[0]
    assert (first["id"], first["exit_code"]) == (instance["id"], code)
    assert "attempt 0 ended" in jobyard.log(first["id"])
    if code == 0:
        assert first["status"] == "succeeded"
        assert len(attempts) == 1
    else:
        assert first["status"] == "failed"
        assert [(i["attempt"], i["status"], i["exit_code"]) for i in attempts] == [
            (0, "failed", 7),
            (1, "succeeded", 0),
        ]
        assert "Retrying" in reasons(jobyard, task["id"])


def test_a_stop_interrupted_by_a_crash_is_issued_again(jobyard: JobyardServer) -> None:
    # The script survives the first SIGTERM and leaves on the second: only a
    # restart that stops the instance again ends it before the 30 s grace.
    script = (
        "n=0\n"
        "trap 'n=$((n+1)); echo \"got TERM $n\"; [ $n -ge 2 ] && exit 0' TERM\n"
        "echo ready\n"
        "while :; do sleep 0.1; done\n"
    )
    jobyard.create_template(script_template("stubborn", script, termination_grace_period=30))
    task = jobyard.run("stubborn")
    instance = running_instance(jobyard, task["id"])
    wait_for(lambda: "ready" in jobyard.log(instance["id"]))

    jobyard.api("POST", f"/tasks/{task['id']}/stop", expect=200)
    wait_for(lambda: "got TERM 1" in jobyard.log(instance["id"]))
    jobyard.crash()
    assert instance_processes(jobyard), "the instance should outlive the first SIGTERM"
    jobyard.start()

    ended = jobyard.wait_task(task["id"], timeout=20)
    assert (ended["status"], ended["reason"]) == ("stopped", "Stopped"), ended
    [after] = jobyard.instances(task["id"])
    assert (after["status"], after["reason"]) == ("killed", "Stopped"), after
    log = jobyard.log(instance["id"])
    assert "got TERM 2" in log, log
    assert "InstanceAdopted" in reasons(jobyard, task["id"])
    assert not instance_processes(jobyard)


def test_processes_of_a_task_deleted_just_before_a_crash_are_killed_on_restart(
    jobyard: JobyardServer,
) -> None:
    # Ignores SIGTERM, and the 30 s grace outlasts the first server: only the
    # restart can end these processes.
    script = "trap '' TERM\necho ready\nsleep 600 &\nwhile :; do sleep 0.1; done\n"
    jobyard.create_template(script_template("doomed", script, termination_grace_period=30))
    task = jobyard.run("doomed")
    instance = running_instance(jobyard, task["id"])
    wait_for(lambda: "ready" in jobyard.log(instance["id"]))
    task_dir = instance_dir(jobyard, task["id"], instance["id"]).parent

    jobyard.api("DELETE", f"/tasks/{task['id']}", expect=204)
    jobyard.crash()
    assert instance_processes(jobyard), "the instance should outlive the first server"
    jobyard.start()

    wait_for(lambda: not instance_processes(jobyard), timeout=10)
    assert not task_dir.exists()
    jobyard.api("GET", f"/tasks/{task['id']}", expect=404)


def crash_just_after_a_second(server: JobyardServer) -> None:
    """SIGKILL a few milliseconds after a whole second: while a firing is in flight."""
    now = time.time()
    time.sleep(1 - (now % 1) + 0.005)
    server.crash()


def test_no_cron_firing_runs_twice_across_crashes(jobyard: JobyardServer, tmp_path: Path) -> None:
    fired = tmp_path / "fired.txt"
    spec = script_template(
        "ticker",
        'echo "$JOBYARD_SCHEDULED_TIME" >> "$FIRED"\n',
        trigger={"type": "cron", "schedule": "* * * * * *"},
        env=[{"name": "FIRED", "value": str(fired)}],
    )
    jobyard.create_template(spec)
    path = TEMPLATE.format("ticker")

    def tasks() -> list[dict[str, Any]]:
        found = jobyard.api("GET", path + "/tasks", expect=200, params={"limit": 1000})
        return sorted(found, key=lambda task: task["id"])

    for _ in range(2):
        count = len(tasks())
        wait_for(lambda count=count: len(tasks()) >= count + 2)
        crash_just_after_a_second(jobyard)
        time.sleep(0.5)
        jobyard.start()
    count = len(tasks())
    wait_for(lambda: len(tasks()) >= count + 3)
    jobyard.api("POST", path + "/suspend", expect=200)
    final = wait_for(lambda: (t := tasks()) and all(x["status"] in TERMINAL for x in t) and t)

    times = [task["scheduled_time"] for task in final]
    assert len(set(times)) == len(times), f"a firing made two tasks: {Counter(times)}"
    assert all(task["status"] == "succeeded" for task in final), final
    for task in final:
        assert [i["attempt"] for i in jobyard.instances(task["id"])] == [0], task
    lines = fired.read_text().split()
    repeated = {line: n for line, n in Counter(lines).items() if n > 1}
    assert not repeated, f"a firing ran twice: {repeated}"
    as_env = {
        datetime.fromisoformat(t).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for t in times
    }
    assert set(lines) == as_env
    assert not instance_processes(jobyard)
