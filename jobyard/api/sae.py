"""SAE-compatible job endpoints: ExecJob, DescribeJobStatus, SuspendJob.

A script written for SAE's API works against jobyard by changing its host and
token. AppId is the template's id; JobId is the task's id. Answers use SAE's
shape: RequestId, Code, Success, Message, Data.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from jobyard import triggering
from jobyard.api.auth import check_namespace
from jobyard.api.deps import get_engine
from jobyard.api.errors import sae_answer
from jobyard.domain import Task, TaskStatus, TriggerKind
from jobyard.engine.core import Engine
from jobyard.engine.launching import TaskRequest
from jobyard.errors import BadRequest, NotFound

router = APIRouter(prefix="/pop/v1/sam/job", tags=["sae"])
MAX_ID = 2**63 - 1

STATE_OF = {
    TaskStatus.PENDING: "Pending",
    TaskStatus.RUNNING: "Active",
    TaskStatus.SUCCEEDED: "Succeeded",
    TaskStatus.FAILED: "Failed",
    TaskStatus.STOPPED: "Stopped",
}


def _answer(data: Any) -> JSONResponse:
    """Success in SAE's shape (errors take it in api.errors)."""
    return sae_answer(200, "success", data)


async def _params(request: Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query_params)
    if request.method in ("POST", "PUT"):
        content_type = request.headers.get("content-type", "")
        if "json" in content_type:
            try:
                body = json.loads(await request.body() or b"{}")
            except ValueError:
                raise BadRequest("the body is not valid JSON") from None
            if not isinstance(body, dict):
                raise BadRequest("the JSON body must be an object")
            params.update(body)
        elif "form" in content_type:
            params.update(dict(await request.form()))
    return params


async def _template_of(engine: Engine, request: Request, params: dict[str, Any]) -> str:
    app_id = params.get("AppId")
    if not app_id:
        raise BadRequest("AppId is required (the template's id)")
    template = await run_in_threadpool(engine.templates.by_id, str(app_id))
    check_namespace(request, template.namespace)
    return template.id


@router.api_route("/execJob", methods=["GET", "POST"])
async def exec_job(request: Request) -> JSONResponse:
    """Start a task: AppId, Envs (JSON text), Replicas, EventId, Command, CommandArgs."""
    engine = get_engine(request)
    params = await _params(request)
    template_id = await _template_of(engine, request, params)
    task_request = TaskRequest(
        trigger=TriggerKind.HTTP,
        overrides=triggering.parse_overrides(params.get("Envs"), params.get("Replicas")),
        event_id=_event_id(params),
        command=triggering.parse_command(params.get("Command"), params.get("CommandArgs")),
    )
    launched = await run_in_threadpool(engine.tasks.run_by_id, template_id, task_request)
    data = {"Code": "200", "Data": str(launched.task.id), "Msg": "success", "Success": True}
    return _answer(data)


def _event_id(params: dict[str, Any]) -> str | None:
    return triggering.event_id_of(params.get("EventId"))


@router.get("/describeJobStatus")
async def describe_job_status(request: Request) -> JSONResponse:
    """A task's state and instance counts: AppId, JobId."""
    engine = get_engine(request)
    params = await _params(request)
    template_id = await _template_of(engine, request, params)
    job_id = str(params.get("JobId", ""))
    if not job_id.isdigit() or int(job_id) > MAX_ID:
        raise BadRequest("JobId is required (a task id)")
    task = await run_in_threadpool(engine.tasks.get, int(job_id))
    if task.template_id != template_id:
        raise NotFound(f"job {job_id} does not belong to application {template_id}")
    instances = await run_in_threadpool(engine.tasks.instances, task.id)
    return _answer(_status_of(task, [i.status.value for i in instances]))


def _status_of(task: Task, statuses: list[str]) -> dict[str, Any]:
    def millis(moment: Any) -> int | None:
        return None if moment is None else int(moment.timestamp() * 1000)

    return {
        "JobId": str(task.id),
        "AppId": task.template_id,
        "State": STATE_OF[task.status],
        "Active": sum(s in ("pending", "running") for s in statuses),
        "Succeeded": statuses.count("succeeded"),
        "Failed": sum(s in ("failed", "lost") for s in statuses),
        "StartTime": millis(task.started_at or task.created_at),
        "CompletionTime": millis(task.finished_at),
        "Message": task.message or "",
    }


@router.api_route("/suspendJob", methods=["GET", "POST", "PUT"])
async def suspend_job(request: Request) -> JSONResponse:
    """Pause or resume a template's schedule: AppId, Suspend=true|false."""
    engine = get_engine(request)
    params = await _params(request)
    template_id = await _template_of(engine, request, params)
    suspend = str(params.get("Suspend", "")).lower()
    if suspend not in ("true", "false"):
        raise BadRequest("Suspend must be true or false")
    template = await run_in_threadpool(engine.templates.by_id, template_id)
    await run_in_threadpool(
        engine.templates.set_suspended, template.namespace, template.name, suspend == "true"
    )
    return _answer({"AppId": template_id, "Suspend": suspend == "true"})
