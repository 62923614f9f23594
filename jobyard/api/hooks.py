"""/hooks/{token}: HTTP and HTTPS triggers.

Authorised by the unguessable token in the URL and the template's filters
(methods, protocols, referring domain or client IP), not by API tokens.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from jobyard import triggering
from jobyard.api.deps import get_engine
from jobyard.api.schemas import TaskOut
from jobyard.domain import Reason, Severity, Template, TriggerKind
from jobyard.engine.core import Engine
from jobyard.engine.hooks import TemplateChanged
from jobyard.engine.launching import TaskRequest
from jobyard.errors import (
    ConcurrencyForbidden,
    Forbidden,
    JobyardError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
)
from jobyard.spec import HttpTrigger

logger = logging.getLogger(__name__)
router = APIRouter(tags=["hooks"])
# Every method reaches the handler, so that each refusal says why and leaves an event.
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE"]


# Refusals that depend on the template: a kept copy's are judged again on a fresh read.
_RECHECKED = (Forbidden, MethodNotAllowed, NotFound, TemplateChanged)


class _Recheck(Exception):
    """The kept copy of the template refused the request, or was out of date."""


@router.api_route("/hooks/{token}", methods=METHODS, status_code=202, response_model=TaskOut)
async def hook(token: str, request: Request) -> Response:
    """Start a task of the template this URL belongs to (202; 200 for a repeated EventId)."""
    engine = get_engine(request)
    try:
        return await _hook(engine, token, request)
    except ClientDisconnect:
        # Gone before its body arrived: no task, and no one to answer (this
        # status is never sent), so no traceback in the log either.
        logger.info("the caller of a trigger left before its request's body arrived: no task")
        return Response(status_code=400)


async def _hook(engine: Engine, token: str, request: Request) -> JSONResponse:
    body = _Body(request, engine.settings.max_body_bytes)
    template = engine.hooked.kept(token)
    if template is None:
        template = await run_in_threadpool(engine.hooked.read, token)
    try:
        return await _trigger(engine, request, template, body, final=False)
    except _Recheck:
        template = await run_in_threadpool(engine.hooked.read, token)
    return await _trigger(engine, request, template, body, final=True)


async def _trigger(
    engine: Engine, request: Request, template: Template, body: _Body, final: bool
) -> JSONResponse:
    """Launch a task, or refuse; a refusal is noted as an event once ``final``."""
    peer = request.client.host if request.client else ""
    proxies = engine.settings.trusted_proxies
    client = triggering.client_address(peer, request.headers, proxies)
    try:
        trigger = template.spec.trigger
        if not isinstance(trigger, HttpTrigger):
            raise NotFound("no trigger at this URL")
        scheme = triggering.request_scheme(
            request.url.scheme == "https", peer, request.headers, proxies
        )
        task_request = await _admit(request, template, trigger, client, scheme, body)
        # Awaited on the event loop: no thread waits through the launch's transaction.
        launched = await asyncio.wrap_future(engine.tasks.submit_as_seen(template, task_request))
    except _RECHECKED as err:
        if not final:
            raise _Recheck from err
        if isinstance(err, NotFound):
            raise  # no template to note it on
        await _note(engine, template, err, client)
        raise
    except JobyardError as err:
        await _note(engine, template, err, client)
        raise
    body_out = TaskOut.of(launched.task).model_dump(mode="json")
    return JSONResponse(body_out, status_code=202 if launched.created else 200)


async def _admit(
    request: Request,
    template: Template,
    trigger: HttpTrigger,
    client: str,
    scheme: str,
    body: _Body,
) -> TaskRequest:
    if template.suspended:
        raise Forbidden(f"template {template.name!r} is suspended")
    refused = triggering.rejection(trigger, request.method, scheme, client, request.headers)
    if refused is not None:
        status, cause = refused
        if status == 405:
            raise MethodNotAllowed(cause, list(trigger.methods))
        raise Forbidden(cause)
    content = await body.read()
    parsed = triggering.parse_body(content, request.headers.get("content-type", ""))
    event_id = parsed.event_id or triggering.event_id_of(
        request.query_params.get("EventId") or request.headers.get("idempotency-key")
    )
    saved = triggering.saved_request(
        request.method, request.url.path, request.url.query, request.headers, content, client
    )
    return TaskRequest(
        trigger=TriggerKind.HTTP,
        overrides=parsed.overrides,
        event_id=event_id,
        payload=saved,
        command=parsed.command,
    )


class _Body:
    """The request's body, read once (a request can be judged twice)."""

    def __init__(self, request: Request, limit: int) -> None:
        self._request = request
        self._limit = limit
        self._content: bytes | None = None

    async def read(self) -> bytes:
        if self._content is None:
            self._content = await _read_body(self._request, self._limit)
        return self._content


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
    return bytes(body)


async def _note(engine: Engine, template: Template, err: JobyardError, client: str) -> None:
    if isinstance(err, ConcurrencyForbidden):
        reason, text = Reason.CONCURRENCY_FORBIDDEN, f"skipped a new task from {client}: {err}"
    else:
        reason, text = Reason.TRIGGER_REJECTED, f"rejected a request from {client}: {err}"
    await run_in_threadpool(engine.templates.note_trigger, template, reason, text, Severity.WARNING)
