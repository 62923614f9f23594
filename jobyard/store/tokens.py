"""API tokens: stored as SHA-256 digests, never in the clear."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from jobyard.errors import AlreadyExists, NotFound
from jobyard.store.tables import api_tokens


@dataclass(frozen=True)
class ApiToken:
    name: str
    role: str
    namespace: str | None
    created_at: datetime
    last_used_at: datetime | None


def insert_token(
    conn: Connection, name: str, digest: str, role: str, namespace: str | None, now: datetime
) -> None:
    values = {"name": name, "token_hash": digest, "role": role, "namespace": namespace}
    try:
        with conn.begin_nested():
            conn.execute(api_tokens.insert().values(**values, created_at=now))
    except IntegrityError:
        raise AlreadyExists(f"a token named {name!r} already exists") from None


def _token(row: sa.Row[tuple[object, ...]]) -> ApiToken:
    m = row._mapping
    return ApiToken(m["name"], m["role"], m["namespace"], m["created_at"], m["last_used_at"])


def list_tokens(conn: Connection) -> list[ApiToken]:
    return [_token(row) for row in conn.execute(sa.select(api_tokens).order_by(api_tokens.c.name))]


def find_by_digest(conn: Connection, digest: str) -> ApiToken | None:
    row = conn.execute(sa.select(api_tokens).where(api_tokens.c.token_hash == digest)).first()
    return None if row is None else _token(row)


def count_tokens(conn: Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(api_tokens)).scalar_one())


def delete_token(conn: Connection, name: str) -> None:
    if conn.execute(api_tokens.delete().where(api_tokens.c.name == name)).rowcount == 0:
        raise NotFound(f"no token named {name!r}")


def touch_token(conn: Connection, name: str, now: datetime) -> None:
    conn.execute(api_tokens.update().where(api_tokens.c.name == name).values(last_used_at=now))
