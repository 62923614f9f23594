"""Fixtures shared by every test: databases (SQLite file, real PostgreSQL) and a
real jobyard server process driven over HTTP."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.support import JobyardServer, free_port, processes_using, wait_for

POSTGRES_ADMIN_URL = os.environ.get(
    "JOBYARD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _postgres_reachable() -> str | None:
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.OperationalError as err:
        return str(err)


@pytest.fixture(scope="session")
def postgres_admin() -> str:
    """The admin URL; fails (never skips) when PostgreSQL is not there."""
    problem = _postgres_reachable()
    if problem:
        pytest.fail(
            f"PostgreSQL is required at {POSTGRES_ADMIN_URL} (JOBYARD_TEST_POSTGRES): {problem}"
        )
    return POSTGRES_ADMIN_URL


def _create_database(admin_url: str) -> tuple[str, str]:
    name = f"jobyard_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


def _drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'jobyard.db'}"
        return
    admin = request.getfixturevalue("postgres_admin")
    name, url = _create_database(admin)
    try:
        yield url
    finally:
        _drop_database(admin, name)


@pytest.fixture
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobyardServer]:
    """A real ``jobyard server`` process on a free port, on each database kind."""
    jobyard = JobyardServer(
        data_dir=tmp_path_factory.mktemp("data"), database_url=database_url, port=free_port()
    )
    jobyard.start()
    try:
        yield jobyard
    finally:
        jobyard.terminate()
        jobyard.kill_instances()


@pytest.fixture
def jobyard(server: JobyardServer) -> Iterator[JobyardServer]:
    """The server; afterwards, stopped, and nothing of its instances left running."""
    yield server
    server.terminate()
    server.kill_instances()
    wait_for(lambda: not processes_using(server.data_dir), timeout=10)
