"""Jinja2 pages: the environment, the helpers every page uses, and the response."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

import jobyard
from jobyard.domain import Task
from jobyard.errors import JobyardError
from jobyard.web import session
from jobyard.web.package_views import short_digest, size_words

TEMPLATES = Path(__file__).parent / "templates"
# No inline script or style anywhere: every asset comes from /assets.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def when(moment: datetime | None, style: str = "datetime") -> Markup:
    """A time in UTC, turned into the reader's local time by console.js."""
    if moment is None:
        return Markup('<span class="muted">—</span>')
    utc = moment.astimezone(UTC)
    text = utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    iso = utc.isoformat().replace("+00:00", "Z")
    return Markup('<time datetime="{}" data-style="{}">{}</time>').format(iso, style, text)


def in_zone(moment: datetime, zone: str) -> str:
    """A time as a wall clock in ``zone`` (for cron previews in the template's zone)."""
    local = moment.astimezone(ZoneInfo(zone))
    return local.strftime("%a %Y-%m-%d %H:%M:%S ") + (local.tzname() or zone)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def task_seconds(task: Task) -> float | None:
    if task.started_at is None or task.finished_at is None:
        return None
    return (task.finished_at - task.started_at).total_seconds()


def badge(status: str | None) -> Markup:
    if not status:
        return Markup('<span class="muted">—</span>')
    return Markup('<span class="badge badge-{0}">{0}</span>').format(escape(status))


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        when=when,
        in_zone=in_zone,
        badge=badge,
        task_seconds=task_seconds,
        version=jobyard.__version__,
    )
    env.filters["duration"] = duration
    env.filters["size"] = size_words
    env.filters["short_digest"] = short_digest
    env.filters["shell_quote"] = shlex.quote
    return env


ENVIRONMENT = _environment()


def render(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    """A whole page (or an htmx fragment when ``name`` starts with ``_``)."""
    # Only a whole page shows (and so uses up) the message a redirect carried.
    flash = None if name.startswith("_") else session.take_flash(request)
    full = {**_page_context(request, flash), **context}
    html = ENVIRONMENT.get_template(name).render(full)
    response = HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
    if flash is not None:
        response.delete_cookie(session.FLASH_COOKIE, path="/")
    return response


def _page_context(request: Request, flash: session.Flash | None) -> dict[str, Any]:
    who = session.current(request)
    namespaces, signed_in = _top_bar(request) if who else ([], False)
    return {
        "request": request,
        "who": who,
        "flash": flash,
        "namespaces": namespaces,
        "namespace": session.home_namespace(request),
        "signed_in": signed_in,
        "may": lambda role: session.may(request, role),
        "section": "",
    }


def _top_bar(request: Request) -> tuple[list[str], bool]:
    """The namespace switcher's choices, and whether to offer "Sign out"."""
    try:
        return session.visible_namespaces(request), session.needs_sign_in(request)
    except JobyardError:  # an error page must render even when the database failed
        return [session.home_namespace(request)], False
