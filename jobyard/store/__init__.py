"""The only place with SQL: tables, migrations and queries."""

from jobyard.store.db import Priority, Store

__all__ = ["Priority", "Store"]
