"""Queries on namespaces, templates and their versions."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from jobyard.domain import Template, TemplateVersion
from jobyard.errors import AlreadyExists, Conflict, NotFound
from jobyard.spec import TemplateSpec, parse_spec
from jobyard.store.tables import namespaces, template_versions, templates

DEFAULT_NAMESPACE = "default"


def ensure_namespace(conn: Connection, name: str, now: datetime, description: str = "") -> None:
    exists = conn.execute(sa.select(namespaces.c.name).where(namespaces.c.name == name)).first()
    if exists is None:
        conn.execute(namespaces.insert().values(name=name, description=description, created_at=now))


def create_namespace(conn: Connection, name: str, description: str, now: datetime) -> None:
    if conn.execute(sa.select(namespaces.c.name).where(namespaces.c.name == name)).first():
        raise AlreadyExists(f"namespace {name!r} already exists")
    conn.execute(namespaces.insert().values(name=name, description=description, created_at=now))


def list_namespaces(conn: Connection) -> list[dict[str, Any]]:
    count = sa.func.count(templates.c.id)
    query = (
        sa.select(namespaces, count.label("template_count"))
        .select_from(namespaces.outerjoin(templates, templates.c.namespace == namespaces.c.name))
        .group_by(namespaces.c.name, namespaces.c.description, namespaces.c.created_at)
        .order_by(namespaces.c.name)
    )
    return [dict(row._mapping) for row in conn.execute(query)]


def require_namespace(conn: Connection, name: str) -> None:
    if conn.execute(sa.select(namespaces.c.name).where(namespaces.c.name == name)).first() is None:
        raise NotFound(f"namespace {name!r} does not exist")


def delete_namespace(conn: Connection, name: str) -> None:
    require_namespace(conn, name)
    if name == DEFAULT_NAMESPACE:
        raise Conflict("the default namespace cannot be deleted")
    used = conn.execute(sa.select(templates.c.id).where(templates.c.namespace == name)).first()
    if used is not None:
        raise Conflict(f"namespace {name!r} still has templates; delete them first")
    conn.execute(namespaces.delete().where(namespaces.c.name == name))


def _with_current_version() -> sa.Join:
    return templates.join(
        template_versions,
        sa.and_(
            template_versions.c.template_id == templates.c.id,
            template_versions.c.version == templates.c.version,
        ),
    )


def _current_spec_join() -> sa.Select[Any]:
    return sa.select(templates, template_versions.c.spec).select_from(_with_current_version())


def _template(row: Row[Any], spec: TemplateSpec | None = None) -> Template:
    m = row._mapping
    return Template(
        id=m["id"],
        namespace=m["namespace"],
        name=m["name"],
        version=m["version"],
        spec=parse_spec(m["spec"]) if spec is None else spec,
        suspended=bool(m["suspended"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        next_fire_at=m["next_fire_at"],
        hook_token=m["hook_token"],
    )


def get_template(conn: Connection, namespace: str, name: str) -> Template:
    query = _current_spec_join().where(templates.c.namespace == namespace, templates.c.name == name)
    row = conn.execute(query).first()
    if row is None:
        raise NotFound(f"template {name!r} does not exist in namespace {namespace!r}")
    return _template(row)


def get_template_by_id(conn: Connection, template_id: str) -> Template:
    row = conn.execute(_current_spec_join().where(templates.c.id == template_id)).first()
    if row is None:
        raise NotFound(f"template {template_id!r} does not exist")
    return _template(row)


def get_template_by_hook(conn: Connection, hook_token: str) -> Template:
    row = conn.execute(_current_spec_join().where(templates.c.hook_token == hook_token)).first()
    if row is None:
        raise NotFound("no trigger at this URL")
    return _template(row)


def set_hook_token(conn: Connection, template_id: str, hook_token: str | None) -> None:
    conn.execute(
        templates.update().where(templates.c.id == template_id).values(hook_token=hook_token)
    )


def list_templates(
    conn: Connection, namespace: str | None, limit: int, offset: int, search: str | None = None
) -> list[Template]:
    """A page of templates in (namespace, name) order, each with its current spec.

    The page is cut from the (namespace, name, id) index alone, in a subquery: the rows
    skipped by ``offset`` and the names that do not match ``search`` are never joined
    with their specs. Only the page's rows are read from the table and joined with
    their current version.
    """
    query = template_page_query(namespace, limit, offset, search)
    return [_template(row) for row in conn.execute(query)]


def template_page_query(
    namespace: str | None, limit: int, offset: int, search: str | None = None
) -> sa.Select[Any]:
    """``list_templates``'s statement (benchmarks EXPLAIN it)."""
    page = sa.select(templates.c.id).order_by(templates.c.namespace, templates.c.name)
    if namespace is not None:
        page = page.where(templates.c.namespace == namespace)
    if search:
        page = page.where(templates.c.name.contains(search, autoescape=True))
    ids = page.limit(limit).offset(offset).subquery("page")
    return (
        _current_spec_join()
        .join_from(templates, ids, ids.c.id == templates.c.id)
        .order_by(templates.c.namespace, templates.c.name)
    )


def list_cron_schedule(conn: Connection) -> list[tuple[str, datetime | None, bool]]:
    """(template id, next fire time, suspended) of every template: the scheduler's view."""
    query = sa.select(templates.c.id, templates.c.next_fire_at, templates.c.suspended)
    return [(row.id, row.next_fire_at, bool(row.suspended)) for row in conn.execute(query)]


def insert_template(
    conn: Connection,
    namespace: str,
    spec: TemplateSpec,
    now: datetime,
    next_fire_at: datetime | None,
) -> str:
    require_namespace(conn, namespace)
    template_id = str(uuid.uuid4())
    try:
        with conn.begin_nested():
            conn.execute(
                templates.insert().values(
                    id=template_id,
                    namespace=namespace,
                    name=spec.name,
                    version=1,
                    next_fire_at=next_fire_at,
                    created_at=now,
                    updated_at=now,
                )
            )
    except IntegrityError:
        raise AlreadyExists(
            f"template {spec.name!r} already exists in namespace {namespace!r}"
        ) from None
    _insert_version(conn, template_id, 1, spec, now)
    return template_id


def _insert_version(
    conn: Connection, template_id: str, version: int, spec: TemplateSpec, now: datetime
) -> None:
    conn.execute(
        template_versions.insert().values(
            template_id=template_id,
            version=version,
            spec=spec.model_dump(mode="json"),
            created_at=now,
        )
    )


def add_version(
    conn: Connection,
    template: Template,
    spec: TemplateSpec,
    now: datetime,
    next_fire_at: datetime | None,
) -> int:
    """Store ``spec`` as the template's next version and make it current."""
    version = _lock_version(conn, template.id) + 1
    _insert_version(conn, template.id, version, spec, now)
    conn.execute(
        templates.update()
        .where(templates.c.id == template.id)
        .values(version=version, updated_at=now, next_fire_at=next_fire_at)
    )
    return version


def _lock_version(conn: Connection, template_id: str) -> int:
    # UPDATE first: it takes the row lock that serialises concurrent edits.
    conn.execute(
        templates.update()
        .where(templates.c.id == template_id)
        .values(task_seq=templates.c.task_seq + 1)
    )
    newest = sa.select(sa.func.max(template_versions.c.version)).where(
        template_versions.c.template_id == template_id
    )
    return int(conn.execute(newest).scalar_one())


def lock_template(conn: Connection, template_id: str) -> None:
    """Take the template's row lock for the rest of the transaction."""
    result = conn.execute(
        templates.update()
        .where(templates.c.id == template_id)
        .values(task_seq=templates.c.task_seq + 1)
    )
    if result.rowcount == 0:
        raise NotFound(f"template {template_id!r} does not exist")


def locked_template(conn: Connection, namespace: str, name: str) -> Template:
    """Lock the named template's row, then read it: what the caller sees stays true."""
    result = conn.execute(
        templates.update()
        .where(templates.c.namespace == namespace, templates.c.name == name)
        .values(task_seq=templates.c.task_seq + 1)
    )
    if result.rowcount == 0:
        raise NotFound(f"template {name!r} does not exist in namespace {namespace!r}")
    return get_template(conn, namespace, name)


def locked_template_by_id(conn: Connection, template_id: str) -> Template:
    lock_template(conn, template_id)
    return get_template_by_id(conn, template_id)


# Built once, the ids an expanding parameter: every trigger's launch reads so.
_LOCKED_BY_IDS = (
    sa.select(templates)
    .where(templates.c.id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(templates.c.id)
    .with_for_update(key_share=True)
)


def locked_templates_by_ids(
    conn: Connection,
    template_ids: Sequence[str],
    parsed: Mapping[str, tuple[int, TemplateSpec]] | None = None,
) -> list[Template]:
    """Read many templates at once under their row locks, in id order; missing ids are left out.

    On PostgreSQL the rows are locked with ``SELECT ... FOR NO KEY UPDATE``: the lock an
    UPDATE of the row takes (``lock_template``), so this serialises with every launch and
    edit, yet not with inserts of rows that refer to the template (tasks, events), which
    only share its key. Rows are locked in id order, so two callers locking overlapping
    sets cannot deadlock. SQLite's write transaction already excludes every other writer.

    ``parsed`` holds specs the caller parsed before, by template id with their version:
    versions never change, so only the specs missing from it (or of another version) are
    read and parsed.
    """
    if not template_ids:
        return []
    rows = conn.execute(_LOCKED_BY_IDS, {"ids": list(template_ids)}).all()
    known = parsed or {}
    specs = {row.id: _spec_of_version(known, row.id, row.version) for row in rows}
    read = current_specs(conn, [i for i, spec in specs.items() if spec is None])
    return [_template(row, specs[row.id] or read[row.id][1]) for row in rows]


def _spec_of_version(
    known: Mapping[str, tuple[int, TemplateSpec]], template_id: str, version: int
) -> TemplateSpec | None:
    found = known.get(template_id)
    return found[1] if found is not None and found[0] == version else None


def current_specs(
    conn: Connection, template_ids: Sequence[str]
) -> dict[str, tuple[int, TemplateSpec]]:
    """The current (version, spec) of each template; missing ids are left out."""
    if not template_ids:
        return {}
    query = (
        sa.select(templates.c.id, templates.c.version, template_versions.c.spec)
        .select_from(_with_current_version())
        .where(templates.c.id.in_(list(template_ids)))
    )
    # Fetch every row before parsing any: a spec that fails to parse must not leave the
    # cursor open, holding SQLite's read snapshot on a pooled connection.
    rows = conn.execute(query).all()
    return {row.id: (row.version, parse_spec(row.spec)) for row in rows}


def set_next_fires(conn: Connection, next_fires: Sequence[tuple[str, datetime | None]]) -> None:
    """Set many templates' next fire times: one UPDATE per distinct time, not one per template."""
    by_time: dict[datetime | None, list[str]] = {}
    for template_id, next_fire_at in next_fires:
        by_time.setdefault(next_fire_at, []).append(template_id)
    for next_fire_at, ids in by_time.items():
        conn.execute(
            templates.update().where(templates.c.id.in_(ids)).values(next_fire_at=next_fire_at)
        )


def list_versions(conn: Connection, template_id: str) -> list[TemplateVersion]:
    query = (
        sa.select(template_versions)
        .where(template_versions.c.template_id == template_id)
        .order_by(template_versions.c.version.desc())
    )
    return [_version(row) for row in conn.execute(query)]


def get_version(conn: Connection, template_id: str, version: int) -> TemplateVersion:
    query = sa.select(template_versions).where(
        template_versions.c.template_id == template_id, template_versions.c.version == version
    )
    row = conn.execute(query).first()
    if row is None:
        raise NotFound(f"version {version} does not exist")
    return _version(row)


def _version(row: Row[Any]) -> TemplateVersion:
    m = row._mapping
    return TemplateVersion(
        template_id=m["template_id"],
        version=m["version"],
        spec=parse_spec(m["spec"]),
        created_at=m["created_at"],
    )


def set_suspended(conn: Connection, template_id: str, suspended: bool, now: datetime) -> None:
    conn.execute(
        templates.update()
        .where(templates.c.id == template_id)
        .values(suspended=suspended, updated_at=now)
    )


def set_next_fire(conn: Connection, template_id: str, next_fire_at: datetime | None) -> None:
    conn.execute(
        templates.update().where(templates.c.id == template_id).values(next_fire_at=next_fire_at)
    )


def delete_template(conn: Connection, template_id: str) -> None:
    conn.execute(templates.delete().where(templates.c.id == template_id))


def ids_in(conn: Connection, template_ids: Sequence[str]) -> set[str]:
    query = sa.select(templates.c.id).where(templates.c.id.in_(list(template_ids)))
    return {row.id for row in conn.execute(query)}
