"""The web console, served at ``/``: server-rendered pages over the engine's use cases.

Jinja2 templates and a few static assets (CSS, a small script and a vendored
copy of htmx) ship inside the package: no CDN, no build step.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from jobyard.web import (
    actions,
    auth_pages,
    event_pages,
    package_pages,
    task_pages,
    template_pages,
    wizard,
)

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Add the console's pages and its assets (under ``/assets``) to ``app``."""
    app.mount("/assets", StaticFiles(directory=STATIC), name="console-assets")
    # The wizard's ``.../new`` must be matched before ``.../{name}``.
    pages = (auth_pages, wizard, template_pages, actions, task_pages, event_pages, package_pages)
    for module in pages:
        app.include_router(module.router)
