"""Who is using the console, what they may do, and the little state kept between pages.

The console obeys the API's rules: the same tokens (sent as the HttpOnly
``jobyard_token`` cookie that the sign-in page sets), the same roles, the same
namespace scope, and open access on loopback while no token exists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from jobyard import triggering
from jobyard.api.auth import SESSION_COOKIE, check_namespace, principal_of
from jobyard.api.deps import get_engine
from jobyard.engine.tokens import Principal, Role
from jobyard.errors import Forbidden

FLASH_COOKIE = "jobyard_flash"
SAFE_FETCH_SITES = ("same-origin", "none")


def principal(request: Request) -> Principal:
    """The signed-in caller (Unauthorized when a token is needed and missing)."""
    found = principal_of(request)
    request.state.principal = found
    return found


def current(request: Request) -> Principal | None:
    """The caller if ``principal`` already ran for this request."""
    found = getattr(request.state, "principal", None)
    return found if isinstance(found, Principal) else None


def require(request: Request, role: Role, doing: str) -> Principal:
    """The caller, or Forbidden with a message that says which role is missing."""
    who = principal(request)
    if who.role < role:
        raise Forbidden(
            f"You need the {role.name.lower()} role to {doing}; "
            f"you are signed in as {who.name!r} ({who.role.name.lower()})."
        )
    return who


def may(request: Request, role: str) -> bool:
    """For templates: may the caller do what needs ``role``?"""
    who = current(request)
    return who is not None and who.role >= Role[role.upper()]


def enter_namespace(request: Request, namespace: str) -> Principal:
    """The caller, after checking that ``namespace`` is visible to it."""
    who = principal(request)
    check_namespace(request, namespace)
    return who


def visible_namespaces(request: Request) -> list[str]:
    who = current(request)
    names = [n.name for n in get_engine(request).templates.list_namespaces()]
    if who is not None and who.namespace is not None:
        return [name for name in names if name == who.namespace]
    return names


def home_namespace(request: Request) -> str:
    who = current(request)
    return who.namespace if who is not None and who.namespace else "default"


def needs_sign_in(request: Request) -> bool:
    engine = get_engine(request)
    return not engine.settings.on_loopback or engine.tokens.any_tokens()


def is_https(request: Request) -> bool:
    settings = get_engine(request).settings
    peer = request.client.host if request.client else ""
    scheme = triggering.request_scheme(
        request.url.scheme == "https", peer, request.headers, settings.trusted_proxies
    )
    return scheme == "https"


def keep_token(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=is_https(request),
        path="/",
    )


def forget_token(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")


def same_origin(request: Request) -> bool:
    """Refuse form posts from other sites (a loopback server in open mode has
    no cookie to protect it); non-browser clients send neither header."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in SAFE_FETCH_SITES
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


def local_path(target: str | None, fallback: str = "/") -> str:
    """``target`` if it is a path on this server, else ``fallback`` (no open redirects)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return fallback
    return target


def sign_in_url(request: Request) -> str:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"/login?next={quote(here, safe='')}"


# -- flash: one message carried across a redirect ------------------------------------


@dataclass(frozen=True)
class Flash:
    text: str
    kind: str  # "ok" or "error"


def redirect(url: str, text: str | None = None, kind: str = "ok") -> RedirectResponse:
    """A 303 to ``url``, carrying ``text`` to be shown once on the next page."""
    response = RedirectResponse(url, status_code=303)
    if text:
        text = text[0].upper() + text[1:]
        value = quote(json.dumps({"text": text, "kind": kind}), safe="")
        response.set_cookie(FLASH_COOKIE, value, httponly=True, samesite="strict", path="/")
    return response


def take_flash(request: Request) -> Flash | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        data = json.loads(unquote(raw))
        return Flash(text=str(data["text"]), kind="error" if data["kind"] == "error" else "ok")
    except (ValueError, KeyError, TypeError):
        return None
