"""End-to-end: running templates as tasks on real processes, over the REST API.

Every test drives a real ``jobyard server`` process (SQLite and PostgreSQL):
runs, overrides, the instance environment, sharding, retries, timeouts, stops,
concurrency policies, logs, task listing, deletion and events.
"""

from __future__ import annotations

import signal
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.support import (
    JobyardServer,
    ignored_login_signals,
    script_template,
    start_server,
    stop_server,
    wait_for,
)

TEMPLATE = "/namespaces/default/templates/{name}"

# -- helpers --------------------------------------------------------------------------------


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text)


def parse_env(text: str) -> dict[str, str]:
    """``env`` output (one NAME=value a line) as a dict."""
    env = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.isidentifier():
            env[name] = value
    return env


def marked(name: str, script: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    """A template whose processes carry a unique E2E_MARK, to find them with psutil."""
    mark = uuid.uuid4().hex
    env = [{"name": "E2E_MARK", "value": mark}, *extra.pop("env", [])]
    return mark, script_template(name, script, env=env, **extra)


def processes_marked(mark: str, task_id: int | None = None) -> list[psutil.Process]:
    """Live processes (zombies aside) started by an instance with this mark."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            env = proc.environ()
        except psutil.Error:
            continue
        if env.get("E2E_MARK") != mark:
            continue
        if task_id is None or env.get("JOBYARD_TASK_ID") == str(task_id):
            found.append(proc)
    return found


def wait_instances_running(server: JobyardServer, task_id: int, count: int = 1) -> list[Any]:
    """Wait until ``count`` instances of the task run (their processes are spawned)."""

    def running() -> list[Any] | None:
        live = [i for i in server.instances(task_id) if i["status"] == "running"]
        return live if len(live) >= count else None

    return wait_for(running, timeout=30)


def logs_of(server: JobyardServer, task_id: int) -> list[str]:
    """The log of each instance's latest attempt, by index."""
    latest: dict[int, Any] = {}
    for instance in server.instances(task_id):
        latest[instance["index"]] = instance
    return [server.log(latest[index]["id"]) for index in sorted(latest)]


def task_dir(server: JobyardServer, task_id: int) -> Path:
    return server.data_dir / "tasks" / str(task_id)


def run_all_at_once(server: JobyardServer, name: str, count: int) -> list[httpx.Response]:
    """``count`` run requests released together, each on its own connection."""
    barrier = threading.Barrier(count)

    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            barrier.wait()
            return client.post(f"/api/v1/namespaces/default/templates/{name}/run")

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(post, range(count)))


# -- running, overrides and the instance environment ------------------------------------------


def test_run_with_overrides_and_bad_bodies(server: JobyardServer) -> None:
    script = 'echo "greeting=${GREETING-unset} extra=${EXTRA-unset} count=$JOBYARD_INSTANCE_COUNT"'
    server.create_template(
        script_template("greeter", script, env=[{"name": "GREETING", "value": "hello"}])
    )
    envs = [{"name": "GREETING", "value": "bonjour"}, {"name": "EXTRA", "value": "x y"}]
    overrides = {"envs": envs, "replicas": 2}
    task = server.run("greeter", overrides)
    assert task["trigger"] == "manual"
    assert task["status"] in ("pending", "running")
    assert task["instance_count"] == 2
    assert task["overrides"] == overrides
    assert server.wait_task(task["id"])["status"] == "succeeded"
    assert logs_of(server, task["id"]) == ["greeting=bonjour extra=x y count=2\n"] * 2

    plain = server.run("greeter")
    assert plain["overrides"] == {}
    assert plain["instance_count"] == 1
    assert server.wait_task(plain["id"])["status"] == "succeeded"
    assert logs_of(server, plain["id"]) == ["greeting=hello extra=unset count=1\n"]
    # The template itself is untouched by a run's overrides.
    template = server.api("GET", TEMPLATE.format(name="greeter"), expect=200)
    assert template["version"] == 1
    assert template["spec"]["replicas"] == 1

    # A body that is not JSON, or not a valid one, is refused.
    server.create_template(script_template("strict", "true"))
    path = TEMPLATE.format(name="strict") + "/run"
    headers = {"content-type": "application/json"}

    not_json = server.api("POST", path, expect=422, content=b"{not json", headers=headers)
    assert not_json["error"] == "invalid"
    assert "JSON" in not_json["message"]

    cases: list[tuple[Any, str]] = [
        ([1, 2], "body"),
        ({"envs": "A=1"}, "envs"),
        ({"envs": [{"name": "1A", "value": "x"}]}, "envs[0].name"),
        ({"envs": [{"name": "A"}, {"name": "A"}]}, "envs"),
        ({"envs": [{"name": "JOBYARD_TASK_ID", "value": "1"}]}, "envs"),
        ({"replicas": 0}, "replicas"),
        ({"replicas": 101}, "replicas"),
        ({"replicas": "many"}, "replicas"),
        ({"timeout": 5}, "timeout"),
    ]
    for body, field in cases:
        answer = server.api("POST", path, expect=422, json=body)
        assert answer["message"], body
        assert field in [d["field"] for d in answer["details"]], (body, answer)
    assert server.api("GET", TEMPLATE.format(name="strict") + "/tasks", expect=200) == []


@pytest.fixture
def server_environment(monkeypatch: pytest.MonkeyPatch) -> str:
    """A variable in the environment the server is started with (requested before it)."""
    canary = f"server-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("E2E_SERVER_CANARY", canary)
    return canary


def test_instance_environment_and_working_directory(
    server_environment: str, server: JobyardServer
) -> None:
    assert server.process is not None
    server_env = psutil.Process(server.process.pid).environ()
    assert server_env.get("E2E_SERVER_CANARY") == server_environment  # the premise holds

    script = """
    env
    echo "FILES=$(ls -A | tr '\\n' ' ')"
    echo data > left-behind
    test -d "$HOME" && echo HOME_IS_A_DIR=yes
    """
    server.create_template(script_template("env-dump", script, replicas=2))
    task = server.run("env-dump")
    assert server.wait_task(task["id"])["status"] == "succeeded"
    instances = server.instances(task["id"])
    assert [i["index"] for i in instances] == [0, 1]
    seen = []
    for instance in instances:
        env = parse_env(server.log(instance["id"]))
        seen.append(env)
        assert env["JOBYARD_NAMESPACE"] == "default"
        assert env["JOBYARD_TEMPLATE"] == "env-dump"
        assert env["JOBYARD_TEMPLATE_VERSION"] == "1"
        assert env["JOBYARD_TASK_ID"] == str(task["id"])
        assert env["JOBYARD_INSTANCE_INDEX"] == str(instance["index"])
        assert env["JOBYARD_INSTANCE_COUNT"] == "2"
        assert env["JOBYARD_ATTEMPT"] == "0"
        assert env["JOBYARD_TRIGGER"] == "manual"
        assert "JOBYARD_SHARDS" not in env  # sharding is off
        assert "JOBYARD_SCHEDULED_TIME" not in env  # not a cron task
        # A login-like environment of its own, nothing of the server's.
        assert env["PATH"]
        assert env["HOME_IS_A_DIR"] == "yes"
        for leaked in ("E2E_SERVER_CANARY", "PYTEST_CURRENT_TEST", "VIRTUAL_ENV", "OLDPWD"):
            assert leaked not in env, leaked
        assert server_environment not in server.log(instance["id"])
        assert env["FILES"] == ""  # an empty working directory
    assert seen[0]["PWD"] != seen[1]["PWD"]

    # A later task starts in a fresh directory too: nothing left behind by the first.
    later = server.run("env-dump")
    assert server.wait_task(later["id"])["status"] == "succeeded"
    for log in logs_of(server, later["id"]):
        env = parse_env(log)
        assert env["FILES"] == ""
        assert env["PWD"] not in (seen[0]["PWD"], seen[1]["PWD"])
    # A working directory is emptied when its instance ends (the log stays); the
    # empty directory goes with the task's files.
    assert not any(Path(env["PWD"]).exists() and any(Path(env["PWD"]).iterdir()) for env in seen)


def test_sharding_hands_each_shard_to_one_instance(server: JobyardServer) -> None:
    script = 'echo "index=$JOBYARD_INSTANCE_INDEX shards=$JOBYARD_SHARDS"'
    server.create_template(
        script_template(
            "sharded",
            script,
            replicas=3,
            sharding={"enabled": True, "shards": ["a", "b", "c", "d", "e", "f", "g"]},
        )
    )
    server.create_template(
        script_template(
            "few-shards", script, replicas=1, sharding={"enabled": True, "shards": ["x", "y"]}
        )
    )
    seven = server.run("sharded")
    # More replicas than shards: only as many instances as there are shards.
    two = server.run("few-shards", {"replicas": 5})
    assert seven["instance_count"] == 3
    assert two["instance_count"] == 2

    assert server.wait_task(seven["id"])["status"] == "succeeded"
    instances = server.instances(seven["id"])
    assert [i["shards"] for i in instances] == [["a", "d", "g"], ["b", "e"], ["c", "f"]]
    assert logs_of(server, seven["id"]) == [
        "index=0 shards=a,d,g\n",
        "index=1 shards=b,e\n",
        "index=2 shards=c,f\n",
    ]

    assert server.wait_task(two["id"])["status"] == "succeeded"
    assert [i["shards"] for i in server.instances(two["id"])] == [["x"], ["y"]]
    assert logs_of(server, two["id"]) == ["index=0 shards=x\n", "index=1 shards=y\n"]


# -- success, failure and retries --------------------------------------------------------------


def test_task_succeeds_only_when_every_instance_exits_zero(server: JobyardServer) -> None:
    # Instance 2 is slow; instance FAIL_INDEX (if any) fails after a moment.
    script = """
    if [ "$JOBYARD_INSTANCE_INDEX" = "${FAIL_INDEX-none}" ]; then sleep 0.8; exit 4; fi
    if [ "$JOBYARD_INSTANCE_INDEX" = 2 ]; then sleep 1; fi
    exit 0
    """
    server.create_template(script_template("all-or-nothing", script, replicas=3, retries=0))

    good = server.run("all-or-nothing")

    def first_two_done() -> bool:
        by_index = {i["index"]: i["status"] for i in server.instances(good["id"])}
        return by_index.get(0) == by_index.get(1) == "succeeded" and by_index.get(2) == "running"

    wait_for(first_two_done, timeout=30)
    assert server.task(good["id"])["status"] == "running"  # one instance still runs
    done = server.wait_task(good["id"])
    assert (done["status"], done["reason"]) == ("succeeded", "Completed")
    assert [i["exit_code"] for i in server.instances(good["id"])] == [0, 0, 0]

    bad = server.run("all-or-nothing", {"envs": [{"name": "FAIL_INDEX", "value": "0"}]})
    failed = server.wait_task(bad["id"])
    assert (failed["status"], failed["reason"]) == ("failed", "BackoffLimitExceeded")
    assert "instance 0" in failed["message"]
    by_index = {i["index"]: i for i in server.instances(bad["id"])}
    assert (by_index[0]["status"], by_index[0]["exit_code"]) == ("failed", 4)
    assert by_index[1]["status"] == "succeeded"


def test_retries(server: JobyardServer) -> None:
    script = 'echo "attempt $JOBYARD_ATTEMPT"; exit 3'
    server.create_template(script_template("always-fails", script, retries=2))
    script = '[ "$JOBYARD_ATTEMPT" -ge 1 ] || exit 1; echo ok'
    server.create_template(script_template("flaky", script, retries=2))
    server.create_template(script_template("patient", "exit 1", retries=1, retry_backoff=1))
    failing, flaky, patient = (server.run(n) for n in ("always-fails", "flaky", "patient"))

    # Every attempt fails: retries=2 means 3 attempts of the index, then the task fails.
    done = server.wait_task(failing["id"])
    assert (done["status"], done["reason"]) == ("failed", "BackoffLimitExceeded")
    assert "3 times" in done["message"]
    assert "exit code 3" in done["message"]
    attempts = server.instances(failing["id"])
    assert [(i["index"], i["attempt"]) for i in attempts] == [(0, 0), (0, 1), (0, 2)]
    assert [i["status"] for i in attempts] == ["failed"] * 3
    assert [i["exit_code"] for i in attempts] == [3, 3, 3]
    assert [server.log(i["id"]) for i in attempts] == ["attempt 0\n", "attempt 1\n", "attempt 2\n"]
    reasons = [e["reason"] for e in server.events(task_id=failing["id"])]
    assert reasons.count("InstanceFailed") == 3
    assert reasons.count("Retrying") == 2
    assert reasons[0] == "TaskFailed"

    # The first attempt fails, the second succeeds: so does the task.
    done = server.wait_task(flaky["id"])
    assert (done["status"], done["reason"]) == ("succeeded", "Completed")
    attempts = server.instances(flaky["id"])
    assert [(i["attempt"], i["status"], i["exit_code"]) for i in attempts] == [
        (0, "failed", 1),
        (1, "succeeded", 0),
    ]
    assert server.log(attempts[1]["id"]) == "ok\n"

    # retry_backoff=1: the second attempt starts no sooner than 1 s after the first ended.
    assert server.wait_task(patient["id"])["status"] == "failed"
    first, second = server.instances(patient["id"])
    assert second["attempt"] == 1
    gap = utc(second["started_at"]) - utc(first["finished_at"])
    assert gap.total_seconds() >= 1.0, gap
    assert second["not_before"] is not None
    assert utc(second["started_at"]) >= utc(second["not_before"])


# -- timeout and stop ---------------------------------------------------------------------------


def test_timeout_kills_every_process_of_the_instance(server: JobyardServer) -> None:
    # A background child, a child in its own session, and the script itself.
    script = "sleep 300 & setsid sleep 300 & sleep 300"
    mark, spec = marked("too-slow", script, timeout=2, termination_grace_period=1, retries=3)
    server.create_template(spec)
    task = server.run("too-slow")
    wait_instances_running(server, task["id"])
    # sh and 3 sleeps; the wrapper too, unless it was a starter (it then has no environment
    # of its own: the instance's came down its pipe, see docs/resources.md).
    wait_for(lambda: len(processes_marked(mark, task["id"])) >= 4)

    done = server.wait_task(task["id"])
    assert (done["status"], done["reason"]) == ("failed", "DeadlineExceeded")
    assert "2 s" in done["message"]
    [instance] = server.instances(task["id"])  # a deadline is not retried
    assert (instance["status"], instance["reason"]) == ("killed", "DeadlineExceeded")
    assert processes_marked(mark) == []
    duration = done["duration_seconds"]
    assert duration is not None and duration >= 2


def test_stop_a_task_or_every_task_of_a_template(server: JobyardServer) -> None:
    # The script ignores SIGTERM, so the stop must escalate to SIGKILL after the grace.
    script = "trap '' TERM; sleep 300 & sleep 300"
    mark, spec = marked("stoppable", script, termination_grace_period=1)
    server.create_template(spec)
    many_mark, spec = marked("many", "sleep 300", termination_grace_period=1)
    server.create_template(spec)
    server.create_template(script_template("bystander", "sleep 2"))
    task = server.run("stoppable")
    first, second = server.run("many"), server.run("many")
    bystander = server.run("bystander")
    wait_instances_running(server, task["id"])
    wait_for(lambda: len(processes_marked(mark, task["id"])) >= 3)

    answer = server.api("POST", f"/tasks/{task['id']}/stop", expect=200)
    assert answer["id"] == task["id"]
    assert answer["status"] == "stopped" or answer["stopping"] == "Stopped"
    done = server.wait_task(task["id"])
    assert (done["status"], done["reason"]) == ("stopped", "Stopped")
    [instance] = server.instances(task["id"])
    assert instance["status"] == "killed"
    assert processes_marked(mark) == []
    # Stopping a finished task changes nothing.
    again = server.api("POST", f"/tasks/{task['id']}/stop", expect=200)
    assert (again["status"], again["reason"]) == ("stopped", "Stopped")
    server.api("POST", "/tasks/999999/stop", expect=404)
    reasons = [e["reason"] for e in server.events(task_id=task["id"])]
    assert reasons[0] == "TaskStopped"
    assert "InstanceKilled" in reasons

    # Through the template: every active task of it, and only of it.
    wait_instances_running(server, first["id"])
    wait_instances_running(server, second["id"])
    stopped = server.api("POST", TEMPLATE.format(name="many") + "/stop", expect=200)
    assert sorted(t["id"] for t in stopped) == sorted([first["id"], second["id"]])
    for one in (first, second):
        done = server.wait_task(one["id"])
        assert (done["status"], done["reason"]) == ("stopped", "Stopped")
    assert processes_marked(many_mark) == []
    assert server.wait_task(bystander["id"])["status"] == "succeeded"
    assert server.api("POST", TEMPLATE.format(name="many") + "/stop", expect=200) == []


def test_stop_kills_an_escaped_child_that_ignores_sigterm(server: JobyardServer) -> None:
    script = "setsid sh -c \"trap '' TERM; exec sleep 300\" & sleep 300"
    mark, spec = marked("escapee", script, termination_grace_period=1)
    server.create_template(spec)
    task = server.run("escapee")
    try:
        wait_instances_running(server, task["id"])
        # sh and 2 sleeps, and the wrapper unless it was a starter (see above)
        wait_for(lambda: len(processes_marked(mark, task["id"])) >= 3)
        server.api("POST", f"/tasks/{task['id']}/stop", expect=200)
        assert server.wait_task(task["id"])["status"] == "stopped"
        # Well past the 1 s grace, every process of the instance must be gone.
        wait_for(lambda: processes_marked(mark) == [], timeout=3)
    finally:
        for proc in processes_marked(mark):  # a test owns what it started
            proc.kill()


# -- concurrency policies ---------------------------------------------------------------------


def test_forbid_refuses_a_second_task_while_one_is_active(server: JobyardServer) -> None:
    server.create_template(
        script_template(
            "exclusive", "sleep 300", concurrency_policy="Forbid", termination_grace_period=1
        )
    )
    first = server.run("exclusive")
    refused = server.api("POST", TEMPLATE.format(name="exclusive") + "/run", expect=409)
    assert refused["error"] == "concurrency_forbidden"
    assert refused["active_task_id"] == first["id"]
    assert str(first["id"]) in refused["message"]
    tasks = server.api("GET", TEMPLATE.format(name="exclusive") + "/tasks", expect=200)
    assert [t["id"] for t in tasks] == [first["id"]]

    server.api("POST", f"/tasks/{first['id']}/stop", expect=200)
    assert server.wait_task(first["id"])["status"] == "stopped"

    # Once the first has ended a new one may run; of requests racing, exactly one wins.
    answers = run_all_at_once(server, "exclusive", 5)
    assert sorted(a.status_code for a in answers) == [201, 409, 409, 409, 409]
    [winner] = [a.json()["id"] for a in answers if a.status_code == 201]
    assert {a.json()["active_task_id"] for a in answers if a.status_code == 409} == {winner}
    active = server.api(
        "GET", TEMPLATE.format(name="exclusive") + "/tasks", params={"status": "pending,running"}
    )
    assert [t["id"] for t in active] == [winner]
    server.api("POST", f"/tasks/{winner}/stop", expect=200)
    assert server.wait_task(winner)["status"] == "stopped"


def test_replace_stops_the_running_task_for_the_new_one(server: JobyardServer) -> None:
    mark, spec = marked(
        "replaceable",
        '[ -n "${QUICK-}" ] && exit 0; sleep 300',
        concurrency_policy="Replace",
        termination_grace_period=1,
    )
    server.create_template(spec)
    first = server.run("replaceable")
    wait_instances_running(server, first["id"])

    second = server.run("replaceable", {"envs": [{"name": "QUICK", "value": "1"}]})
    replaced = server.wait_task(first["id"])
    assert (replaced["status"], replaced["reason"]) == ("stopped", "Replaced")
    [instance] = server.instances(first["id"])
    assert (instance["status"], instance["reason"]) == ("killed", "Replaced")
    done = server.wait_task(second["id"])
    assert (done["status"], done["reason"]) == ("succeeded", "Completed")
    assert processes_marked(mark) == []

    # Racing runs: each replaces the one before, and exactly the newest survives.
    answers = run_all_at_once(server, "replaceable", 4)
    assert [a.status_code for a in answers] == [201] * 4
    newest = max(a.json()["id"] for a in answers)
    for answer in answers:
        task_id = answer.json()["id"]
        if task_id != newest:
            done = server.wait_task(task_id)
            assert (done["status"], done["reason"]) == ("stopped", "Replaced")
    wait_instances_running(server, newest)
    assert server.task(newest)["status"] == "running"
    server.api("POST", TEMPLATE.format(name="replaceable") + "/stop", expect=200)
    assert server.wait_task(newest)["status"] == "stopped"
    wait_for(lambda: processes_marked(mark) == [])


def test_allow_runs_tasks_side_by_side(server: JobyardServer) -> None:
    server.create_template(script_template("parallel", "sleep 1", concurrency_policy="Allow"))
    first, second = server.run("parallel"), server.run("parallel")
    one = server.instances(server.wait_task(first["id"])["id"])[0]
    two = server.instances(server.wait_task(second["id"])["id"])[0]
    assert server.task(first["id"])["status"] == server.task(second["id"])["status"] == "succeeded"
    # Their lifetimes overlap: neither waited for the other.
    assert utc(one["started_at"]) < utc(two["finished_at"])
    assert utc(two["started_at"]) < utc(one["finished_at"])


# -- logs ---------------------------------------------------------------------------------------


def test_logs(server: JobyardServer) -> None:
    script = "echo to-stdout; echo to-stderr >&2; echo done; exit 2"
    server.create_template(script_template("chatty", script, retries=0))
    script = "for i in 1 2 3 4 5 6; do echo line-$i; sleep 0.3; done; echo bye >&2"
    server.create_template(script_template("ticker", script))
    chatty = server.run("chatty")
    ticker = server.run("ticker")

    # Follow: lines arrive as they are written, and the stream ends with the instance.
    [instance] = wait_for(lambda: server.instances(ticker["id"]))
    lines: list[str] = []
    status_at_first_line = None
    path = f"/api/v1/instances/{instance['id']}/logs"
    with server.client.stream("GET", path, params={"follow": "true"}, timeout=30) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not lines:
                status_at_first_line = server.api("GET", f"/instances/{instance['id']}")["status"]
            lines.append(line)
    assert server.api("GET", f"/instances/{instance['id']}")["status"] == "succeeded"
    assert lines == [f"line-{i}" for i in range(1, 7)] + ["bye"]
    assert status_at_first_line in ("pending", "running")  # the script still ran

    # A plain read: stdout and stderr, as written.
    assert server.wait_task(chatty["id"])["status"] == "failed"
    [instance] = server.instances(chatty["id"])
    response = server.client.get(f"/api/v1/instances/{instance['id']}/logs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "to-stdout\nto-stderr\ndone\n"
    # Following an instance that has ended returns the whole log at once.
    followed = server.client.get(
        f"/api/v1/instances/{instance['id']}/logs", params={"follow": "true"}
    )
    assert followed.text == response.text
    assert "999999" in server.api("GET", "/instances/999999/logs", expect=404)["message"]


# -- listing, reading and deleting tasks ------------------------------------------------------


def test_list_and_read_tasks(server: JobyardServer) -> None:
    server.create_template(script_template("listed", "exit ${CODE-0}", retries=0))
    ids = [server.run("listed", {"envs": [{"name": "CODE", "value": c}]})["id"] for c in "010"]
    for task_id in ids:
        server.wait_task(task_id)
    ok1, failed, ok2 = ids
    path = TEMPLATE.format(name="listed") + "/tasks"

    def listed(**params: Any) -> list[int]:
        return [t["id"] for t in server.api("GET", path, expect=200, params=params)]

    assert listed() == [ok2, failed, ok1]
    assert listed(status="succeeded") == [ok2, ok1]
    assert listed(status="failed") == [failed]
    assert listed(status="running") == []
    assert listed(status="succeeded,failed") == [ok2, failed, ok1]
    assert listed(status=["failed", "succeeded"]) == [ok2, failed, ok1]
    assert listed(limit=2) == [ok2, failed]
    assert listed(limit=2, offset=2) == [ok1]
    assert listed(limit=1, offset=1) == [failed]
    assert listed(offset=3) == []
    assert listed(status="succeeded", limit=1, offset=1) == [ok1]

    bad = server.api("GET", path, expect=422, params={"status": "finished"})
    assert "finished" in bad["message"]
    assert bad["details"][0]["field"] == "status"
    server.api("GET", path, expect=422, params={"limit": 0})
    server.api("GET", path, expect=422, params={"offset": -1})

    # One task's fields.
    def spec(value: str) -> dict[str, Any]:
        env = [{"name": "V", "value": value}]
        return script_template("described", 'echo "v=$V"; sleep 0.3', env=env)

    server.create_template(spec("one"))
    first = server.run("described")
    server.api("PUT", TEMPLATE.format(name="described"), expect=200, json=spec("two"))
    created = server.run("described", {"replicas": 2})
    assert created["started_at"] is None or created["status"] == "running"
    assert created["finished_at"] is None
    assert created["duration_seconds"] is None
    task = server.wait_task(created["id"])

    assert task["id"] == created["id"]
    assert task["namespace"] == "default"
    assert task["template"] == "described"
    assert task["template_id"] == server.api("GET", TEMPLATE.format(name="described"))["id"]
    assert task["template_version"] == 2
    assert task["trigger"] == "manual"
    assert task["overrides"] == {"replicas": 2}
    assert task["instance_count"] == 2
    assert (task["status"], task["reason"]) == ("succeeded", "Completed")
    assert task["message"]
    assert task["stopping"] is None
    assert task["scheduled_time"] is None
    assert task["event_id"] is None
    created_at, started_at, finished_at = (
        utc(task[key]) for key in ("created_at", "started_at", "finished_at")
    )
    assert created_at <= started_at <= finished_at
    assert task["duration_seconds"] == pytest.approx((finished_at - started_at).total_seconds())
    assert task["duration_seconds"] >= 0.3
    assert logs_of(server, task["id"]) == ["v=two\n", "v=two\n"]

    # The older task keeps the version it ran.
    old = server.task(first["id"])
    assert old["template_version"] == 1
    assert logs_of(server, first["id"]) == ["v=one\n"]
    assert "424242" in server.api("GET", "/tasks/424242", expect=404)["message"]


def test_delete_task(server: JobyardServer) -> None:
    server.create_template(script_template("disposable", "echo keep-me-not"))
    mark, spec = marked("cut-short", "sleep 300 & sleep 300", termination_grace_period=1)
    server.create_template(spec)
    kept = server.run("disposable")
    task = server.run("disposable")
    running = server.run("cut-short")
    server.wait_task(kept["id"])
    server.wait_task(task["id"])
    [instance] = server.instances(task["id"])
    assert task_dir(server, task["id"]).is_dir()

    # A finished task: its record and its logs go.
    response = server.client.delete(f"/api/v1/tasks/{task['id']}")
    assert response.status_code == 204
    server.api("GET", f"/tasks/{task['id']}", expect=404)
    server.api("GET", f"/tasks/{task['id']}/instances", expect=404)
    server.api("GET", f"/instances/{instance['id']}/logs", expect=404)
    server.api("DELETE", f"/tasks/{task['id']}", expect=404)
    wait_for(lambda: not task_dir(server, task["id"]).exists())
    tasks = server.api("GET", TEMPLATE.format(name="disposable") + "/tasks", expect=200)
    assert [t["id"] for t in tasks] == [kept["id"]]
    assert task_dir(server, kept["id"]).is_dir()  # other tasks keep their logs
    assert server.log(server.instances(kept["id"])[0]["id"]) == "keep-me-not\n"

    # A running task: its processes are killed as well.
    wait_instances_running(server, running["id"])
    wait_for(lambda: len(processes_marked(mark, running["id"])) >= 3)
    server.api("DELETE", f"/tasks/{running['id']}", expect=204)
    server.api("GET", f"/tasks/{running['id']}", expect=404)
    assert server.api("GET", TEMPLATE.format(name="cut-short") + "/tasks", expect=200) == []
    wait_for(lambda: processes_marked(mark) == [])
    wait_for(lambda: not task_dir(server, running["id"]).exists())


def test_deleted_task_ids_are_not_reused(server: JobyardServer) -> None:
    """Ids name logs, files and events: a deleted task's id is never handed out again."""
    mark, spec = marked("deleted-soon", "trap '' TERM; sleep 300", termination_grace_period=1)
    server.create_template(spec)
    server.create_template(script_template("next-one", "echo fresh"))
    old = server.run("deleted-soon")
    [old_instance] = wait_instances_running(server, old["id"])
    server.api("DELETE", f"/tasks/{old['id']}", expect=204)

    new = server.run("next-one")
    assert server.wait_task(new["id"])["status"] == "succeeded"
    wait_for(lambda: processes_marked(mark) == [])
    attempts = server.instances(new["id"])
    assert new["id"] != old["id"]
    assert old_instance["id"] not in [i["id"] for i in attempts]
    assert {e["template"] for e in server.events(task_id=new["id"])} == {"next-one"}
    assert [(i["attempt"], i["status"]) for i in attempts] == [(0, "succeeded")]


def test_delete_template_while_a_task_runs(server: JobyardServer) -> None:
    script = "sleep 300 & sleep 300"
    mark, spec = marked("short-lived", script, replicas=2, termination_grace_period=1)
    server.create_template(spec)
    finished = server.run("short-lived")
    server.api("POST", f"/tasks/{finished['id']}/stop", expect=200)
    server.wait_task(finished["id"])
    task = server.run("short-lived")
    wait_instances_running(server, task["id"], count=2)
    wait_for(lambda: len(processes_marked(mark, task["id"])) >= 6)
    instance_ids = [i["id"] for i in server.instances(task["id"])]

    response = server.client.delete("/api/v1" + TEMPLATE.format(name="short-lived"))
    assert response.status_code == 204
    server.api("GET", TEMPLATE.format(name="short-lived"), expect=404)
    for task_id in (task["id"], finished["id"]):
        server.api("GET", f"/tasks/{task_id}", expect=404)
    for instance_id in instance_ids:
        server.api("GET", f"/instances/{instance_id}", expect=404)

    wait_for(lambda: processes_marked(mark) == [])
    for task_id in (task["id"], finished["id"]):
        wait_for(lambda task_id=task_id: not task_dir(server, task_id).exists())
    assert server.events(template="short-lived") == []


# -- events -----------------------------------------------------------------------------------


def test_events_record_a_run_and_can_be_searched(server: JobyardServer) -> None:
    server.create_template(script_template("ev-good", "true"))
    server.create_template(script_template("ev-bad", "exit 7", retries=0))
    good = server.run("ev-good")
    bad = server.run("ev-bad")
    server.wait_task(good["id"])
    server.wait_task(bad["id"])

    of_good = server.events(task_id=good["id"])
    assert [e["reason"] for e in reversed(of_good)] == [
        "TaskCreated",
        "TaskStarted",
        "InstanceStarted",
        "InstanceSucceeded",
        "TaskSucceeded",
    ]
    assert {(e["template"], e["task_id"], e["namespace"]) for e in of_good} == {
        ("ev-good", good["id"], "default")
    }

    everything = server.events()
    ids = [e["id"] for e in everything]
    assert ids == sorted(ids, reverse=True)  # newest first

    by_template = server.events(template="ev-bad")
    assert by_template and {e["template"] for e in by_template} == {"ev-bad"}
    assert {"Created", "TaskCreated", "InstanceFailed", "TaskFailed"} <= {
        e["reason"] for e in by_template
    }

    by_reason = server.events(reason="InstanceSucceeded")
    assert [e["task_id"] for e in by_reason] == [good["id"]]

    warnings = server.events(severity="warning")
    assert warnings and {e["severity"] for e in warnings} == {"warning"}
    assert {"InstanceFailed", "TaskFailed"} <= {e["reason"] for e in warnings}
    assert all(e["template"] == "ev-bad" for e in warnings)

    instances = server.events(source_type="instance", template="ev-good")
    assert {e["source_type"] for e in instances} == {"instance"}
    assert [e["reason"] for e in instances] == ["InstanceSucceeded", "InstanceStarted"]
    assert all(e["instance_id"] is not None for e in instances)

    templates = server.events(source_type="template")
    assert {(e["source_name"], e["reason"]) for e in templates} == {
        ("ev-good", "Created"),
        ("ev-bad", "Created"),
    }

    named = server.events(source_name=f"ev-bad/task-{bad['id']}")
    assert named and all(e["source_name"].startswith(f"ev-bad/task-{bad['id']}") for e in named)
    assert {e["source_type"] for e in named} == {"task", "instance"}

    found = server.events(q="code 7")
    assert [e["reason"] for e in found] and {e["task_id"] for e in found} == {bad["id"]}
    assert all("code 7" in e["message"].lower() for e in found)
    assert "TaskSucceeded" in {e["reason"] for e in server.events(q="TASKSUCCEEDED")}
    assert server.events(q="no-such-words-anywhere") == []

    page = server.events(limit=2, offset=1)
    assert [e["id"] for e in page] == ids[1:3]
    for params in ({"severity": "fatal"}, {"source_type": "robot"}, {"limit": 0}):
        server.api("GET", "/events", expect=422, params=params)


def test_event_search_text_is_taken_literally(server: JobyardServer) -> None:
    """'%' and '_' in q are plain characters, not SQL LIKE wildcards."""
    server.create_template(script_template("plain", "true"))
    server.wait_task(server.run("plain")["id"])
    assert all("%" not in e["message"] + e["reason"] + e["source_name"] for e in server.events())
    assert server.events(q="%") == []
    assert server.events(q="_") == []


def test_a_server_started_under_nohup_starts_instances_with_signals_at_their_defaults(
    tmp_path: Path,
) -> None:
    """SIGHUP and SIGQUIT ignored by whoever started the server (nohup, trap '') stay
    ignored in the server, yet its instances start with them at their defaults."""
    ignored = (signal.SIGHUP, signal.SIGQUIT)
    before = {signum: signal.signal(signum, signal.SIG_IGN) for signum in ignored}
    try:
        nohup = start_server(tmp_path)
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
    try:
        assert nohup.process is not None
        status = Path(f"/proc/{nohup.process.pid}/status").read_text().splitlines()
        [sig_ign] = [line for line in status if line.startswith("SigIgn:")]
        # Handled, not ignored, so exec resets them (Python itself ignores SIGPIPE, SIGXFSZ).
        assert ignored_login_signals(sig_ign) == ["SIGPIPE", "SIGXFSZ"]
        nohup.create_template(script_template("signals", "grep SigIgn /proc/self/status"))
        task = nohup.wait_task(nohup.run("signals")["id"])
        assert task["status"] == "succeeded"
        [instance] = nohup.instances(task["id"])
        assert ignored_login_signals(nohup.log(instance["id"])) == []
        nohup.process.send_signal(signal.SIGHUP)  # still ignored, in effect
        assert nohup.client.get("/healthz").status_code == 200
    finally:
        stop_server(nohup)


def test_a_task_is_created_with_its_instances(server: JobyardServer) -> None:
    """A run's answer comes once its instances are recorded, pending: the controller only
    has to start them. Each runs as that first attempt."""
    server.create_template(script_template("born-with-instances", "sleep 0.2", replicas=3))
    task = server.run("born-with-instances")
    first = server.instances(task["id"])
    assert [(i["index"], i["attempt"]) for i in first] == [(0, 0), (1, 0), (2, 0)]
    assert server.wait_task(task["id"])["status"] == "succeeded"
    done = server.instances(task["id"])
    assert [i["id"] for i in done] == [i["id"] for i in first]
    assert {i["status"] for i in done} == {"succeeded"}
