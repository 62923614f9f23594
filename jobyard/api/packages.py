"""/api/v1/namespaces/{namespace}/packages: upload, list, show and delete code packages.

Roles: viewers list and read (including the preparation log); operators upload
and delete, as they deploy code without editing templates.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from jobyard.api.auth import check_namespace, principal_of
from jobyard.api.deps import EngineDep
from jobyard.api.uploads import receive_file
from jobyard.engine.packages import PackageInfo
from jobyard.engine.tokens import Role
from jobyard.errors import Forbidden

router = APIRouter(prefix="/api/v1", tags=["packages"])
PACKAGES = "/namespaces/{namespace}/packages"
PACKAGE = PACKAGES + "/{digest}"
FIELD = "file"
MAX_LOG_BYTES = 4 * 1024 * 1024


def authorize_packages(request: Request) -> None:
    """Router dependency: viewer to read, operator to upload or delete; namespace scope."""
    principal = principal_of(request)
    reading = request.method in ("GET", "HEAD", "OPTIONS")
    needed = Role.VIEWER if reading else Role.OPERATOR
    if principal.role < needed:
        raise Forbidden(
            f"token {principal.name!r} has role {principal.role.name.lower()}; "
            f"this needs {needed.name.lower()}"
        )
    request.state.principal = principal
    check_namespace(request, request.path_params["namespace"])


class PackageUse(BaseModel):
    template: str
    version: int


class PackageOut(BaseModel):
    digest: str
    filename: str
    kind: str
    size: int
    created_at: datetime
    used_by: list[PackageUse]

    @classmethod
    def of(cls, info: PackageInfo) -> PackageOut:
        package = info.package
        return cls(
            digest=package.digest,
            filename=package.filename,
            kind=package.kind,
            size=package.size,
            created_at=package.created_at,
            used_by=[PackageUse(template=name, version=v) for name, v in info.used_by],
        )


@router.post(
    PACKAGES,
    status_code=status.HTTP_201_CREATED,
    response_model=PackageOut,
    responses={200: {"model": PackageOut, "description": "the namespace already had it"}},
)
async def upload_package(
    namespace: str, request: Request, response: Response, engine: EngineDep
) -> PackageOut:
    """Upload a package as multipart/form-data, field ``file``: a .zip, .tar.gz/.tgz or
    .jar archive, or one executable (ELF or #! script). 201 when new, 200 when the
    namespace already has these bytes; either way the answer names its digest."""
    await run_in_threadpool(engine.packages.require_namespace, namespace)
    upload = await run_in_threadpool(engine.packages.new_upload)
    try:
        filename = await receive_file(request, FIELD, upload)
        info, created = await run_in_threadpool(
            engine.packages.finish_upload, namespace, upload, filename
        )
    finally:
        upload.discard()  # whatever went wrong (a refusal, a lost client): no leftovers
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    response.headers["Location"] = f"/api/v1/namespaces/{namespace}/packages/{info.package.digest}"
    return PackageOut.of(info)


@router.get(PACKAGES, response_model=list[PackageOut])
def list_packages(namespace: str, engine: EngineDep) -> list[PackageOut]:
    """Newest first, each with the template versions that deploy it."""
    return [PackageOut.of(info) for info in engine.packages.list(namespace)]


@router.get(PACKAGE, response_model=PackageOut)
def get_package(namespace: str, digest: str, engine: EngineDep) -> PackageOut:
    return PackageOut.of(engine.packages.get(namespace, digest))


@router.delete(PACKAGE, status_code=status.HTTP_204_NO_CONTENT)
def delete_package(namespace: str, digest: str, engine: EngineDep) -> Response:
    """409 while any template version of the namespace deploys it."""
    engine.packages.delete(namespace, digest)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(PACKAGE + "/log", response_class=PlainTextResponse)
def package_log(namespace: str, digest: str, engine: EngineDep) -> PlainTextResponse:
    """The preparation log (unpacking, venv and pip, npm): plain text, the newest part."""
    path = engine.packages.log_path(namespace, digest)
    with path.open("rb") as log:
        size = path.stat().st_size
        log.seek(max(0, size - MAX_LOG_BYTES))
        text = log.read().decode(errors="replace")
    if size > MAX_LOG_BYTES:
        text = f"[the first {size - MAX_LOG_BYTES} bytes are left out]\n" + text
    return PlainTextResponse(text)
