"""Idle instance cgroups, kept for the next instance instead of removed (cgroup v1).

Making a cgroup and writing its CPU quota are the dearest kernel calls of a
start: the quota write walks every cgroup of the cpu hierarchy. So an ended
instance's cgroups, once emptied and read, are reset and renamed to an idle
name; the next start renames them to its own instance id, and writes limits
only where they differ. Names keep crash recovery as it was: a cgroup named
by an instance id belongs to that instance (its ``resources.json`` says so),
an idle one belongs to no instance, and idle ones of a server that is gone
are removed when the next one starts.

A reused cgroup must not report its last user's usage: peak memory and the
limit-hit count are reset, CPU time too, and the OOM kill counter, which v1
cannot reset, is kept as the next user's baseline. A cgroup that still
holds more than ``RESIDUAL_BYTES`` of charged memory (a file the instance
wrote sits in page cache) is removed instead, so that memory cannot count as
the next instance's peak. v2 has no global reset of ``memory.peak``: there,
cgroups are made and removed per instance.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import psutil

from jobyard.runners._cgroups import (
    CgroupSet,
    CgroupUsage,
    _read_int,
    _write,
    write_memory_limit_v1,
    write_quota,
)
from jobyard.runners._hierarchy import Hierarchy
from jobyard.runners.base import Limits

logger = logging.getLogger(__name__)

IDLE_PREFIX = "idle-"
POOL_SIZE = 64
RESIDUAL_BYTES = 1024 * 1024  # the kernel's per-CPU charge batches alone hold 256 KiB each
_SERIALS = itertools.count(1)


@dataclass(frozen=True)
class Idle:
    """An emptied, reset cgroup set waiting for an instance."""

    cgroups: CgroupSet
    limits: Limits | None
    oom_kills: int | None  # the counter v1 cannot reset: the next user's baseline


class CgroupPool:
    """Idle v1 cgroup sets of this runner, by limits. Thread-safe."""

    def __init__(self, hierarchy: Hierarchy, size: int = POOL_SIZE) -> None:
        if hierarchy.version != 1:
            raise ValueError("cgroups are pooled on v1 only")
        self._hierarchy = hierarchy
        self._size = size
        self._owner = _owner_tag(os.getpid())
        self._lock = threading.Lock()
        self._idle: list[Idle] = []
        self._closed = False
        _sweep(hierarchy)

    def take(self, limits: Limits | None) -> Idle | None:
        """An idle set, one with these limits if any: no limit to write then.

        Without limits only a set without limits will do: limits are changed,
        never lifted.
        """
        with self._lock:
            fallback = None
            for index in range(len(self._idle) - 1, -1, -1):
                idle_limits = self._idle[index].limits
                if idle_limits == limits:
                    return self._idle.pop(index)
                if fallback is None and idle_limits is not None and limits is not None:
                    fallback = index
            return self._idle.pop(fallback) if fallback is not None else None

    def fresh(self, limits: Limits | None) -> Idle:
        """A new set under an idle name, with ``limits``: for a starter (``_starters``)."""
        cgroups = self._named(self._idle_name())
        cgroups.create(limits)
        return Idle(cgroups, limits, 0)

    def install(self, idle: Idle, target: CgroupSet, limits: Limits | None) -> bool:
        """Rename ``idle`` to ``target`` and give it ``limits``; False (and it is
        gone) when that fails: the caller makes ``target`` afresh."""
        try:
            _rename(idle.cgroups, target)
        except OSError as err:
            logger.warning("cannot reuse cgroup %s: %s", idle.cgroups.unique_dirs[0], err)
            idle.cgroups.remove_all()
            return False
        try:
            _apply_changed(target, idle.limits, limits)
        except OSError as err:
            logger.warning("cannot set limits on reused cgroup %s: %s", target.unique_dirs[0], err)
            target.remove_all()
            return False
        return True

    def recycle(self, cgroups: CgroupSet, limits: Limits | None, counted: CgroupUsage) -> bool:
        """Keep an ended instance's emptied cgroups for the next; False: remove them."""
        with self._lock:
            if self._closed or len(self._idle) >= self._size:
                return False
        idle = Idle(self._named(self._idle_name()), limits, counted.oom_kills)
        try:
            if not _reset(cgroups):
                return False
            _rename(cgroups, idle.cgroups)
        except OSError as err:
            logger.warning("cannot recycle cgroup %s: %s", cgroups.unique_dirs[0], err)
            return False
        with self._lock:
            if not self._closed:
                self._idle.append(idle)
                return True
        idle.cgroups.remove()  # closed meanwhile
        return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for entry in idle:
            entry.cgroups.remove()

    def _idle_name(self) -> str:
        # Numbered per process, not per pool: two runners of one process (tests) share
        # the owner tag, and must not make the same name.
        return f"{IDLE_PREFIX}{self._owner}-{next(_SERIALS)}"

    def _named(self, name: str) -> CgroupSet:
        return CgroupSet(1, {c: base / name for c, base in self._hierarchy.bases.items()})


def _reset(cgroups: CgroupSet) -> bool:
    """Zero what the next user reads at its end; False if too much memory stays charged."""
    memory, cpuacct = cgroups.dirs["memory"], cgroups.dirs["cpuacct"]
    if (_read_int(memory / "memory.usage_in_bytes") or 0) > RESIDUAL_BYTES:
        return False
    _write(memory / "memory.max_usage_in_bytes", 0)  # to the current (residual) use
    _write(memory / "memory.failcnt", 0)
    _write(cpuacct / "cpuacct.usage", 0)
    return True


def _rename(source: CgroupSet, target: CgroupSet) -> None:
    """Rename each directory; on v1 a cgroup keeps its limits and counters across it."""
    done: set[Path] = set()
    for controller, source_dir in sorted(source.dirs.items()):
        if source_dir in done:
            continue  # co-mounted controllers share a directory
        done.add(source_dir)
        target_dir = target.dirs[controller]
        try:
            os.rename(source_dir, target_dir)
        except OSError as err:
            if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            # A stale cgroup of a server that died before removing it.
            CgroupSet(1, dict.fromkeys(source.dirs, target_dir)).remove_all()
            os.rename(source_dir, target_dir)


def _apply_changed(cgroups: CgroupSet, old: Limits | None, new: Limits | None) -> None:
    if new is None or old == new:
        return
    if old is None or old.memory_bytes != new.memory_bytes:
        write_memory_limit_v1(cgroups.dirs["memory"], new.memory_bytes)
    if old is None or old.cpu != new.cpu:
        write_quota(cgroups, new.cpu)


def _owner_tag(pid: int) -> str:
    """pid and start time: a reused pid does not make a dead server's idle cgroups live."""
    try:
        started = int(psutil.Process(pid).create_time() * 100)
    except psutil.Error:
        started = 0
    return f"{pid}.{started}"


def _sweep(hierarchy: Hierarchy) -> None:
    """Remove the idle cgroups of servers (or runners) that are gone."""
    base = hierarchy.bases["memory"]
    try:
        names = [entry.name for entry in os.scandir(base) if entry.name.startswith(IDLE_PREFIX)]
    except OSError:
        return
    for name in names:
        owner = name[len(IDLE_PREFIX) :].rsplit("-", 1)[0]
        if _is_live(owner):
            continue
        stale = CgroupSet(1, {c: b / name for c, b in hierarchy.bases.items()})
        stale.remove_all()


def _is_live(owner: str) -> bool:
    with contextlib.suppress(ValueError):
        pid, _ = (int(part) for part in owner.split("."))
        return _owner_tag(pid) == owner
    return False
