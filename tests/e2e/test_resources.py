"""End-to-end: instance CPU and memory through the real server.

An instance that allocates past its template's memory limit ends ``failed``
with reason ``OOMKilled``; every instance shows its peak memory and CPU
seconds; ``/api/v1/info`` says how limits are enforced. On this machine the
default mode is a cgroup (v1); ``--resource-limits psutil`` forces the
fallback.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support import JobyardServer, script_template, start_server, stop_server

MIB = 1024 * 1024

# Holds 200 MB (written, so every page is touched) for a while, then succeeds.
ALLOCATE_200MB = """python3 -c '
import time
chunks = []
for _ in range(20):
    chunks.append(b"x" * (10 * 1000 * 1000))
time.sleep(30)
'"""


def hungry_template(name: str) -> dict[str, Any]:
    return script_template(name, ALLOCATE_200MB, retries=0, resources={"cpu": 1, "memory_mb": 64})


def assert_oom_killed(server: JobyardServer, name: str) -> None:
    server.create_template(hungry_template(name))
    task = server.run(name)

    done = server.wait_task(task["id"], timeout=90)

    assert done["status"] == "failed"
    [instance] = server.instances(task["id"])
    assert (instance["status"], instance["reason"]) == ("failed", "OOMKilled")
    assert instance["exit_code"] == 137
    assert "memory limit of 64 MiB" in instance["message"]
    assert instance["peak_memory_bytes"] >= 32 * MIB
    assert instance["cpu_seconds"] is not None
    [event] = [e for e in server.events(task_id=task["id"]) if e["reason"] == "OOMKilled"]
    assert event["severity"] == "warning"
    assert "passed its memory limit of 64 MiB" in event["message"]


def test_an_instance_past_its_memory_limit_ends_oom_killed(server: JobyardServer) -> None:
    info = server.api("GET", "/info", expect=200)
    assert info["resource_limits"]["mode"] in ("cgroup-v1", "cgroup-v2")  # this host has cgroups

    assert_oom_killed(server, "hungry")


def test_every_instance_records_peak_memory_and_cpu_seconds(server: JobyardServer) -> None:
    script = """python3 -c '
import time
held = b"x" * (50 * 1000 * 1000)
start = time.process_time()
while time.process_time() - start < 0.5:
    pass
'"""
    server.create_template(script_template("measured", script, resources={"cpu": 1}))
    task = server.run("measured")

    assert server.wait_task(task["id"], timeout=60)["status"] == "succeeded"
    [instance] = server.instances(task["id"])
    assert instance["reason"] is None
    assert instance["peak_memory_bytes"] >= 50 * 1000 * 1000
    assert instance["cpu_seconds"] > 0.25


def test_the_psutil_fallback_can_be_forced(tmp_path: Path) -> None:
    server = start_server(tmp_path, extra_args=["--resource-limits", "psutil"])
    try:
        info = server.api("GET", "/info", expect=200)
        assert info["resource_limits"] == {"mode": "psutil"}
        assert_oom_killed(server, "hungry-watched")
    finally:
        stop_server(server)


def test_an_unknown_resource_limits_mode_is_refused(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "jobyard", "server", "--data-dir", str(tmp_path)]
    done = subprocess.run(
        [*command, "--resource-limits", "cgroups"], capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 2
    assert "unknown mode 'cgroups'; one of auto, cgroup, psutil, off" in done.stderr
    assert "Traceback" not in done.stderr
