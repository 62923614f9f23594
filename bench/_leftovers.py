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


def remove_cgroups_of(run_dir: Path, wait: float = 5.0) -> None:
    """Remove the cgroups the instance's ``resources.json`` records, if still there, once
    its processes are gone, and their server's directory once it is empty: what the
    next server would have done on recovering the instance."""
    try:
        recorded = json.loads((run_dir / "resources.json").read_text()).get("cgroups") or {}
    except (OSError, ValueError):
        return
    dirs = [Path(v) for k, v in recorded.items() if k != "version"]
    deadline = time.monotonic() + wait
    for path in dict.fromkeys(dirs):  # v2 names one directory for every controller
        while path.is_dir() and not _rmdir(path) and time.monotonic() < deadline:
            time.sleep(0.05)  # its processes are still being reaped
        _rmdir(path.parent)  # the server's own: fails while other instances are there


def _rmdir(path: Path) -> bool:
    try:
        path.rmdir()
        return True
    except OSError:
        return False
