"""Receive one file from a multipart/form-data body, streamed into a sink as it arrives.

Starlette's ``request.form()`` would first copy the whole file into a temporary
file of its own; here the data goes straight into the sink (the package
service's ``Upload``, which hashes, counts and enforces the size limit), so an
upload is written once and never held whole in memory.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from jobyard.errors import BadRequest

if TYPE_CHECKING:  # a typing-only name there
    from python_multipart.multipart import MultipartCallbacks

MAX_HEADER_BYTES = 8192
# After a refusal, this much more of the body is read and dropped so that the
# client gets the answer rather than a reset connection; past it, the server
# answers at once (and the client may see the connection closed instead).
DRAIN_LIMIT = 64 * 1024 * 1024


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...

    def discard(self) -> None: ...


@dataclass
class _Parts:
    """What the parser has seen: the headers of the current part, the file's data."""

    wanted: str
    header_name: bytes = b""
    header_value: bytes = b""
    disposition: bytes = b""
    in_file: bool = False
    filename: str | None = None
    pending: list[bytes] = field(default_factory=list)

    def on_part_begin(self) -> None:
        self.disposition, self.in_file = b"", False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]
        if len(self.header_value) > MAX_HEADER_BYTES:
            raise BadRequest("a part header of the upload is too long")

    def on_header_end(self) -> None:
        if self.header_name.strip().lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        is_file = b"filename" in options
        self.in_file = is_file and name == self.wanted and self.filename is None
        if self.in_file:
            self.filename = options[b"filename"].decode("utf-8", "replace")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_file:
            self.pending.append(data[start:end])

    def on_part_end(self) -> None:
        self.in_file = False

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }


def _boundary(request: Request, field_name: str) -> bytes:
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise BadRequest(
            f"send the file as multipart/form-data in a field named '{field_name}' "
            f"(curl -F {field_name}=@FILE ...)"
        )
    return boundary


async def receive_file(request: Request, field_name: str, sink: Sink) -> str:
    """Write the file sent as ``field_name`` into ``sink``; return its file name.

    On any error the sink is discarded and up to DRAIN_LIMIT more bytes of the
    body are read and dropped before the error is raised.
    """
    parts = _Parts(field_name)
    stream = request.stream()
    try:
        parser = MultipartParser(_boundary(request, field_name), parts.callbacks())
        async for chunk in stream:
            parser.write(chunk)
            if parts.pending:
                data, parts.pending = b"".join(parts.pending), []
                await run_in_threadpool(sink.write, data)
        parser.finalize()
    except Exception as exc:
        await run_in_threadpool(sink.discard)
        await _drain(request)
        if isinstance(exc, FormParserError):
            raise BadRequest("the upload is not valid multipart/form-data") from exc
        raise
    if parts.filename is None:
        await run_in_threadpool(sink.discard)
        raise BadRequest(
            f"the upload has no file in a field named '{field_name}' (curl -F {field_name}=@FILE)"
        )
    return parts.filename


async def _drain(request: Request) -> None:
    dropped = 0
    with contextlib.suppress(Exception):
        async for chunk in request.stream():
            dropped += len(chunk)
            if dropped > DRAIN_LIMIT:
                return
