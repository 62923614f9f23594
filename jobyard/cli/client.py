"""The REST API over httpx, with every failure turned into one clear message."""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx

from jobyard.cli.config import Connection
from jobyard.cli.errors import ApiError, CliError, UsageProblem

API_PREFIX = "/api/v1"
TIMEOUT = httpx.Timeout(30.0, connect=10.0)
# A followed log may stay silent for as long as the instance prints nothing.
STREAM_TIMEOUT = httpx.Timeout(30.0, connect=10.0, read=None)
# The server checks an uploaded archive before it answers.
UPLOAD_TIMEOUT = httpx.Timeout(60.0, connect=10.0, read=600.0)


def segment(value: str | int) -> str:
    """One path segment, so that a name can never reach another route."""
    return quote(str(value), safe="")


class Api:
    """A small client: JSON in, JSON out, ``ApiError`` / ``CliError`` on failure."""

    def __init__(self, connection: Connection) -> None:
        self.url = connection.url
        headers = {"User-Agent": "jobyard-cli"}
        if connection.token:
            headers["Authorization"] = f"Bearer {connection.token}"
        self.has_token = bool(connection.token)
        self._http = httpx.Client(
            base_url=connection.url + API_PREFIX,
            headers=headers,
            timeout=TIMEOUT,
            verify=_verify(connection),
        )

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def request(
        self, method: str, path: str, params: dict[str, Any] | None = None, json: Any = None
    ) -> Any:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        with self._transport():
            response = self._http.request(method, path, params=clean, json=json)
        self._check(response)
        if response.status_code == 204 or not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def upload(self, path: str, field: str, filename: str, file: BinaryIO) -> Any:
        """POST ``file`` as multipart/form-data, streamed from disk (never read whole)."""
        files = {field: (filename, file, "application/octet-stream")}
        with self._transport():
            try:
                response = self._http.post(path, files=files, timeout=UPLOAD_TIMEOUT)
            except (httpx.WriteError, httpx.RemoteProtocolError):
                raise CliError(
                    f"the server closed the connection while {filename} was being uploaded "
                    "(is it larger than the server's package size limit?)"
                ) from None
        self._check(response)
        return response.json()

    def text(self, path: str) -> str:
        result = self.request("GET", path)
        return result if isinstance(result, str) else ""

    @contextmanager
    def stream_lines(self, path: str, **params: Any) -> Iterator[Iterator[str]]:
        """The response's lines as they arrive (the connection stays open)."""
        with (
            self._transport(),
            self._http.stream("GET", path, params=params, timeout=STREAM_TIMEOUT) as response,
        ):
            if response.is_error:
                response.read()
                self._check(response)
            yield response.iter_lines()

    @contextmanager
    def _transport(self) -> Iterator[None]:
        try:
            yield
        except httpx.TimeoutException:
            raise CliError(f"jobyard at {self.url} did not answer in time") from None
        except httpx.TransportError as err:
            raise CliError(f"cannot reach jobyard at {self.url} ({_reason(err)})") from None

    def _check(self, response: httpx.Response) -> None:
        if not response.is_error:
            return
        status = response.status_code
        code, message = _server_message(response)
        if status == 401 and self.has_token:
            message += " (the token was rejected: check --token or JOBYARD_TOKEN)"
        elif status == 401:
            message += " (a token is needed: pass --token or set JOBYARD_TOKEN)"
        elif status == 403:
            message += " (the token's role may not do this)"
        raise ApiError(message, status, code)


def _verify(connection: Connection) -> ssl.SSLContext | bool:
    if connection.insecure:
        return False
    if connection.ca_cert is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(connection.ca_cert))
    except FileNotFoundError:
        raise UsageProblem(f"CA certificate {connection.ca_cert} does not exist") from None
    except (OSError, ssl.SSLError) as err:
        raise UsageProblem(f"cannot use CA certificate {connection.ca_cert}: {err}") from None


def _server_message(response: httpx.Response) -> tuple[str | None, str]:
    """The API's ``message``; for framework answers, the detail and the route."""
    request = response.request
    route = f"HTTP {response.status_code} from {request.method} {request.url.path}"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        code = body.get("error")
        return (code if isinstance(code, str) else None), body["message"]
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str):
        return None, f"{detail} ({route})"
    text = " ".join(response.text.split())[:200]
    return None, f"{text or response.reason_phrase} ({route})"


def _reason(err: httpx.TransportError) -> str:
    text = str(err) or type(err).__name__
    text = re.sub(r"\s*\(_ssl\.c:\d+\)?", "", text)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        detail = text.split("certificate verify failed:")[-1].strip(" )]")
        return f"certificate verify failed: {detail}; use --ca-cert PATH or --insecure"
    return re.sub(r"\[Errno -?\d+\]\s*", "", text)
