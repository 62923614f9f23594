"""Run directories made ahead of the starts that take them.

Creating a file or a directory allocates an inode, and on some file systems that
is slow in a tree where many files were deleted: on the benchmark machine's ext4,
0.5-1.4 ms each in a data directory that had held many instances, against
0.04 ms at rest (docs/resources.md). A start made its task's directory, its run
directory and five entries in it: up to 5 ms before its first line. A spare holds
them made ahead, empty; a start renames it into place (a rename allocates
nothing) and writes into the files it uses.

A spare is ``tasks/.spare/<n>/`` holding the run directory ``run/``: ``work/``
and the empty files ``script``, ``payload.json``, ``resources.json``,
``output.log`` and ``pid``. A start whose task has no directory yet takes the
whole spare as its task's directory, then renames ``run/`` to its own; otherwise
it takes only ``run/``, and the empty ``<n>/`` gets a new one. A start removes
the files it does not use. Spares are made on a thread of their own once no start
has been made for a moment, like starters; a start that finds none makes its
directories itself.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
from pathlib import Path

from jobyard.errors import Conflict
from jobyard.runners._pid_file import PID_FILE
from jobyard.runners._process import remove_tree
from jobyard.runners._refill import Refill

logger = logging.getLogger(__name__)

READY = 4  # spares kept
SPARE_DIR = ".spare"  # under the tasks directory: never a task id
RUN = "run"
WORK = "work"
# PID_FILE is there empty for the wrapper to write (creating a file on the start's
# path costs what a spare saves): a wrapper has run once its pid file holds a pid,
# not once the file exists (LocalRunner._prepare, recover).
FILES = ("script", "payload.json", "resources.json", "output.log", PID_FILE)


class SpareRunDirs:
    """Thread-safe. A spare is made under another name and renamed whole, so a start
    never takes a half-made one; one that cannot be renamed is dropped, and the start
    makes its own directories."""

    def __init__(self, tasks_dir: Path, ready: int = READY) -> None:
        self._tasks_dir = tasks_dir
        self._root = tasks_dir / SPARE_DIR
        self._ready = ready
        self._lock = threading.Lock()
        self._spares: list[Path] = []  # holding a whole run/
        self._emptied: list[Path] = []  # whose run/ was taken
        self._serials = itertools.count()
        remove_tree(self._root)  # a previous server's: it may have died making one
        self._refill = Refill("jobyard-spares", self._needed, self._add_one)

    def make(self, run_dir: Path) -> bool:
        """Make the instance's run directory with ``work/`` in it, from a spare if there
        is one. Returns whether it came from a spare (then holding the empty FILES).

        Conflict if it exists: a run directory is never reused."""
        with self._lock:
            spare = self._spares.pop() if self._spares else None
            placed = spare is not None and self._place(spare, run_dir)
        if spare is not None:
            self._refill.taken()
        if placed:
            return True
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            run_dir.mkdir()
        except FileExistsError:
            raise _reused(run_dir) from None
        (run_dir / WORK).mkdir()
        return False

    def close(self) -> None:
        self._refill.close()
        with self._lock:
            self._spares.clear()
            self._emptied.clear()
        remove_tree(self._root)

    def _place(self, spare: Path, run_dir: Path) -> bool:
        """Rename the spare's run/ (and the spare itself, for a new task's directory);
        False if that failed (the start makes its own)."""
        if run_dir.exists():
            self._spares.append(spare)
            raise _reused(run_dir)
        task_dir = run_dir.parent
        try:
            if task_dir.exists():
                os.rename(spare / RUN, run_dir)
                self._emptied.append(spare)
            else:
                task_dir.parent.mkdir(parents=True, exist_ok=True)
                os.rename(spare, task_dir)
                os.rename(task_dir / RUN, run_dir)
        except OSError as err:
            logger.warning("cannot use a spare run directory for %s: %s", run_dir, err)
            remove_tree(spare)
            return False
        return True

    def _needed(self) -> bool:
        with self._lock:
            return len(self._spares) < self._ready

    def _add_one(self) -> bool:
        with self._lock:
            spare = self._emptied.pop() if self._emptied else None
        spare = spare or self._root / str(next(self._serials))
        try:
            _make_spare(spare)
        except OSError as err:
            logger.warning("cannot make a spare run directory in %s: %s", self._root, err)
            remove_tree(spare)
            return False
        with self._lock:
            self._spares.append(spare)
        return True


def _make_spare(spare: Path) -> None:
    """``spare/run`` whole: made under another name, then renamed."""
    spare.mkdir(parents=True, exist_ok=True)
    making = spare / "making"
    remove_tree(making)
    making.mkdir()
    (making / WORK).mkdir()
    for name in FILES:
        (making / name).touch()
    os.rename(making, spare / RUN)


def drop_unused(run_dir: Path, used: set[str]) -> None:
    """Remove a spare's empty files that this start does not write."""
    for name in FILES:
        if name not in used:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(run_dir / name)


def _reused(run_dir: Path) -> Conflict:
    # Never reuse a run dir: its pid/exit files would lie about this start.
    return Conflict(f"instance {run_dir.name} was already started")
