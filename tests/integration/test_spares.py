"""Spare run directories (``runners/_spares``): made ahead, renamed into place by a start."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobyard.errors import Conflict
from jobyard.runners._spares import FILES, READY, RUN, SPARE_DIR
from jobyard.runners.base import SCRIPT_PATH, InstanceExit, InstanceLaunch
from jobyard.runners.local import LocalRunner

WAIT = 15.0


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def runner(data_dir: Path) -> Iterator[tuple[LocalRunner, queue.Queue[InstanceExit]]]:
    exits: queue.Queue[InstanceExit] = queue.Queue()
    runner = LocalRunner(data_dir, exits.put, "off", starters=0)
    yield runner, exits
    runner.close()


def spares_of(data_dir: Path) -> dict[int, Path]:
    """The inode of each whole spare run directory, and where it is."""
    root = data_dir.resolve() / "tasks" / SPARE_DIR
    found = {}
    for spare in root.iterdir() if root.is_dir() else []:
        if (spare / RUN).is_dir():
            found[(spare / RUN).stat().st_ino] = spare
    return found


def wait_for_spares(data_dir: Path, count: int = READY) -> dict[int, Path]:
    deadline = time.monotonic() + WAIT
    while len(found := spares_of(data_dir)) < count:
        assert time.monotonic() < deadline, f"{len(found)} spares, not {count}"
        time.sleep(0.01)
    return found


def launch(task_id: int, instance_id: int, payload: bytes | None = None) -> InstanceLaunch:
    argv = ("/bin/sh", SCRIPT_PATH)
    return InstanceLaunch(task_id, instance_id, argv, {}, "echo hi", payload=payload)


def run_dir(data_dir: Path, task_id: int, instance_id: int) -> Path:
    return data_dir.resolve() / "tasks" / str(task_id) / str(instance_id)


def test_a_start_renames_a_spare_into_place_and_keeps_only_what_it_writes(
    runner: tuple[LocalRunner, queue.Queue[InstanceExit]], data_dir: Path
) -> None:
    local, exits = runner
    spares = wait_for_spares(data_dir)
    local.start(launch(7, 70))
    assert exits.get(timeout=WAIT).exit_code == 0
    made = run_dir(data_dir, 7, 70)
    assert made.stat().st_ino in spares  # renamed, not created
    assert sorted(p.name for p in made.iterdir()) == [
        "output.log", "pid", "resources.json", "script", "work"
    ]  # fmt: skip
    assert (made / "output.log").read_text() == "hi\n"
    assert (made / "script").read_text() == "echo hi"


def test_a_new_task_takes_a_whole_spare_as_its_directory(
    runner: tuple[LocalRunner, queue.Queue[InstanceExit]], data_dir: Path
) -> None:
    local, exits = runner
    spares = wait_for_spares(data_dir)
    spare_dirs = {p.stat().st_ino for p in spares.values()}
    local.start(launch(8, 80, payload=b'{"a": 1}'))
    assert exits.get(timeout=WAIT).exit_code == 0
    task_dir = run_dir(data_dir, 8, 80).parent
    assert task_dir.stat().st_ino in spare_dirs
    assert (run_dir(data_dir, 8, 80) / "payload.json").read_bytes() == b'{"a": 1}'
    # The task's next instance takes only a spare's run directory.
    wait_for_spares(data_dir)
    local.start(launch(8, 81))
    assert exits.get(timeout=WAIT).exit_code == 0
    assert task_dir.stat().st_ino in spare_dirs
    assert not (run_dir(data_dir, 8, 81) / "payload.json").exists()


def test_spares_are_made_again_after_starts_and_only_when_quiet(
    runner: tuple[LocalRunner, queue.Queue[InstanceExit]], data_dir: Path
) -> None:
    local, exits = runner
    first = wait_for_spares(data_dir)
    for instance_id in range(90, 90 + READY + 2):  # more than there are spares
        local.start(launch(9, instance_id))
    for _ in range(READY + 2):
        assert exits.get(timeout=WAIT).exit_code == 0
    again = wait_for_spares(data_dir)
    assert not set(again) & set(first)  # every one was taken, and made anew
    names = {entry.name for entry in (data_dir / "tasks").iterdir()}
    assert names == {"9", SPARE_DIR}
    assert local.stored_task_ids() == [9]


def test_a_start_of_an_existing_run_directory_is_refused_and_keeps_its_spare(
    runner: tuple[LocalRunner, queue.Queue[InstanceExit]], data_dir: Path
) -> None:
    local, exits = runner
    wait_for_spares(data_dir)
    local.start(launch(10, 100))
    assert exits.get(timeout=WAIT).exit_code == 0
    wait_for_spares(data_dir)
    with pytest.raises(Conflict, match="already started"):
        local.start(launch(10, 100))
    assert len(spares_of(data_dir)) == READY
    assert (run_dir(data_dir, 10, 100) / "output.log").read_text() == "hi\n"


def test_a_previous_servers_spares_are_removed_and_none_are_left_at_close(
    data_dir: Path,
) -> None:
    leftover = data_dir.resolve() / "tasks" / SPARE_DIR / "3" / "making"
    leftover.mkdir(parents=True)
    exits: queue.Queue[InstanceExit] = queue.Queue()
    local = LocalRunner(data_dir, exits.put, "off", starters=0)
    try:
        wait_for_spares(data_dir)
        assert not leftover.exists()
        for spare in spares_of(data_dir).values():
            assert sorted(p.name for p in (spare / RUN).iterdir()) == sorted([*FILES, "work"])
    finally:
        local.close()
    assert not (data_dir / "tasks" / SPARE_DIR).exists()


def test_without_spares_a_start_makes_its_own_directories(data_dir: Path) -> None:
    exits: queue.Queue[InstanceExit] = queue.Queue()
    local = LocalRunner(data_dir, exits.put, "off", starters=0, spares=0)
    try:
        local.start(launch(11, 110))
        assert exits.get(timeout=WAIT).exit_code == 0
        made = run_dir(data_dir, 11, 110)
        assert sorted(p.name for p in made.iterdir()) == [
            "output.log", "pid", "resources.json", "script", "work"
        ]  # fmt: skip
        assert not (data_dir / "tasks" / SPARE_DIR).exists()
    finally:
        local.close()


def test_a_run_directory_whose_wrapper_never_wrote_its_pid_is_started_afresh(
    runner: tuple[LocalRunner, queue.Queue[InstanceExit]], data_dir: Path
) -> None:
    """A server that died after placing a spare, before the wrapper ran, left the
    spare's empty pid file: the instance never started, so it starts now."""
    local, exits = runner
    made = run_dir(data_dir, 11, 110)
    (made / "work").mkdir(parents=True)
    for name in FILES:
        (made / name).touch()
    (made / "work" / "left-over").write_text("from the start that never ran")
    local.start(launch(11, 110))
    assert exits.get(timeout=WAIT).exit_code == 0
    assert (made / "output.log").read_text() == "hi\n"
    assert (made / "pid").read_text().splitlines()[1:] == ["exit 0"]
    assert not (made / "work" / "left-over").exists()  # a fresh run directory
