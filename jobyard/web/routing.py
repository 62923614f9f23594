"""Console routes answer in HTML: a sign-in redirect, or an error page that says why.

The API's handler turns errors into JSON; console routes catch them first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute

from jobyard.errors import (
    Conflict,
    Forbidden,
    InvalidSpec,
    JobyardError,
    NotFound,
    StoreError,
    Unauthorized,
)
from jobyard.web import session
from jobyard.web.rendering import render

logger = logging.getLogger(__name__)

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
_STATUS: list[tuple[type[JobyardError], int, str]] = [
    (NotFound, 404, "Not found"),
    (Forbidden, 403, "Not allowed"),
    (Conflict, 409, "Conflict"),
    (InvalidSpec, 422, "Invalid input"),
    (StoreError, 503, "The database is not available"),
]


class ConsoleRoute(APIRoute):
    def get_route_handler(self) -> Handler:
        handle = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            if request.method == "POST" and not session.same_origin(request):
                return error_page(request, Forbidden("a form from another site was refused"))
            try:
                return await handle(request)
            except Unauthorized:
                return to_sign_in(request)
            except RequestValidationError:
                return error_page(request, NotFound(f"there is no page at {request.url.path}"))
            except JobyardError as err:
                return error_page(request, err)

        return guarded


def console_router() -> APIRouter:
    """A router whose pages stay out of the OpenAPI schema."""
    return APIRouter(route_class=ConsoleRoute, include_in_schema=False)


def to_sign_in(request: Request) -> Response:
    url = session.sign_in_url(request)
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def error_page(request: Request, err: JobyardError) -> Response:
    status, title = next(
        ((status, title) for kind, status, title in _STATUS if isinstance(err, kind)),
        (400, "Bad request"),
    )
    if status >= 500:
        logger.error("console %s %s failed: %s", request.method, request.url.path, err)
    message = str(err)
    context = {"title": title, "message": message[:1].upper() + message[1:], "status": status}
    return render(request, "error.html", context, status_code=status)
