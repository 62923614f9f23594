"""Without cgroups: watch each instance's process tree with psutil.

One thread samples every watched tree a few times a second: the wrapper's
descendants, plus every process once seen in the tree even after it left it
(setsid, reparented to init). It records the highest total RSS and the CPU
time of each process, and when the total RSS passes the memory limit it
SIGKILLs the tree, all but the wrapper, which then records exit code 137.
Nothing throttles CPU in this mode, and a process that leaves the tree and
loses its parent between two samples is never seen.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import psutil

logger = logging.getLogger(__name__)

SAMPLE_SECONDS = 0.25

_Key = tuple[int, float]  # pid and start time: a process, not a reusable number


@dataclass(frozen=True)
class TreeUsage:
    killed_for_memory: bool
    peak_memory_bytes: int
    cpu_seconds: float


class _Tree:
    """One instance's processes as seen so far. Used under MemoryWatch's lock."""

    def __init__(self, instance_id: int, root: psutil.Process, limit_bytes: int | None) -> None:
        self.instance_id = instance_id
        self.root = root
        self.limit_bytes = limit_bytes
        self.seen: dict[_Key, psutil.Process] = {_key(root): root}
        self.cpu: dict[_Key, float] = {}  # last CPU seconds seen of each process
        self.peak = 0
        self.killed = False

    def sample(self, children_of: dict[int, list[psutil.Process]], enforce: bool = True) -> None:
        self._grow(children_of)
        total = 0
        for key, proc in list(self.seen.items()):
            try:
                with proc.oneshot():
                    rss = proc.memory_info().rss
                    times = proc.cpu_times()
            except psutil.Error:
                if proc is not self.root:
                    del self.seen[key]  # its last CPU time stays in self.cpu
                continue
            total += rss
            self.cpu[key] = times.user + times.system
        self.peak = max(self.peak, total)
        over = self.limit_bytes is not None and total > self.limit_bytes
        if enforce and over and not self.killed:
            logger.info(
                "instance %s uses %s bytes, over its memory limit of %s; killing it",
                self.instance_id,
                total,
                self.limit_bytes,
            )
            self.killed = True
            self.signal(signal.SIGKILL)

    def _grow(self, children_of: dict[int, list[psutil.Process]]) -> None:
        stack = [proc for proc in self.seen.values() if proc.is_running()]
        while stack:
            parent = stack.pop()
            for child in children_of.get(parent.pid, ()):
                key = _key(child)
                if key not in self.seen:
                    self.seen[key] = child
                    stack.append(child)

    def signal(self, sig: int, reached: Callable[[int], bool] = lambda pid: False) -> None:
        """Signal every process seen but the wrapper and those ``reached`` already
        (psutil checks each is still the process it saw)."""
        for proc in self.seen.values():
            if proc is not self.root and not reached(proc.pid):
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(sig)

    def usage(self) -> TreeUsage:
        return TreeUsage(self.killed, self.peak, sum(self.cpu.values()))


class MemoryWatch:
    """Samples the trees of all watched instances on one thread. Thread-safe."""

    def __init__(self, interval: float = SAMPLE_SECONDS) -> None:
        self._interval = interval
        self._lock = threading.Lock()
        self._trees: dict[int, _Tree] = {}
        self._busy = threading.Event()  # set while there is a tree to sample (or on close)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jobyard-memory-watch", daemon=True)
        self._thread.start()

    def add(self, instance_id: int, pid: int, limit_bytes: int | None) -> None:
        """Watch the tree under ``pid`` (the instance's wrapper)."""
        try:
            root = psutil.Process(pid)
        except psutil.Error:
            return  # already gone: nothing to watch
        with self._lock:
            self._trees[instance_id] = _Tree(instance_id, root, limit_bytes)
            self._busy.set()

    def signal(self, instance_id: int, sig: int, reached: Callable[[int], bool]) -> None:
        with self._lock:
            tree = self._trees.get(instance_id)
            if tree is not None:
                tree.signal(sig, reached)

    def finish(self, instance_id: int) -> TreeUsage | None:
        """Stop watching: SIGKILL what is left of the tree and return its usage."""
        with self._lock:
            tree = self._trees.pop(instance_id, None)
            if not self._trees:
                self._busy.clear()
            if tree is None:
                return None
            tree.sample(_children_map(), enforce=False)  # leftovers' last CPU time
            tree.signal(signal.SIGKILL)
        return tree.usage()

    def close(self) -> None:
        self._closing.set()
        self._busy.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._closing.is_set():
            self._busy.wait()
            if self._closing.wait(self._interval):
                return
            with self._lock:
                if not self._trees:
                    continue
                children_of = _children_map()
                for tree in self._trees.values():
                    try:
                        tree.sample(children_of)
                    except Exception:  # one odd process must not stop every watch
                        logger.exception("memory watch of instance %s failed", tree.instance_id)


def _children_map() -> dict[int, list[psutil.Process]]:
    """Every process on the host by parent pid (one pass over /proc)."""
    # Not process_iter: its shared cache is not safe to walk from two threads.
    children: dict[int, list[psutil.Process]] = defaultdict(list)
    for pid in psutil.pids():
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            children[proc.ppid()].append(proc)
    return children


def _key(proc: psutil.Process) -> _Key:
    try:
        return (proc.pid, proc.create_time())
    except psutil.Error:
        return (proc.pid, 0.0)
