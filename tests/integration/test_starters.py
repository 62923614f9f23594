"""Starters: wrappers waiting in their cgroup for an instance (runners/_starters.py).

The local runner's own behaviour with and without them is tested in
test_local_runner.py (its "warm" harness); here, what is particular to them.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from jobyard.runners._process import WRAPPER_NAME
from jobyard.runners._starters import READY, can_start_warm, instance_input
from jobyard.runners.base import Limits
from jobyard.runners.local import LocalRunner
from tests.integration.test_local_runner import ExitQueue, Harness, next_exit, wait_for

LIMITS = Limits(cpu=1.0, memory_bytes=256 * 1024 * 1024)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path, LIMITS)
    try:
        yield h
    finally:
        h.clean_up()


def v1_runner(harness: Harness) -> tuple[LocalRunner, ExitQueue]:
    runner, exits = harness.runner("auto")
    if runner.limits_mode != "cgroup-v1":
        pytest.skip(f"starters wait in pooled cgroup v1 sets; this host: {runner.limits_mode}")
    return runner, exits


def waiting_starters(count: int = READY) -> set[int]:
    """Pids of this process's children that are starters not yet given an instance."""

    def found() -> set[int]:
        pids = set()
        for child in psutil.Process().children():
            try:
                if WRAPPER_NAME in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                    pids.add(child.pid)
            except psutil.Error:
                continue
        return pids

    wait_for(lambda: len(found()) >= count)
    return found()


def test_a_start_is_handed_to_a_starter_already_in_its_cgroup(harness: Harness) -> None:
    runner, exits = v1_runner(harness)
    waiting = waiting_starters()

    pid = harness.start(runner, harness.launch(1, 1, "cat /proc/self/cgroup"))

    assert pid in waiting
    assert next_exit(exits).exit_code == 0
    memory = [line for line in runner.log_path(1, 1).read_text().splitlines() if ":memory:" in line]
    assert memory and memory[0].endswith("/1"), memory  # renamed to the instance's own
    assert len(waiting_starters()) == READY  # another took its place


def test_only_an_environment_the_shell_can_export_as_given_goes_to_a_starter() -> None:
    assert can_start_warm({"PATH": "/bin", "dir": "d", "jobyard_dir": "j", "_x1": ""})
    assert not can_start_warm({"MY-VAR": "x"})  # not a shell name: the cold wrapper passes it
    assert not can_start_warm({"JOBYARD_WRAPPER_DIR": "x"})  # the wrapper's own (reserved)


def test_a_starter_that_died_while_waiting_is_passed_over(harness: Harness) -> None:
    runner, exits = v1_runner(harness)
    for pid in waiting_starters():
        os.kill(pid, signal.SIGKILL)

    harness.start(runner, harness.launch(1, 1, "echo ran"))

    assert next_exit(exits).exit_code == 0
    assert runner.log_path(1, 1).read_text() == "ran\n"


def test_closing_the_runner_ends_the_waiting_starters_and_removes_their_cgroups(
    harness: Harness,
) -> None:
    runner, _ = v1_runner(harness)
    waiting = waiting_starters()
    cgroups = [path for pid in waiting for path in _memory_cgroup(pid)]
    assert len(cgroups) == len(waiting) and all(path.is_dir() for path in cgroups)

    runner.close()

    for pid in waiting:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped by the runner
    assert not any(path.exists() for path in cgroups)


@pytest.mark.parametrize("cut", ["no ready line", "a quote left open"])
def test_a_starter_whose_input_is_cut_short_runs_nothing(harness: Harness, cut: str) -> None:
    runner, _ = v1_runner(harness)
    waiting_starters()
    run_dir = harness.run_dir(1, 1)
    (run_dir / "work").mkdir(parents=True)
    starter = runner._limits.take_starter(LIMITS)
    assert starter is not None
    whole = instance_input(run_dir, ["/bin/sh", "-c", "echo ran"], {"PATH": "/usr/bin:/bin"})
    ready = whole.rindex(b"JOBYARD_WRAPPER_READY=1")
    given = whole[:ready] if cut == "no ready line" else whole[: ready - 4]
    os.write(starter.pipe, given)
    os.close(starter.pipe)

    os.waitid(os.P_PIDFD, starter.pidfd, os.WEXITED)
    os.close(starter.pidfd)
    starter.idle.cgroups.remove_all()

    assert not (run_dir / "output.log").exists()
    assert not (run_dir / "pid").exists()


def _memory_cgroup(pid: int) -> list[Path]:
    """The v1 memory cgroup directory a process is in."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "memory":
            return [Path("/sys/fs/cgroup/memory") / path.lstrip("/")]
    return []
