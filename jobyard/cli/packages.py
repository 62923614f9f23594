"""``jobyard package push|list|delete``: code packages of a namespace."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from jobyard.cli.client import Api, segment
from jobyard.cli.errors import UsageProblem
from jobyard.cli.output import local_time, note, show, table
from jobyard.cli.session import Output, Session

FIELD = "file"


def packages_path(namespace: str) -> str:
    return f"/namespaces/{segment(namespace)}/packages"


def upload_package(api: Api, namespace: str, path: Path) -> Any:
    """Upload the file at ``path`` (streamed); the server's answer, with its digest."""
    if not path.is_file():
        problem = "does not exist" if not path.exists() else "is not a file"
        raise UsageProblem(f"package {path} {problem}")
    try:
        with path.open("rb") as file:
            return api.upload(packages_path(namespace), FIELD, path.name, file)
    except PermissionError:
        raise UsageProblem(f"cannot read package {path}: permission denied") from None


def push(
    session: Session,
    file: Annotated[
        Path,
        typer.Argument(
            help="a .zip, .tar.gz/.tgz or .jar archive, or one executable (ELF or #! script)",
            show_default=False,
        ),
    ],
) -> None:
    """Upload a code package and print its digest (for deployment.package).

    Uploading the same bytes again gives the same digest and stores nothing new.
    """
    uploaded = upload_package(session.api, session.namespace, file)
    if session.output == Output.TABLE:
        note(
            f"package {uploaded['filename']} ({uploaded['kind']}, {_size(uploaded['size'])}) "
            f"in namespace {session.namespace}:"
        )
    show(session, uploaded, lambda p: str(p["digest"]))


def list_packages(session: Session) -> None:
    """List the namespace's packages, newest first, with the templates that use each."""
    found = session.api.get(packages_path(session.namespace))
    if not found and session.output == Output.TABLE:
        note(f"no packages in namespace {session.namespace}")
        return
    show(session, found, _packages_table)


def _packages_table(found: list[Any]) -> str:
    rows = [
        (
            p["digest"],
            p["filename"],
            p["kind"],
            _size(p["size"]),
            local_time(p.get("created_at")),
            _users(p.get("used_by") or []),
        )
        for p in found
    ]
    return table(("DIGEST", "FILE", "KIND", "SIZE", "UPLOADED", "USED BY"), rows)


def _users(used_by: list[Any]) -> str:
    versions: dict[str, list[str]] = {}
    for use in used_by:
        versions.setdefault(use["template"], []).append(str(use["version"]))
    return ", ".join(f"{name} (v{','.join(vs)})" for name, vs in versions.items())


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def delete(
    session: Session,
    digest: Annotated[str, typer.Argument(help="sha256:<hex> of the package", show_default=False)],
) -> None:
    """Delete a package (refused while a template version of the namespace deploys it)."""
    session.api.delete(f"{packages_path(session.namespace)}/{segment(digest)}")
    show(session, {"digest": digest, "deleted": True}, lambda r: f"package {r['digest']} deleted")
