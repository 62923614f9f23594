"""Code packages of a namespace: the list, upload and delete.

Roles as in the API: a viewer sees the list; an operator also uploads and
deletes (deploying code needs no template edit).
"""

from __future__ import annotations

import contextlib

from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from jobyard.api.deps import EngineDep, get_engine
from jobyard.api.uploads import receive_file
from jobyard.engine.packages import PackageService
from jobyard.engine.tokens import Role
from jobyard.errors import JobyardError, NotFound
from jobyard.web import package_views, session
from jobyard.web.package_views import short_digest, size_words
from jobyard.web.rendering import render
from jobyard.web.routing import console_router

router = console_router()
PACKAGES = "/namespaces/{namespace}/packages"
FILE_FIELD = "file"
# A message rides to the next page in a cookie, which must stay small.
MAX_MESSAGE = 800


def _clipped(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


@router.get(PACKAGES)
def packages_page(request: Request, engine: EngineDep, namespace: str) -> Response:
    session.enter_namespace(request, namespace)
    packages = package_views.uploaded(engine, namespace)
    context = {
        "namespace": namespace,
        "packages": packages,
        "used_by": {
            info.package.digest: package_views.used_by_words(info.used_by)
            for info in packages or []
        },
        "section": "packages",
    }
    return render(request, "packages.html", context)


def _service(request: Request) -> PackageService:
    found = package_views.service(get_engine(request))
    if found is None:
        raise NotFound("this server keeps no code packages")
    return found


@router.post(PACKAGES)
async def upload_package(request: Request, namespace: str) -> Response:
    """Stream the file into the package service, then check and store it."""
    back = PACKAGES.format(namespace=namespace)
    try:
        await run_in_threadpool(_may_upload, request, namespace)
        packages = _service(request)
        upload = await run_in_threadpool(packages.new_upload)
        filename = await receive_file(request, FILE_FIELD, upload)
        info, created = await run_in_threadpool(packages.finish_upload, namespace, upload, filename)
    except JobyardError as err:
        await _discard_body(request)
        return session.redirect(back, _clipped(f"Not uploaded: {err}"), "error")
    package = info.package
    done = "Uploaded" if created else "Already uploaded:"
    text = (
        f"{done} {package.filename} as {short_digest(package.digest)} "
        f"({package.kind}, {size_words(package.size)})."
    )
    return session.redirect(back, text)


def _may_upload(request: Request, namespace: str) -> None:
    session.enter_namespace(request, namespace)
    session.require(request, Role.OPERATOR, "upload packages")
    _service(request).require_namespace(namespace)


async def _discard_body(request: Request) -> None:
    """Read what is left of a refused upload, so the browser gets the answer rather
    than a reset connection (nothing happens when the body was read already)."""
    with contextlib.suppress(Exception):
        async for _ in request.stream():
            pass


@router.post(PACKAGES + "/{digest}/delete")
def delete_package(request: Request, namespace: str, digest: str) -> Response:
    session.enter_namespace(request, namespace)
    back = PACKAGES.format(namespace=namespace)
    try:
        session.require(request, Role.OPERATOR, "delete packages")
        _service(request).delete(namespace, digest)
    except JobyardError as err:
        return session.redirect(back, _clipped(f"Not deleted: {err}"), "error")
    return session.redirect(back, f"Deleted package {short_digest(digest)}.")
