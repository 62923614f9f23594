"""/api/v1/namespaces and the templates in them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Request, Response, status

from jobyard import cron, cron_words
from jobyard.api.auth import scope_of
from jobyard.api.deps import EngineDep, Limit, Offset
from jobyard.api.schemas import (
    NamespaceIn,
    NamespaceOut,
    RollbackIn,
    ScheduleOut,
    TaskOut,
    TemplateOut,
    VersionOut,
)
from jobyard.domain import TaskStatus, Template
from jobyard.engine.core import Engine
from jobyard.engine.templates import upcoming_fires, upcoming_fires_of_page
from jobyard.errors import Forbidden, InvalidSpec
from jobyard.spec import RunOverrides, TemplateSpec

router = APIRouter(prefix="/api/v1", tags=["templates"])
TEMPLATE = "/namespaces/{namespace}/templates/{name}"


def _out(engine: Engine, template: Template) -> TemplateOut:
    upcoming = upcoming_fires(template, engine.clock.now())
    warnings = engine.templates.deployment_warnings(template.spec)
    return TemplateOut.of(template, upcoming, engine.settings.base_url, warnings)


def _page_out(engine: Engine, found: list[Template]) -> list[TemplateOut]:
    upcoming = upcoming_fires_of_page(found, engine.clock.now())
    base_url = engine.settings.base_url
    return [
        TemplateOut.of(t, fires, base_url, engine.templates.deployment_warnings(t.spec))
        for t, fires in zip(found, upcoming, strict=True)
    ]


@router.get("/namespaces", response_model=list[NamespaceOut])
def list_namespaces(request: Request, engine: EngineDep) -> list[NamespaceOut]:
    scope = scope_of(request)
    found = engine.templates.list_namespaces()
    return [NamespaceOut(**vars(n)) for n in found if scope in (None, n.name)]


@router.post("/namespaces", status_code=status.HTTP_201_CREATED, response_model=NamespaceOut)
def create_namespace(body: NamespaceIn, request: Request, engine: EngineDep) -> NamespaceOut:
    if scope_of(request) is not None:
        raise Forbidden("a token limited to one namespace cannot create namespaces")
    engine.templates.create_namespace(body.name, body.description)
    found = [n for n in engine.templates.list_namespaces() if n.name == body.name]
    return NamespaceOut(**vars(found[0]))


@router.delete("/namespaces/{namespace}", status_code=status.HTTP_204_NO_CONTENT)
def delete_namespace(namespace: str, engine: EngineDep) -> Response:
    engine.templates.delete_namespace(namespace)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/cron/preview", response_model=ScheduleOut, tags=["cron"])
def preview_cron(
    engine: EngineDep,
    schedule: Annotated[str, Query(min_length=1, max_length=256, examples=["0 9 * * MON-FRI"])],
    timezone: Annotated[str, Query(max_length=64)] = "UTC",
    count: Annotated[int, Query(ge=1, le=50)] = 5,
) -> ScheduleOut:
    """Check a cron expression: plain words and the next fire times (422 if invalid)."""
    parsed = cron.parse_schedule(schedule, timezone)
    upcoming = cron.next_fire_times(parsed, engine.clock.now(), count)
    return ScheduleOut(
        description=cron_words.describe(schedule, timezone),
        timezone=timezone,
        next_fire_times=upcoming,
    )


@router.get("/templates", response_model=list[TemplateOut])
def list_all_templates(
    request: Request,
    engine: EngineDep,
    limit: Limit = 100,
    offset: Offset = 0,
    q: str | None = None,
) -> list[TemplateOut]:
    """Templates of every namespace (the caller may see)."""
    found = engine.templates.list_templates(scope_of(request), limit, offset, q)
    return _page_out(engine, found)


@router.get("/namespaces/{namespace}/templates", response_model=list[TemplateOut])
def list_templates(
    namespace: str,
    engine: EngineDep,
    limit: Limit = 100,
    offset: Offset = 0,
    q: Annotated[str | None, Query(description="part of the name")] = None,
) -> list[TemplateOut]:
    return _page_out(engine, engine.templates.list_templates(namespace, limit, offset, q))


@router.post(
    "/namespaces/{namespace}/templates",
    status_code=status.HTTP_201_CREATED,
    response_model=TemplateOut,
)
def create_template(namespace: str, spec: TemplateSpec, engine: EngineDep) -> TemplateOut:
    return _out(engine, engine.templates.create(namespace, spec))


@router.get(TEMPLATE, response_model=TemplateOut)
def get_template(namespace: str, name: str, engine: EngineDep) -> TemplateOut:
    return _out(engine, engine.templates.get(namespace, name))


@router.put(TEMPLATE, response_model=TemplateOut)
def replace_template(
    namespace: str, name: str, spec: TemplateSpec, engine: EngineDep
) -> TemplateOut:
    """Store the spec as a new version (the name cannot change)."""
    return _out(engine, engine.templates.replace(namespace, name, spec))


@router.delete(TEMPLATE, status_code=status.HTTP_204_NO_CONTENT)
def delete_template(namespace: str, name: str, engine: EngineDep) -> Response:
    """Delete the template, its versions, tasks, events and logs; kill what runs."""
    engine.templates.delete(namespace, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(TEMPLATE + "/versions", response_model=list[VersionOut])
def list_versions(namespace: str, name: str, engine: EngineDep) -> list[VersionOut]:
    return [VersionOut.of(v) for v in engine.templates.versions(namespace, name)]


@router.post(TEMPLATE + "/rollback", response_model=TemplateOut)
def rollback(namespace: str, name: str, body: RollbackIn, engine: EngineDep) -> TemplateOut:
    """Make a new version whose spec equals version ``body.version``."""
    return _out(engine, engine.templates.rollback(namespace, name, body.version))


@router.post(TEMPLATE + "/trigger/rotate", response_model=TemplateOut)
def rotate_trigger(namespace: str, name: str, engine: EngineDep) -> TemplateOut:
    """Give the HTTP trigger a new URL; the old one stops working at once."""
    return _out(engine, engine.templates.rotate_hook(namespace, name))


@router.post(TEMPLATE + "/suspend", response_model=TemplateOut)
def suspend(namespace: str, name: str, engine: EngineDep) -> TemplateOut:
    """Pause the schedule; running tasks go on, manual runs still work."""
    return _out(engine, engine.templates.set_suspended(namespace, name, True))


@router.post(TEMPLATE + "/resume", response_model=TemplateOut)
def resume(namespace: str, name: str, engine: EngineDep) -> TemplateOut:
    return _out(engine, engine.templates.set_suspended(namespace, name, False))


@router.post(TEMPLATE + "/run", status_code=status.HTTP_201_CREATED, response_model=TaskOut)
def run(
    namespace: str,
    name: str,
    engine: EngineDep,
    overrides: Annotated[RunOverrides | None, Body()] = None,
) -> TaskOut:
    """Start a task now; ``envs`` and ``replicas`` apply to this task only."""
    launched = engine.tasks.run(namespace, name, overrides or RunOverrides())
    return TaskOut.of(launched.task)


@router.post(TEMPLATE + "/stop", response_model=list[TaskOut])
def stop(namespace: str, name: str, engine: EngineDep) -> list[TaskOut]:
    """Stop every active task of the template."""
    return [TaskOut.of(t) for t in engine.tasks.stop_template(namespace, name)]


@router.get(TEMPLATE + "/tasks", response_model=list[TaskOut])
def list_tasks(
    namespace: str,
    name: str,
    engine: EngineDep,
    status_filter: Annotated[
        list[str] | None,
        Query(alias="status", description="pending, running, succeeded, failed, stopped"),
    ] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> list[TaskOut]:
    """Newest first."""
    statuses = _split(status_filter)
    tasks = engine.tasks.list_for_template(namespace, name, statuses, limit, offset)
    return [TaskOut.of(t) for t in tasks]


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    found = [part.strip() for value in values for part in value.split(",") if part.strip()]
    allowed = {s.value for s in TaskStatus}
    wrong = [v for v in found if v not in allowed]
    if wrong:
        raise InvalidSpec(
            f"unknown task status {wrong[0]!r}; one of {', '.join(sorted(allowed))}",
            field="status",
        )
    return found
