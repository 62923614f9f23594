"""Connections, transactions and migrations: SQLite (WAL) or PostgreSQL by URL."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from jobyard.errors import StoreError

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
# Any fixed number: the advisory lock that lets only one replica migrate at a time.
MIGRATION_LOCK_KEY = 7_302_114


def normalize_url(url: str) -> str:
    """Let users write postgresql://; we use the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _sqlite_engine(url: str) -> Engine:
    engine = sa.create_engine(url, pool_size=8, max_overflow=32, pool_timeout=60)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Autocommit at the driver level, so that we issue BEGIN ourselves below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A writer takes the lock up front: a deferred transaction that later
        # writes can fail with "database is locked" without waiting.
        mode = connection.get_execution_options().get("begin_mode", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def create_engine(url: str) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return sa.create_engine(url, pool_size=8, max_overflow=32, pool_pre_ping=True)


class Store:
    """The database. ``write()`` and ``read()`` hand out one transaction each."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.engine = create_engine(self.url)
        # SQLite has one writer at a time. Writers of this process queue here,
        # woken the moment the lock is free, rather than in SQLite's busy
        # handler, which polls with sleeps of up to 100 ms under contention.
        self._writer = threading.Lock() if self.dialect == "sqlite" else contextlib.nullcontext()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self._writer, self._transaction(begin_mode="IMMEDIATE") as connection:
            yield connection

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self._transaction(begin_mode="DEFERRED") as connection:
            yield connection

    @contextmanager
    def _transaction(self, begin_mode: str) -> Iterator[Connection]:
        try:
            with self.engine.connect() as connection:
                connection.execution_options(begin_mode=begin_mode)
                with connection.begin():
                    yield connection
        except OperationalError as err:
            raise StoreError(f"database error: {err.orig}") from err
        except DBAPIError as err:
            if err.connection_invalidated:
                raise StoreError(f"database connection lost: {err.orig}") from err
            raise

    def migrate(self) -> None:
        """Bring the schema to the newest revision (safe with several replicas)."""
        with self.engine.connect() as connection:
            if self.dialect == "postgresql":
                connection.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")
                connection.commit()
            try:
                config = Config()
                config.set_main_option("script_location", str(MIGRATIONS))
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                connection.commit()
            finally:
                if self.dialect == "postgresql":
                    connection.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")
                    connection.commit()
        logger.info("database schema is current (%s)", self.dialect)

    def close(self) -> None:
        self.engine.dispose()
