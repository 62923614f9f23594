"""Where this server's instance cgroups go: the hierarchy found on this host.

cgroup v1 with the memory, cpu and cpuacct controllers (each mounted alone or
co-mounted), or a v2 tree where the server's own cgroup can delegate them. The
parents are ``jobyard/<key>`` under the server's own cgroup of each controller,
the key naming the data directory (``_limits``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

from jobyard.runners._cgroups import (
    CONTROLLERS,
    CgroupSet,
    CgroupUnavailable,
    _make_dirs,
    _read_pids,
    _read_text,
    _write,
)
from jobyard.runners.base import Limits


@dataclass(frozen=True)
class Hierarchy:
    """Where this server makes instance cgroups: a parent directory per controller."""

    version: int
    bases: dict[str, Path]

    @property
    def mode(self) -> str:
        return f"cgroup-v{self.version}"

    def cgroups_of(self, instance_id: int) -> CgroupSet:
        return CgroupSet(self.version, {c: b / str(instance_id) for c, b in self.bases.items()})

    def probe(self) -> None:
        """Make the parents and one throwaway cgroup with limits, or raise CgroupUnavailable."""
        try:
            for base in set(self.bases.values()):
                _make_dirs(base)
            probe = CgroupSet(self.version, {c: b / "probe" for c, b in self.bases.items()})
            probe.create(Limits(cpu=0.5, memory_bytes=64 * 1024 * 1024))
            probe.remove()
        except OSError as err:
            base = self.bases["memory"]
            raise CgroupUnavailable(f"cannot make cgroups under {base}: {err}") from None

    def remove_bases(self) -> None:
        """Remove the parents if nothing is left in them (another server may share ``jobyard``)."""
        for base in set(self.bases.values()):
            for path in (base, base.parent):
                with contextlib.suppress(OSError):
                    path.rmdir()


def discover(key: str) -> Hierarchy:
    """The hierarchy instances get on this host, or raise CgroupUnavailable."""
    v1_mounts, v2_mount = _cgroup_mounts()
    own = _own_cgroups()
    if all(c in v1_mounts for c in CONTROLLERS):
        bases = {c: _dir_of(v1_mounts[c], own.get(c, "/")) / "jobyard" / key for c in CONTROLLERS}
        hierarchy = Hierarchy(1, bases)
    elif v2_mount is not None:
        base = _delegated_v2(_dir_of(v2_mount, own.get("", "/"))) / key
        _enable_controllers(base.parent)
        base.mkdir(exist_ok=True)
        _enable_controllers(base)
        hierarchy = Hierarchy(2, dict.fromkeys(CONTROLLERS, base))
    else:
        raise CgroupUnavailable(
            "neither cgroup v1 memory, cpu and cpuacct controllers nor a cgroup v2 tree is mounted"
        )
    hierarchy.probe()
    return hierarchy


@dataclass(frozen=True)
class _Mount:
    path: Path  # the mount point
    root: str  # the cgroup shown at the mount point


def _cgroup_mounts() -> tuple[dict[str, _Mount], _Mount | None]:
    """v1 mounts by controller, and the first v2 mount, from /proc/self/mountinfo."""
    v1: dict[str, _Mount] = {}
    v2: _Mount | None = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        mount = _Mount(Path(_unescape(fields[4])), _unescape(fields[3]))
        if tail[0] == "cgroup2" and v2 is None:
            v2 = mount
        elif tail[0] == "cgroup":
            for option in tail[2].split(","):
                if option in CONTROLLERS:
                    v1.setdefault(option, mount)
    return v1, v2


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup per v1 controller, and under "" its v2 cgroup."""
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            own[controller] = path
    return own


def _dir_of(mount: _Mount, cgroup: str) -> Path:
    if mount.root != "/" and cgroup.startswith(mount.root):
        cgroup = cgroup[len(mount.root) :]
    return mount.path / cgroup.lstrip("/")


def _delegated_v2(own: Path) -> Path:
    """``own/jobyard`` with memory and cpu enabled for its children.

    v2 forbids controllers in the children of a cgroup that holds processes
    (the root aside). A server alone in its cgroup (a systemd service with
    Delegate=yes) moves itself into a leaf to free it; otherwise give up.
    """
    available = _read_text(own / "cgroup.controllers").split()
    missing = [c for c in ("memory", "cpu") if c not in available]
    if missing:
        raise CgroupUnavailable(f"cgroup v2 controllers {missing} are not available in {own}")
    try:
        _enable_controllers(own)
    except OSError as err:
        if err.errno != errno.EBUSY:
            raise CgroupUnavailable(f"cannot enable controllers in {own}: {err}") from None
        if _read_pids(own / "cgroup.procs") != {os.getpid()}:
            raise CgroupUnavailable(
                f"{own} holds other processes besides the server; give the server its own "
                "cgroup (systemd: Delegate=yes)"
            ) from None
        leaf = own / "jobyard-server"
        with contextlib.suppress(FileExistsError):
            leaf.mkdir()
        _write(leaf / "cgroup.procs", os.getpid())
        _enable_controllers(own)
    parent = own / "jobyard"
    parent.mkdir(exist_ok=True)
    return parent


def _enable_controllers(path: Path) -> None:
    try:
        _write(path / "cgroup.subtree_control", "+memory +cpu")
    except PermissionError as err:
        raise CgroupUnavailable(f"cannot enable controllers in {path}: {err}") from None


def _unescape(text: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), text)
