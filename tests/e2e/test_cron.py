"""Cron triggers end to end: a real server, real time, every-second schedules.

Nothing here asserts how fast something happens; waits are lower bounds
("at least N tasks"), and "nothing happens" is checked over a quiet window
that starts only after the API call that forbids it has returned.
"""

from __future__ import annotations

import itertools
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support import (
    TERMINAL,
    JobyardServer,
    script_template,
    wait_for,
)

QUIET_WINDOW = 2.5  # seconds without a firing that prove a schedule is off
TEMPLATE = "/namespaces/default/templates/{}"


def cron_template(name: str, schedule: str, script: str, **extra: Any) -> dict[str, Any]:
    trigger = {"type": "cron", "schedule": schedule, **extra.pop("trigger", {})}
    return script_template(name, script, trigger=trigger, **extra)


def tasks_of(server: JobyardServer, name: str) -> list[dict[str, Any]]:
    """Every task of the template, oldest first."""
    found = server.api("GET", TEMPLATE.format(name) + "/tasks", expect=200, params={"limit": 1000})
    return sorted(found, key=lambda task: task["id"])


def template_events(server: JobyardServer, name: str, reason: str) -> list[dict[str, Any]]:
    return list(server.events(template=name, reason=reason, limit=1000))


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def env_time(moment: datetime) -> str:
    """JOBYARD_SCHEDULED_TIME's format."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def scheduled_times(tasks: list[dict[str, Any]]) -> list[datetime]:
    return [when(task["scheduled_time"]) for task in tasks]


def assert_cron_series(tasks: list[dict[str, Any]]) -> None:
    """Cron tasks on whole seconds, one per scheduled time, in firing order."""
    times = scheduled_times(tasks)
    assert all(task["trigger"] == "cron" for task in tasks), tasks
    assert all(moment.microsecond == 0 for moment in times), times
    assert len(set(times)) == len(times), f"a scheduled time fired twice: {times}"
    assert times == sorted(times), f"scheduled times not increasing with task ids: {times}"


def all_ended(server: JobyardServer, name: str) -> list[dict[str, Any]] | None:
    tasks = tasks_of(server, name)
    return tasks if tasks and all(task["status"] in TERMINAL for task in tasks) else None


def set_suspended(server: JobyardServer, name: str, suspended: bool) -> Any:
    action = "suspend" if suspended else "resume"
    return server.api("POST", TEMPLATE.format(name) + "/" + action, expect=200)


def assert_quiet(server: JobyardServer, name: str) -> None:
    before = len(tasks_of(server, name))
    time.sleep(QUIET_WINDOW)
    assert len(tasks_of(server, name)) == before, "a task was created after firing was off"


def test_every_second_schedule_fires_suspends_and_resumes(jobyard: JobyardServer) -> None:
    script = 'echo "trigger=$JOBYARD_TRIGGER scheduled=$JOBYARD_SCHEDULED_TIME"'
    jobyard.create_template(cron_template("tick", "* * * * * *", script))

    wait_for(lambda: len(tasks_of(jobyard, "tick")) >= 4, timeout=30)
    suspended = set_suspended(jobyard, "tick", True)
    assert suspended["suspended"] is True
    assert suspended["schedule"]["next_fire_times"] == []
    fired = tasks_of(jobyard, "tick")
    assert_cron_series(fired)

    first = jobyard.wait_task(fired[0]["id"])
    assert first["status"] == "succeeded", first
    [instance] = jobyard.instances(first["id"])
    expected = f"trigger=cron scheduled={env_time(when(first['scheduled_time']))}"
    assert expected in jobyard.log(instance["id"])

    assert_quiet(jobyard, "tick")

    resumed_at = datetime.now(UTC)
    resumed = set_suspended(jobyard, "tick", False)
    assert resumed["suspended"] is False
    assert when(resumed["schedule"]["next_fire_times"][0]) > resumed_at - timedelta(seconds=1)
    later = wait_for(lambda: tasks_of(jobyard, "tick")[len(fired) :], timeout=30)
    # Resuming starts from now: the seconds of the pause are not caught up.
    assert when(later[0]["scheduled_time"]) >= resumed_at.replace(microsecond=0)
    set_suspended(jobyard, "tick", True)
    assert_cron_series(tasks_of(jobyard, "tick"))


def test_editing_the_schedule_replaces_the_firings(jobyard: JobyardServer) -> None:
    jobyard.create_template(cron_template("edited", "* * * * * *", "true"))
    wait_for(lambda: len(tasks_of(jobyard, "edited")) >= 2, timeout=30)

    spec = jobyard.api("GET", TEMPLATE.format("edited"), expect=200)["spec"]
    spec["trigger"]["schedule"] = "0 0 1 1 *"
    edited = jobyard.api("PUT", TEMPLATE.format("edited"), expect=200, json=spec)

    assert edited["version"] == 2
    upcoming = [when(moment) for moment in edited["schedule"]["next_fire_times"]]
    assert len(upcoming) >= 2
    assert upcoming[0] > datetime.now(UTC)
    assert all((m.month, m.day, m.hour, m.minute, m.second) == (1, 1, 0, 0, 0) for m in upcoming)
    assert [m.year for m in upcoming] == list(
        range(upcoming[0].year, upcoming[0].year + len(upcoming))
    )
    assert_quiet(jobyard, "edited")
    assert_cron_series(tasks_of(jobyard, "edited"))


def test_forbid_skips_firings_while_a_task_runs(jobyard: JobyardServer) -> None:
    jobyard.create_template(
        cron_template("lonely", "* * * * * *", "sleep 3", concurrency_policy="Forbid")
    )

    # Two tasks means the first one ended and firing went on after the skips.
    wait_for(lambda: len(tasks_of(jobyard, "lonely")) >= 2, timeout=30)
    set_suspended(jobyard, "lonely", True)
    jobyard.api("POST", TEMPLATE.format("lonely") + "/stop", expect=200)
    tasks = wait_for(lambda: all_ended(jobyard, "lonely"), timeout=30)

    assert_cron_series(tasks)
    assert tasks[0]["status"] == "succeeded", tasks[0]
    for earlier, later in itertools.pairwise(tasks):
        assert when(later["created_at"]) >= when(earlier["finished_at"]), (earlier, later)
    spans = sorted(
        (when(i["started_at"]), when(i["finished_at"]))
        for task in tasks
        for i in jobyard.instances(task["id"])
        if i["started_at"]
    )
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, f"two instances ran at once: {spans}"

    skipped = template_events(jobyard, "lonely", "ConcurrencyForbidden")
    assert len(skipped) >= 2, skipped
    assert all(event["severity"] == "warning" for event in skipped)
    assert all("forbids concurrent tasks" in event["message"] for event in skipped)
    # Each skip is a firing that made no task: the first task ran 3 s on a 1 s schedule.
    between = [e for e in skipped if when(e["created_at"]) < when(tasks[1]["created_at"])]
    assert len(between) >= 2, (between, tasks)


MISSED = re.compile(r"missed firings at (\S+)(?: \.\. (\S+))? \(.*\); (.*)$")


def parse_missed(message: str) -> tuple[datetime, datetime, str]:
    match = MISSED.match(message)
    assert match, message
    start = when(match[1])
    return start, when(match[2]) if match[2] else start, match[3]


def test_missed_firings_after_a_restart(jobyard: JobyardServer) -> None:
    # Three consecutive seconds a little ahead; the server is down for all of them.
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=4)
    due = [start + timedelta(seconds=i) for i in range(3)]
    seconds = ",".join(str(moment.second) for moment in due)
    script = 'echo "scheduled=$JOBYARD_SCHEDULED_TIME"'
    jobyard.create_template(
        cron_template("late-ok", f"{seconds} * * * * *", script, trigger={"starting_deadline": 60})
    )
    jobyard.create_template(
        cron_template("late-no", f"{seconds} * * * * *", script, trigger={"starting_deadline": 1})
    )
    jobyard.create_template(
        cron_template("every", "* * * * * *", script, trigger={"starting_deadline": 60})
    )
    wait_for(lambda: len(tasks_of(jobyard, "every")) >= 2, timeout=30)

    assert jobyard.terminate() is not None
    # Restart well after the last due time: more than the 1 s deadline of late-no.
    time.sleep(max(0.0, (due[-1] - datetime.now(UTC)).total_seconds()) + 2.5)
    restarted_at = datetime.now(UTC)
    jobyard.start()

    # late-ok: exactly one catch-up task, for the latest missed time.
    missed_ok = wait_for(lambda: template_events(jobyard, "late-ok", "MissedSchedule"))
    before = [t for t in tasks_of(jobyard, "late-ok") if when(t["created_at"]) < restarted_at]
    assert not before, (
        f"fired while it should have been down; the test needs a faster stop: {before}"
    )
    [catch_up] = tasks_of(jobyard, "late-ok")
    assert when(catch_up["scheduled_time"]) == due[-1]
    assert jobyard.wait_task(catch_up["id"])["status"] == "succeeded"
    [instance] = jobyard.instances(catch_up["id"])
    assert f"scheduled={env_time(due[-1])}" in jobyard.log(instance["id"])
    [event] = missed_ok
    assert event["severity"] == "warning"
    assert parse_missed(event["message"]) == (
        due[0],
        due[1],
        f"ran the latest, {due[-1].isoformat()}, instead",
    )

    # late-no: every missed time is past its deadline; the event says so.
    [event] = wait_for(lambda: template_events(jobyard, "late-no", "MissedSchedule"))
    assert event["severity"] == "warning"
    assert parse_missed(event["message"]) == (
        due[0],
        due[-1],
        "none is within the starting deadline of 1 s",
    )
    assert tasks_of(jobyard, "late-no") == []
    template = jobyard.api("GET", TEMPLATE.format("late-no"), expect=200)
    assert when(template["schedule"]["next_fire_times"][0]) == due[0] + timedelta(minutes=1)

    # every: one catch-up for the latest second, not a burst for the whole downtime.
    [event] = wait_for(
        lambda: [
            e
            for e in template_events(jobyard, "every", "MissedSchedule")
            if when(e["created_at"]) >= restarted_at
        ]
    )
    first_missed, last_missed, ran = parse_missed(event["message"])
    assert ran.startswith("ran the latest, ")
    latest = when(ran.removeprefix("ran the latest, ").removesuffix(", instead"))
    assert latest == last_missed + timedelta(seconds=1)
    set_suspended(jobyard, "every", True)
    tasks = tasks_of(jobyard, "every")
    assert_cron_series(tasks)
    times = scheduled_times(tasks)
    assert latest in times
    assert [moment for moment in times if moment < first_missed], "no firing before the stop"
    assert not [moment for moment in times if first_missed <= moment <= last_missed]
    assert last_missed - first_missed >= timedelta(seconds=2), event["message"]
