"""Connections, transactions and migrations: SQLite (WAL) or PostgreSQL by URL."""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError

from jobyard.errors import StoreError
from jobyard.store.precedence import Precedence

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
# Any fixed number: the advisory lock that lets only one replica migrate at a time.
MIGRATION_LOCK_KEY = 7_302_114
CHECKPOINT_SECONDS = 0.5  # how often SQLite's write-ahead log is copied to the database
PING_AFTER_IDLE_SECONDS = 1.0  # a pooled PostgreSQL connection idle this long is pinged first


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
        cursor.execute("PRAGMA wal_autocheckpoint=0")  # the Checkpointer's work
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A writer takes the lock up front: a deferred transaction that later
        # writes can fail with "database is locked" without waiting.
        mode = connection.get_execution_options().get("begin_mode", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _postgresql_engine(url: str) -> Engine:
    engine = sa.create_engine(url, pool_size=8, max_overflow=32)

    # Pessimistic disconnect handling for connections that sat idle: a connection in
    # steady use is not pinged (a round trip per transaction), and should the server
    # restart under it, its first statement fails, the pool is invalidated, and the
    # next transaction connects afresh.
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as err:  # the pool replaces it and tries another
            raise DisconnectionError(f"connection was closed while idle: {err}") from err

    return engine


def create_engine(url: str) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return _postgresql_engine(url)


class Priority(enum.IntEnum):
    """Who writes first when several wait for SQLite's one writer."""

    NORMAL = 0  # API requests, HTTP triggers and the controller, in arrival order
    SCHEDULER = 1  # cron firings: their lateness is what users see


class _Waiter:
    def __init__(self, lock: threading.Lock) -> None:
        self.granted = False
        self.wakeup = threading.Condition(lock)


class WriterQueue:
    """One writer at a time, first come first served within a priority; a
    waiting writer of a higher priority goes first.

    Writers of one process queue here and are handed the turn directly when
    the writer before them leaves, rather than polling in SQLite's busy
    handler (sleeps of up to 100 ms). No one barges in ahead of those already
    waiting, so neither the controller nor the scheduler can be starved by a
    crowd of HTTP triggers.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: list[deque[_Waiter]] = [deque() for _ in Priority]
        self._busy = False

    def waiting(self, priority: Priority) -> int:
        with self._lock:
            return len(self._queues[priority])

    @contextmanager
    def turn(self, priority: Priority) -> Iterator[None]:
        with self._lock:
            if self._busy or any(self._queues[priority:]):
                waiter = _Waiter(self._lock)
                self._queues[priority].append(waiter)
                while not waiter.granted:
                    waiter.wakeup.wait()
            self._busy = True
        try:
            yield
        finally:
            self._hand_over()

    def _hand_over(self) -> None:
        with self._lock:
            for queue in reversed(self._queues):
                if queue:
                    waiter = queue.popleft()
                    waiter.granted = True  # the turn passes on; the queue stays busy
                    waiter.wakeup.notify()
                    return
            self._busy = False


class Checkpointer:
    """Copies SQLite's write-ahead log into the database file, on a thread of its own.

    SQLite's automatic checkpoint runs inside the commit that takes the log past 1,000
    pages: that writer (a cron firing, say) waits tens of milliseconds for the copying,
    and so does every writer queued behind it. With it off, writers only append to the
    log, and this thread checkpoints it twice a second. A PASSIVE checkpoint blocks no
    reader or writer, and once it has copied the whole log the next writer starts the
    log over, so it does not grow.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jobyard-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(CHECKPOINT_SECONDS):
            self.checkpoint()

    def checkpoint(self) -> None:
        try:
            # The driver's connection is in autocommit: no transaction holds a snapshot.
            connection = self._engine.raw_connection()
            try:
                connection.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").close()
            finally:
                connection.close()
        except Exception:  # the next one will try again
            logger.warning("checkpointing the database failed", exc_info=True)

    def close(self) -> None:
        self._stopping.set()
        self._thread.join()
        self.checkpoint()


class _Depth(threading.local):
    """How many transactions the current thread is inside (each thread its own)."""

    value = 0


class Store:
    """The database. ``write()`` and ``read()`` hand out one transaction each."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.engine = create_engine(self.url)
        self.precedence = Precedence()  # the scheduler's firings go first
        self._depth = _Depth()
        # SQLite has one writer at a time; PostgreSQL locks rows, not the database.
        self._writers = WriterQueue() if self.dialect == "sqlite" else None
        self._checkpointer = Checkpointer(self.engine) if self.dialect == "sqlite" else None
        # PostgreSQL reads each statement from a snapshot of its own (READ COMMITTED) in a
        # transaction or not: without one, a read saves the round trips of BEGIN and COMMIT.
        self._reads = (
            self.engine
            if self.dialect == "sqlite"
            else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def write(self, priority: Priority = Priority.NORMAL) -> Iterator[Connection]:
        if priority < Priority.SCHEDULER:
            self._give_way()
        queued = contextlib.nullcontext() if self._writers is None else self._writers.turn(priority)
        with queued, self._transaction(begin_mode="IMMEDIATE") as connection:
            yield connection

    @contextmanager
    def read(self) -> Iterator[Connection]:
        self._give_way()
        with self._transaction(begin_mode="DEFERRED", engine=self._reads) as connection:
            yield connection

    def _give_way(self) -> None:
        """Wait for a firing under way to end, unless this thread is inside a
        transaction already (what it holds could be what the firing waits for)."""
        if not self._depth.value:
            self.precedence.give_way()

    @contextmanager
    def _transaction(self, begin_mode: str, engine: Engine | None = None) -> Iterator[Connection]:
        self._depth.value += 1
        try:
            with self._begin(begin_mode, engine) as connection:
                yield connection
        finally:
            self._depth.value -= 1

    @contextmanager
    def _begin(self, begin_mode: str, engine: Engine | None) -> Iterator[Connection]:
        try:
            with (engine or self.engine).connect() as connection:
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
        if self._checkpointer is not None:
            self._checkpointer.close()
        self.engine.dispose()
