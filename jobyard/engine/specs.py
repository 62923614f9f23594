"""A cache of template versions: they are immutable, so reading one once is enough."""

from __future__ import annotations

import threading

from jobyard.spec import TemplateSpec
from jobyard.store import Store
from jobyard.store import templates as template_store

MAX_CACHED = 10_000


class SpecCache:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._specs: dict[tuple[str, int], TemplateSpec] = {}
        self._lock = threading.Lock()

    def get(self, template_id: str, version: int) -> TemplateSpec:
        key = (template_id, version)
        with self._lock:
            spec = self._specs.get(key)
        if spec is not None:
            return spec
        with self._store.read() as conn:
            spec = template_store.get_version(conn, template_id, version).spec
        with self._lock:
            if len(self._specs) >= MAX_CACHED:
                self._specs.clear()
            self._specs[key] = spec
        return spec
