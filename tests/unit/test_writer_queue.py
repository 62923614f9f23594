"""The SQLite writer queue: one writer at a time, higher priorities first."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial

from jobyard.store.db import Priority, WriterQueue


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the writers never queued"
        time.sleep(0.001)


def _has_waiting(queue: WriterQueue, count: int) -> bool:
    return queue.waiting(Priority.NORMAL) == count


def _writer(
    queue: WriterQueue, priority: Priority, order: list[str], name: str
) -> threading.Thread:
    def write() -> None:
        with queue.turn(priority):
            order.append(name)

    thread = threading.Thread(target=write)
    thread.start()
    return thread


def test_a_waiting_scheduler_goes_first_then_the_others_in_arrival_order() -> None:
    queue = WriterQueue()
    order: list[str] = []
    threads = []
    with queue.turn(Priority.NORMAL):
        for i in range(4):
            threads.append(_writer(queue, Priority.NORMAL, order, f"normal-{i}"))
            _wait_for(partial(_has_waiting, queue, i + 1))
        threads.append(_writer(queue, Priority.SCHEDULER, order, "scheduler"))
        _wait_for(lambda: queue.waiting(Priority.SCHEDULER) == 1)
    for thread in threads:
        thread.join(timeout=10)
    assert order == ["scheduler", "normal-0", "normal-1", "normal-2", "normal-3"]


def test_a_newcomer_does_not_barge_in_ahead_of_waiting_writers() -> None:
    queue = WriterQueue()
    order: list[str] = []
    with queue.turn(Priority.NORMAL):
        waiting = _writer(queue, Priority.NORMAL, order, "waiting")
        _wait_for(lambda: queue.waiting(Priority.NORMAL) == 1)
    # The turn was handed to the waiting writer as the first one left; a
    # newcomer now queues behind it even if it arrives before that writer runs.
    with queue.turn(Priority.NORMAL):
        order.append("newcomer")
    waiting.join(timeout=10)
    assert order == ["waiting", "newcomer"]


def test_writers_never_overlap() -> None:
    queue = WriterQueue()
    inside = 0
    overlaps = 0
    guard = threading.Lock()

    def write(priority: Priority) -> None:
        nonlocal inside, overlaps
        for _ in range(200):
            with queue.turn(priority):
                with guard:
                    inside += 1
                    overlaps += inside > 1
                time.sleep(0)
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=write, args=(p,)) for p in Priority for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert overlaps == 0
    assert all(queue.waiting(p) == 0 for p in Priority)
