"""The ``jobyard`` command: ``jobyard server`` and (later) client commands."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from jobyard.config import Settings

app = typer.Typer(
    name="jobyard",
    help="A self-hosted serverless job platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.command()
def server(
    host: Annotated[str, typer.Option(envvar="JOBYARD_HOST", help="address to listen on")] = (
        "127.0.0.1"
    ),
    port: Annotated[
        int, typer.Option(envvar="JOBYARD_PORT", min=0, max=65535, help="port to listen on")
    ] = 8080,
    data_dir: Annotated[
        Path,
        typer.Option(envvar="JOBYARD_DATA_DIR", help="where the SQLite database and the logs live"),
    ] = Path("./jobyard-data"),
    database_url: Annotated[
        str | None,
        typer.Option(
            envvar="JOBYARD_DATABASE_URL",
            help="e.g. postgresql://user@host/db; default: SQLite in the data directory",
        ),
    ] = None,
    log_level: Annotated[
        str, typer.Option(envvar="JOBYARD_LOG_LEVEL", help="debug, info, warning, error")
    ] = "info",
) -> None:
    """Run the jobyard server (API, scheduler and instances) until SIGTERM or Ctrl-C."""
    from jobyard.api.app import create_app

    level = log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise typer.BadParameter(f"unknown log level {log_level!r}", param_hint="--log-level")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(data_dir=data_dir, database_url=database_url, host=host, port=port)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=log_level.lower(),
        timeout_graceful_shutdown=10,
    )


@app.callback()
def _root() -> None:
    """jobyard: job templates, cron and HTTP triggers, tasks on fresh instances."""


def main() -> None:
    app()
