"""While the scheduler fires, the store holds every other transaction back at its start
(store/precedence.py), on both databases."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from jobyard.store import Priority, Store, precedence


@pytest.fixture(autouse=True)
def _long_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever wrongly waits for a firing here waits long enough to be seen."""
    monkeypatch.setattr(precedence, "MAX_WAIT", 30.0)


def _in_thread(work: Callable[[], object]) -> threading.Event:
    done = threading.Event()
    threading.Thread(target=lambda: (work(), done.set()), daemon=True).start()
    return done


def _read(store: Store) -> None:
    with store.read() as conn:
        conn.execute(sa.text("SELECT 1"))


def _write(store: Store, priority: Priority = Priority.NORMAL) -> None:
    with store.write(priority) as conn:
        conn.execute(sa.text("SELECT 1"))


def test_reads_and_writes_begin_only_after_the_firing(store: Store) -> None:
    with store.precedence.firing():
        read = _in_thread(lambda: _read(store))
        written = _in_thread(lambda: _write(store))
        assert not read.wait(0.3), "a read began during the firing"
        assert not written.wait(0.05), "a write began during the firing"
    assert read.wait(5) and written.wait(5)


def test_the_schedulers_own_writes_go_ahead_during_its_firing(store: Store) -> None:
    with store.precedence.firing():
        fired = _in_thread(lambda: _write(store, Priority.SCHEDULER))  # a batch on a pool thread
        assert fired.wait(5)


def test_the_firing_thread_reads_during_its_firing(store: Store) -> None:
    def fire_and_read() -> None:
        with store.precedence.firing():
            _read(store)

    assert _in_thread(fire_and_read).wait(5)


def test_a_read_inside_a_transaction_already_begun_does_not_wait(store: Store) -> None:
    inside = threading.Event()
    firing = threading.Event()
    finished = threading.Event()

    def nested() -> None:
        with store.write():
            inside.set()
            assert firing.wait(5)
            _read(store)  # must not wait for a firing that may wait for this writer
        finished.set()

    threading.Thread(target=nested, daemon=True).start()
    assert inside.wait(5)
    with store.precedence.firing():
        firing.set()
        assert finished.wait(5), "the nested read waited for the firing"
