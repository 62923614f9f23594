"""Per-instance cgroups: the template's limits, usage at the end, nothing left behind.

Both cgroup v1 (memory, cpu and cpuacct, each mounted alone or co-mounted)
and v2 (one unified tree). An instance's cgroups sit under the server's own
cgroup, in ``jobyard/<key>/<instance_id>`` where the key names the data
directory, so two servers on one host never share one. The instance's
wrapper joins them before it runs anything, so every process the instance
starts is inside, even one that left the process group with setsid.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobyard.errors import JobyardError
from jobyard.runners.base import Limits

logger = logging.getLogger(__name__)

# The controllers an instance needs; on v2 all three name the same directory.
CONTROLLERS = ("memory", "cpu", "cpuacct")
DEFAULT_PERIOD_US = 100_000
MIN_QUOTA_US = 1_000  # the kernel refuses less
KILL_WAIT_SECONDS = 2.0


class CgroupUnavailable(JobyardError):
    """No cgroup can be made for instances here; the message says why."""


@dataclass(frozen=True)
class CgroupUsage:
    """What a cgroup counted. ``oom_kills`` is None where the kernel has no counter."""

    oom_kills: int | None
    limit_hits: int
    peak_memory_bytes: int | None
    cpu_seconds: float | None


@dataclass(frozen=True)
class CgroupSet:
    """One instance's cgroup directories, by controller."""

    version: int
    dirs: dict[str, Path]

    @property
    def unique_dirs(self) -> list[Path]:
        return sorted(set(self.dirs.values()))

    def procs_files(self) -> list[str]:
        """The files the wrapper writes its pid into to join."""
        return [str(path / "cgroup.procs") for path in self.unique_dirs]

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, **{c: str(p) for c, p in self.dirs.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CgroupSet:
        return cls(int(data["version"]), {c: Path(data[c]) for c in CONTROLLERS})

    def create(self, limits: Limits | None) -> None:
        """Make the directories (replacing stale ones) and write the limits."""
        try:
            for path in self.unique_dirs:
                _make_cgroup(path, self.version)
            if limits is not None:
                self._apply(limits)
        except OSError:
            self.remove()
            raise

    def _apply(self, limits: Limits) -> None:
        memory = self.dirs["memory"]
        if self.version == 1:
            write_memory_limit_v1(memory, limits.memory_bytes)
        else:
            _write(memory / "memory.max", limits.memory_bytes)
            _write_if_present(memory / "memory.swap.max", 0)
        write_quota(self, limits.cpu)

    def members(self) -> set[int]:
        """Every process in the instance's cgroups."""
        pids: set[int] = set()
        for path in self.unique_dirs:
            pids |= _read_pids(path / "cgroup.procs")
        return pids

    def signal(self, sig: int, reached: Callable[[int], bool] = lambda pid: False) -> int:
        """Send ``sig`` to every member not ``reached`` already; returns how many there were.

        Each pid is pinned with a pidfd and then checked to still be a member,
        so a pid reused by a process outside the cgroup is never signalled.
        """
        listed = self.members()
        if not listed:
            return 0
        pidfds: dict[int, int] = {}
        for pid in listed:
            with contextlib.suppress(OSError):
                pidfds[pid] = os.pidfd_open(pid)
        try:
            still = self.members()
            for pid, pidfd in pidfds.items():
                if pid in still and not reached(pid):
                    with contextlib.suppress(OSError):
                        signal.pidfd_send_signal(pidfd, sig)
        finally:
            for pidfd in pidfds.values():
                os.close(pidfd)
        return len(listed)

    def kill_all(self, timeout: float = KILL_WAIT_SECONDS) -> bool:
        """SIGKILL members until none is left; False if some outlived ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            if self.version == 2:
                _write_if_present(self.dirs["memory"] / "cgroup.kill", 1)
            if not self.signal(signal.SIGKILL):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)

    def usage(self) -> CgroupUsage:
        memory, cpuacct = self.dirs["memory"], self.dirs["cpuacct"]
        if self.version == 1:
            oom = _read_keyed(memory / "memory.oom_control").get("oom_kill")
            usage_ns = _read_int(cpuacct / "cpuacct.usage")
            return CgroupUsage(
                oom_kills=oom,
                limit_hits=_read_int(memory / "memory.failcnt") or 0,
                peak_memory_bytes=_read_int(memory / "memory.max_usage_in_bytes"),
                cpu_seconds=None if usage_ns is None else usage_ns / 1e9,
            )
        events = _read_keyed(memory / "memory.events")
        usage_us = _read_keyed(cpuacct / "cpu.stat").get("usage_usec")
        return CgroupUsage(
            oom_kills=events.get("oom_kill"),
            limit_hits=events.get("max", 0),
            peak_memory_bytes=_read_int(memory / "memory.peak"),
            cpu_seconds=None if usage_us is None else usage_us / 1e6,
        )

    def remove_all(self) -> None:
        """Kill whatever is inside, then remove the directories (if they exist)."""
        if any(path.is_dir() for path in self.unique_dirs):
            if not self.kill_all():
                logger.warning("processes in %s would not die", self.unique_dirs[0])
            self.remove()

    def remove(self) -> None:
        for path in self.unique_dirs:
            _rmdir(path)


def write_memory_limit_v1(memory: Path, limit: int) -> None:
    """The memory limit, and the same for memory+swap so swap cannot dodge it.

    The kernel keeps memory+swap at or above memory: a raise (of a reused
    cgroup) must go to memory+swap first.
    """
    memsw = memory / "memory.memsw.limit_in_bytes"
    try:
        _write(memory / "memory.limit_in_bytes", limit)
    except OSError as err:
        if err.errno != errno.EINVAL:
            raise
        _write_if_present(memsw, limit)
        _write(memory / "memory.limit_in_bytes", limit)
    _write_if_present(memsw, limit)


def write_quota(cgroups: CgroupSet, cpu: float) -> None:
    """The CPU quota: ``cpu`` cores' worth of every period."""
    path = cgroups.dirs["cpu"]
    if cgroups.version == 1:
        period = _read_int(path / "cpu.cfs_period_us") or DEFAULT_PERIOD_US
        _write(path / "cpu.cfs_quota_us", _quota(cpu, period))
    else:
        _write(path / "cpu.max", f"{_quota(cpu, DEFAULT_PERIOD_US)} {DEFAULT_PERIOD_US}")


# -- files ---------------------------------------------------------------------------


def _quota(cpu: float, period_us: int) -> int:
    return max(MIN_QUOTA_US, round(cpu * period_us))


def _write(path: Path, value: object) -> None:
    # One write() per value: cgroup files take a value per write call.
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def _write_if_present(path: Path, value: object) -> None:
    """Write an optional file (swap accounting, cgroup.kill): absent or refused is fine."""
    try:
        _write(path, value)
    except OSError as err:
        if err.errno not in (errno.ENOENT, errno.EINVAL, errno.EACCES, errno.EPERM):
            raise


def _read_text(path: Path) -> str:
    # os-level: Path.read_text makes a buffered text file (fstat, ioctl, lseek) per read.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return ""
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode()
    except OSError:
        return ""
    finally:
        os.close(fd)


def _read_int(path: Path) -> int | None:
    try:
        return int(_read_text(path).split()[0])
    except (IndexError, ValueError):
        return None


def _read_pids(path: Path) -> set[int]:
    return {int(word) for word in _read_text(path).split()}


def _read_keyed(path: Path) -> dict[str, int]:
    """A flat-keyed file ("name value" lines: memory.events, cpu.stat, oom_control)."""
    values: dict[str, int] = {}
    for line in _read_text(path).splitlines():
        name, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            values[name] = int(value)
    return values


def _make_cgroup(path: Path, version: int) -> None:
    """mkdir, replacing a stale cgroup of that name (a server died before removing it)."""
    try:
        path.mkdir()
        return
    except FileNotFoundError:
        _make_dirs(path.parent)  # gone if another runner on this data dir closed
    except FileExistsError:
        CgroupSet(version, dict.fromkeys(CONTROLLERS, path)).remove_all()
    path.mkdir()


def _make_dirs(path: Path, attempts: int = 5) -> None:
    """mkdir -p, again if another server removed the shared ``jobyard`` parent meanwhile."""
    for attempt in range(attempts):
        try:
            path.mkdir(parents=True, exist_ok=True)
            return
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise


def _rmdir(path: Path, attempts: Iterable[float] = (0.0, 0.01, 0.05, 0.1, 0.2)) -> None:
    """Remove a cgroup; members that just died may keep it busy for a moment."""
    for pause in attempts:
        if pause:
            time.sleep(pause)
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as err:
            if err.errno != errno.EBUSY:
                logger.warning("cannot remove cgroup %s: %s", path, err)
                return
    logger.warning("cgroup %s is still busy; left in place", path)
