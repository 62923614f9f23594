"""The wrapper's record in an instance's run directory: its ``pid`` file.

The file is empty in a run directory made ahead (``_spares``); the wrapper
writes ``<pid>`` into it when it runs, and appends ``exit <code>`` when its
command has ended (``_process``, ``_starters``). A restarted server reads it
to tell an instance that never started, one still running and one that ended
while no server watched it. Wrappers before 2026-12-06 wrote the code to a
file of its own, ``exit``, which is still read.
"""

from __future__ import annotations

import time
from pathlib import Path

PID_FILE = "pid"
EXIT_PREFIX = "exit "
LEGACY_EXIT_FILE = "exit"


def read_pid(run_dir: Path) -> int | None:
    """The pid the wrapper wrote to PID_FILE; None if it never ran (the file is empty or
    missing) or the first line is not a number."""
    lines = _read_lines(run_dir / PID_FILE)
    try:
        return int(lines[0]) if lines else None
    except ValueError:
        return None


def has_ended(run_dir: Path) -> bool:
    """Whether the wrapper has written its exit line (before 2026-12-06: made its
    ``exit`` file)."""
    lines = _read_lines(run_dir / PID_FILE)
    return (
        any(line.startswith(EXIT_PREFIX) for line in lines) or (run_dir / LEGACY_EXIT_FILE).exists()
    )


def read_exit_code(run_dir: Path, attempts: int = 50) -> int | None:
    """The code the wrapper recorded; None if there is none (yet) or it is torn.

    The wrapper appends "exit <code>\n" in one write, so a line without its newline
    means it is writing right now: wait for the rest.
    """
    for _ in range(attempts):
        line = _exit_line(run_dir)
        if line is None or line.endswith("\n"):
            break
        time.sleep(0.01)
    try:
        return None if line is None else int(line)
    except ValueError:
        return None


def _exit_line(run_dir: Path) -> str | None:
    """The code part of the exit line, or the legacy exit file's whole text."""
    for line in _read_lines(run_dir / PID_FILE):
        if line.startswith(EXIT_PREFIX):
            return line.removeprefix(EXIT_PREFIX)
    try:
        return (run_dir / LEGACY_EXIT_FILE).read_text()
    except OSError:
        return None


def _read_lines(path: Path) -> list[str]:
    """The file's lines with their newlines (a torn last line has none); [] if missing."""
    try:
        return path.read_text().splitlines(keepends=True)
    except OSError:
        return []
