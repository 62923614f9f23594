"""The ASGI application: routers, error handlers, and the engine's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

import jobyard
from jobyard.api import errors, tasks, templates
from jobyard.api.deps import EngineDep
from jobyard.config import Settings
from jobyard.engine.core import Engine


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = Engine(settings)
        await run_in_threadpool(engine.start)
        app.state.engine = engine
        try:
            yield
        finally:
            await run_in_threadpool(engine.stop)

    app = FastAPI(
        title="jobyard",
        version=jobyard.__version__,
        description="A self-hosted serverless job platform.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(templates.router)
    app.include_router(tasks.router)
    app.add_api_route("/api/v1/info", info, methods=["GET"], tags=["server"])
    app.add_api_route("/healthz", healthz, methods=["GET"], tags=["server"])
    return app


def info(engine: EngineDep) -> dict[str, Any]:
    """What this server is: version, database kind, runner, data directory."""
    return {
        "version": jobyard.__version__,
        "database": engine.store.dialect,
        "runner": "local",
        "data_dir": str(engine.data_dir),
    }


def healthz() -> dict[str, str]:
    return {"status": "ok"}
