"""End-to-end: the real ``jobyard`` console script against a real server.

Each command runs as a subprocess, the way a person or a shell script runs it,
with ``JOBYARD_URL`` pointing at the ``server`` fixture (SQLite and PostgreSQL).
Tests that need no server (local validation, usage errors, config precedence)
run once.
"""

from __future__ import annotations

import json
import os
import re
import resource
import ssl
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from tests.support import JobyardServer, free_port, start_server, stop_server

JOBYARD = Path(sys.executable).parent / "jobyard"
# A fixed zone without a zone database: UTC+8, so local times are checkable.
LOCAL_ZONE = "CST-8"


@dataclass
class Cli:
    """Runs ``jobyard ARGS...`` with a clean environment and an empty config dir."""

    home: Path
    url: str | None = None

    def __call__(
        self, *args: str, env: Mapping[str, str] | None = None, stdin: str = ""
    ) -> subprocess.CompletedProcess[str]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("JOBYARD_")}
        environ.update({"XDG_CONFIG_HOME": str(self.home / "config"), "TZ": LOCAL_ZONE})
        if self.url:
            environ["JOBYARD_URL"] = self.url
        environ.update(env or {})
        return subprocess.run(
            [str(JOBYARD), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=environ,
            timeout=60,
        )

    def ok(self, *args: str, env: Mapping[str, str] | None = None, stdin: str = "") -> str:
        result = self(*args, env=env, stdin=stdin)
        assert result.returncode == 0, (args, result.returncode, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        return result.stdout

    def json(self, *args: str, env: Mapping[str, str] | None = None, stdin: str = "") -> Any:
        return json.loads(self.ok(*args, "-o", "json", env=env, stdin=stdin))

    def fails(
        self, *args: str, code: int = 1, env: Mapping[str, str] | None = None, stdin: str = ""
    ) -> str:
        """Run a command that must fail; return its one ``error:`` line."""
        result = self(*args, env=env, stdin=stdin)
        assert result.returncode == code, (args, result.returncode, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert lines and lines[-1].startswith("error: "), result.stderr
        assert "Traceback" not in result.stderr
        return lines[-1]


@pytest.fixture
def cli(server: JobyardServer, tmp_path: Path) -> Cli:
    return Cli(home=tmp_path, url=server.url)


@pytest.fixture
def offline(tmp_path: Path) -> Cli:
    """A client whose server is nowhere: for what must fail before any request."""
    return Cli(home=tmp_path, url=f"http://127.0.0.1:{free_port()}")


def write(path: Path, data: Any) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def rows(table: str) -> list[list[str]]:
    """A plain table's cells (columns are separated by two or more spaces)."""
    return [re.split(r"\s{2,}", line.strip()) for line in table.strip().splitlines()]


# -- templates ----------------------------------------------------------------------------


NIGHTLY = {
    "namespace": "default",
    "name": "nightly",
    "description": "the nightly report",
    "deployment": {"type": "script", "script": "echo report\necho done\n"},
    "trigger": {"type": "cron", "schedule": "0 9 * * *", "timezone": "Asia/Shanghai"},
}


def test_apply_and_template_commands(cli: Cli, tmp_path: Path) -> None:
    spec = write(tmp_path / "nightly.yaml", NIGHTLY)
    assert cli.ok("apply", "-f", str(spec)) == "template nightly created (version 1)\n"
    assert cli.ok("apply", "-f", str(spec)) == "template nightly unchanged (version 1)\n"
    # Defaults written out are the same spec as defaults left out.
    explicit = {**NIGHTLY, "replicas": 1, "retries": 3, "concurrency_policy": "Allow"}
    write(spec, explicit)
    assert cli.ok("apply", "-f", str(spec)) == "template nightly unchanged (version 1)\n"
    write(spec, {**NIGHTLY, "replicas": 2})
    assert cli.ok("apply", "-f", str(spec)) == "template nightly updated (version 2)\n"
    # JSON on stdin works too; the file's namespace key never reaches the server.
    body = json.dumps({**NIGHTLY, "replicas": 3})
    assert cli.ok("apply", "-f", "-", stdin=body) == "template nightly updated (version 3)\n"
    answer = cli.json("apply", "-f", "-", stdin=json.dumps({**NIGHTLY, "replicas": 2}))
    assert answer["action"] == "updated"
    assert answer["template"]["version"] == 4

    manual = {"name": "adhoc", "deployment": {"script": "true"}}
    cli.ok("apply", "-f", str(write(tmp_path / "c.yaml", manual)))

    table = rows(cli.ok("templates"))
    assert table[0] == ["NAME", "NAMESPACE", "VERSION", "TRIGGER", "NEXT FIRE", "SUSPENDED"]
    by_name = {row[0]: row for row in table[1:]}
    assert by_name["adhoc"] == ["adhoc", "default", "1", "manual", "-", "no"]
    nightly = by_name["nightly"]
    assert nightly[:4] == ["nightly", "default", "4", "cron 0 9 * * * Asia/Shanghai"]
    # 09:00 in Shanghai is 09:00 in the client's UTC+8 zone too.
    assert nightly[4].endswith("09:00") or nightly[4] == "09:00:00", nightly
    assert [t["name"] for t in cli.json("templates", "--all-namespaces")] == ["adhoc", "nightly"]

    shown = cli.ok("get", "nightly")
    assert "version:     4" in shown
    assert "every day at 09:00" in shown
    assert "  replicas: 2" in shown
    assert "    script: |\n      echo report\n      echo done" in shown
    as_yaml = yaml.safe_load(cli.ok("get", "nightly", "-o", "yaml"))
    assert as_yaml["spec"]["replicas"] == 2
    assert as_yaml["spec"]["retries"] == 3

    versions = rows(cli.ok("versions", "nightly"))
    assert versions[0] == ["VERSION", "CREATED", "CHANGED"]
    assert [v[0] for v in versions[1:]] == ["1", "2", "3", "4"]
    assert versions[2][2] == "replicas"

    expected = "template nightly rolled back to version 1 (now version 5)\n"
    assert cli.ok("rollback", "nightly", "--to", "1") == expected
    current = cli.json("get", "nightly")
    assert (current["version"], current["spec"]["replicas"]) == (5, 1)

    assert cli.ok("suspend", "nightly") == "template nightly suspended\n"
    suspended = {t["name"]: t for t in cli.json("templates")}["nightly"]
    assert suspended["suspended"] is True
    assert cli.ok("resume", "nightly") == "template nightly resumed\n"

    assert "without confirmation: pass --yes" in cli.fails("delete", "adhoc", code=2)
    assert cli.ok("delete", "adhoc", "--yes") == "template adhoc deleted\n"
    gone = cli.fails("get", "adhoc")
    assert gone == "error: template 'adhoc' does not exist in namespace 'default'"


# -- tasks, logs, events --------------------------------------------------------------------


def test_run_wait_prints_logs_and_exit_code(cli: Cli, tmp_path: Path) -> None:
    greet = {
        "name": "greet",
        "deployment": {"script": 'echo "hello $GREETING"\nsleep 0.2\necho bye'},
        "env": [{"name": "GREETING", "value": "world"}],
    }
    cli.ok("apply", "-f", str(write(tmp_path / "greet.yaml", greet)))
    result = cli("run", "greet", "--env", "GREETING=cli", "--replicas", "2", "--wait")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == [
        "[0] bye",
        "[0] hello cli",
        "[1] bye",
        "[1] hello cli",
    ]
    assert "succeeded" in result.stderr

    failing = {"name": "failing", "deployment": {"script": "echo trying\nexit 3"}, "retries": 0}
    cli.ok("apply", "-f", str(write(tmp_path / "failing.yaml", failing)))
    result = cli("run", "failing", "--wait")
    assert result.returncode == 1
    assert result.stdout == "trying\n"
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: task ") and " failed (BackoffLimitExceeded): " in last

    # Without --wait, stdout is the task id alone: easy to capture in a script.
    task_id = cli.ok("run", "greet").strip()
    assert task_id.isdigit()
    finished = cli.json("run", "greet", "-e", "GREETING=json", "--wait")
    assert finished["status"] == "succeeded"
    assert finished["overrides"]["envs"] == [{"name": "GREETING", "value": "json"}]


def test_logs_tasks_and_events(cli: Cli, server: JobyardServer, tmp_path: Path) -> None:
    marker = tmp_path / "first-attempt-done"
    # The first attempt fails after some output; its retry succeeds.
    script = (
        'if [ -e "$MARKER" ]; then echo second; exit 0; fi\n'
        'echo first\nsleep 0.5\ntouch "$MARKER"\necho failing >&2\nexit 1\n'
    )
    flaky = {
        "name": "flaky",
        "deployment": {"script": script},
        "retries": 1,
        "retry_backoff": 0,
        "env": [{"name": "MARKER", "value": str(marker)}],
    }
    cli.ok("apply", "-f", str(write(tmp_path / "flaky.yaml", flaky)))
    task_id = cli.ok("run", "flaky").strip()

    followed = cli.ok("logs", task_id, "-f")
    assert followed == "first\nfailing\n==> instance 0 attempt 1 <==\nsecond\n"
    assert server.task(int(task_id))["status"] == "succeeded"
    assert cli.ok("logs", task_id) == (
        "==> instance 0 attempt 0 (failed) <==\nfirst\nfailing\n\n"
        "==> instance 0 attempt 1 (succeeded) <==\nsecond\n"
    )

    cli.ok("apply", "-f", "-", stdin=json.dumps({**flaky, "retries": 0}))
    marker.unlink()
    failed_id = cli.ok("run", "flaky").strip()
    server.wait_task(int(failed_id))

    tasks = rows(cli.ok("tasks", "flaky"))
    assert tasks[0] == ["ID", "STATUS", "TRIGGER", "CREATED", "DURATION", "REASON"]
    assert [(t[0], t[1], t[2], t[5]) for t in tasks[1:]] == [
        (failed_id, "failed", "manual", "BackoffLimitExceeded"),
        (task_id, "succeeded", "manual", "Completed"),
    ]
    assert [t["id"] for t in cli.json("tasks", "flaky", "--status", "failed")] == [int(failed_id)]

    attempts = rows(cli.ok("instances", task_id))
    assert attempts[0] == [
        "ID", "INDEX", "ATTEMPT", "STATUS", "RUN AS", "EXIT", "PEAK MEM", "CPU", "REASON"
    ]  # fmt: skip
    assert [(a[1], a[2], a[3], a[4], a[5]) for a in attempts[1:]] == [
        ("0", "0", "failed", "default", "1"),
        ("0", "1", "succeeded", "default", "0"),
    ]
    assert [a["status"] for a in cli.json("instances", task_id)] == ["failed", "succeeded"]
    assert "task 999999 does not exist" in cli.fails("instances", "999999", code=1)
    assert len(cli.json("tasks", "flaky", "--limit", "1")) == 1

    events = rows(cli.ok("events", "--template", "flaky", "--reason", "TaskFailed"))
    assert events[0] == ["TIME", "SEVERITY", "REASON", "SOURCE", "MESSAGE"]
    assert len(events) == 2
    assert events[1][1:4] == ["warning", "TaskFailed", f"task flaky/task-{failed_id}"]
    warnings = cli.json("events", "--severity", "warning", "--task", task_id)
    assert warnings and {e["severity"] for e in warnings} == {"warning"}
    assert {e["task_id"] for e in warnings} == {int(task_id)}
    found = cli.json("events", "-q", "exited with code 1", "--limit", "1")
    assert len(found) == 1 and found[0]["reason"] == "InstanceFailed"
    bad = cli.fails("events", "--severity", "loud", code=2)
    assert "loud" in bad


def test_stop_template_and_task_and_forbid_message(
    cli: Cli, server: JobyardServer, tmp_path: Path
) -> None:
    sleeper = {
        "name": "sleeper",
        "deployment": {"script": "echo started\nsleep 60"},
        "concurrency_policy": "Forbid",
        "termination_grace_period": 1,
    }
    cli.ok("apply", "-f", str(write(tmp_path / "sleeper.yaml", sleeper)))
    first = cli.ok("run", "sleeper").strip()
    refused = cli.fails("run", "sleeper")
    assert refused == (
        f"error: template 'sleeper' forbids concurrent tasks and task {first} is still active"
    )
    assert cli.ok("stop", "--task", first) == f"task {first} stopping\n"
    assert server.wait_task(int(first))["status"] == "stopped"

    second = cli.ok("run", "sleeper").strip()
    expected = f"stopping 1 task(s) of template sleeper: {second}\n"
    assert cli.ok("stop", "sleeper") == expected
    assert server.wait_task(int(second))["reason"] == "Stopped"
    assert cli.ok("stop", "sleeper") == "template sleeper has no active tasks\n"
    assert "one of the two" in cli.fails("stop", code=2)


# -- errors, config, tokens ---------------------------------------------------------------


def test_server_errors_and_config_namespace(cli: Cli, tmp_path: Path) -> None:
    for args in (["get", "nope"], ["run", "nope"], ["delete", "nope", "-y"]):
        assert cli.fails(*args) == "error: template 'nope' does not exist in namespace 'default'"
    assert cli.fails("logs", "999999").startswith("error: task 999999")
    missing_ns = cli.fails("templates", "-n", "nowhere")
    assert missing_ns == "error: namespace 'nowhere' does not exist"

    config = write(tmp_path / "jobyard.yaml", {"url": "http://127.0.0.1:9", "namespace": "team"})
    env = {"JOBYARD_CONFIG": str(config)}
    # JOBYARD_URL (from the fixture) beats the file's url; the file's namespace is used.
    assert cli.fails("templates", env=env) == "error: namespace 'team' does not exist"
    assert cli.json("templates", env={**env, "JOBYARD_NAMESPACE": "default"}) == []
    assert cli.json("templates", "-n", "default", env={**env, "JOBYARD_NAMESPACE": "x"}) == []


def test_unreachable_server(offline: Cli) -> None:
    assert offline.url is not None
    line = offline.fails("templates")
    assert line == f"error: cannot reach jobyard at {offline.url} (Connection refused)"


def test_bad_files_fail_locally(offline: Cli, tmp_path: Path) -> None:
    bad_yaml = write(tmp_path / "bad.yaml", "name: x\ndeployment: [\n  script: a\n")
    line = offline.fails("apply", "-f", str(bad_yaml), code=2)
    assert line.startswith(f"error: cannot parse {bad_yaml} as YAML: ")
    assert "(line 4, column 1)" in line

    invalid = {
        "name": "Not_A_Name",
        "replicas": 500,
        "deployment": {"script": "true"},
        "trigger": {"type": "cron", "schedule": "61 * * * *"},
    }
    line = offline.fails("apply", "-f", str(write(tmp_path / "invalid.yaml", invalid)), code=2)
    assert line.startswith(f"error: invalid template in {tmp_path / 'invalid.yaml'}: name: ")
    assert "replicas: Input should be less than or equal to 100" in line
    assert "minute must be 0..59" in line

    missing = offline.fails("apply", "-f", str(tmp_path / "missing.yaml"), code=2)
    assert missing == f"error: file {tmp_path / 'missing.yaml'} does not exist"
    clash = offline.fails("apply", "-f", "-", "-n", "other", stdin=json.dumps(NIGHTLY), code=2)
    assert "says namespace 'default' but --namespace says 'other'" in clash
    assert "NAME=VALUE" in offline.fails("run", "x", "--env", "NOEQUALS", code=2)
    assert "Missing argument" in offline.fails("get", code=2)


def test_config_file_precedence(offline: Cli, tmp_path: Path) -> None:
    from_file, from_env, from_flag = (f"http://127.0.0.1:{free_port()}" for _ in range(3))
    config = write(tmp_path / "jobyard.yaml", {"url": from_file, "namespace": "team"})
    env = {"JOBYARD_CONFIG": str(config)}
    offline.url = None

    def reached(*args: str, **more_env: str) -> str:
        line = offline.fails("templates", *args, env={**env, **more_env})
        return line.removeprefix("error: cannot reach jobyard at ").split(" ")[0]

    assert reached() == from_file
    assert reached(JOBYARD_URL=from_env) == from_env
    assert reached("--url", from_flag, JOBYARD_URL=from_env) == from_flag

    write(config, {"urll": from_file})
    assert "unknown key 'urll'" in offline.fails("templates", env=env, code=2)
    gone = {"JOBYARD_CONFIG": str(tmp_path / "absent.yaml")}
    assert "does not exist" in offline.fails("templates", env=gone, code=2)


def test_tokens(cli: Cli, tmp_path: Path) -> None:
    result = cli("token", "create", "--name", "root", "--role", "admin")
    assert result.returncode == 0, result.stderr
    admin = result.stdout.strip()
    assert admin and "\n" not in admin and "shown only this once" in result.stderr
    as_admin = {"JOBYARD_TOKEN": admin}

    # With a token in existence, the server wants one from everybody.
    assert "a token is needed" in cli.fails("templates")
    assert "token was rejected" in cli.fails("templates", "--token", "not-a-token")

    created = cli.json(
        "token", "create", "--name", "ci", "--role", "viewer", "-n", "default", env=as_admin
    )
    assert (created["name"], created["role"], created["namespace"]) == ("ci", "viewer", "default")
    listed = rows(cli.ok("token", "list", env=as_admin))
    assert listed[0] == ["NAME", "ROLE", "NAMESPACE", "CREATED", "LAST USED"]
    assert sorted((r[0], r[1], r[2]) for r in listed[1:]) == [
        ("ci", "viewer", "default"),
        ("root", "admin", "*"),
    ]
    assert all("token" not in t for t in cli.json("token", "list", env=as_admin))

    viewer = {"JOBYARD_TOKEN": created["token"]}
    assert cli.json("templates", env=viewer) == []
    spec = json.dumps({"name": "x", "deployment": {"script": "true"}})
    refused = cli.fails("apply", "-f", "-", stdin=spec, env=viewer)
    assert "the token's role may not do this" in refused

    assert cli.ok("token", "revoke", "ci", env=as_admin) == "token ci revoked\n"
    assert "token was rejected" in cli.fails("templates", env=viewer)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[JobyardServer, Path]]:
    """An HTTPS server whose certificate a throwaway CA signed; yields it and the CA file."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    cert, key, ca_file = tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem"
    for index, blob in enumerate(issued.cert_chain_pems):
        blob.write_to_path(str(cert), append=index > 0)
    issued.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    data = tmp_path / "data"
    data.mkdir()
    jobyard = start_server(
        data,
        extra_args=["--tls-cert", str(cert), "--tls-key", str(key)],
        scheme="https",
        verify=trusting,
    )
    yield jobyard, ca_file
    stop_server(jobyard)


def test_https_with_ca_cert_or_insecure(tls_server: tuple[JobyardServer, Path]) -> None:
    server, ca_file = tls_server
    cli = Cli(home=ca_file.parent, url=server.url)
    refused = cli.fails("templates")
    assert refused.startswith(f"error: cannot reach jobyard at {server.url} (certificate verify")
    assert "--ca-cert PATH or --insecure" in refused
    assert cli.json("templates", "--ca-cert", str(ca_file)) == []
    assert cli.json("templates", env={"JOBYARD_CA_CERT": str(ca_file)}) == []
    assert cli.json("templates", "--insecure") == []


def test_entry_points(offline: Cli) -> None:
    shown = offline.ok("--help")
    for command in ("server", "apply", "templates", "run", "logs", "events", "token"):
        assert command in shown
    assert "--install-completion" in shown
    module = subprocess.run(
        [sys.executable, "-m", "jobyard", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert module.returncode == 0 and "--replicas" in module.stdout and "--url" in module.stdout


def test_server_raises_its_open_files_limit(tmp_path: Path) -> None:
    """Each live instance holds a descriptor: a soft limit of 512 must not cap them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 512:
        pytest.skip(f"the hard limit on open files is only {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    try:
        jobyard = start_server(tmp_path)  # inherits the soft limit of 512
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert jobyard.process is not None
        limits = Path(f"/proc/{jobyard.process.pid}/limits").read_text()
        line = next(row for row in limits.splitlines() if row.startswith("Max open files"))
        server_soft = line.split()[3]
        assert server_soft == "unlimited" or int(server_soft) > 512, line
    finally:
        stop_server(jobyard)
