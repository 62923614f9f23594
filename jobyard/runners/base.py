"""The protocol every runner implements, and the records it exchanges."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# An argv element the runner replaces with the path of the instance's script file.
SCRIPT_PATH = "{script}"


@dataclass(frozen=True)
class Limits:
    """What one instance may use: its template's resources."""

    cpu: float  # cores
    memory_bytes: int


@dataclass(frozen=True)
class InstanceLaunch:
    """A fully resolved instance: everything needed to start its process.

    ``argv`` runs in the instance's own writable working directory; an element
    equal to SCRIPT_PATH names the file ``script`` is written to.
    """

    task_id: int
    instance_id: int
    argv: tuple[str, ...]
    env: Mapping[str, str]
    script: str | None = None
    # The triggering HTTP request as JSON, written to a file named by
    # JOBYARD_PAYLOAD_FILE in the instance's environment.
    payload: bytes | None = None
    limits: Limits | None = None
    # A read-only directory (an unpacked package) whose top-level entries are
    # linked into the working directory.
    shared_dir: Path | None = None
    # Run once the instance has ended, however it ended (removes a container).
    cleanup: tuple[str, ...] | None = None


@dataclass(frozen=True)
class InstanceExit:
    """What the runner knows when an instance's process tree has ended.

    ``exit_code`` follows the shell convention (128 + N when killed by signal
    N) and is None when the process vanished without leaving its exit code
    (an adopted process killed from outside, say). ``stopped`` is True when the
    runner itself ended it because ``stop`` was called.
    """

    instance_id: int
    exit_code: int | None
    stopped: bool
    # The kernel (or the memory watch) killed it for passing its memory limit.
    oom_killed: bool = False
    peak_memory_bytes: int | None = None
    cpu_seconds: float | None = None
    # The limit it was given (for the message of an OOM kill).
    memory_limit_bytes: int | None = None


@dataclass(frozen=True)
class Recovered:
    """What ``recover`` found of an instance started by an earlier server.

    state: "running" (still alive, now watched; its exit will be reported
    through on_exit), "exited" (ended while no server watched; exit_code is
    its code) or "gone" (no trace of a process: never started or vanished).
    For "exited", ``exit`` is the full report (OOM kill and usage included).
    """

    state: str
    pid: int | None = None
    exit_code: int | None = None
    exit: InstanceExit | None = None


ExitCallback = Callable[[InstanceExit], None]


class Runner(Protocol):
    """Starts, watches and stops instances. Thread-safe."""

    @property
    def limits_mode(self) -> str:
        """How CPU and memory are enforced: "cgroup-v2", "cgroup-v1", "psutil" or "off"."""
        ...

    def start(self, launch: InstanceLaunch) -> int:
        """Start the instance; return its pid. Its exit is reported via on_exit."""
        ...

    def stop(self, instance_id: int, grace_seconds: float) -> None:
        """SIGTERM the instance's whole tree, SIGKILL what is left after the grace."""
        ...

    def recover(self, task_id: int, instance_id: int) -> Recovered:
        """Find an instance an earlier server started, and watch it if alive."""
        ...

    def log_path(self, task_id: int, instance_id: int) -> Path:
        """The file that holds the instance's stdout and stderr."""
        ...

    def remove_task_files(self, task_id: int) -> None:
        """Delete every file of the task: logs, scripts, working directories."""
        ...

    def stored_task_ids(self) -> list[int]:
        """Tasks the runner holds files or processes for."""
        ...

    def discard_task(self, task_id: int) -> None:
        """SIGKILL whatever still runs of the task and delete its files (startup sweep)."""
        ...

    def close(self) -> None:
        """Stop watching (instances keep running; a new server adopts them)."""
        ...
