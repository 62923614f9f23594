"""The only place with SQL: tables, migrations and queries."""

from jobyard.store.db import Store

__all__ = ["Store"]
