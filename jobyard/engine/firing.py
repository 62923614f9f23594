"""Firing the cron templates that are due at one moment, together, in one transaction.

The transaction reads the due templates under their row locks, plans each firing
(``planning.plan_firing``; templates sharing a schedule and due time share the plan),
records MissedSchedule events, creates the tasks (``launching.launch_scheduled``: one
statement for the templates that allow concurrent tasks, the policy check one by one
for the others) and stores the next fire times, grouped by time. A batch of N templates
costs a handful of statements, not N transactions; the unique (template, scheduled
time) key still decides who records a firing when two replicas race.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from jobyard import cron, planning
from jobyard.domain import NewEvent, Reason, Severity, Template
from jobyard.engine.clock import Clock
from jobyard.engine.events import add_events, new_template_event
from jobyard.engine.launching import launch_scheduled
from jobyard.spec import CronTrigger, TemplateSpec
from jobyard.store import Priority, Store
from jobyard.store import templates as template_store

logger = logging.getLogger(__name__)

READ_AHEAD_CHUNK = 500  # specs per read transaction when reading ahead


@dataclass
class Fired:
    """What firing a batch did.

    next_fire: the next fire time of each template that stays scheduled; a template
    that is gone, suspended or no longer on a cron trigger is not in it.
    """

    next_fire: dict[str, datetime] = field(default_factory=dict)
    created: int = 0


@dataclass
class _Batch:
    """The writes one batch decided on, made after every template is planned."""

    missed: list[NewEvent] = field(default_factory=list)
    firings: list[tuple[Template, datetime]] = field(default_factory=list)
    next_fires: list[tuple[str, datetime]] = field(default_factory=list)


class ParsedSpecs:
    """The specs of templates that fire, parsed once: by template id, with their version.

    Versions never change, so a spec parsed for one firing serves the next ones of the
    same version: an every-second template's spec is parsed once, not every second; the
    scheduler also reads ahead the specs of what is due in the next seconds
    (``read_ahead``), so that a herd's firing does not parse them. Bounded: the
    templates fired least recently go first (a spec takes ~3.4 KB; 10,000 ~34 MB).
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._specs: OrderedDict[str, tuple[int, TemplateSpec]] = OrderedDict()
        self._lock = threading.Lock()  # batches may fire on two threads at once

    @property
    def known(self) -> Mapping[str, tuple[int, TemplateSpec]]:
        return self._specs

    def remember(self, specs: Iterable[tuple[str, int, TemplateSpec]]) -> None:
        with self._lock:
            for template_id, version, spec in specs:
                self._specs[template_id] = (version, spec)
                self._specs.move_to_end(template_id)
            while len(self._specs) > self.capacity:
                self._specs.popitem(last=False)


def read_ahead(store: Store, specs: ParsedSpecs, template_ids: Sequence[str]) -> int:
    """Read and parse the current specs of templates soon due that ``specs`` lacks, in
    short read transactions, outside the firing's write transaction; return how many."""
    missing = [i for i in template_ids if i not in specs.known][: specs.capacity]
    for first in range(0, len(missing), READ_AHEAD_CHUNK):
        with store.read() as conn:
            found = template_store.current_specs(conn, missing[first : first + READ_AHEAD_CHUNK])
        specs.remember((i, version, spec) for i, (version, spec) in found.items())
    return len(missing)


def fire_due(
    store: Store,
    clock: Clock,
    due: Sequence[tuple[str, datetime]],
    specs: ParsedSpecs | None = None,
) -> Fired:
    """Fire templates (id, the fire time the scheduler had for it) in one transaction."""
    wanted = dict(due)
    fired = Fired()
    specs = specs or ParsedSpecs()
    with store.write(Priority.SCHEDULER) as conn:
        templates = template_store.locked_templates_by_ids(conn, list(wanted), specs.known)
        specs.remember((t.id, t.version, t.spec) for t in templates)
        # Read after the locks are held: a task's created_at is when it is recorded.
        now = clock.now()
        plans = _Plans(now)
        batch = _Batch()
        for template in templates:
            _plan_one(template, wanted[template.id], plans, batch, fired)
        add_events(conn, batch.missed, now)
        fired.created = launch_scheduled(conn, batch.firings, now)
        template_store.set_next_fires(conn, batch.next_fires)
    return fired


def _plan_one(
    template: Template, due: datetime, plans: _Plans, batch: _Batch, fired: Fired
) -> None:
    trigger = template.spec.trigger
    if template.suspended or not isinstance(trigger, CronTrigger):
        return
    if template.next_fire_at != due:  # changed by an edit or another replica
        if template.next_fire_at is not None:
            fired.next_fire[template.id] = template.next_fire_at
        return
    firing = plans.plan(trigger, due)
    fired.next_fire[template.id] = firing.next_fire_at
    batch.next_fires.append((template.id, firing.next_fire_at))
    if firing.missed_from is not None:
        batch.missed.append(_missed_event(template, firing, trigger))
    if firing.fire_at is not None:
        batch.firings.append((template, firing.fire_at))


class _Plans:
    """``plan_firing`` once per (schedule, time zone, deadline, due time) in a batch.

    It is pure and ``now`` is one reading per batch, so templates that share those get
    the same answer: the herd of one top-of-the-hour schedule is planned once.
    """

    def __init__(self, now: datetime) -> None:
        self._now = now
        self._known: dict[tuple[str, str, int, datetime], planning.Firing] = {}

    def plan(self, trigger: CronTrigger, due: datetime) -> planning.Firing:
        key = (trigger.schedule, trigger.timezone, trigger.starting_deadline, due)
        firing = self._known.get(key)
        if firing is None:
            schedule = cron.parse_schedule(trigger.schedule, trigger.timezone)
            firing = planning.plan_firing(schedule, due, self._now, trigger.starting_deadline)
            self._known[key] = firing
        return firing


def _missed_event(template: Template, firing: planning.Firing, trigger: CronTrigger) -> NewEvent:
    assert firing.missed_from is not None
    span = firing.missed_from.isoformat()
    if firing.missed_to is not None and firing.missed_to != firing.missed_from:
        span += f" .. {firing.missed_to.isoformat()}"
    ran = (
        f"; ran the latest, {firing.fire_at.isoformat()}, instead"
        if firing.fire_at is not None
        else f"; none is within the starting deadline of {trigger.starting_deadline} s"
    )
    text = f"missed firings at {span} (the server was not running or was late){ran}"
    return new_template_event(template, Reason.MISSED_SCHEDULE, text, Severity.WARNING)
