"""Create job template and Edit job template: the same three steps.

Every step is one form holding all fields (the other steps' fields are only
hidden), so nothing typed is lost; the server checks the spec on Next and on
save and shows each error beside its field.
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from jobyard.api.auth import check_namespace
from jobyard.api.deps import get_engine
from jobyard.domain import Template
from jobyard.engine.core import Engine
from jobyard.engine.tokens import Role
from jobyard.errors import AlreadyExists, InvalidSpec, JobyardError, NotFound
from jobyard.spec import TemplateSpec
from jobyard.web import package_views, session, views, wizard_form
from jobyard.web.rendering import render
from jobyard.web.routing import console_router
from jobyard.web.template_pages import TEMPLATE, TEMPLATES, preview, template_context
from jobyard.web.wizard_form import STEPS, FormState

router = console_router()
CPU_CHOICES = ["0.25", "0.5", "1", "2", "4", "8", "16", "32"]
MEMORY_CHOICES = ["256", "512", "1024", "2048", "4096", "8192", "16384", "32768", "65536"]
Save = Callable[[TemplateSpec], tuple[Template, str]]


@functools.cache
def time_zones() -> list[str]:
    return sorted(zoneinfo.available_timezones() - {"localtime", "posixrules"})


@router.get(TEMPLATES + "/new")
def new_template(request: Request, namespace: str) -> Response:
    session.enter_namespace(request, namespace)
    session.require(request, Role.ADMIN, "create job templates")
    return _page(request, wizard_form.blank(namespace), 1, None)


@router.post(TEMPLATES + "/new")
async def create_template(request: Request, namespace: str) -> Response:
    form = await request.form()
    return await run_in_threadpool(_create, request, namespace, form)


def _create(request: Request, namespace: str, form: FormData) -> Response:
    session.enter_namespace(request, namespace)
    session.require(request, Role.ADMIN, "create job templates")
    state = wizard_form.from_form(form, form.getlist)
    engine = get_engine(request)

    def save(spec: TemplateSpec) -> tuple[Template, str]:
        target = state.fields["namespace"] or namespace
        check_namespace(request, target)
        template = engine.templates.create(target, spec)
        return template, f"Created job template {template.name} (version 1)."

    return _advance(request, state, form, None, save)


@router.get(TEMPLATE + "/edit")
def edit_template(request: Request, namespace: str, name: str) -> Response:
    session.enter_namespace(request, namespace)
    session.require(request, Role.ADMIN, "edit job templates")
    template = get_engine(request).templates.get(namespace, name)
    return _page(request, wizard_form.from_spec(template.spec, namespace), 1, template)


@router.post(TEMPLATE + "/edit")
async def save_template(request: Request, namespace: str, name: str) -> Response:
    form = await request.form()
    return await run_in_threadpool(_edit, request, namespace, name, form)


def _edit(request: Request, namespace: str, name: str, form: FormData) -> Response:
    session.enter_namespace(request, namespace)
    session.require(request, Role.ADMIN, "edit job templates")
    engine = get_engine(request)
    template = engine.templates.get(namespace, name)
    state = wizard_form.from_form(form, form.getlist)
    state.fields.update(name=name, namespace=namespace)

    def save(spec: TemplateSpec) -> tuple[Template, str]:
        saved = engine.templates.replace(namespace, name, spec)
        return saved, f"Saved job template {name} as version {saved.version}."

    return _advance(request, state, form, template, save)


def _advance(
    request: Request, state: FormState, form: FormData, template: Template | None, save: Save
) -> Response:
    """Go to the step asked for, unless an earlier step has an error; or save."""
    current = _step(form.get("step"), 1)
    go = str(form.get("go", ""))
    spec = wizard_form.validate(state)
    if go == "save":
        if spec is None:
            return _page(request, state, _first_error_step(state), template, 422)
        return _save(request, state, spec, template, save)
    target = _step(go, current)
    blocking = [s for s in range(1, target) if s >= current and state.step_errors(s)]
    if blocking:
        state.errors = {k: v for k, v in state.errors.items() if wizard_form.step_of(k) < target}
        return _page(request, state, blocking[0], template, 422)
    state.errors = {}
    return _page(request, state, target, template)


def _save(
    request: Request, state: FormState, spec: TemplateSpec, template: Template | None, save: Save
) -> Response:
    try:
        saved, text = save(spec)
    except JobyardError as err:
        state.errors = {_key_of(err, state): _sentence(str(err))}
        return _page(request, state, _first_error_step(state), template, 409)
    url = f"/namespaces/{saved.namespace}/templates/{saved.name}"
    return session.redirect(url, text)


def _sentence(message: str) -> str:
    """The message with a capital first letter, unless it starts with a name
    (a file name such as "app.zip" keeps its case)."""
    first = message.split(" ", 1)[0]
    return message[:1].upper() + message[1:] if first.isalpha() else message


def _key_of(err: JobyardError, state: FormState) -> str:
    if isinstance(err, AlreadyExists):
        return "name"
    if isinstance(err, NotFound):
        return "namespace"
    if isinstance(err, InvalidSpec) and err.field == "deployment":
        # The engine found the package and its stack do not go together.
        return "stack" if state.fields["deployment"] == "package" else "deployment"
    if isinstance(err, InvalidSpec) and err.field:
        return wizard_form.form_key(tuple(err.field.split(".")), state)
    return "form"


def _first_error_step(state: FormState) -> int:
    return min((wizard_form.step_of(key) for key in state.errors), default=1)


def _step(value: object, fallback: int) -> int:
    text = str(value or "")
    return min(max(int(text), 1), len(STEPS)) if text.isdigit() else fallback


def _page(
    request: Request, state: FormState, step: int, template: Template | None, status: int = 200
) -> Response:
    engine = get_engine(request)
    context: dict[str, Any] = {
        "form": state,
        "step": step,
        "steps": STEPS,
        "error_steps": {wizard_form.step_of(key) for key in state.errors},
        "mode": "edit" if template else "create",
        "namespace": request.path_params["namespace"],
        "action": request.url.path,
        "namespaces_for_form": session.visible_namespaces(request),
        "preview": preview(engine, state.fields["schedule"], state.fields["timezone"]),
        "time_zones": time_zones(),
        "cpu_choices": _with(CPU_CHOICES, state.fields["cpu"]),
        "memory_choices": _with(MEMORY_CHOICES, state.fields["memory_mb"]),
        "instance_types": views.INSTANCE_TYPES,
        "policies": views.CONCURRENCY_POLICIES,
        "section": "templates",
        **_deployment_context(request, engine, state),
    }
    if template is not None:
        context.update(template_context(engine, template, "edit"))
    page = "wizard_edit.html" if template else "wizard_new.html"
    return render(request, page, context, status_code=status)


def _deployment_context(request: Request, engine: Engine, state: FormState) -> dict[str, Any]:
    """What the package and image parts of step 1 offer."""
    namespace = state.fields["namespace"] or request.path_params["namespace"]
    try:
        check_namespace(request, namespace)
        packages = package_views.uploaded(engine, namespace)
    except JobyardError:  # a namespace that is not there: the form says so elsewhere
        packages = []
    containers = getattr(engine, "containers", None)
    problem = "" if containers is None or containers.works else str(containers.detail)
    return {
        "packages_enabled": packages is not None,
        "package_choices": (
            package_views.choices(packages, state.fields["package"].strip()) if packages else []
        ),
        "stacks": views.STACKS,
        "pull_policies": views.PULL_POLICIES,
        "container_problem": problem,
    }


def _with(choices: list[str], value: str) -> list[str]:
    """The usual choices, plus the current value if it is not one of them."""
    return choices if not value or value in choices else [*choices, value]
