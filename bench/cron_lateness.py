"""Firing precision: how late cron tasks are recorded, and whether any is missed or doubled.

Lateness of a firing = the task's ``created_at`` (the scheduler's clock reading in
the transaction that records the task) minus its ``scheduled_time``.

Two shapes:

* every second (default): ``--templates`` templates with ``* * * * * *``, measured
  over a window of ``--seconds`` whole seconds that starts after every template exists;
* the herd (``--herd N``): N templates all due at the same second (a daily schedule
  at a second ``--herd-lead`` seconds ahead, so nothing fires before it).

``--peer apscheduler`` then runs APScheduler 3 (BackgroundScheduler, SQLAlchemyJobStore
on a fresh database of the same kind) with the same schedules, after jobyard, in the
same run, and reports both with the ratio of their p99s.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from _common import (
    Workspace,
    add_common_args,
    emit,
    note,
    parse_time,
    running_server,
    script_template,
    sqlalchemy_url,
    summary_ms,
    target,
    workspace,
)

P99_TARGET_MS = 100.0
HERD_TARGET_S = 2.0


@dataclass(frozen=True)
class Plan:
    """What to fire: the schedule and the window of scheduled times that counts."""

    schedule: str  # jobyard's 6-field form, seconds first
    cron_fields: dict[str, str]  # the same schedule for APScheduler's CronTrigger
    start: datetime
    end: datetime  # exclusive
    per_template: int  # firings expected per template in the window


def every_second_plan(seconds: int) -> Plan:
    start = _whole_second(time.time()) + timedelta(seconds=2)
    return Plan("* * * * * *", {"second": "*"}, start, start + timedelta(seconds=seconds), seconds)


def herd_plan(lead: float) -> Plan:
    at = _whole_second(time.time() + lead)
    fields = {"second": str(at.second), "minute": str(at.minute), "hour": str(at.hour)}
    schedule = f"{at.second} {at.minute} {at.hour} * * *"
    return Plan(schedule, fields, at, at + timedelta(seconds=1), 1)


def _whole_second(epoch: float) -> datetime:
    return datetime.fromtimestamp(math.ceil(epoch), UTC)


def judge(
    firings: list[tuple[str, datetime, float]], names: list[str], plan: Plan
) -> dict[str, Any]:
    """Figures from (template, scheduled time, lateness seconds) of the window's firings."""
    inside = [f for f in firings if plan.start <= f[1] < plan.end]
    keys = Counter((name, scheduled) for name, scheduled, _ in inside)
    expected = len(names) * plan.per_template
    figures: dict[str, Any] = summary_ms([late for _, _, late in inside])
    figures["expected"] = expected
    figures["missed"] = expected - len(keys)
    figures["duplicates"] = sum(n - 1 for n in keys.values())
    figures["early"] = sum(1 for _, _, late in inside if late < 0)
    return figures


# -- jobyard ------------------------------------------------------------------


def run_jobyard(space: Workspace, args: argparse.Namespace, herd: bool) -> dict[str, Any]:
    count = args.herd if herd else args.templates
    names = [f"cron-{i:06d}" for i in range(count)]
    with running_server(space, args) as server:
        plan = herd_plan(args.herd_lead) if herd else None
        schedule = plan.schedule if plan else "* * * * * *"
        trigger = {"type": "cron", "schedule": schedule, "timezone": "UTC"}
        specs = [script_template(name, args.script, trigger=trigger) for name in names]
        began = time.monotonic()
        server.create_templates(specs, threads=args.create_threads)
        created_s = time.monotonic() - began
        note(f"jobyard: {count} templates created in {created_s:.1f} s")
        if plan is None:
            plan = every_second_plan(args.seconds)
        elif datetime.now(UTC) > plan.start - timedelta(seconds=1):
            sys.exit(f"creating the herd took too long ({created_s:.0f} s): raise --herd-lead")
        _sleep_until(plan.end + timedelta(seconds=args.settle))
        tasks = server.tasks_of_many(names)
        missed_events = server.api(
            "GET", "/events", params={"reason": "MissedSchedule", "limit": 1000}
        )
    firings = [
        (
            task["template"],
            parse_time(task["scheduled_time"]),
            (parse_time(task["created_at"]) - parse_time(task["scheduled_time"])).total_seconds(),
        )
        for task in tasks
        if task["scheduled_time"] is not None
    ]
    figures = judge(firings, names, plan)
    figures["templates_created_per_s"] = round(count / created_s, 1)
    figures["missed_schedule_events"] = len(missed_events)
    return figures


def _sleep_until(moment: datetime) -> None:
    seconds = (moment - datetime.now(UTC)).total_seconds()
    if seconds > 0:
        note(f"waiting {seconds:.0f} s")
        time.sleep(seconds)


# -- the APScheduler peer -----------------------------------------------------


def peer_job() -> None:
    """The peer's job: nothing (jobyard's instances are a shell's ':' and run after the
    task is recorded, so neither side's lateness includes the work)."""


class PeerRecorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.submitted: list[tuple[str, datetime, float]] = []
        self.executed: list[tuple[str, datetime, float]] = []
        self.missed = 0
        self.max_instances = 0
        self.errors = 0

    def __call__(self, event: Any) -> None:
        from apscheduler import events as ev

        now = datetime.now(UTC)
        with self.lock:
            if event.code == ev.EVENT_JOB_SUBMITTED:
                for run_time in event.scheduled_run_times:
                    late = (now - run_time).total_seconds()
                    self.submitted.append((event.job_id, run_time.astimezone(UTC), late))
            elif event.code == ev.EVENT_JOB_EXECUTED:
                run_time = event.scheduled_run_time.astimezone(UTC)
                self.executed.append((event.job_id, run_time, (now - run_time).total_seconds()))
            elif event.code == ev.EVENT_JOB_MISSED:
                self.missed += 1
            elif event.code == ev.EVENT_JOB_MAX_INSTANCES:
                self.max_instances += 1
            elif event.code == ev.EVENT_JOB_ERROR:
                self.errors += 1


def run_apscheduler(space: Workspace, args: argparse.Namespace, herd: bool) -> dict[str, Any]:
    from apscheduler import events as ev
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger

    count = args.herd if herd else args.templates
    names = [f"cron-{i:06d}" for i in range(count)]
    url = sqlalchemy_url(space.database("apscheduler"))
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=url)},
        job_defaults={"coalesce": False, "max_instances": 1, "misfire_grace_time": 60},
        timezone=UTC,
    )
    recorder = PeerRecorder()
    mask = (
        ev.EVENT_JOB_SUBMITTED
        | ev.EVENT_JOB_EXECUTED
        | ev.EVENT_JOB_MISSED
        | ev.EVENT_JOB_MAX_INSTANCES
        | ev.EVENT_JOB_ERROR
    )
    scheduler.add_listener(recorder, mask)
    plan = herd_plan(args.herd_lead) if herd else every_second_plan(args.seconds)
    began = time.monotonic()
    for name in names:
        trigger = CronTrigger(timezone=UTC, **plan.cron_fields)
        scheduler.add_job(peer_job, trigger, id=name, name=name)
    scheduler.start()  # writes the pending jobs to the job store
    created_s = time.monotonic() - began
    note(f"apscheduler: {count} jobs stored in {created_s:.1f} s")
    try:
        if not herd:
            plan = every_second_plan(args.seconds)
        elif datetime.now(UTC) > plan.start - timedelta(seconds=1):
            sys.exit(f"storing the herd took too long ({created_s:.0f} s): raise --herd-lead")
        _sleep_until(plan.end + timedelta(seconds=args.settle))
    finally:
        # The batch in flight at shutdown logs "cannot schedule new futures": not ours to see.
        logging.getLogger("apscheduler").setLevel(logging.CRITICAL)
        scheduler.pause()
        scheduler.shutdown(wait=True)
    with recorder.lock:
        figures = judge(list(recorder.submitted), names, plan)
        figures["executed"] = judge(list(recorder.executed), names, plan)
        figures["missed_events"] = recorder.missed
        figures["max_instances_events"] = recorder.max_instances
        figures["job_errors"] = recorder.errors
    figures["templates_created_per_s"] = round(count / created_s, 1)
    return figures


# -- main ---------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--templates", type=int, default=1000, help="every-second templates")
    parser.add_argument("--seconds", type=int, default=60, help="length of the measured window")
    parser.add_argument(
        "--herd", type=int, default=0, help="run the herd with this many templates instead"
    )
    parser.add_argument(
        "--herd-lead",
        type=float,
        default=None,
        help="seconds from now to the herd's second (default 20 + herd/40)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=None,
        help="seconds to wait after the window before reading (default 3; herd 10)",
    )
    parser.add_argument("--script", default=":", help="the one-line script of every template")
    parser.add_argument("--create-threads", type=int, default=16)
    parser.add_argument("--peer", choices=["apscheduler"], default=None)
    add_common_args(parser)
    args = parser.parse_args()
    herd = args.herd > 0
    if args.herd_lead is None:
        args.herd_lead = 20 + args.herd / 40
    if args.settle is None:
        args.settle = 10.0 if herd else 3.0
    with workspace(args) as space:
        figures: dict[str, Any] = {"jobyard": run_jobyard(space, args, herd)}
        if args.peer == "apscheduler":
            figures["apscheduler"] = run_apscheduler(space, args, herd)
            mine, theirs = figures["jobyard"]["p99_ms"], figures["apscheduler"]["p99_ms"]
            if mine and theirs:
                figures["p99_ratio_jobyard_to_apscheduler"] = round(mine / theirs, 3)
        ours = figures["jobyard"]
        if herd:
            sizes = {"herd": args.herd, "herd_lead_s": args.herd_lead}
            max_s = None if ours["max_ms"] is None else ours["max_ms"] / 1000
            targets = [target("herd all recorded within (s)", max_s, HERD_TARGET_S)]
        else:
            sizes = {"templates": args.templates, "seconds": args.seconds}
            targets = [target("p99 lateness (ms)", ours["p99_ms"], P99_TARGET_MS)]
        targets.append(target("missed", ours["missed"], 0))
        targets.append(target("duplicates", ours["duplicates"], 0))
        sizes["peer"] = args.peer
        emit("cron_lateness", space, sizes, figures, targets)


if __name__ == "__main__":
    main()
