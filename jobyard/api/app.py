"""The ASGI application: routers, error handlers, docs, and the engine's lifetime."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import swagger_ui_bundle
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

import jobyard
from jobyard import web
from jobyard.api import errors, hooks, packages, sae, tasks, templates, tokens
from jobyard.api.auth import authorize
from jobyard.api.deps import EngineDep
from jobyard.config import Settings
from jobyard.engine.core import Engine

SWAGGER_ASSETS = Path(swagger_ui_bundle.swagger_ui_path)
GUARDED = [Depends(authorize)]


def _settle_heap() -> None:
    """Leave what start-up made (modules, schemas, compiled queries: most of the heap)
    out of the garbage collector's full passes.

    A full pass stops every thread. Over the whole heap it took 60-90 ms, every few
    seconds under load: cron firings and HTTP triggers caught in it were that much
    later. Over what was made since start-up it takes 6-13 ms. What start-up made lives
    as long as the server, so nothing that should be collected is kept.
    """
    gc.collect()
    gc.freeze()


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = Engine(settings)
        await run_in_threadpool(engine.start)
        app.state.engine = engine
        _settle_heap()
        try:
            yield
        finally:
            await run_in_threadpool(engine.stop)

    app = FastAPI(
        title="jobyard",
        version=jobyard.__version__,
        description="A self-hosted serverless job platform.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    errors.install(app)
    # Routes are matched in order, one by one: the HTTP triggers and the health check,
    # the busiest, come first (their paths overlap no other route's).
    app.include_router(hooks.router)
    app.add_api_route("/healthz", healthz, methods=["GET"], tags=["server"])
    for router in (templates.router, tasks.router, tokens.router, sae.router):
        app.include_router(router, dependencies=GUARDED)
    # Packages decide roles themselves: operators upload and delete (see api/packages.py).
    app.include_router(packages.router, dependencies=[Depends(packages.authorize_packages)])
    app.add_api_route("/api/v1/info", info, methods=["GET"], tags=["server"], dependencies=GUARDED)
    _add_docs(app)
    # The web console at /, after the API so that /api/v1, /docs and /hooks keep their routes.
    web.install(app)
    return app


def _add_docs(app: FastAPI) -> None:
    """OpenAPI and Swagger UI, served from the package: no CDN, no outside network."""
    app.mount("/docs-assets", StaticFiles(directory=SWAGGER_ASSETS), name="docs-assets")

    def openapi(request: Request) -> JSONResponse:
        return JSONResponse(app.openapi())

    def docs(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="jobyard API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )

    for path, endpoint in (("/openapi.json", openapi), ("/docs", docs)):
        app.add_api_route(
            path, endpoint, methods=["GET"], include_in_schema=False, dependencies=GUARDED
        )


def info(engine: EngineDep) -> dict[str, Any]:
    """What this server is: version, database kind, runner, data directory, container engine."""
    return {
        "version": jobyard.__version__,
        "database": engine.store.dialect,
        "runner": "local",
        "data_dir": str(engine.data_dir),
        "public_url": engine.settings.base_url,
        "auth": "tokens"
        if engine.tokens.any_tokens() or not engine.settings.on_loopback
        else "open (loopback, no tokens)",
        "instances": engine.admitter.report(engine.store, engine.specs),
        "containers": engine.containers.report(),
        "resource_limits": {"mode": engine.runner.limits_mode},
    }


async def healthz() -> dict[str, str]:
    """On the event loop, as the HTTP triggers are: no worker thread for a no-op."""
    return {"status": "ok"}
