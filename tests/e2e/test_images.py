"""End-to-end: image templates on a real server, with and without a container engine.

Without an engine (``--container-engine none``, or a PATH without one) an
image template is stored with a warning and each run fails at once with
reason NoContainerRuntime. With podman (``make podman`` sets it up on this
host) real containers run from an image the tests build themselves from
busybox-static with ``podman import``: no registry is needed or reachable.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobyard.runners.containers import engine_prefix
from tests.support import JobyardServer, instance_dir, start_server, stop_server, wait_for

IMAGE = "localhost/jobyard-test:1"
MIB = 1024 * 1024
BUSYBOX_TOOLS = ("sh", "echo", "cat", "env", "sleep", "true", "printf", "grep", "head")


def image_template(name: str, command: list[str], **extra: Any) -> dict[str, Any]:
    deployment = {"type": "image", "image": IMAGE, "command": command, "pull_policy": "Never"}
    deployment.update(extra.pop("deployment", {}))
    return {"name": name, "deployment": deployment, "retry_backoff": 0, **extra}


def reasons(server: JobyardServer, **params: Any) -> list[str]:
    return [e["reason"] for e in server.events(**params)]


# -- without an engine ----------------------------------------------------------------------------


@pytest.fixture
def engineless(database_url: str, tmp_path: Path) -> Iterator[JobyardServer]:
    (tmp_path / "data").mkdir()
    options = ["--container-engine", "none"]
    server = start_server(tmp_path / "data", database_url, extra_args=options)
    try:
        yield server
    finally:
        stop_server(server)


def test_an_image_template_is_stored_with_a_warning(engineless: JobyardServer) -> None:
    info = engineless.api("GET", "/info", expect=200)
    assert info["containers"] == {
        "engine": None,
        "detail": "disabled by configuration (container engine: none)",
    }
    created = engineless.create_template(image_template("img", ["true"]))
    [warning] = created["warnings"]
    assert "image localhost/jobyard-test:1 cannot run here" in warning
    assert "NoContainerRuntime" in warning
    assert "disabled by configuration" in warning
    assert created["spec"]["deployment"]["image"] == IMAGE

    events = engineless.events(template="img", reason="NoContainerRuntime")
    assert [(e["severity"], e["message"]) for e in events] == [("warning", warning)]
    shown = engineless.api("GET", "/namespaces/default/templates/img", expect=200)
    assert shown["warnings"] == [warning]

    # An edit warns again; a script template (or an edit to one) has nothing to warn about.
    path = "/namespaces/default/templates/img"
    edited = engineless.api("PUT", path, expect=200, json=image_template("img", ["false"]))
    assert edited["warnings"] == [warning]
    script = {"name": "img", "deployment": {"type": "script", "script": "true"}}
    assert engineless.api("PUT", path, expect=200, json=script)["warnings"] == []
    assert len(engineless.events(template="img", reason="NoContainerRuntime")) == 2


def test_a_run_fails_at_once_without_retries(engineless: JobyardServer) -> None:
    engineless.create_template(image_template("img", ["true"], retries=3, replicas=2))
    task = engineless.run("img")
    done = engineless.wait_task(task["id"])
    assert done["status"] == "failed"
    instances = engineless.instances(task["id"])
    # One attempt per instance: a missing engine is not retried.
    assert sorted((i["index"], i["attempt"]) for i in instances) == [(0, 0), (1, 0)]
    for instance in instances:
        assert (instance["status"], instance["reason"]) == ("failed", "NoContainerRuntime")
        assert instance["message"] == (
            "no container engine: disabled by configuration (container engine: none)"
        )
    events = engineless.events(task_id=task["id"], reason="NoContainerRuntime")
    by_source = sorted((e["source_type"], e["severity"], e["message"]) for e in events)
    detail = "no container engine: disabled by configuration (container engine: none)"
    assert by_source == [
        ("instance", "error", f"instance 0 could not start: {detail}"),
        ("instance", "error", f"instance 1 could not start: {detail}"),
        ("task", "warning", f"stopping: instance 0: {detail}"),
    ]
    assert "Retrying" not in reasons(engineless, task_id=task["id"])


def test_auto_detection_says_why_nothing_answers(tmp_path: Path) -> None:
    """On a PATH with only a docker CLI, whose engine is not running."""
    docker = shutil.which("docker")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if docker is not None:
        (bin_dir / "docker").symlink_to(docker)
    (tmp_path / "data").mkdir()
    server = start_server(tmp_path / "data", env={"PATH": str(bin_dir)})
    try:
        detail = server.api("GET", "/info", expect=200)["containers"]
    finally:
        stop_server(server)
    assert detail["engine"] is None
    if docker is None:
        assert detail["detail"].endswith("docker is not installed (not found on PATH)")
    elif "does not answer" not in detail["detail"]:
        pytest.skip("a docker engine answers on this host")
    else:
        assert detail["detail"].startswith(
            "podman is not installed (not found on PATH); "
            "docker is installed but its engine does not answer (docker info: "
        )


# -- with podman ----------------------------------------------------------------------------------


def podman_cli(podman: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [podman, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Podman with the test image in its store (removed afterwards); skips,
    saying why, where it cannot run."""
    path = shutil.which("podman")
    if path is None:
        pytest.skip("podman is not installed (make podman installs it)")
    busybox = Path("/bin/busybox")
    if not busybox.is_file():
        pytest.skip("/bin/busybox is missing, the test image is made of it (make podman)")
    rootfs = tmp_path_factory.mktemp("rootfs")
    (rootfs / "bin").mkdir()
    (rootfs / "tmp").mkdir()
    shutil.copy2(busybox, rootfs / "bin" / "busybox")
    for tool in BUSYBOX_TOOLS:
        (rootfs / "bin" / tool).symlink_to("busybox")
    archive = rootfs.parent / "rootfs.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(rootfs, arcname=".")
    imported = podman_cli(path, "import", "--change", "ENV PATH=/bin", str(archive), IMAGE)
    if imported.returncode != 0:
        pytest.skip(f"podman import fails here: {imported.stderr.strip()}")
    try:
        trial = podman_cli(path, "run", "--rm", "--pull=never", IMAGE, "/bin/true")
        if trial.returncode != 0:
            pytest.skip(
                f"podman cannot run a container here (exit {trial.returncode}): "
                f"{trial.stderr.strip()} (make podman configures this host)"
            )
        yield path
    finally:
        podman_cli(path, "rmi", IMAGE)


@pytest.fixture
def podman_server(podman: str, database_url: str, tmp_path: Path) -> Iterator[JobyardServer]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = start_server(data_dir, database_url, extra_args=["--container-engine", "podman"])
    try:
        yield server
    finally:
        stop_server(server)
        for name in containers_of(podman, server):
            podman_cli(podman, "rm", "--force", "--time", "0", name)


def containers_of(podman: str, server: JobyardServer) -> list[str]:
    """Names of the containers (running or not) this server's instances made."""
    prefix = engine_prefix(server.data_dir)
    listed = podman_cli(podman, "ps", "--all", "--format", "{{.Names}}")
    assert listed.returncode == 0, listed.stderr
    return [name for name in listed.stdout.split() if name.startswith(prefix + "-")]


def container_of(server: JobyardServer, instance: dict[str, Any]) -> str:
    return f"{engine_prefix(server.data_dir)}-{instance['id']}"


def wait_container_running(podman: str, server: JobyardServer, task_id: int) -> str:
    def running() -> str | None:
        live = [i for i in server.instances(task_id) if i["status"] == "running"]
        if not live:
            return None
        name = container_of(server, live[0])
        state = podman_cli(podman, "inspect", "--format", "{{.State.Status}}", name)
        return name if state.stdout.strip() == "running" else None

    return wait_for(running, timeout=60, interval=0.2)


def test_a_container_gets_env_args_and_limits_and_its_output_is_the_log(
    podman: str, podman_server: JobyardServer
) -> None:
    info = podman_server.api("GET", "/info", expect=200)["containers"]
    assert info["engine"] == "podman"
    assert info["detail"].startswith("podman ")
    secret = "s3cr3t value with 'quotes' and $dollar"
    script = (
        'echo "greeting=$GREETING"; echo "secret=$SECRET"; echo "args=$*"; '
        'echo "task=$JOBYARD_TASK_ID index=$JOBYARD_INSTANCE_INDEX"; '
        "echo memory=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null"
        " || cat /sys/fs/cgroup/memory.max); "
        "echo cpu=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null"
        " || cut -d' ' -f1 /sys/fs/cgroup/cpu.max); "
        'echo "error line" >&2'
    )
    spec = image_template(
        "hello",
        ["sh", "-c", script, "sh"],
        deployment={"args": ["one two", "three"]},
        env=[{"name": "GREETING", "value": "hello world"}, {"name": "SECRET", "value": secret}],
        resources={"cpu": 0.5, "memory_mb": 64},
    )
    created = podman_server.create_template(spec)
    assert created["warnings"] == []
    task = podman_server.run("hello")
    done = podman_server.wait_task(task["id"], timeout=120)
    assert (done["status"], done["reason"]) == ("succeeded", "Completed")
    [instance] = podman_server.instances(task["id"])
    assert instance["exit_code"] == 0
    lines = podman_server.log(instance["id"]).splitlines()
    assert lines[:4] == [
        "greeting=hello world",
        f"secret={secret}",
        "args=one two three",
        f"task={task['id']} index=0",
    ]
    assert f"memory={64 * MIB}" in lines
    assert "cpu=50000" in lines  # half of the 100000 us period
    assert "error line" in lines
    # The value travelled in the environment, never on a command line or in a file.
    script_file = instance_dir(podman_server, task["id"], instance["id"]) / "script"
    assert "SECRET" in script_file.read_text() and secret not in script_file.read_text()
    wait_for(lambda: not containers_of(podman, podman_server), timeout=30)


def test_the_request_payload_is_mounted_read_only(
    podman: str, podman_server: JobyardServer
) -> None:
    script = (
        'cat "$JOBYARD_PAYLOAD_FILE"; echo; echo "file=$JOBYARD_PAYLOAD_FILE"; '
        '{ echo x >> "$JOBYARD_PAYLOAD_FILE"; } 2>/dev/null && echo writable || echo read-only'
    )
    spec = image_template("hooked", ["sh", "-c", script], trigger={"type": "http"})
    created = podman_server.create_template(spec)
    answer = httpx.post(created["trigger"]["url"], json={"order": 17}, timeout=30)
    assert answer.status_code == 202, answer.text
    done = podman_server.wait_task(answer.json()["id"], timeout=120)
    assert done["status"] == "succeeded"
    [instance] = podman_server.instances(done["id"])
    payload, where, writable = podman_server.log(instance["id"]).splitlines()
    assert json.loads(json.loads(payload)["body"]) == {"order": 17}
    assert (where, writable) == ("file=/run/jobyard/payload.json", "read-only")


def test_the_exit_code_of_the_container_is_the_instance_s(
    podman: str, podman_server: JobyardServer
) -> None:
    podman_server.create_template(image_template("three", ["sh", "-c", "exit 3"], retries=1))
    done = podman_server.wait_task(podman_server.run("three")["id"], timeout=120)
    assert (done["status"], done["reason"]) == ("failed", "BackoffLimitExceeded")
    attempts = podman_server.instances(done["id"])
    assert [(i["attempt"], i["status"], i["exit_code"]) for i in attempts] == [
        (0, "failed", 3),
        (1, "failed", 3),
    ]


def test_a_missing_image_that_may_not_be_pulled_fails_with_the_engine_s_word(
    podman: str, podman_server: JobyardServer
) -> None:
    deployment = {"image": "localhost/jobyard-absent:1", "pull_policy": "Never"}
    spec = image_template("absent", ["true"], deployment=deployment, retries=0)
    podman_server.create_template(spec)
    done = podman_server.wait_task(podman_server.run("absent")["id"], timeout=120)
    assert done["status"] == "failed"
    [instance] = podman_server.instances(done["id"])
    assert instance["exit_code"] == 125  # the engine's own failure, not the container's
    assert "localhost/jobyard-absent:1" in podman_server.log(instance["id"])


def test_stop_ends_the_container_and_removes_it(podman: str, podman_server: JobyardServer) -> None:
    # sleep as the container's PID 1 ignores SIGTERM: the stop must escalate.
    stubborn = image_template("stubborn", ["sleep", "300"], termination_grace_period=1)
    # This one ends on the SIGTERM that podman passes on.
    trap = "trap 'echo got TERM; exit 0' TERM; echo ready; sleep 300 & wait"
    polite = image_template("polite", ["sh", "-c", trap], termination_grace_period=60)
    podman_server.create_template(stubborn)
    podman_server.create_template(polite)
    first = podman_server.run("stubborn")
    second = podman_server.run("polite")
    first_name = wait_container_running(podman, podman_server, first["id"])
    wait_container_running(podman, podman_server, second["id"])
    [polite_instance] = podman_server.instances(second["id"])
    wait_for(lambda: "ready" in podman_server.log(polite_instance["id"]), timeout=30)

    for task in (first, second):
        podman_server.api("POST", f"/tasks/{task['id']}/stop", expect=200)
    for task in (first, second):
        done = podman_server.wait_task(task["id"], timeout=120)
        assert (done["status"], done["reason"]) == ("stopped", "Stopped")
        [instance] = podman_server.instances(task["id"])
        assert instance["status"] == "killed"
    assert "got TERM" in podman_server.log(polite_instance["id"])
    wait_for(lambda: not containers_of(podman, podman_server), timeout=60)
    # What outlived the SIGKILL of its podman run was removed, and the log says so.
    [stubborn_instance] = podman_server.instances(first["id"])
    expected = f"jobyard: container {first_name} outlived podman run; removed it"
    wait_for(lambda: expected in podman_server.log(stubborn_instance["id"]), timeout=30)


def test_a_timeout_ends_the_container(podman: str, podman_server: JobyardServer) -> None:
    spec = image_template("slow", ["sleep", "300"], timeout=2, termination_grace_period=1)
    podman_server.create_template(spec)
    task = podman_server.run("slow")
    done = podman_server.wait_task(task["id"], timeout=120)
    assert (done["status"], done["reason"]) == ("failed", "DeadlineExceeded")
    wait_for(lambda: not containers_of(podman, podman_server), timeout=60)


def test_a_container_past_its_memory_limit_is_killed(
    podman: str, podman_server: JobyardServer
) -> None:
    grow = "x=0123456789abcdef; while :; do x=$x$x; done"
    spec = image_template("greedy", ["sh", "-c", grow], resources={"memory_mb": 32}, retries=0)
    podman_server.create_template(spec)
    done = podman_server.wait_task(podman_server.run("greedy")["id"], timeout=120)
    assert done["status"] == "failed"
    [instance] = podman_server.instances(done["id"])
    assert (instance["status"], instance["exit_code"]) == ("failed", 137)  # SIGKILL
