"""One batch of cron firings, in process: what recording N due templates costs.

No server: the scheduler's own batch function (``jobyard.engine.firing.fire_due``)
on a fresh database with ``--templates`` every-second templates, fired ``--rounds``
times. Each round measures

* ``lock_and_read``: from the call to the clock reading, which happens once the
  write transaction has begun and the due templates' rows are read and locked;
* ``record_to_commit``: from that clock reading, which every task of the batch
  gets as its ``created_at``, to the commit having returned. This is how much
  earlier than "durably recorded" ``cron_lateness.py`` stamps the tasks of a batch.

The first round parses every template's spec (a cold cache), later rounds reuse them;
both are reported. Figures are per batch, and per template in microseconds.
"""

from __future__ import annotations

import argparse
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from _common import add_common_args, emit, note, summary_ms, workspace

from jobyard.engine.firing import ParsedSpecs, fire_due
from jobyard.spec import parse_spec
from jobyard.store import Store
from jobyard.store import templates as template_store


class RecordingClock:
    """Reads as a fixed moment just after the due second (so that no firing counts as
    late), and notes the real time at which it was read."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment
        self.read_at: float | None = None

    def now(self) -> datetime:
        self.read_at = time.perf_counter()
        return self.moment


def make_templates(store: Store, count: int, due: datetime) -> list[str]:
    with store.write() as conn:
        template_store.ensure_namespace(conn, "default", due)
        return [
            template_store.insert_template(
                conn,
                "default",
                parse_spec(
                    {
                        "name": f"cron-{i:06d}",
                        "deployment": {"type": "script", "script": ":"},
                        "trigger": {"type": "cron", "schedule": "* * * * * *"},
                    }
                ),
                due,
                due,
            )
            for i in range(count)
        ]


def one_round(
    store: Store, ids: list[str], due: datetime, specs: ParsedSpecs
) -> tuple[float, float]:
    clock = RecordingClock(due + timedelta(milliseconds=3))
    began = time.perf_counter()
    fired = fire_due(store, clock, [(template_id, due) for template_id in ids], specs)
    committed = time.perf_counter()
    assert fired.created == len(ids), fired.created
    assert clock.read_at is not None
    return clock.read_at - began, committed - clock.read_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--templates", type=int, default=500, help="templates in the batch")
    parser.add_argument("--rounds", type=int, default=20)
    add_common_args(parser)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # no line per event on stderr
    with workspace(args) as space:
        store = Store(space.database("batch"))
        try:
            store.migrate()
            due = datetime.now(UTC).replace(microsecond=0)
            ids = make_templates(store, args.templates, due)
            note(f"{args.templates} templates; firing {args.rounds} rounds")
            specs = ParsedSpecs(capacity=max(args.templates, 2_000))
            rounds = []
            for number in range(args.rounds):
                moment = due + timedelta(seconds=number)
                rounds.append(one_round(store, ids, moment, specs))
                with store.write() as conn:  # as the scheduler left them, for the next round
                    template_store.set_next_fires(
                        conn, [(i, moment + timedelta(seconds=1)) for i in ids]
                    )
        finally:
            store.close()
        figures = figures_of(rounds, args.templates)
        emit(
            "firing_batch",
            space,
            {"templates": args.templates, "rounds": args.rounds},
            figures,
            [],
        )


def figures_of(rounds: list[tuple[float, float]], count: int) -> dict[str, Any]:
    warm = rounds[1:] or rounds
    lock, record = [r[0] for r in warm], [r[1] for r in warm]
    per_template = summary_ms([a + b for a, b in warm])["p50_ms"] or 0.0
    return {
        "cold_first_round_ms": {
            "lock_and_read": round(rounds[0][0] * 1000, 2),
            "record_to_commit": round(rounds[0][1] * 1000, 2),
        },
        "lock_and_read": summary_ms(lock),
        "record_to_commit": summary_ms(record),
        "per_template_us_p50": round(per_template * 1000 / count, 1),
    }


if __name__ == "__main__":
    main()
