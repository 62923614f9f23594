"""Enforcing each instance's CPU and memory, and measuring what it used.

The mode is chosen once, when the runner starts:

- ``cgroup-v2`` / ``cgroup-v1``: a cgroup per instance (see ``_cgroups``) with
  the template's CPU quota and memory limit; the kernel enforces both and
  counts peak memory, CPU time and OOM kills. Whatever is left in the cgroup
  when the instance ends is killed.
- ``psutil``: no cgroup can be made; a thread samples each process tree (see
  ``_memwatch``) and kills it past its memory limit. CPU is not throttled.
- ``off``: nothing is enforced or measured.

What an instance got is written to ``resources.json`` in its run directory,
so a restarted server finds its cgroups (or its memory limit) again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import resource
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from jobyard.runners._cgroup_pool import CgroupPool, Idle
from jobyard.runners._cgroups import CgroupSet, CgroupUnavailable, CgroupUsage
from jobyard.runners._hierarchy import Hierarchy, discover
from jobyard.runners._memwatch import MemoryWatch
from jobyard.runners._starters import Starter, WarmStarters
from jobyard.runners.base import Limits

logger = logging.getLogger(__name__)

SETTINGS = ("auto", "cgroup", "psutil", "off")
RCU_EXPEDITED = Path("/sys/kernel/rcu_expedited")
RESOURCES_FILE = "resources.json"
_OOM_EXIT = 128 + signal.SIGKILL


@dataclass(frozen=True)
class Usage:
    """What an instance used, and whether it was killed for passing its memory limit."""

    oom_killed: bool = False
    peak_memory_bytes: int | None = None
    cpu_seconds: float | None = None


class InstanceResources:
    """One instance's share: what its wrapper joins, how to signal it, what it used.

    This base is the ``off`` mode: nothing is enforced or measured.
    """

    def __init__(self, memory_limit_bytes: int | None) -> None:
        self.memory_limit_bytes = memory_limit_bytes

    def join_files(self) -> list[str]:
        """Files the wrapper writes its pid into before it runs the instance's command."""
        return []

    def started(self, pid: int) -> None:
        """The wrapper runs as ``pid``."""

    def signal(self, sig: int, reached: Callable[[int], bool]) -> None:
        """Signal the processes of the instance this mode knows of, but those ``reached``."""

    def finish(self, exit_code: int | None, rusage: resource.struct_rusage | None) -> Usage:
        """The instance has ended: kill what is left of it and say what it used."""
        return Usage()


class CgroupResources(InstanceResources):
    def __init__(
        self,
        cgroups: CgroupSet,
        limits: Limits | None,
        oom_kills_before: int = 0,
        pool: CgroupPool | None = None,
    ) -> None:
        super().__init__(limits.memory_bytes if limits else None)
        self.cgroups = cgroups
        self.limits = limits
        self.oom_kills_before = oom_kills_before  # counted for an earlier user of the cgroup
        self.pool = pool

    def join_files(self) -> list[str]:
        return self.cgroups.procs_files()

    def signal(self, sig: int, reached: Callable[[int], bool]) -> None:
        self.cgroups.signal(sig, reached)

    def finish(self, exit_code: int | None, rusage: resource.struct_rusage | None) -> Usage:
        # Counters are read after the kill (so they include the leftovers) and
        # before the removal (which loses them).
        emptied = self.cgroups.kill_all()
        if not emptied:
            logger.warning("processes in %s would not die", self.cgroups.unique_dirs[0])
        counted = self.cgroups.usage()
        # Emptied cgroups go back to the pool (reset) rather than to the kernel.
        pool = self.pool if emptied else None
        if pool is None or not pool.recycle(self.cgroups, self.limits, counted):
            self.cgroups.remove()
        oom = _oom_killed(counted, exit_code, self.oom_kills_before)
        return Usage(oom, counted.peak_memory_bytes, counted.cpu_seconds)


def _oom_killed(counted: CgroupUsage, exit_code: int | None, oom_kills_before: int) -> bool:
    """An instance that exits 0 succeeded, even if the kernel killed one of its children."""
    if exit_code == 0:
        return False
    if counted.oom_kills is not None:
        return counted.oom_kills > oom_kills_before
    return counted.limit_hits > 0 and exit_code == _OOM_EXIT


class TreeResources(InstanceResources):
    def __init__(self, watch: MemoryWatch, instance_id: int, memory_limit_bytes: int | None):
        super().__init__(memory_limit_bytes)
        self.watch = watch
        self.instance_id = instance_id

    def started(self, pid: int) -> None:
        self.watch.add(self.instance_id, pid, self.memory_limit_bytes)

    def signal(self, sig: int, reached: Callable[[int], bool]) -> None:
        self.watch.signal(self.instance_id, sig, reached)

    def finish(self, exit_code: int | None, rusage: resource.struct_rusage | None) -> Usage:
        tree = self.watch.finish(self.instance_id)
        peak = tree.peak_memory_bytes if tree else None
        cpu = tree.cpu_seconds if tree else None
        if rusage is not None:
            # Exact for the wrapper and every process it waited for (samples miss
            # the last moments); the samples add what escaped the waiting.
            peak = max(peak or 0, rusage.ru_maxrss * 1024)
            cpu = max(cpu or 0.0, rusage.ru_utime + rusage.ru_stime)
        oom = tree is not None and tree.killed_for_memory and exit_code != 0
        return Usage(oom, peak, cpu)


class ResourceLimits:
    """Chooses the mode when the runner starts; makes each instance's InstanceResources."""

    def __init__(self, setting: str, data_dir: Path, starters: int = 0) -> None:
        if setting not in SETTINGS:
            raise ValueError(f"resource limits must be one of {', '.join(SETTINGS)}: {setting!r}")
        self._hierarchy: Hierarchy | None = None
        self._pool: CgroupPool | None = None
        self._watch: MemoryWatch | None = None
        if setting in ("auto", "cgroup"):
            self._hierarchy = _hierarchy_or_none(setting, data_dir)
        self._starters: WarmStarters | None = None
        if self._hierarchy is not None and self._hierarchy.version == 1:
            self._pool = CgroupPool(self._hierarchy)
            self._starters = WarmStarters(self._pool, None, starters) if starters else None
        if self._hierarchy is not None:
            self.mode = self._hierarchy.mode
            where = self._hierarchy.bases["memory"]
            logger.info("resource limits: %s (instance cgroups under %s)", self.mode, where)
            hint = join_wait_hint()
            if hint:
                logger.info("%s", hint)
        elif setting == "off":
            self.mode = "off"
            logger.info("resource limits: off (instances are neither limited nor measured)")
        else:
            self._watch = MemoryWatch()
            self.mode = "psutil"
            logger.info("resource limits: psutil (memory is watched; CPU is not throttled)")

    def prepare(self, run_dir: Path, instance_id: int, limits: Limits | None) -> InstanceResources:
        """Make the instance's share before its wrapper starts."""
        if self._hierarchy is None:
            _write_record(run_dir, _Record(limits))
            return self._resources(instance_id, _Record(limits))
        cgroups = self._hierarchy.cgroups_of(instance_id)
        record = self._reuse(run_dir, cgroups, limits)
        if record is None:
            record = _Record(limits, cgroups)
            # Recorded first: a server that dies next still finds the cgroups to remove.
            _write_record(run_dir, record)
            cgroups.create(limits)
        return self._resources(instance_id, record)

    def _reuse(self, run_dir: Path, cgroups: CgroupSet, limits: Limits | None) -> _Record | None:
        """Give the instance an idle cgroup set from the pool, if there is one."""
        idle = self._pool.take(limits) if self._pool else None
        return None if idle is None else self._install(run_dir, cgroups, limits, idle)

    def _install(
        self, run_dir: Path, cgroups: CgroupSet, limits: Limits | None, idle: Idle
    ) -> _Record | None:
        """Record ``idle`` as the instance's cgroups, then rename it so and give it
        ``limits``; None (and it is gone) when that fails."""
        assert self._pool is not None
        record = _Record(limits, cgroups, idle.oom_kills or 0)
        _write_record(run_dir, record)
        return record if self._pool.install(idle, cgroups, limits) else None

    def take_starter(self, limits: Limits) -> Starter | None:
        """A wrapper already in an idle cgroup set, waiting (see ``_starters``); None if
        there is none ready, or starters are not used here (cgroup v2, psutil, off)."""
        return self._starters.take(limits) if self._starters else None

    def prepare_warm(
        self, run_dir: Path, instance_id: int, limits: Limits, starter: Starter
    ) -> InstanceResources | None:
        """The starter's cgroup set becomes the instance's, with its limits; None (and the
        set is gone, the starter in it killed) when that fails."""
        assert self._hierarchy is not None
        cgroups = self._hierarchy.cgroups_of(instance_id)
        record = self._install(run_dir, cgroups, limits, starter.idle)
        return None if record is None else self._resources(instance_id, record)

    def adopt(self, run_dir: Path, instance_id: int, pid: int) -> InstanceResources:
        """The share of an instance an earlier server started, still running as ``pid``."""
        resources = self._resources(instance_id, _read_record(run_dir))
        resources.started(pid)
        return resources

    def collect(self, run_dir: Path, exit_code: int | None) -> Usage:
        """What an instance that ended while no server watched used; its cgroups go."""
        record = _read_record(run_dir)
        if record.cgroups is None:
            return Usage()
        resources = CgroupResources(record.cgroups, record.limits, record.oom_kills_before)
        return resources.finish(exit_code, None)

    def discard(self, run_dir: Path) -> None:
        """Kill whatever is in the instance's cgroups and remove them."""
        cgroups = _read_record(run_dir).cgroups
        if cgroups is not None:
            cgroups.remove_all()

    def memory_limit(self, run_dir: Path) -> int | None:
        return _read_record(run_dir).memory_bytes

    def close(self) -> None:
        """Stop watching (instances keep their cgroups: a new server adopts them)."""
        if self._watch is not None:
            self._watch.close()
        if self._starters is not None:
            self._starters.close()
        if self._pool is not None:
            self._pool.close()
        if self._hierarchy is not None:
            self._hierarchy.remove_bases()

    def _resources(self, instance_id: int, record: _Record) -> InstanceResources:
        if record.cgroups is not None:
            return CgroupResources(
                record.cgroups, record.limits, record.oom_kills_before, self._pool
            )
        if self._watch is not None:
            return TreeResources(self._watch, instance_id, record.memory_bytes)
        return InstanceResources(record.memory_bytes)


def join_wait_hint(rcu_expedited: Path = RCU_EXPEDITED) -> str | None:
    """Why an instance that finds no starter waiting (``_starters``) can take 5-20 ms
    longer to start here, and the host setting that removes it; None when that setting
    is on (or unknown).

    A process joining a cgroup takes the kernel's cgroup threadgroup lock for writing,
    which waits for an RCU grace period unless another join did so moments before.
    Expedited RCU ends the wait (perf sched showed each slow wrapper woken by
    rcu_preempt); it is a host-wide setting, so jobyard only points at it.
    """
    try:
        expedited = rcu_expedited.read_text().strip()
    except OSError:
        return None
    if expedited != "0":
        return None
    return (
        "an instance start that finds no starter waiting waits 5-20 ms for an RCU grace "
        f"period while it joins its cgroups; 'echo 1 > {rcu_expedited}' (or booting with "
        "rcupdate.rcu_expedited=1) ends the wait, see docs/resources.md"
    )


def _hierarchy_or_none(setting: str, data_dir: Path) -> Hierarchy | None:
    # Named after the data directory: servers on one host never share a cgroup.
    key = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    try:
        return discover(key)
    except (CgroupUnavailable, OSError) as err:
        if setting == "cgroup":
            raise CgroupUnavailable(f"resource limits 'cgroup' asked for, but {err}") from None
        logger.info("no cgroups for instances here: %s", err)
        return None


@dataclass(frozen=True)
class _Record:
    """What an instance was given, kept in its run directory as ``resources.json``."""

    limits: Limits | None
    cgroups: CgroupSet | None = None
    oom_kills_before: int = 0  # a reused cgroup's OOM kills before this instance

    @property
    def memory_bytes(self) -> int | None:
        return self.limits.memory_bytes if self.limits else None


def _write_record(run_dir: Path, record: _Record) -> None:
    data = {
        "cpu": record.limits.cpu if record.limits else None,
        "memory_bytes": record.memory_bytes,
        "cgroups": record.cgroups.to_json() if record.cgroups else None,
        "oom_kills_before": record.oom_kills_before,
    }
    (run_dir / RESOURCES_FILE).write_text(json.dumps(data))


def _read_record(run_dir: Path) -> _Record:
    """What an instance was given; nothing if not recorded."""
    try:
        data = json.loads((run_dir / RESOURCES_FILE).read_text())
    except (OSError, ValueError):
        return _Record(None)
    limits = None
    with contextlib.suppress(KeyError, TypeError, ValueError):
        limits = Limits(cpu=float(data["cpu"]), memory_bytes=int(data["memory_bytes"]))
    cgroups = None
    with contextlib.suppress(KeyError, TypeError, ValueError):
        cgroups = CgroupSet.from_json(data["cgroups"])
    before = data.get("oom_kills_before", 0)
    return _Record(limits, cgroups, before if isinstance(before, int) else 0)
