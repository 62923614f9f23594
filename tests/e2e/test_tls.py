"""End-to-end: ``--tls-cert``/``--tls-key`` make the server speak HTTPS.

A throwaway CA (trustme) signs a certificate for 127.0.0.1 at run time; the
client trusts that CA and nothing else.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from tests.support import JobyardServer, free_port, script_template, start_server, stop_server


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def cert_files(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = directory / "server.pem", directory / "server.key"
    for index, blob in enumerate(issued.cert_chain_pems):
        blob.write_to_path(str(cert), append=index > 0)
    issued.private_key_pem.write_to_path(str(key))
    return cert, key


@pytest.fixture(scope="module")
def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture(scope="module")
def tls(
    cert_files: tuple[Path, Path],
    trusting: ssl.SSLContext,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[JobyardServer]:
    cert, key = cert_files
    jobyard = start_server(
        tmp_path_factory.mktemp("tls-data"),
        extra_args=["--tls-cert", str(cert), "--tls-key", str(key)],
        scheme="https",
        verify=trusting,
    )
    yield jobyard
    stop_server(jobyard)


def test_the_api_speaks_https(tls: JobyardServer) -> None:
    assert tls.url.startswith("https://127.0.0.1:")
    info = tls.api("GET", "/info", expect=200)
    assert info["public_url"] == tls.url
    assert tls.client.get("/docs").status_code == 200


def test_plain_http_is_not_served_on_the_tls_port(tls: JobyardServer) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{tls.port}/healthz", timeout=5)


def test_a_client_that_does_not_trust_the_ca_is_refused(tls: JobyardServer) -> None:
    with pytest.raises(httpx.ConnectError):
        httpx.get(tls.url + "/healthz", timeout=5)


def test_an_https_only_hook_over_tls(tls: JobyardServer, trusting: ssl.SSLContext) -> None:
    spec = script_template(
        "https-only",
        'cat "$JOBYARD_PAYLOAD_FILE"',
        trigger={"type": "http", "protocols": ["https"]},
    )
    template = tls.create_template(spec)
    url = template["trigger"]["url"]
    assert url.startswith(f"https://127.0.0.1:{tls.port}/hooks/")
    assert template["trigger"]["protocols"] == ["https"]
    response = httpx.post(url, json={"Envs": [{"name": "via", "value": "tls"}]}, verify=trusting)
    assert response.status_code == 202, response.text
    task = tls.wait_task(response.json()["id"])
    assert task["status"] == "succeeded"
    (instance,) = tls.instances(task["id"])
    saved = json.loads(tls.log(instance["id"]))
    assert saved["method"] == "POST"
    assert json.loads(saved["body"]) == {"Envs": [{"name": "via", "value": "tls"}]}


def test_filters_still_apply_over_tls(tls: JobyardServer, trusting: ssl.SSLContext) -> None:
    spec = script_template(
        "tls-ip",
        "true",
        trigger={
            "type": "http",
            "protocols": ["https"],
            "security": {"mode": "ip", "ips": ["127.0.0.2"]},
        },
    )
    url = tls.create_template(spec)["trigger"]["url"]
    for address, status in (("127.0.0.2", 202), ("127.0.0.3", 403)):
        transport = httpx.HTTPTransport(local_address=address, verify=trusting)
        with httpx.Client(transport=transport, timeout=30) as client:
            assert client.post(url).status_code == status, address
    events = tls.events(reason="TriggerRejected", template="tls-ip")
    assert len(events) == 1
    assert "127.0.0.3" in events[0]["message"]


def _server_refuses(tmp_path: Path, *args: str) -> str:
    command = [
        sys.executable, "-m", "jobyard", "server",
        "--port", str(free_port()), "--data-dir", str(tmp_path), *args,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    return done.stdout + done.stderr


def test_a_cert_without_a_key_is_refused(tmp_path: Path, cert_files: tuple[Path, Path]) -> None:
    cert, _ = cert_files
    assert "--tls-key" in _server_refuses(tmp_path, "--tls-cert", str(cert))


def test_a_missing_cert_file_is_refused(tmp_path: Path, cert_files: tuple[Path, Path]) -> None:
    _, key = cert_files
    missing = tmp_path / "missing.pem"
    output = _server_refuses(tmp_path, "--tls-cert", str(missing), "--tls-key", str(key))
    assert "missing.pem" in output
