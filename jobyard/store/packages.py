"""Queries on uploaded code packages and on the template versions that use them."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from jobyard.domain import Package
from jobyard.store.tables import packages, template_versions, templates

# (template name, version) of each template version that deploys a package.
Users = list[tuple[str, int]]


def _package(row: Row[Any]) -> Package:
    m = row._mapping
    return Package(
        namespace=m["namespace"],
        digest=m["digest"],
        filename=m["filename"],
        kind=m["kind"],
        size=int(m["size"]),
        created_at=m["created_at"],
    )


def _where(namespace: str, digest: str) -> sa.ColumnElement[bool]:
    return sa.and_(packages.c.namespace == namespace, packages.c.digest == digest)


def insert_package(conn: Connection, package: Package) -> bool:
    """Store the package row; False when the namespace already has this digest."""
    try:
        with conn.begin_nested():
            conn.execute(packages.insert().values(**vars(package)))
    except IntegrityError:
        return False
    return True


def get_package(conn: Connection, namespace: str, digest: str) -> Package | None:
    row = conn.execute(sa.select(packages).where(_where(namespace, digest))).first()
    return None if row is None else _package(row)


def lock_package(conn: Connection, namespace: str, digest: str) -> Package | None:
    """The row, locked until the transaction ends (PostgreSQL; SQLite locks the database).

    Template writes and package deletes both lock it first, so that a template
    can never come to reference a package being deleted."""
    query = sa.select(packages).where(_where(namespace, digest)).with_for_update()
    row = conn.execute(query).first()
    return None if row is None else _package(row)


def list_packages(conn: Connection, namespace: str) -> list[Package]:
    query = sa.select(packages).where(packages.c.namespace == namespace)
    return [_package(row) for row in conn.execute(query.order_by(packages.c.created_at.desc()))]


def delete_package(conn: Connection, namespace: str, digest: str) -> None:
    conn.execute(packages.delete().where(_where(namespace, digest)))


def stored_anywhere(conn: Connection, digest: str) -> bool:
    """True while any namespace still has a package with this digest."""
    query = sa.select(packages.c.digest).where(packages.c.digest == digest).limit(1)
    return conn.execute(query).first() is not None


def package_users(conn: Connection, namespace: str, digest: str | None = None) -> dict[str, Users]:
    """digest -> the template versions of the namespace that deploy it, oldest first."""
    # A cheap text match picks candidate versions; their JSON then says for sure.
    needle = digest or "sha256:"
    query = (
        sa.select(templates.c.name, template_versions.c.version, template_versions.c.spec)
        .select_from(templates.join(template_versions))
        .where(
            templates.c.namespace == namespace,
            sa.cast(template_versions.c.spec, sa.Text).contains(needle, autoescape=True),
        )
        .order_by(templates.c.name, template_versions.c.version)
    )
    found: defaultdict[str, Users] = defaultdict(list)
    for name, version, spec in conn.execute(query):
        used = _deployed_package(spec)
        if used is not None and (digest is None or used == digest):
            found[used].append((name, version))
    return dict(found)


def _deployed_package(spec: Any) -> str | None:
    deployment = spec.get("deployment") if isinstance(spec, dict) else None
    if isinstance(deployment, dict) and deployment.get("type") == "package":
        package = deployment.get("package")
        return package if isinstance(package, str) else None
    return None
