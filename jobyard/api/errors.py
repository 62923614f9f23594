"""One place that turns errors into HTTP answers with a clear message."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from jobyard.errors import (
    AlreadyExists,
    BadRequest,
    ConcurrencyForbidden,
    Conflict,
    Forbidden,
    InvalidSpec,
    JobyardError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    StoreError,
    Unauthorized,
)

logger = logging.getLogger(__name__)

_STATUS = [
    (NotFound, 404, "not_found"),
    (AlreadyExists, 409, "already_exists"),
    (ConcurrencyForbidden, 409, "concurrency_forbidden"),
    (Conflict, 409, "conflict"),
    (InvalidSpec, 422, "invalid"),
    (StoreError, 503, "store_unavailable"),
    (BadRequest, 400, "bad_request"),
    (Unauthorized, 401, "unauthorized"),
    (Forbidden, 403, "forbidden"),
    (MethodNotAllowed, 405, "method_not_allowed"),
    (PayloadTooLarge, 413, "payload_too_large"),
]


# pydantic puts the tag of a tagged union into error locations; users never wrote it.
_UNION_TAGS = {"trigger": {"cron", "http"}}


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(part) for part in loc if part not in ("body", "query", "path")]
    parts = [
        part
        for i, part in enumerate(parts)
        if not (i > 0 and part in _UNION_TAGS.get(parts[i - 1], ()))
    ]
    path = ""
    for part in parts:
        path += f"[{part}]" if part.isdigit() else (f".{part}" if path else part)
    return path or "body"


def describe_validation(errors: list[dict[str, Any]]) -> list[dict[str, str]]:
    described = []
    for error in errors:
        message = str(error.get("msg", "invalid"))
        message = message.removeprefix("Value error, ")
        field = _location(tuple(error.get("loc", ())))
        if error.get("type") == "json_invalid":
            problem = error.get("ctx", {}).get("error", "")
            field, message = "body", f"the body is not valid JSON ({problem})"
        described.append({"field": field, "message": message})
    return described


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    details = describe_validation(list(exc.errors()))
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
    if request.url.path.startswith("/pop/"):
        return sae_answer(400, summary)
    body = {"error": "invalid", "message": summary, "details": details}
    return JSONResponse(body, status_code=422)


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, JobyardError)
    status, code = next(
        ((status, code) for kind, status, code in _STATUS if isinstance(exc, kind)),
        (400, "bad_request"),
    )
    if status >= 500:
        logger.error("%s %s failed: %s", request.method, request.url.path, exc)
    if request.url.path.startswith("/pop/"):
        return sae_answer(400 if status == 422 else status, str(exc))
    body: dict[str, Any] = {"error": code, "message": str(exc)}
    if isinstance(exc, ConcurrencyForbidden):
        body["active_task_id"] = exc.active_task_id
    if isinstance(exc, InvalidSpec) and exc.field:
        body["details"] = [{"field": exc.field, "message": str(exc)}]
    return JSONResponse(body, status_code=status, headers=_headers(exc))


def _headers(exc: JobyardError) -> dict[str, str]:
    if isinstance(exc, MethodNotAllowed):
        return {"Allow": ", ".join(exc.allowed)}
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": "Bearer"}
    return {}


def sae_answer(status: int, message: str, data: Any = None) -> JSONResponse:
    """An answer in the shape SAE's API uses, for its compatible endpoints."""
    request_id = str(uuid.uuid4()).upper()
    body = {
        "RequestId": request_id,
        "TraceId": request_id.replace("-", "").lower(),
        "Code": str(status) if status < 400 else _SAE_CODES.get(status, "Error"),
        "Success": status < 400,
        "Message": message,
        "Data": data,
    }
    return JSONResponse(body, status_code=status)


_SAE_CODES = {
    400: "InvalidParameter",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    413: "PayloadTooLarge",
    503: "ServiceUnavailable",
}


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(JobyardError, _domain)
