"""Shared request dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from jobyard.engine.core import Engine


def get_engine(request: Request) -> Engine:
    engine = request.app.state.engine
    assert isinstance(engine, Engine)
    return engine


EngineDep = Annotated[Engine, Depends(get_engine)]
Limit = Annotated[int, Query(ge=1, le=1000, description="page size")]
Offset = Annotated[int, Query(ge=0, description="rows to skip")]
