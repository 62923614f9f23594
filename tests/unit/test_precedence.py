"""Everyone else gives way to the scheduler's firing (store/precedence.py)."""

from __future__ import annotations

import threading

from jobyard.store.precedence import Precedence


def test_giving_way_with_no_firing_under_way_returns_at_once() -> None:
    precedence = Precedence()
    passed = threading.Event()
    threading.Thread(target=lambda: (precedence.give_way(), passed.set())).start()
    assert passed.wait(5)


def test_giving_way_waits_for_every_overlapping_firing_to_end() -> None:
    precedence = Precedence()
    passed = threading.Event()
    with precedence.firing():
        with precedence.firing():  # two batches of one moment, on two threads
            threading.Thread(target=lambda: (precedence.give_way(), passed.set())).start()
            assert not passed.wait(0.2)
        assert not passed.wait(0.2), "one firing is still under way"
    assert passed.wait(5)


def test_the_firing_thread_itself_never_waits() -> None:
    precedence = Precedence()
    with precedence.firing():
        passed = threading.Event()
        precedence.give_way()  # would wait a whole second if it counted itself
        threading.Thread(target=lambda: (precedence.give_way(), passed.set())).start()
        assert not passed.wait(0.2)
    assert passed.wait(5)
