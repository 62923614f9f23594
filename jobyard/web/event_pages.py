"""Event information: search by source name, reason, source type and severity, newest first."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.responses import Response

from jobyard.api.deps import EngineDep
from jobyard.domain import Reason, Severity, SourceType
from jobyard.engine.core import Engine
from jobyard.store.events import EventQuery
from jobyard.web import session
from jobyard.web.rendering import render
from jobyard.web.routing import console_router
from jobyard.web.template_pages import TEMPLATE, template_context

router = console_router()
PAGE = 50


def _filters(
    source_name: str = "", reason: str = "", source_type: str = "", severity: str = "", q: str = ""
) -> dict[str, str]:
    """The search form's fields, from the query string (unknown choices dropped)."""
    return {
        "source_name": source_name.strip(),
        "reason": reason.strip(),
        "source_type": source_type if source_type in {s.value for s in SourceType} else "",
        "severity": severity if severity in {s.value for s in Severity} else "",
        "q": q.strip(),
    }


Filters = Annotated[dict[str, str], Depends(_filters)]


@router.get("/namespaces/{namespace}/events")
def namespace_events(
    request: Request,
    engine: EngineDep,
    namespace: str,
    filters: Filters,
    offset: int = 0,
) -> Response:
    session.enter_namespace(request, namespace)
    engine.templates.require_namespace(namespace)
    context = {
        **_search(engine, namespace, None, filters, max(offset, 0)),
        "namespace": namespace,
        "section": "events",
    }
    return render(request, "events.html", context)


@router.get(TEMPLATE + "/events")
def template_events(
    request: Request,
    engine: EngineDep,
    namespace: str,
    name: str,
    filters: Filters,
    offset: int = 0,
) -> Response:
    session.enter_namespace(request, namespace)
    template = engine.templates.get(namespace, name)
    context = {
        **template_context(engine, template, "events"),
        **_search(engine, namespace, name, filters, max(offset, 0)),
    }
    return render(request, "template_events.html", context)


def _search(
    engine: Engine, namespace: str, template: str | None, filters: dict[str, str], offset: int
) -> dict[str, Any]:
    query = EventQuery(
        namespace=namespace,
        template_name=template,
        source_name=filters["source_name"] or None,
        reason=filters["reason"] or None,
        source_type=filters["source_type"] or None,
        severity=filters["severity"] or None,
        text=filters["q"] or None,
        limit=PAGE + 1,
        offset=offset,
    )
    found = engine.tasks.events(query)
    return {
        "events": found[:PAGE],
        "filters": filters,
        "query": "".join(f"{urlencode({k: v})}&" for k, v in filters.items() if v),
        "offset": offset,
        "more": len(found) > PAGE,
        "page": PAGE,
        "source_types": [s.value for s in SourceType],
        "severities": [s.value for s in Severity],
        "reasons": sorted(r.value for r in Reason),
    }
