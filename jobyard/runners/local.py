"""The local runner: each instance is a process tree on this host.

Layout: ``data_dir/tasks/<task_id>/<instance_id>/`` holds ``script``,
``output.log`` (the process's own stdout and stderr, so logs survive a server
crash), ``pid`` and ``exit`` (written by the instance's wrapper, so a new
server can account for it), ``stopping`` (left by ``stop`` just before its
SIGTERM), ``resources.json`` (its limits and cgroups), ``cleanup.json`` (a
command to run once it has ended; renamed ``cleanup.ran`` when claimed) and
``work/`` (cwd and $HOME, holding links to the entries of a shared directory;
emptied when the instance ends). Everything stays until ``remove_task_files``.

Each instance is its own session and process group led by a /bin/sh wrapper
(see ``_process``; on cgroup v1 mostly a starter that waited in its cgroup for
it, see ``_starters``), inside its own cgroups where the host allows (see
``_limits``); one watcher thread reports exits and escalates stops (see
``_watcher``). ``close`` leaves instances running for the next server to
adopt through ``recover``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from jobyard.runners._limits import SETTINGS, InstanceResources, ResourceLimits, Usage
from jobyard.runners._pid_file import PID_FILE, has_ended, read_exit_code, read_pid
from jobyard.runners._process import (
    STOP_MARKER,
    empty_dir,
    handle_ignored_signals,
    instance_env,
    is_wrapper_of,
    kill_leftover_group,
    remove_tree,
    run_cleanup,
    spawn_wrapper,
)
from jobyard.runners._spares import READY as SPARES_READY
from jobyard.runners._spares import SpareRunDirs, drop_unused
from jobyard.runners._starters import (
    READY,
    abandon,
    can_start_warm,
    discard,
    hand_over,
    instance_input,
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

# What ``resource_limits`` may say: auto (cgroups where possible, else psutil),
# cgroup (cgroups or refuse to start), psutil, off.
RESOURCE_LIMITS = SETTINGS
CLEANUP_FILE = "cleanup.json"
CLEANUP_TIMEOUT_SECONDS = 30.0


class LocalRunner:
    """Starts, watches and stops instances as local process trees. Thread-safe.

    ``starters``: how many wrappers wait in their cgroups for the next instances
    (cgroup v1; see ``_starters``); 0 spawns each wrapper when its instance starts.

    ``on_exit`` is called on the watcher thread, once per instance, after the
    instance's whole process group is gone; it should return quickly.
    """

    def __init__(
        self,
        data_dir: Path,
        on_exit: ExitCallback,
        resource_limits: str = "auto",
        starters: int = READY,
        spares: int = SPARES_READY,
    ) -> None:
        # Resolved: the run dir is matched against wrapper command lines in recover.
        self._tasks_dir = data_dir.resolve() / "tasks"
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._pids: dict[int, int] = {}  # instance id -> wrapper pid, while watched
        self._resources: dict[int, InstanceResources] = {}  # likewise
        self._closed = False
        handle_ignored_signals()
        self._limits = ResourceLimits(resource_limits, data_dir, starters)
        self._spares = SpareRunDirs(self._tasks_dir, spares)
        self._cleanups = ThreadPoolExecutor(max_workers=2, thread_name_prefix="jobyard-cleanup")
        self._watcher = ExitWatcher(self._instance_ended, self._signal_members)

    @property
    def limits_mode(self) -> str:
        """How CPU and memory are enforced: "cgroup-v2", "cgroup-v1", "psutil" or "off"."""
        return self._limits.mode

    def start(self, launch: InstanceLaunch) -> int:
        """Start the instance; return its pid. Its exit is reported via on_exit."""
        run_dir = self._run_dir(launch.task_id, launch.instance_id)
        env = instance_env(launch.env, run_dir / "work")
        with self._lock:
            self._check_open()
        # Outside the lock, so that several threads can start instances at once:
        # each has its own run directory, which _prepare creates exclusively.
        self._prepare(run_dir, launch)
        if launch.payload is not None:
            env["JOBYARD_PAYLOAD_FILE"] = str(run_dir / "payload.json")
        argv = [str(run_dir / "script") if arg == SCRIPT_PATH else arg for arg in launch.argv]
        started = self._start_warm(run_dir, launch, argv, env)
        pid, pidfd, resources = started or self._start_cold(run_dir, launch, argv, env)
        resources.started(pid)
        with self._lock:
            # Closed meanwhile: the watcher declines it (closing the pidfd) and
            # the instance runs on, for the next server to adopt.
            self._watch(launch.instance_id, pid, pidfd, run_dir, resources, adopted=False)
        logger.debug("instance %s started as pid %s", launch.instance_id, pid)
        return pid

    def _start_warm(
        self, run_dir: Path, launch: InstanceLaunch, argv: list[str], env: dict[str, str]
    ) -> tuple[int, int, InstanceResources] | None:
        """Hand the instance to a starter (see ``_starters``); None: there is none."""
        if launch.limits is None or not can_start_warm(env):
            return None
        starter = self._limits.take_starter(launch.limits)
        if starter is None:
            return None
        resources = self._limits.prepare_warm(run_dir, launch.instance_id, launch.limits, starter)
        if resources is None:
            discard(starter)
            return None
        try:
            hand_over(starter, instance_input(run_dir, argv, env))
        except OSError as err:
            logger.warning("a starter failed; instance %s starts cold: %s", launch.instance_id, err)
            abandon(starter)
            resources.finish(None, None)
            return None
        return starter.pid, starter.pidfd, resources

    def _start_cold(
        self, run_dir: Path, launch: InstanceLaunch, argv: list[str], env: dict[str, str]
    ) -> tuple[int, int, InstanceResources]:
        resources = self._limits.prepare(run_dir, launch.instance_id, launch.limits)
        try:
            pid = spawn_wrapper(run_dir, argv, env, resources.join_files())
            pidfd = _pidfd_of_child(pid)
        except BaseException:
            resources.finish(None, None)  # removes its cgroups
            raise
        return pid, pidfd, resources

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
            pid = read_pid(run_dir)
            if has_ended(run_dir):
                return self._exited(instance_id, run_dir, pid)
            if pid is not None and self._adopt(instance_id, pid, run_dir):
                return Recovered("running", pid=pid)
            if has_ended(run_dir):  # it ended while we looked
                return self._exited(instance_id, run_dir, pid)
            if pid is not None:
                kill_leftover_group(pid, run_dir)
            self._limits.discard(run_dir)
            self._clean_up_after(run_dir)
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
        run_dirs = list(task_dir.glob("*/"))
        for run_dir in run_dirs:
            pid = read_pid(run_dir)
            if pid is not None:
                kill_leftover_group(pid, run_dir)
        for run_dir in run_dirs:
            self._limits.discard(run_dir)
            self._clean_up_after(run_dir, keep_output=False)
        remove_tree(task_dir)

    def close(self) -> None:
        """Stop watching (instances keep running; a new server adopts them)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        # Outside the lock: the watcher thread takes it to report an exit.
        self._watcher.close()
        self._limits.close()
        self._spares.close()
        self._cleanups.shutdown(wait=True)

    def _run_dir(self, task_id: int, instance_id: int) -> Path:
        return self._tasks_dir / str(task_id) / str(instance_id)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the local runner is closed")

    def _prepare(self, run_dir: Path, launch: InstanceLaunch) -> None:
        if run_dir.is_dir() and read_pid(run_dir) is None:
            # Prepared by a server that died before the wrapper ran: never started.
            self._limits.discard(run_dir)
            remove_tree(run_dir)
        from_spare = self._spares.make(run_dir)
        if launch.script is not None:
            (run_dir / "script").write_text(launch.script, encoding="utf-8")
        if launch.payload is not None:
            (run_dir / "payload.json").write_bytes(launch.payload)
        if from_spare:
            drop_unused(run_dir, _written(launch))
        if launch.cleanup is not None:
            (run_dir / CLEANUP_FILE).write_text(json.dumps(list(launch.cleanup)))
        if launch.shared_dir is not None:
            _link_entries(launch.shared_dir, run_dir / "work")

    def _adopt(self, instance_id: int, pid: int, run_dir: Path) -> bool:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        # Checked after opening: the pidfd then holds the very process we checked.
        if not is_wrapper_of(pid, run_dir):
            os.close(pidfd)
            return False
        resources = self._limits.adopt(run_dir, instance_id, pid)
        self._watch(instance_id, pid, pidfd, run_dir, resources, adopted=True)
        logger.info("adopted running instance %s (pid %s)", instance_id, pid)
        return True

    def _watch(
        self,
        instance_id: int,
        pid: int,
        pidfd: int,
        run_dir: Path,
        resources: InstanceResources,
        adopted: bool,
    ) -> None:
        self._pids[instance_id] = pid
        self._resources[instance_id] = resources
        self._watcher.watch(WatchedInstance(instance_id, pid, pidfd, run_dir, adopted))

    def _signal_members(self, instance_id: int, sig: int, reached: Callable[[int], bool]) -> None:
        """Called on the watcher thread when it stops an instance: reach its cgroup too."""
        with self._lock:
            resources = self._resources.get(instance_id)
        if resources is not None:
            resources.signal(sig, reached)

    def _instance_ended(
        self, instance: WatchedInstance, status: int | None, rusage: resource.struct_rusage | None
    ) -> None:
        """Called on the watcher thread once the instance's group is killed and reaped."""
        exit_code = status
        if instance.adopted:
            # Its wrapper has exited: the file is complete or will never be.
            exit_code = read_exit_code(instance.run_dir, attempts=1)
            if exit_code is None:
                exit_code = status
        with self._lock:
            self._pids.pop(instance.instance_id, None)
            resources = self._resources.pop(instance.instance_id, None)
        resources = resources or InstanceResources(None)
        usage = resources.finish(exit_code, rusage)
        empty_dir(instance.run_dir / "work")
        self._clean_up_after(instance.run_dir)
        report = _report(
            instance.instance_id,
            exit_code,
            instance.stop_requested,
            usage,
            resources.memory_limit_bytes,
        )
        try:
            self._on_exit(report)
        except Exception:
            logger.exception("on_exit failed for instance %s", instance.instance_id)

    def _exited(self, instance_id: int, run_dir: Path, pid: int | None) -> Recovered:
        """An instance that ended while no server watched it."""
        exit_code = read_exit_code(run_dir)  # first: its wrapper may be writing it
        if pid is not None:
            kill_leftover_group(pid, run_dir)
        usage = self._limits.collect(run_dir, exit_code)
        empty_dir(run_dir / "work")
        self._clean_up_after(run_dir)
        stopped = (run_dir / STOP_MARKER).exists()
        limit = self._limits.memory_limit(run_dir)
        report = _report(instance_id, exit_code, stopped, usage, limit)
        return Recovered("exited", exit_code=exit_code, exit=report)

    def _clean_up_after(self, run_dir: Path, keep_output: bool = True) -> None:
        """Run the instance's cleanup command in the background, once ever.

        Claimed by renaming its file, so it never runs twice even when two paths
        (an exit and a discard, say) race; a server that dies right after the
        claim leaves it unrun.
        """
        claimed = run_dir / "cleanup.ran"
        try:
            os.rename(run_dir / CLEANUP_FILE, claimed)
            argv = json.loads(claimed.read_text())
        except (OSError, ValueError):
            return
        log = run_dir / "output.log" if keep_output else None
        try:
            self._cleanups.submit(run_cleanup, argv, log, CLEANUP_TIMEOUT_SECONDS)
        except RuntimeError:  # closed: run it here rather than never
            run_cleanup(argv, log, CLEANUP_TIMEOUT_SECONDS)


def _report(
    instance_id: int, exit_code: int | None, stopped: bool, usage: Usage, limit: int | None
) -> InstanceExit:
    return InstanceExit(
        instance_id,
        exit_code,
        stopped,
        oom_killed=usage.oom_killed,
        peak_memory_bytes=usage.peak_memory_bytes,
        cpu_seconds=usage.cpu_seconds,
        memory_limit_bytes=limit,
    )


def _written(launch: InstanceLaunch) -> set[str]:
    """The run directory's files this start writes (the rest of a spare's go)."""
    used = {"resources.json", "output.log", PID_FILE}
    if launch.script is not None:
        used.add("script")
    if launch.payload is not None:
        used.add("payload.json")
    return used


def _link_entries(shared_dir: Path, work: Path) -> None:
    """Link each top-level entry of the shared (read-only) directory into work/."""
    shared_dir = shared_dir.resolve(strict=True)
    for entry in shared_dir.iterdir():
        (work / entry.name).symlink_to(entry)


def _pidfd_of_child(pid: int) -> int:
    """A pidfd for a child we just spawned; kill and reap it if none can be had."""
    try:
        return os.pidfd_open(pid)
    except OSError:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        raise
