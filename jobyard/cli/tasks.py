"""Task commands: run, tasks, stop, events."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer

from jobyard.cli.errors import CliError, UsageProblem
from jobyard.cli.logs import follow_task
from jobyard.cli.output import duration, local_time, note, parse_time, show, table
from jobyard.cli.paths import task_path, template_path
from jobyard.cli.session import Output, Session

Name = Annotated[str, typer.Argument(metavar="NAME", help="template name", show_default=False)]


class Severity(StrEnum):
    NORMAL = "normal"
    WARNING = "warning"
    ERROR = "error"


def run(
    session: Session,
    name: Name,
    env: Annotated[
        list[str] | None,
        typer.Option(
            "--env", "-e", metavar="K=V", help="environment for this task only (repeatable)"
        ),
    ] = None,
    replicas: Annotated[
        int | None, typer.Option("--replicas", "-r", min=1, help="instances for this task only")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="follow the logs; exit 1 unless it succeeds")
    ] = False,
) -> None:
    """Start a task of the template now and print its id."""
    overrides = _overrides(env or [], replicas)
    task = session.api.post(template_path(session.namespace, name) + "/run", overrides)
    if not wait:
        show(session, task, lambda t: str(t["id"]))
        return
    note(f"task {task['id']} created; following its logs")
    logs_to = sys.stderr if session.output != Output.TABLE else sys.stdout
    try:
        final = follow_task(session.api, task["id"], logs_to)
    except KeyboardInterrupt:
        note(f"task {task['id']} goes on; 'jobyard stop --task {task['id']}' ends it")
        raise
    if session.output != Output.TABLE:
        show(session, final, str)
    if final["status"] != "succeeded":
        raise CliError(_ending(final))
    note(f"task {final['id']} succeeded in {duration(final.get('duration_seconds'))}")


def _overrides(pairs: list[str], replicas: int | None) -> dict[str, Any]:
    envs = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageProblem(f"--env wants NAME=VALUE, not {pair!r}")
        envs.append({"name": key, "value": value})
    body: dict[str, Any] = {"envs": envs}
    if replicas is not None:
        body["replicas"] = replicas
    from jobyard.cli.validation import run_overrides

    run_overrides(body)
    return body


def _ending(task: Any) -> str:
    reason = f" ({task['reason']})" if task.get("reason") else ""
    message = f": {task['message']}" if task.get("message") else ""
    return f"task {task['id']} {task['status']}{reason}{message}"


def tasks(
    session: Session,
    name: Name,
    status: Annotated[
        str | None,
        typer.Option(
            "--status", "-s", help="pending, running, succeeded, failed, stopped (comma-separated)"
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="newest N")] = 20,
) -> None:
    """List the tasks of a template, newest first."""
    path = template_path(session.namespace, name) + "/tasks"
    found = session.api.get(path, status=status, limit=limit)
    if not found and session.output == Output.TABLE:
        note(f"no tasks of template {name}")
        return
    show(session, found, tasks_table)


def tasks_table(found: list[Any]) -> str:
    rows = [
        (
            task["id"],
            task["status"],
            task["trigger"],
            local_time(task["created_at"]),
            duration(_seconds(task)),
            task.get("reason") or task.get("stopping"),
        )
        for task in found
    ]
    return table(("ID", "STATUS", "TRIGGER", "CREATED", "DURATION", "REASON"), rows)


def _seconds(task: Any) -> float | None:
    """The duration of an ended task, or how long a running one has run so far."""
    if task.get("duration_seconds") is not None:
        return float(task["duration_seconds"])
    started = parse_time(task.get("started_at"))
    if started is None or task.get("finished_at"):
        return None
    return (datetime.now(UTC) - started).total_seconds()


def stop(
    session: Session,
    name: Annotated[
        str | None, typer.Argument(help="stop every active task of this template")
    ] = None,
    task: Annotated[
        int | None, typer.Option("--task", "-t", help="stop this one task", show_default=False)
    ] = None,
) -> None:
    """Stop the active tasks of a template, or one task (--task ID)."""
    if (name is None) == (task is None):
        raise UsageProblem("give a template NAME or --task ID (one of the two)")
    if task is not None:
        stopped = session.api.post(task_path(task) + "/stop")
        show(session, stopped, _stopped_task)
        return
    assert name is not None
    found = session.api.post(template_path(session.namespace, name) + "/stop")
    show(session, found, lambda ts: _stopped_template(name, ts))


def _stopped_task(task: Any) -> str:
    if task["status"] in ("pending", "running"):
        return f"task {task['id']} stopping"
    return f"task {task['id']} already {task['status']}"


def _stopped_template(name: str, found: list[Any]) -> str:
    if not found:
        return f"template {name} has no active tasks"
    ids = ", ".join(str(t["id"]) for t in found)
    return f"stopping {len(found)} task(s) of template {name}: {ids}"


def events(
    session: Session,
    template: Annotated[
        str | None, typer.Option("--template", "-t", help="events of this template")
    ] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="e.g. TaskFailed")] = None,
    severity: Annotated[Severity | None, typer.Option("--severity", help="exactly this")] = None,
    task: Annotated[int | None, typer.Option("--task", help="events of this task")] = None,
    query: Annotated[
        str | None, typer.Option("--query", "-q", help="text in message, reason or source")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="newest N")] = 50,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="events of every namespace")
    ] = False,
) -> None:
    """Show events, oldest first (the newest N)."""
    # Task ids are global; server-wide events (the scheduler's) have no namespace.
    namespace = None if all_namespaces or task is not None else session.namespace
    found = session.api.get(
        "/events",
        namespace=namespace,
        template=template,
        reason=reason,
        severity=severity.value if severity else None,
        task_id=task,
        q=query,
        limit=limit,
    )
    if not found and session.output == Output.TABLE:
        note("no events")
        return
    show(session, found, _events_table)


def _events_table(found: list[Any]) -> str:
    rows = [
        (
            local_time(e["created_at"]),
            e["severity"],
            e["reason"],
            f"{e['source_type']} {e['source_name']}",
            e["message"],
        )
        for e in reversed(found)
    ]
    return table(("TIME", "SEVERITY", "REASON", "SOURCE", "MESSAGE"), rows)
