"""API tokens and roles: who may call the management API."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from enum import IntEnum

from jobyard.engine.clock import Clock
from jobyard.errors import InvalidSpec
from jobyard.store import Store
from jobyard.store import templates as template_store
from jobyard.store import tokens as token_store
from jobyard.store.tokens import ApiToken

TOKEN_PREFIX = "jy_"
TOKEN_NAME = re.compile(r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$")
COUNT_TTL = 2.0  # seconds the "are there any tokens?" answer is trusted
TOUCH_EVERY = 60.0  # seconds between last_used_at writes for one token


class Role(IntEnum):
    """Each role may do what the ones below it may."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.upper()]
        except KeyError:
            raise InvalidSpec(
                f"unknown role {name!r}; one of viewer, operator, admin", field="role"
            ) from None


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role
    namespace: str | None  # None: every namespace


OPEN_ACCESS = Principal("local (no tokens)", Role.ADMIN, None)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenService:
    def __init__(self, store: Store, clock: Clock, bootstrap_token: str | None) -> None:
        self._store = store
        self._clock = clock
        self._bootstrap = bootstrap_token
        self._lock = threading.Lock()
        self._count: tuple[float, int] | None = None
        self._touched: dict[str, float] = {}

    def create(self, name: str, role: str, namespace: str | None) -> tuple[ApiToken, str]:
        """Store a new token; the clear text is returned once and never again."""
        if not TOKEN_NAME.match(name) or len(name) > 63:
            raise InvalidSpec(f"token name {name!r} must be a short lowercase name", field="name")
        parsed = Role.parse(role)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self._clock.now()
        with self._store.write() as conn:
            if namespace is not None:
                template_store.require_namespace(conn, namespace)
            token_store.insert_token(conn, name, digest(token), parsed.name.lower(), namespace, now)
            created = token_store.find_by_digest(conn, digest(token))
        self._forget_count()
        assert created is not None
        return created, token

    def list(self) -> list[ApiToken]:
        with self._store.read() as conn:
            return token_store.list_tokens(conn)

    def revoke(self, name: str) -> None:
        with self._store.write() as conn:
            token_store.delete_token(conn, name)
        self._forget_count()

    def any_tokens(self) -> bool:
        if self._bootstrap:
            return True
        with self._lock:
            if self._count is not None and time.monotonic() - self._count[0] < COUNT_TTL:
                return self._count[1] > 0
        with self._store.read() as conn:
            count = token_store.count_tokens(conn)
        with self._lock:
            self._count = (time.monotonic(), count)
        return count > 0

    def authenticate(self, token: str) -> Principal | None:
        if self._bootstrap and hmac.compare_digest(token, self._bootstrap):
            return Principal("bootstrap", Role.ADMIN, None)
        with self._store.read() as conn:
            found = token_store.find_by_digest(conn, digest(token))
        if found is None:
            return None
        self._touch(found.name)
        return Principal(found.name, Role[found.role.upper()], found.namespace)

    def _touch(self, name: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._touched.get(name, -TOUCH_EVERY) < TOUCH_EVERY:
                return
            self._touched[name] = now
        with self._store.write() as conn:
            token_store.touch_token(conn, name, self._clock.now())

    def _forget_count(self) -> None:
        with self._lock:
            self._count = None
