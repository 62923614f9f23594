"""The local runner: each instance is a process tree on this host.

Layout: ``data_dir/tasks/<task_id>/<instance_id>/`` holds ``script``,
``output.log`` (the process's own stdout and stderr, so logs survive a server
crash), ``pid`` and ``exit`` (written by the instance's wrapper, so a new
server can account for it), ``stopping`` (left by ``stop`` just before its
SIGTERM) and ``work/`` (cwd and $HOME; removed when the instance ends).
Everything else stays until ``remove_task_files``.

Each instance is its own session and process group led by a /bin/sh wrapper
(see ``_process``); one watcher thread reports exits and escalates stops
(see ``_watcher``). ``close`` leaves instances running for the next server
to adopt through ``recover``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from pathlib import Path

from jobyard.errors import Conflict
from jobyard.runners._process import (
    instance_env,
    is_wrapper_of,
    kill_leftover_group,
    remove_tree,
    spawn_wrapper,
)
from jobyard.runners._watcher import ExitWatcher, WatchedInstance
from jobyard.runners.base import (
    SCRIPT_PATH,
    ExitCallback,
    InstanceExit,
    InstanceLaunch,
    Recovered,
)

logger = logging.getLogger(__name__)


class LocalRunner:
    """Starts, watches and stops instances as local process trees. Thread-safe.

    ``on_exit`` is called on the watcher thread, once per instance, after the
    instance's whole process group is gone; it should return quickly.
    """

    def __init__(self, data_dir: Path, on_exit: ExitCallback) -> None:
        # Resolved: the run dir is matched against wrapper command lines in recover.
        self._tasks_dir = data_dir.resolve() / "tasks"
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._pids: dict[int, int] = {}  # instance id -> wrapper pid, while watched
        self._closed = False
        self._watcher = ExitWatcher(self._instance_ended)

    def start(self, launch: InstanceLaunch) -> int:
        """Start the instance; return its pid. Its exit is reported via on_exit."""
        run_dir = self._run_dir(launch.task_id, launch.instance_id)
        env = instance_env(launch.env, run_dir / "work")
        with self._lock:
            self._check_open()
            self._prepare(run_dir, launch)
            if launch.payload is not None:
                (run_dir / "payload.json").write_bytes(launch.payload)
                env["JOBYARD_PAYLOAD_FILE"] = str(run_dir / "payload.json")
            argv = [str(run_dir / "script") if arg == SCRIPT_PATH else arg for arg in launch.argv]
            pid = spawn_wrapper(run_dir, argv, env)
            self._watch(launch.instance_id, pid, _pidfd_of_child(pid), run_dir, adopted=False)
        logger.debug("instance %s started as pid %s", launch.instance_id, pid)
        return pid

    def stop(self, instance_id: int, grace_seconds: float) -> None:
        """SIGTERM the instance's whole tree, SIGKILL what is left after the grace."""
        self._watcher.stop(instance_id, max(0.0, grace_seconds))

    def recover(self, task_id: int, instance_id: int) -> Recovered:
        """Find an instance an earlier server started, and watch it if alive."""
        run_dir = self._run_dir(task_id, instance_id)
        with self._lock:
            self._check_open()
            if instance_id in self._pids:
                return Recovered("running", pid=self._pids[instance_id])
            pid = _read_int(run_dir / "pid")
            if (run_dir / "exit").exists():
                return _exited(run_dir, pid)
            if pid is not None and self._adopt(instance_id, pid, run_dir):
                return Recovered("running", pid=pid)
            if (run_dir / "exit").exists():  # it ended while we looked
                return _exited(run_dir, pid)
            if pid is not None:
                kill_leftover_group(pid, run_dir)
            return Recovered("gone")

    def log_path(self, task_id: int, instance_id: int) -> Path:
        """The file that holds the instance's stdout and stderr."""
        return self._run_dir(task_id, instance_id) / "output.log"

    def remove_task_files(self, task_id: int) -> None:
        """Delete every file of the task: logs, scripts, working directories."""
        remove_tree(self._tasks_dir / str(task_id))

    def stored_task_ids(self) -> list[int]:
        """Tasks that have a directory here."""
        if not self._tasks_dir.is_dir():
            return []
        return [int(entry.name) for entry in self._tasks_dir.iterdir() if entry.name.isdigit()]

    def discard_task(self, task_id: int) -> None:
        """SIGKILL whatever still runs of the task and delete its files."""
        task_dir = self._tasks_dir / str(task_id)
        for pid_file in task_dir.glob("*/pid"):
            pid = _read_int(pid_file)
            if pid is not None:
                kill_leftover_group(pid, pid_file.parent)
        remove_tree(task_dir)

    def close(self) -> None:
        """Stop watching (instances keep running; a new server adopts them)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        # Outside the lock: the watcher thread takes it to report an exit.
        self._watcher.close()

    def _run_dir(self, task_id: int, instance_id: int) -> Path:
        return self._tasks_dir / str(task_id) / str(instance_id)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the local runner is closed")

    def _prepare(self, run_dir: Path, launch: InstanceLaunch) -> None:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        if run_dir.is_dir() and not (run_dir / "pid").exists():
            # Prepared by a server that died before the wrapper ran: never started.
            remove_tree(run_dir)
        try:
            run_dir.mkdir()
        except FileExistsError:
            # Never reuse a run dir: its pid/exit files would lie about this start.
            raise Conflict(f"instance {run_dir.name} was already started") from None
        if launch.script is not None:
            (run_dir / "script").write_text(launch.script, encoding="utf-8")
        (run_dir / "work").mkdir()

    def _adopt(self, instance_id: int, pid: int, run_dir: Path) -> bool:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        # Checked after opening: the pidfd then holds the very process we checked.
        if not is_wrapper_of(pid, run_dir):
            os.close(pidfd)
            return False
        self._watch(instance_id, pid, pidfd, run_dir, adopted=True)
        logger.info("adopted running instance %s (pid %s)", instance_id, pid)
        return True

    def _watch(self, instance_id: int, pid: int, pidfd: int, run_dir: Path, adopted: bool) -> None:
        self._pids[instance_id] = pid
        self._watcher.watch(WatchedInstance(instance_id, pid, pidfd, run_dir, adopted))

    def _instance_ended(self, instance: WatchedInstance, status: int | None) -> None:
        """Called on the watcher thread once the instance's group is killed and reaped."""
        exit_code = status
        if instance.adopted:
            exit_code = _read_int(instance.run_dir / "exit")
            if exit_code is None:
                exit_code = status
        remove_tree(instance.run_dir / "work")
        with self._lock:
            self._pids.pop(instance.instance_id, None)
        report = InstanceExit(instance.instance_id, exit_code, instance.stop_requested)
        try:
            self._on_exit(report)
        except Exception:
            logger.exception("on_exit failed for instance %s", instance.instance_id)


def _pidfd_of_child(pid: int) -> int:
    """A pidfd for a child we just spawned; kill and reap it if none can be had."""
    try:
        return os.pidfd_open(pid)
    except OSError:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        raise


def _exited(run_dir: Path, pid: int | None) -> Recovered:
    if pid is not None:
        kill_leftover_group(pid, run_dir)
    return Recovered("exited", exit_code=_read_int(run_dir / "exit"))


def _read_int(path: Path) -> int | None:
    """The integer a wrapper wrote to ``path``; None if missing or torn."""
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None
