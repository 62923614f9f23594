"""/api/v1/tasks, instances, logs and events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from jobyard.api.auth import check_namespace, scope_of
from jobyard.api.deps import EngineDep, Limit, Offset
from jobyard.api.schemas import EventOut, InstanceOut, TaskOut
from jobyard.domain import Instance, Severity, SourceType, Task
from jobyard.engine.core import Engine
from jobyard.store.events import EventQuery

router = APIRouter(prefix="/api/v1", tags=["tasks"])

FOLLOW_POLL_SECONDS = 0.2
CHUNK = 64 * 1024


def _visible_task(request: Request, engine: Engine, task_id: int) -> Task:
    """The task, or NotFound when it is outside the caller's namespace."""
    task = engine.tasks.get(task_id)
    check_namespace(request, task.namespace)
    return task


def _visible_instance(request: Request, engine: Engine, instance_id: int) -> Instance:
    instance = engine.tasks.instance(instance_id)
    _visible_task(request, engine, instance.task_id)
    return instance


@router.get("/tasks/{task_id}", response_model=TaskOut)
def get_task(task_id: int, request: Request, engine: EngineDep) -> TaskOut:
    return TaskOut.of(_visible_task(request, engine, task_id))


@router.post("/tasks/{task_id}/stop", response_model=TaskOut)
def stop_task(task_id: int, request: Request, engine: EngineDep) -> TaskOut:
    _visible_task(request, engine, task_id)
    return TaskOut.of(engine.tasks.stop_task(task_id))


@router.delete("/tasks/{task_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_task(task_id: int, request: Request, engine: EngineDep) -> Response:
    """Delete the task's record and logs (a running task is killed first)."""
    _visible_task(request, engine, task_id)
    engine.tasks.delete_task(task_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/tasks/{task_id}/instances", response_model=list[InstanceOut])
def list_instances(task_id: int, request: Request, engine: EngineDep) -> list[InstanceOut]:
    """Every attempt of every instance, by index then attempt."""
    _visible_task(request, engine, task_id)
    return [InstanceOut.of(i) for i in engine.tasks.instances(task_id)]


@router.get("/instances/{instance_id}", response_model=InstanceOut)
def get_instance(instance_id: int, request: Request, engine: EngineDep) -> InstanceOut:
    return InstanceOut.of(_visible_instance(request, engine, instance_id))


@router.get(
    "/instances/{instance_id}/logs",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}}},
)
async def instance_logs(
    instance_id: int,
    request: Request,
    engine: EngineDep,
    follow: Annotated[bool, Query(description="stream until the instance ends")] = False,
) -> Response:
    """The instance's stdout and stderr, as written."""
    instance = await run_in_threadpool(_visible_instance, request, engine, instance_id)
    path = engine.tasks.log_path(instance)
    if not follow or not instance.is_live:
        text = await run_in_threadpool(_read_all, path)
        return PlainTextResponse(text)
    return StreamingResponse(_follow(engine, instance_id, path), media_type="text/plain")


def _read_all(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


async def _follow(engine: Engine, instance_id: int, path: Path) -> AsyncIterator[bytes]:
    offset = 0
    while True:
        chunk = await run_in_threadpool(_read_from, path, offset)
        offset += len(chunk)
        if chunk:
            yield chunk
            continue
        instance = await run_in_threadpool(engine.tasks.instance, instance_id)
        if not instance.is_live:
            rest = await run_in_threadpool(_read_from, path, offset, None)
            if rest:
                yield rest
            return
        await asyncio.sleep(FOLLOW_POLL_SECONDS)


def _read_from(path: Path, offset: int, size: int | None = CHUNK) -> bytes:
    try:
        with path.open("rb") as log:
            log.seek(offset)
            return log.read() if size is None else log.read(size)
    except FileNotFoundError:
        return b""


@router.get("/events", response_model=list[EventOut], tags=["events"])
def search_events(
    request: Request,
    engine: EngineDep,
    namespace: str | None = None,
    template: str | None = None,
    task_id: int | None = None,
    source_type: SourceType | None = None,
    source_name: Annotated[str | None, Query(description="part of the source name")] = None,
    reason: str | None = None,
    severity: Severity | None = None,
    q: Annotated[str | None, Query(description="text in the message, reason or source")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[EventOut]:
    """Newest first."""
    scope = scope_of(request)
    if scope is not None:
        if namespace not in (None, scope):
            return []
        namespace = scope
    query = EventQuery(
        namespace=namespace,
        template_name=template,
        task_id=task_id,
        source_type=source_type.value if source_type else None,
        source_name=source_name,
        reason=reason,
        severity=severity.value if severity else None,
        text=q,
        limit=limit,
        offset=offset,
    )
    return [EventOut.of(e) for e in engine.tasks.events(query)]
