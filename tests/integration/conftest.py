"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from jobyard.store import Store
from jobyard.store import templates as template_store

CREATED = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """A migrated database of each kind, with the default namespace."""
    store = Store(database_url)
    store.migrate()
    with store.write() as conn:
        template_store.ensure_namespace(conn, "default", CREATED)
    yield store
    store.close()
