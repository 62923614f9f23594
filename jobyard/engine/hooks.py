"""Templates by the token of their trigger URL, kept between requests.

An HTTP trigger reads its template before anything else: the filters decide
on it. Read from the database for every request, that is a transaction of its
own (on PostgreSQL, round trips) and a spec to validate. Kept here, the
copy is never trusted to decide alone:

- a request the copy would accept is checked by the launch against the row it
  locks (``locked_as_seen``): another version, another token, a suspension or
  a deletion since the copy was made raises ``TemplateChanged``;
- a request the copy would refuse is judged again on a fresh read.

So a stale copy (the template edited, suspended, rotated or deleted, on this
replica or another) costs one more read, never a wrong answer, and nothing
has to tell the other replicas that a template changed.
"""

from __future__ import annotations

import threading

from sqlalchemy.engine import Connection

from jobyard.domain import Template
from jobyard.errors import Conflict
from jobyard.store import Store
from jobyard.store import templates as template_store

MAX_KEPT = 10_000


class TemplateChanged(Conflict):
    """The template changed between the trigger's read and its launch."""


class HookedTemplates:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._kept: dict[str, Template] = {}
        self._lock = threading.Lock()

    def kept(self, hook_token: str) -> Template | None:
        """The kept copy, if any (no I/O: callable from the event loop)."""
        with self._lock:
            return self._kept.get(hook_token)

    def read(self, hook_token: str) -> Template:
        """The template as the database has it now; kept for the next request."""
        self.forget(hook_token)
        with self._store.read() as conn:
            template = template_store.get_template_by_hook(conn, hook_token)
        with self._lock:
            if len(self._kept) >= MAX_KEPT:
                self._kept.clear()
            self._kept[hook_token] = template
        return template

    def forget(self, hook_token: str) -> None:
        with self._lock:
            self._kept.pop(hook_token, None)


def locked_as_seen(seen: Template, conn: Connection) -> Template:
    """Lock the template's row and read it; TemplateChanged unless it is still ``seen``."""
    known = {seen.id: (seen.version, seen.spec)}
    locked = template_store.locked_templates_by_ids(conn, [seen.id], known)
    if not locked or _trigger_state(locked[0]) != _trigger_state(seen):
        raise TemplateChanged(
            f"template {seen.name!r} changed while the request was handled; send it again"
        )
    return locked[0]


def _trigger_state(template: Template) -> tuple[int, str | None, bool]:
    return template.version, template.hook_token, template.suspended
