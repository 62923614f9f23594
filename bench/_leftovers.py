"""What a benchmark's stopped server leaves behind on the host: instances it left
running for the next server on its data directory, and their cgroups. No next
server comes in a benchmark, so ``Server.stop()`` ends and removes them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path


def end_left_instance(run_dir: Path) -> None:
    """SIGKILL the group of an instance whose wrapper recorded a pid (the first line of
    its ``pid`` file) and no exit code (a line ``exit <code>``) yet."""
    try:
        lines = (run_dir / "pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return  # it never started
    if any(line.startswith("exit ") for line in lines) or (run_dir / "exit").exists():
        return
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def remove_cgroups_of(run_dirs: list[Path], wait: float = 5.0) -> None:
    """Remove the cgroups the instances' ``resources.json`` records, if still there, once
    their processes are gone: what the next server would have done on recovering them.
    Then their server's own directories, with any idle cgroup it kept for reuse
    (``idle-*``, which the next server would have swept)."""
    parents: dict[Path, None] = {}
    deadline = time.monotonic() + wait
    for run_dir in run_dirs:
        for path in _recorded_cgroups(run_dir):
            while path.is_dir() and not _rmdir(path) and time.monotonic() < deadline:
                time.sleep(0.05)  # its processes are still being reaped
            parents[path.parent] = None
    for parent in parents:
        for idle in parent.glob("idle-*/"):
            _rmdir(idle)
        _rmdir(parent)


def _recorded_cgroups(run_dir: Path) -> list[Path]:
    try:
        recorded = json.loads((run_dir / "resources.json").read_text()).get("cgroups") or {}
    except (OSError, ValueError):
        return []
    # v2 names one directory for every controller
    return list(dict.fromkeys(Path(v) for k, v in recorded.items() if k != "version"))


def _rmdir(path: Path) -> bool:
    try:
        path.rmdir()
        return True
    except OSError:
        return False
