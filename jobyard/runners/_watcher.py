"""The one thread that waits for every instance's exit and runs stop deadlines.

Each wrapper is watched through a pidfd in a single selector; the selector's
timeout is the nearest SIGKILL deadline, and an eventfd wakes it when another
thread hands it work. Only this thread signals or reaps wrappers, so a signal
can never race with the reaping that would free the wrapper's pid for reuse.
"""

from __future__ import annotations

import heapq
import logging
import os
import queue
import resource
import selectors
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from jobyard.runners._process import (
    in_group,
    kill_all,
    kill_leftover_group,
    killpg,
    reap,
    reap_child,
    signal_tree,
    terminate_tree,
)

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class WatchedInstance:
    """A wrapper under watch. After ``watch`` only the watcher thread changes it."""

    instance_id: int
    pid: int
    pidfd: int
    run_dir: Path
    adopted: bool  # started by an earlier server: not our child, its code is in `exit`
    stop_requested: bool = False
    kill_at: float | None = None
    # Descendants that left the group, seen when stopping: killed at the end too.
    escaped: list[psutil.Process] = field(default_factory=list)


EndedCallback = Callable[[WatchedInstance, int | None, resource.struct_rusage | None], None]
# Signals the processes of an instance the runner knows of (its cgroup) but for
# those the predicate says were already reached: (instance id, signal, reached).
SignalMembers = Callable[[int, int, Callable[[int], bool]], None]
_Command = Callable[[], None]


class ExitWatcher:
    """Reports each watched wrapper's end once, with its exit code and usage (if ours)."""

    def __init__(self, on_ended: EndedCallback, signal_members: SignalMembers) -> None:
        self._on_ended = on_ended
        self._signal_members = signal_members
        self._lock = threading.Lock()
        self._closed = False
        self._inbox: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._wakeup = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wakeup, selectors.EVENT_READ, None)
        self._instances: dict[int, WatchedInstance] = {}
        self._deadlines: list[tuple[float, int]] = []
        self._running = True
        self._thread = threading.Thread(target=self._run, name="jobyard-exit-watcher", daemon=True)
        self._thread.start()

    def watch(self, instance: WatchedInstance) -> None:
        """Start watching; takes ownership of ``instance.pidfd``."""
        if not self._send(lambda: self._add(instance)):
            os.close(instance.pidfd)

    def stop(self, instance_id: int, grace_seconds: float) -> None:
        """SIGTERM the instance's tree now and SIGKILL it after the grace."""
        self._send(lambda: self._stop(instance_id, grace_seconds))

    def close(self) -> None:
        """Stop the thread and release every descriptor; the processes live on."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._inbox.put(self._shut_down)
            os.eventfd_write(self._wakeup, 1)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _send(self, command: _Command) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._inbox.put(command)
            os.eventfd_write(self._wakeup, 1)
        return True

    def _run(self) -> None:
        while self._running:
            for key, _ in self._selector.select(self._timeout()):
                if key.data is None:
                    self._run_commands()
                else:
                    self._guarded(self._ended, key.data)
            self._kill_overdue()
        self._release()

    def _timeout(self) -> float | None:
        if not self._deadlines:
            return None
        return max(0.0, self._deadlines[0][0] - time.monotonic())

    def _run_commands(self) -> None:
        os.eventfd_read(self._wakeup)
        while True:
            try:
                command = self._inbox.get_nowait()
            except queue.Empty:
                return
            self._guarded(command)

    def _guarded(self, func: Callable[..., object], *args: object) -> None:
        # One bad instance must not stop the thread every other exit depends on.
        try:
            func(*args)
        except Exception:
            logger.exception("exit watcher: %s failed", getattr(func, "__name__", func))

    def _add(self, instance: WatchedInstance) -> None:
        self._instances[instance.instance_id] = instance
        self._selector.register(instance.pidfd, selectors.EVENT_READ, instance)

    def _stop(self, instance_id: int, grace_seconds: float) -> None:
        instance = self._instances.get(instance_id)
        if instance is None:
            return  # unknown, or already ended
        if not instance.stop_requested:
            instance.stop_requested = True
            instance.escaped = terminate_tree(instance.pidfd, instance.pid, instance.run_dir)
            self._signal_rest(instance, signal.SIGTERM)
        kill_at = time.monotonic() + grace_seconds
        if instance.kill_at is None or kill_at < instance.kill_at:
            instance.kill_at = kill_at
            heapq.heappush(self._deadlines, (kill_at, instance_id))

    def _kill_overdue(self) -> None:
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            kill_at, instance_id = heapq.heappop(self._deadlines)
            instance = self._instances.get(instance_id)
            if instance is not None and instance.kill_at == kill_at:
                logger.info("instance %s outlived its stop grace; killing it", instance_id)
                kill_all(instance.escaped)
                self._guarded(signal_tree, instance.pidfd, instance.pid, signal.SIGKILL)
                self._signal_rest(instance, signal.SIGKILL)

    def _signal_rest(self, instance: WatchedInstance, sig: int) -> None:
        """Reach the instance's processes that neither its group nor its known
        escapees hold: a SIGTERM must arrive once, not twice."""
        escaped = {proc.pid for proc in instance.escaped}

        def reached(pid: int) -> bool:
            return pid in escaped or in_group(pid, instance.pid)

        self._guarded(self._signal_members, instance.instance_id, sig, reached)

    def _ended(self, instance: WatchedInstance) -> None:
        self._selector.unregister(instance.pidfd)
        del self._instances[instance.instance_id]
        rusage = None
        try:
            self._kill_leftovers(instance)
            if instance.adopted:
                status = reap(instance.pidfd)  # reaps only if it is our child after all
            else:
                status, rusage = reap_child(instance.pid)
        finally:
            os.close(instance.pidfd)
        self._on_ended(instance, status, rusage)

    def _kill_leftovers(self, instance: WatchedInstance) -> None:
        # Our own wrapper is an unreaped zombie here, which keeps its pid (the
        # group id) from being reused; an adopted one may already be reaped.
        if instance.adopted:
            kill_leftover_group(instance.pid, instance.run_dir)
        else:
            killpg(instance.pid, signal.SIGKILL)
        kill_all(instance.escaped)

    def _shut_down(self) -> None:
        self._running = False

    def _release(self) -> None:
        for instance in self._instances.values():
            os.close(instance.pidfd)
        self._instances.clear()
        self._selector.close()
        os.close(self._wakeup)
