"""Template commands: list, get, versions, rollback, delete, suspend, resume."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from jobyard.cli.errors import UsageProblem
from jobyard.cli.output import full_time, local_time, note, show, table, to_yaml
from jobyard.cli.paths import template_path, templates_path
from jobyard.cli.session import Output, Session
from jobyard.cli.tasks import tasks_table

Name = Annotated[str, typer.Argument(metavar="NAME", help="template name", show_default=False)]
PAGE = 1000
RECENT_TASKS = 5


def templates(
    session: Session,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="templates of every namespace")
    ] = False,
    query: Annotated[
        str | None, typer.Option("--query", "-q", help="part of the name", show_default=False)
    ] = None,
) -> None:
    """List templates with their trigger and next fire time."""
    path = "/templates" if all_namespaces else templates_path(session.namespace)
    found: list[Any] = []
    while True:
        page = session.api.get(path, limit=PAGE, offset=len(found), q=query)
        found.extend(page)
        if len(page) < PAGE:
            break
    if not found and session.output == Output.TABLE:
        where = "any namespace" if all_namespaces else f"namespace {session.namespace}"
        note(f"no templates in {where}")
        return
    show(session, found, _templates_table)


def _templates_table(found: list[Any]) -> str:
    rows = [
        (
            t["name"],
            t["namespace"],
            t["version"],
            trigger_text(t["spec"].get("trigger")),
            local_time(next_fire(t)),
            t["suspended"],
        )
        for t in found
    ]
    headers = ("NAME", "NAMESPACE", "VERSION", "TRIGGER", "NEXT FIRE", "SUSPENDED")
    return table(headers, rows)


def trigger_text(trigger: Any) -> str:
    if not trigger:
        return "manual"
    if trigger.get("type") == "cron":
        return f"cron {trigger['schedule']} {trigger.get('timezone', 'UTC')}"
    return str(trigger.get("type", "?"))


def next_fire(template: Any) -> str | None:
    schedule = template.get("schedule") or {}
    fires = schedule.get("next_fire_times") or []
    return fires[0] if fires else None


def get(session: Session, name: Name) -> None:
    """Show a template: its status, its recent tasks and its spec."""
    path = template_path(session.namespace, name)
    template = session.api.get(path)
    if session.output != Output.TABLE:
        show(session, template, str)
        return
    tasks = session.api.get(path + "/tasks", limit=RECENT_TASKS)
    typer.echo(_describe(template, tasks))


def _describe(template: Any, tasks: list[Any]) -> str:
    schedule = template.get("schedule") or {}
    fires = [local_time(t) for t in schedule.get("next_fire_times") or []]
    trigger = trigger_text(template["spec"].get("trigger"))
    if schedule.get("description"):
        trigger += f" ({schedule['description']})"
    fields = [
        ("name", template["name"]),
        ("namespace", template["namespace"]),
        ("version", template["version"]),
        ("suspended", "yes" if template["suspended"] else "no"),
        ("trigger", trigger),
        ("next fires", ", ".join(fires) if fires else "-"),
        ("created", full_time(template["created_at"])),
        ("updated", full_time(template["updated_at"])),
    ]
    lines = [f"{key + ':':<12} {value}" for key, value in fields]
    lines.append("recent tasks:" + ("" if tasks else " none"))
    if tasks:
        lines.extend("  " + line for line in tasks_table(tasks).splitlines())
    lines.append("spec:")
    lines.extend("  " + line for line in to_yaml(template["spec"]).splitlines())
    return "\n".join(lines)


def versions(session: Session, name: Name) -> None:
    """List the versions of a template, with the fields each one changed."""
    found = session.api.get(template_path(session.namespace, name) + "/versions")
    found = sorted(found, key=lambda v: v["version"])
    show(session, found, _versions_table)


def _versions_table(found: list[Any]) -> str:
    rows = []
    previous: dict[str, Any] | None = None
    for version in found:
        spec = version["spec"]
        if previous is None:
            changed = "created"
        else:
            keys = sorted(
                k for k in spec.keys() | previous.keys() if spec.get(k) != previous.get(k)
            )
            changed = ", ".join(keys) or "nothing (same spec)"
        rows.append((version["version"], local_time(version["created_at"]), changed))
        previous = spec
    return table(("VERSION", "CREATED", "CHANGED"), rows)


def rollback(
    session: Session,
    name: Name,
    to: Annotated[int, typer.Option("--to", min=1, help="version to go back to")],
) -> None:
    """Store a new version whose spec equals version K."""
    path = template_path(session.namespace, name) + "/rollback"
    template = session.api.post(path, {"version": to})
    show(
        session,
        template,
        lambda t: f"template {t['name']} rolled back to version {to} (now version {t['version']})",
    )


def delete(
    session: Session,
    name: Name,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> None:
    """Delete a template with its versions, tasks, logs and events (running tasks are killed)."""
    if not yes:
        if not sys.stdin.isatty():
            raise UsageProblem(f"not deleting template {name} without confirmation: pass --yes")
        question = (
            f"Delete template {name} in namespace {session.namespace} "
            "with its versions, tasks, logs and events?"
        )
        if not typer.confirm(question, default=False, err=True):
            note("not deleted")
            raise typer.Exit(1)
    session.api.delete(template_path(session.namespace, name))
    result = {"name": name, "namespace": session.namespace, "deleted": True}
    show(session, result, lambda r: f"template {r['name']} deleted")


def suspend(session: Session, name: Name) -> None:
    """Pause the template's schedule (manual runs still work)."""
    _set_suspended(session, name, "suspend")


def resume(session: Session, name: Name) -> None:
    """Resume the template's schedule."""
    _set_suspended(session, name, "resume")


def _set_suspended(session: Session, name: str, action: str) -> None:
    template = session.api.post(template_path(session.namespace, name) + f"/{action}")
    word = "suspended" if template["suspended"] else "resumed"
    show(session, template, lambda t: f"template {t['name']} {word}")
