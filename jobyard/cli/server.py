"""``jobyard server``: run the API, the scheduler and the instances in this process."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import resource
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from jobyard.config import Settings
from jobyard.runners.containers import ENGINE_CHOICES
from jobyard.runners.local import RESOURCE_LIMITS

logger = logging.getLogger(__name__)

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# A client reusing an idle connection just as the server closes it gets a reset
# and no answer (httpx gives up on idle connections after 5 s, uvicorn's default
# closes them after 5 s too): the server outwaits the clients and proxies in
# front of it (nginx's upstream keepalive_timeout and a cloud balancer's idle
# timeout are 60 s), as nginx's own 75 s does.
KEEP_ALIVE_SECONDS = 75


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
    public_url: Annotated[
        str | None,
        typer.Option(
            envvar="JOBYARD_PUBLIC_URL",
            help="base of the trigger URLs shown to users, e.g. https://jobs.example.com",
        ),
    ] = None,
    trusted_proxies: Annotated[
        str,
        typer.Option(
            envvar="JOBYARD_TRUSTED_PROXIES",
            help="comma-separated addresses/CIDRs whose X-Forwarded-* headers are believed",
        ),
    ] = "",
    max_body_bytes: Annotated[
        int,
        typer.Option(envvar="JOBYARD_MAX_BODY_BYTES", min=1, help="largest trigger request body"),
    ] = 1024 * 1024,
    capacity_cpu: Annotated[
        float | None,
        typer.Option(
            envvar="JOBYARD_CAPACITY_CPU",
            min=0.01,
            help="CPU cores instances may request in all; default: this machine's cores",
        ),
    ] = None,
    capacity_memory_mb: Annotated[
        int | None,
        typer.Option(
            envvar="JOBYARD_CAPACITY_MEMORY_MB",
            min=16,
            help="MiB instances may request in all; default: this machine's memory",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(envvar="JOBYARD_TLS_CERT", help="PEM certificate (chain): serve HTTPS"),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(envvar="JOBYARD_TLS_KEY", help="PEM private key of --tls-cert")
    ] = None,
    container_engine: Annotated[
        str,
        typer.Option(
            envvar="JOBYARD_CONTAINER_ENGINE",
            help="what runs image templates: auto (podman, then docker), podman, docker, none",
        ),
    ] = "auto",
    resource_limits: Annotated[
        str,
        typer.Option(
            envvar="JOBYARD_RESOURCE_LIMITS",
            help="how instance CPU and memory are enforced: auto (cgroups where the host "
            "allows, else psutil), cgroup, psutil (memory only), off",
        ),
    ] = "auto",
    max_package_size: Annotated[
        str,
        typer.Option(
            envvar="JOBYARD_MAX_PACKAGE_SIZE",
            help="largest code package upload, e.g. 512MiB, 2GiB or a number of bytes",
        ),
    ] = "512MiB",
    max_unpacked_size: Annotated[
        str,
        typer.Option(
            envvar="JOBYARD_MAX_UNPACKED_SIZE",
            help="the most a package archive may unpack to, e.g. 4GiB",
        ),
    ] = "4GiB",
    runtime_path: Annotated[
        str | None,
        typer.Option(
            envvar="JOBYARD_RUNTIME_PATH",
            help="where package runtimes (python3, java, node, npm) are looked up, like PATH; "
            "default: the server's PATH",
        ),
    ] = None,
    keep_alive_timeout: Annotated[
        int,
        typer.Option(
            envvar="JOBYARD_KEEP_ALIVE_TIMEOUT",
            min=1,
            help="seconds an idle HTTP connection is kept open; longer than the idle "
            "timeout of the clients and proxies that reuse connections",
        ),
    ] = KEEP_ALIVE_SECONDS,
    log_level: Annotated[
        str, typer.Option(envvar="JOBYARD_LOG_LEVEL", help="debug, info, warning, error")
    ] = "info",
) -> None:
    """Run the jobyard server (API, scheduler and instances) until SIGTERM or Ctrl-C.

    The environment variable JOBYARD_ADMIN_TOKEN, when set, is accepted as an
    admin API token (to bootstrap a server that listens beyond loopback).
    """
    from jobyard.api.app import create_app

    level = log_level.upper()
    if level not in LEVELS:
        raise typer.BadParameter(f"unknown log level {log_level!r}", param_hint="--log-level")
    _check_tls(tls_cert, tls_key)
    if container_engine not in ENGINE_CHOICES:
        raise typer.BadParameter(
            f"unknown container engine {container_engine!r}; one of {', '.join(ENGINE_CHOICES)}",
            param_hint="--container-engine",
        )
    if resource_limits not in RESOURCE_LIMITS:
        raise typer.BadParameter(
            f"unknown mode {resource_limits!r}; one of {', '.join(RESOURCE_LIMITS)}",
            param_hint="--resource-limits",
        )
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        host=host,
        port=port,
        public_url=public_url,
        trusted_proxies=_networks(trusted_proxies),
        max_body_bytes=max_body_bytes,
        capacity_cpu=capacity_cpu,
        capacity_memory_mb=capacity_memory_mb,
        tls_cert=tls_cert,
        tls_key=tls_key,
        admin_token=os.environ.get("JOBYARD_ADMIN_TOKEN") or None,
        container_engine=container_engine,
        resource_limits=resource_limits,
        max_package_bytes=parse_size(max_package_size, "--max-package-size"),
        max_unpacked_bytes=parse_size(max_unpacked_size, "--max-unpacked-size"),
        runtime_path=runtime_path,
    )
    _exit_quietly_on_signals()
    _raise_open_files_limit()
    # The server's threads mostly wait on the database, the network and processes; a
    # thread back from a wait takes the GIL from a busy one within a millisecond
    # instead of five (bench/README.md, session 6: the cron p99).
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=log_level.lower(),
        timeout_graceful_shutdown=10,
        timeout_keep_alive=keep_alive_timeout,
        # jobyard decides itself which proxies to believe (--trusted-proxies).
        proxy_headers=False,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
    )


OPEN_FILES_WITHOUT_HARD_LIMIT = 1 << 20
GIL_SWITCH_SECONDS = 0.001


def _raise_open_files_limit() -> None:
    """Raise the soft limit on open files to the hard one, as servers do.

    The local runner holds a descriptor per live instance (its pidfd): under a
    soft limit of 1,024 the 1,009th concurrent instance would fail to start.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES_WITHOUT_HARD_LIMIT if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (OSError, ValueError) as err:
            logger.warning("could not raise the open files limit from %s: %s", soft, err)


def _exit_quietly_on_signals() -> None:
    """Exit 0 after a graceful shutdown on SIGTERM or Ctrl-C.

    uvicorn restores the handlers it found and raises the signal again once it
    has shut down; with these handlers that ends the process with status 0
    instead of death by SIGTERM or a KeyboardInterrupt traceback.
    """
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: sys.exit(0))


def _check_tls(cert: Path | None, key: Path | None) -> None:
    if (cert is None) != (key is None):
        raise typer.BadParameter("--tls-cert and --tls-key go together", param_hint="--tls-cert")
    for path in (cert, key):
        if path is not None and not path.is_file():
            raise typer.BadParameter(f"{path} is not a readable file", param_hint="--tls-cert")


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str, option: str) -> int:
    """Bytes from '512MiB', '1.5G', '200k' or a plain number (binary units throughout)."""
    match = _SIZE.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise typer.BadParameter(
            f"{text!r} is not a size; write e.g. 512MiB, 2GiB or a number of bytes",
            param_hint=option,
        )
    power = " kmgt".index(match.group(2).lower() or " ")
    return int(float(match.group(1)) * 1024**power)


def _networks(text: str) -> tuple[str, ...]:
    networks = tuple(part.strip() for part in text.split(",") if part.strip())
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise typer.BadParameter(
                f"{network!r} is not an address or CIDR block", param_hint="--trusted-proxies"
            ) from None
    return networks
