"""Pure rules of HTTP triggers: who may trigger, and what a request may carry.

No I/O: the API hands in the request's parts, these functions decide.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from jobyard.errors import BadRequest
from jobyard.spec import HttpTrigger, RunOverrides

MAX_EVENT_ID = 128
HIDDEN_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class TriggerBody:
    overrides: RunOverrides
    event_id: str | None
    command: list[str] | None


def _parse_ip(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def in_networks(address: str, networks: Sequence[str]) -> bool:
    """Whether ``address`` is one of the addresses or CIDR blocks."""
    parsed = _parse_ip(address)
    if parsed is None:
        return False
    return any(parsed in ipaddress.ip_network(net, strict=False) for net in networks)


def client_address(peer: str, headers: Mapping[str, str], trusted_proxies: Sequence[str]) -> str:
    """The caller: the socket peer, or what a trusted proxy says it forwarded."""
    if not trusted_proxies or not in_networks(peer, trusted_proxies):
        return peer
    forwarded = headers.get("x-forwarded-for", "")
    # Walk from the nearest hop back; the first untrusted address is the client.
    for hop in reversed([part.strip() for part in forwarded.split(",") if part.strip()]):
        if _parse_ip(hop) is None:
            break
        if not in_networks(hop, trusted_proxies):
            return hop
    real_ip = headers.get("x-real-ip", "").strip()
    return real_ip if _parse_ip(real_ip) is not None else peer


def request_scheme(
    tls: bool, peer: str, headers: Mapping[str, str], trusted_proxies: Sequence[str]
) -> str:
    if tls:
        return "https"
    if trusted_proxies and in_networks(peer, trusted_proxies):
        proto = headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
        if proto in ("http", "https"):
            return proto
    return "http"


def referer_host(headers: Mapping[str, str]) -> str | None:
    for name in ("referer", "origin"):
        value = headers.get(name)
        if value:
            host = urlsplit(value).hostname
            if host:
                return host.lower().rstrip(".")
    return None


def domain_allowed(host: str, patterns: Sequence[str]) -> bool:
    """Exact domains, or ``*.example.com`` for any subdomain of example.com."""
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def rejection(
    trigger: HttpTrigger, method: str, scheme: str, client: str, headers: Mapping[str, str]
) -> tuple[int, str] | None:
    """(HTTP status, cause) when the request may not trigger; None when it may."""
    if method.upper() not in trigger.methods:
        return (
            405,
            f"method {method.upper()} is not allowed (allowed: {', '.join(trigger.methods)})",
        )
    if scheme not in trigger.protocols:
        return 403, f"{scheme.upper()} is not allowed (allowed: {', '.join(trigger.protocols)})"
    security = trigger.security
    if security.mode == "ip" and not in_networks(client, security.ips):
        return 403, f"client address {client} is not in the allowed IP ranges"
    if security.mode == "referer":
        host = referer_host(headers)
        if host is None:
            return 403, "the request has no Referer or Origin, and the trigger requires one"
        if not domain_allowed(host, security.referers):
            return 403, f"referring domain {host} is not an allowed domain"
    return None


def parse_body(body: bytes, content_type: str) -> TriggerBody:
    """Overrides from an SAE ExecJob-style or REST-style JSON body."""
    data = _json_object(body, content_type)
    if data is None:
        return TriggerBody(RunOverrides(), None, None)
    envs = _pick(data, "Envs", "envs")
    replicas = _pick(data, "Replicas", "replicas")
    overrides = parse_overrides(envs, replicas)
    event_id = event_id_of(_pick(data, "EventId", "eventId", "event_id"))
    command = parse_command(_pick(data, "Command", "command"), _pick(data, "CommandArgs"))
    return TriggerBody(overrides, event_id, command)


def _json_object(body: bytes, content_type: str) -> dict[str, Any] | None:
    text = body.strip()
    if not text:
        return None
    is_json = "json" in content_type.lower() or text[:1] in (b"{", b"[")
    if not is_json:
        return None  # an opaque body: saved with the task, nothing to override
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as err:
        raise BadRequest(f"the body is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise BadRequest('the JSON body must be an object, like {"Envs": [...]}')
    return data


def _pick(data: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in data:
            return data[key]
    return None


def parse_overrides(envs: Any, replicas: Any) -> RunOverrides:
    """Envs as a list or its JSON text; Replicas as a number or numeric text."""
    if isinstance(envs, str):
        try:
            envs = json.loads(envs) if envs.strip() else []
        except ValueError:
            raise BadRequest("Envs is not a JSON list of {name, value}") from None
    if isinstance(replicas, bool):
        raise BadRequest("Replicas must be a whole number from 1 to 100")
    if isinstance(replicas, str):
        if not replicas.strip().isdigit():
            raise BadRequest(f"Replicas must be a whole number from 1 to 100, not {replicas!r}")
        replicas = int(replicas)
    raw: dict[str, Any] = {"envs": envs if envs is not None else []}
    if replicas is not None:
        raw["replicas"] = replicas
    try:
        return RunOverrides.model_validate(raw)
    except ValidationError as err:
        raise BadRequest(_first_problem(err)) from None


def _first_problem(err: ValidationError) -> str:
    problem = err.errors()[0]
    where = ".".join(str(part) for part in problem["loc"]) or "body"
    names = {"envs": "Envs", "replicas": "Replicas"}
    head, _, rest = where.partition(".")
    where = names.get(head, head) + (f"[{rest.replace('.', '].', 1)}" if rest else "")
    return f"{where}: {problem['msg'].removeprefix('Value error, ')}"


def event_id_of(value: Any) -> str | None:
    """An idempotency key: a short string or number, or None."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadRequest("EventId must be a string")
    text = str(value)
    if len(text) > MAX_EVENT_ID:
        raise BadRequest(f"EventId is longer than {MAX_EVENT_ID} characters")
    return text


def parse_command(command: Any, args: Any) -> list[str] | None:
    """SAE's Command (a program) and CommandArgs (a JSON list of its arguments)."""
    if command in (None, ""):
        return None
    if not isinstance(command, str):
        raise BadRequest("Command must be a string")
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else []
        except ValueError:
            raise BadRequest("CommandArgs must be a JSON list of strings") from None
    args = args or []
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        raise BadRequest("CommandArgs must be a JSON list of strings")
    return [command, *args]


def saved_request(
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
    client: str,
) -> dict[str, Any]:
    """The request as instances see it (JOBYARD_PAYLOAD_FILE), secrets left out."""
    shown = {k: v for k, v in headers.items() if k.lower() not in HIDDEN_HEADERS}
    try:
        text: str | None = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    saved: dict[str, Any] = {
        "method": method,
        "path": path,
        "query": query,
        "headers": shown,
        "client": client,
        "body": text,
    }
    if text is None:
        saved["body_base64"] = base64.b64encode(body).decode()
    return saved
