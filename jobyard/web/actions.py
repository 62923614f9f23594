"""What the buttons do: run, stop, suspend, resume, roll back, rotate, delete.

Each action checks the role it needs, then redirects back with a message that
says what happened (or why not).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from jobyard.api.deps import get_engine
from jobyard.engine.tokens import Role
from jobyard.errors import ConcurrencyForbidden, JobyardError
from jobyard.spec import RunOverrides
from jobyard.web import session, views
from jobyard.web.rendering import render
from jobyard.web.routing import console_router
from jobyard.web.template_pages import TEMPLATE, template_context
from jobyard.web.views import RunForm
from jobyard.web.wizard_form import plain_message

router = console_router()


def _details(namespace: str, name: str) -> str:
    return f"/namespaces/{namespace}/templates/{name}"


def _act(request: Request, back: str, role: Role, doing: str, act: Callable[[], str]) -> Response:
    """Run ``act`` (which returns what to tell the user) and go back to ``back``."""
    try:
        session.require(request, role, doing)
        return session.redirect(back, act())
    except JobyardError as err:
        return session.redirect(back, str(err), "error")


# -- run job manually ---------------------------------------------------------------


@router.get(TEMPLATE + "/run")
def run_page(request: Request, namespace: str, name: str) -> Response:
    session.enter_namespace(request, namespace)
    return _run_page(request, namespace, name, RunForm())


def _run_page(
    request: Request, namespace: str, name: str, form: RunForm, status: int = 200
) -> Response:
    engine = get_engine(request)
    template = engine.templates.get(namespace, name)
    context = {**template_context(engine, template, "details"), "run": form}
    return render(request, "template_run.html", context, status_code=status)


@router.post(TEMPLATE + "/run")
async def run(request: Request, namespace: str, name: str) -> Response:
    posted = await request.form()
    return await run_in_threadpool(_run, request, namespace, name, posted)


def _run(request: Request, namespace: str, name: str, posted: FormData) -> Response:
    session.enter_namespace(request, namespace)
    session.require(request, Role.OPERATOR, "run jobs")
    form = _run_form(posted)
    data: dict[str, Any] = {"envs": [{"name": n, "value": v} for n, v in form.env]}
    if form.replicas.strip():
        data["replicas"] = form.replicas.strip()
    try:
        overrides = RunOverrides.model_validate(data)
        task = get_engine(request).tasks.run(namespace, name, overrides).task
    except ValidationError as err:
        form.errors = _run_errors(err)
        return _run_page(request, namespace, name, form, 422)
    except ConcurrencyForbidden as err:
        form.errors = {"form": f"{err} (task {err.active_task_id})"}
        return _run_page(request, namespace, name, form, 409)
    return session.redirect(f"/tasks/{task.id}", f"Started task {task.id} of {name}.")


def _run_form(posted: FormData) -> RunForm:
    names, values = posted.getlist("env_name"), posted.getlist("env_value")
    pairs = [(str(n).strip(), str(v)) for n, v in zip(names, values, strict=False)]
    return RunForm(
        env=[(n, v) for n, v in pairs if n or v], replicas=str(posted.get("replicas", ""))
    )


def _run_errors(err: ValidationError) -> dict[str, str]:
    found: dict[str, str] = {}
    for error in err.errors():
        loc = [str(part) for part in error["loc"]]
        key = "replicas" if loc[:1] == ["replicas"] else ".".join(["env", *loc[1:2]])
        found.setdefault(key, plain_message(key, error))
    return found


# -- stop, suspend, resume, rotate ------------------------------------------------


@router.post(TEMPLATE + "/stop")
def stop(request: Request, namespace: str, name: str) -> Response:
    session.enter_namespace(request, namespace)

    def act() -> str:
        stopped = get_engine(request).tasks.stop_template(namespace, name)
        if not stopped:
            return f"{name} has no running task to stop."
        return f"Stopping {len(stopped)} task(s): " + ", ".join(str(t.id) for t in stopped) + "."

    return _act(request, _details(namespace, name), Role.OPERATOR, "stop jobs", act)


@router.post(TEMPLATE + "/suspend")
def suspend(request: Request, namespace: str, name: str) -> Response:
    session.enter_namespace(request, namespace)

    def act() -> str:
        get_engine(request).templates.set_suspended(namespace, name, True)
        return f"Suspended {name}: its trigger is paused; manual runs still work."

    return _act(request, _details(namespace, name), Role.OPERATOR, "suspend templates", act)


@router.post(TEMPLATE + "/resume")
def resume(request: Request, namespace: str, name: str) -> Response:
    session.enter_namespace(request, namespace)

    def act() -> str:
        get_engine(request).templates.set_suspended(namespace, name, False)
        return f"Resumed {name}."

    return _act(request, _details(namespace, name), Role.OPERATOR, "resume templates", act)


@router.post(TEMPLATE + "/trigger/rotate")
def rotate(request: Request, namespace: str, name: str) -> Response:
    session.enter_namespace(request, namespace)

    def act() -> str:
        get_engine(request).templates.rotate_hook(namespace, name)
        return "The trigger has a new URL; the old one no longer works."

    return _act(request, _details(namespace, name), Role.ADMIN, "change trigger URLs", act)


# -- roll back, delete ----------------------------------------------------------------


@router.post(TEMPLATE + "/rollback")
async def rollback(request: Request, namespace: str, name: str) -> Response:
    version = str((await request.form()).get("version", ""))
    return await run_in_threadpool(_rollback, request, namespace, name, version)


def _rollback(request: Request, namespace: str, name: str, version: str) -> Response:
    session.enter_namespace(request, namespace)
    back = _details(namespace, name)
    if not version.isdigit():
        return session.redirect(back + "/versions", "Pick a version to roll back to.", "error")

    def act() -> str:
        made = get_engine(request).templates.rollback(namespace, name, int(version))
        return f"Rolled back to version {version}: it is now version {made.version}."

    return _act(request, back, Role.ADMIN, "roll back templates", act)


@router.get(TEMPLATE + "/delete")
def delete_page(request: Request, namespace: str, name: str) -> Response:
    session.enter_namespace(request, namespace)
    engine = get_engine(request)
    template = engine.templates.get(namespace, name)
    context = {
        **template_context(engine, template, "details"),
        "impact": views.delete_impact(engine, template),
    }
    return render(request, "template_delete.html", context)


@router.post(TEMPLATE + "/delete")
def delete(request: Request, namespace: str, name: str) -> Response:
    session.enter_namespace(request, namespace)
    back = f"/namespaces/{namespace}/templates"
    try:
        session.require(request, Role.ADMIN, "delete templates")
        get_engine(request).templates.delete(namespace, name)
    except JobyardError as err:
        return session.redirect(_details(namespace, name), str(err), "error")
    return session.redirect(back, f"Deleted job template {name} with its tasks, logs and events.")
