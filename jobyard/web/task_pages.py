"""Task history of a template, and a task's record: its instances and their logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from jobyard.api.auth import check_namespace
from jobyard.api.deps import EngineDep, get_engine
from jobyard.domain import Instance, Task, TaskStatus, TriggerKind
from jobyard.engine.core import Engine
from jobyard.engine.tokens import Role
from jobyard.errors import JobyardError
from jobyard.web import session, views
from jobyard.web.rendering import render
from jobyard.web.routing import console_router
from jobyard.web.template_pages import RECENT_TASKS, TEMPLATE, template_context

router = console_router()
HISTORY_LIMIT = 200
LOG_TAIL_BYTES = 256 * 1024


@router.get(TEMPLATE + "/tasks")
def task_history(
    request: Request,
    engine: EngineDep,
    namespace: str,
    name: str,
    status: str = "",
    trigger: str = "",
    part: str = "",
) -> Response:
    session.enter_namespace(request, namespace)
    template = engine.templates.get(namespace, name)
    statuses = [status] if status in {s.value for s in TaskStatus} else None
    limit = RECENT_TASKS if part == "recent" else HISTORY_LIMIT
    tasks = engine.tasks.list_for_template(namespace, name, statuses, limit, 0)
    if trigger in {t.value for t in TriggerKind}:
        tasks = [task for task in tasks if task.trigger.value == trigger]
    context = {
        **template_context(engine, template, "tasks"),
        "tasks": tasks,
        "limit": HISTORY_LIMIT,
        "filters": {"status": status, "trigger": trigger},
        "statuses": [s.value for s in TaskStatus],
        "triggers": [t.value for t in TriggerKind],
    }
    pages = {"rows": "_task_rows.html", "recent": "_recent_tasks.html"}
    page = pages.get(part, "template_tasks.html")
    return render(request, page, context)


def _visible_task(request: Request, engine: Engine, task_id: int) -> Task:
    session.principal(request)
    task = engine.tasks.get(task_id)
    check_namespace(request, task.namespace)
    return task


@router.get("/tasks/{task_id}")
def task_record(
    request: Request, engine: EngineDep, task_id: int, instance: str = "", part: str = ""
) -> Response:
    task = _visible_task(request, engine, task_id)
    instances = engine.tasks.instances(task_id)
    context: dict[str, Any] = {
        "task": task,
        "instances": instances,
        "selected": instance,
        "namespace": task.namespace,
        "section": "tasks",
        "waiting_words": views.WAITING_WORDS,
    }
    if part == "summary":
        return render(request, "_task_summary.html", context)
    template = engine.templates.get(task.namespace, task.template_name)
    context.update(template_context(engine, template, "tasks"))
    context.update(_log_context(engine, instances, instance))
    return render(request, "task.html", context)


def _log_context(engine: Engine, instances: list[Instance], wanted: str) -> dict[str, Any]:
    """The instance whose log is shown: the one asked for, else a live one, else the
    first that failed, else the first."""
    chosen = next((i for i in instances if str(i.id) == wanted), None)
    chosen = chosen or next((i for i in instances if i.is_live), None)
    chosen = chosen or next((i for i in instances if i.exit_code not in (None, 0)), None)
    chosen = chosen or (instances[0] if instances else None)
    text = ""
    if chosen is not None and not chosen.is_live:
        text = _tail(engine.tasks.log_path(chosen))
    return {"log_instance": chosen, "log_text": text}


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as log:
            size = log.seek(0, 2)
            log.seek(max(0, size - LOG_TAIL_BYTES))
            data = log.read()
    except FileNotFoundError:
        return ""
    text = data.decode(errors="replace")
    if size > LOG_TAIL_BYTES:
        return f"[… the first {size - LOG_TAIL_BYTES} bytes are not shown …]\n" + text
    return text


@router.post("/tasks/{task_id}/stop")
def stop_task(request: Request, task_id: int) -> Response:
    engine = get_engine(request)
    task = _visible_task(request, engine, task_id)
    back = f"/tasks/{task_id}"
    try:
        session.require(request, Role.OPERATOR, "stop tasks")
        engine.tasks.stop_task(task.id)
    except JobyardError as err:
        return session.redirect(back, str(err), "error")
    return session.redirect(back, f"Stopping task {task_id}.")


@router.post("/tasks/{task_id}/delete")
def delete_task(request: Request, task_id: int) -> Response:
    engine = get_engine(request)
    task = _visible_task(request, engine, task_id)
    back = f"/namespaces/{task.namespace}/templates/{task.template_name}/tasks"
    try:
        session.require(request, Role.ADMIN, "delete tasks")
        engine.tasks.delete_task(task.id)
    except JobyardError as err:
        return session.redirect(back, str(err), "error")
    return session.redirect(back, f"Deleted task {task_id} and its logs.")
