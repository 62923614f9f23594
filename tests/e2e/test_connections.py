"""End-to-end: how long the server keeps an idle HTTP connection open.

A client that reuses an idle connection at the moment the server closes it
gets a reset and no answer, so the server must outwait the clients that reuse
connections (httpx keeps one for 5 s, proxies in front for 60 s). Raw sockets:
the test decides when a connection is reused, not a client's pool.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support import JobyardServer, served

HTTPX_IDLE_EXPIRY_S = 5.0


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobyardServer]:
    with served(tmp_path_factory.mktemp("keep-alive-default")) as jobyard:
        yield jobyard


@pytest.fixture(scope="module")
def short_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobyardServer]:
    data_dir = tmp_path_factory.mktemp("keep-alive-short")
    with served(data_dir, extra_args=["--keep-alive-timeout", "1"]) as jobyard:
        yield jobyard


def connect(server: JobyardServer) -> socket.socket:
    url = urlsplit(server.url)
    return socket.create_connection((url.hostname, url.port), timeout=10)


def ask_health(conn: socket.socket) -> bytes:
    """One keep-alive GET /healthz on ``conn``; the whole response, or b"" if the
    server had closed the connection."""
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: jobyard\r\n\r\n")
    response = b""
    while b"\r\n\r\n" not in response or not response.endswith(b"}"):
        try:
            chunk = conn.recv(4096)
        except ConnectionResetError:
            return b""
        if not chunk:
            return b""
        response += chunk
    return response


def closed_by_server(conn: socket.socket) -> bool:
    conn.settimeout(0.5)
    try:
        return conn.recv(1) == b""
    except TimeoutError:
        return False


def test_a_connection_idle_longer_than_a_clients_own_expiry_is_still_served(
    default_server: JobyardServer,
) -> None:
    with connect(default_server) as conn:
        assert ask_health(conn).startswith(b"HTTP/1.1 200")
        time.sleep(HTTPX_IDLE_EXPIRY_S + 1)
        assert not closed_by_server(conn)
        assert ask_health(conn).startswith(b"HTTP/1.1 200")


def test_keep_alive_timeout_sets_how_long_an_idle_connection_stays_open(
    short_server: JobyardServer,
) -> None:
    with connect(short_server) as conn:
        assert ask_health(conn).startswith(b"HTTP/1.1 200")
        time.sleep(0.3)
        assert ask_health(conn).startswith(b"HTTP/1.1 200")  # reused within the timeout
        time.sleep(1.5)
        assert closed_by_server(conn)


def test_a_keep_alive_timeout_below_the_minimum_is_refused(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "jobyard", "server", "--data-dir", str(tmp_path / "data")]
    done = subprocess.run(
        [*command, "--keep-alive-timeout", "0"], capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 2
    assert "--keep-alive-timeout" in done.stderr
    assert "greater than or equal to 1" in done.stderr
    assert "Traceback" not in done.stderr
