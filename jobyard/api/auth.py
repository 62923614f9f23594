"""Who may call what: bearer API tokens, roles, namespace scope.

On loopback with no tokens created (and no bootstrap token), everything is
open for local development. Otherwise every management call needs a token:
viewer reads; operator also runs, stops, suspends and resumes; admin does
everything else. A namespace-scoped token sees only its namespace.
"""

from __future__ import annotations

from fastapi import Request

from jobyard.api.deps import get_engine
from jobyard.engine.tokens import OPEN_ACCESS, Principal, Role
from jobyard.errors import Forbidden, NotFound, Unauthorized

OPERATOR_ACTIONS = ("/run", "/stop", "/suspend", "/resume")
SESSION_COOKIE = "jobyard_token"


def role_needed(method: str, path: str) -> Role:
    if path.startswith("/pop/"):
        return Role.VIEWER if path.lower().endswith("/describejobstatus") else Role.OPERATOR
    if path.startswith("/api/v1/tokens"):
        return Role.ADMIN
    if method in ("GET", "HEAD", "OPTIONS"):
        return Role.VIEWER
    if method == "POST" and path.rstrip("/").endswith(OPERATOR_ACTIONS):
        return Role.OPERATOR
    return Role.ADMIN


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(SESSION_COOKIE)


def principal_of(request: Request) -> Principal:
    """The caller, or Unauthorized; open access on loopback without tokens."""
    engine = get_engine(request)
    if engine.settings.on_loopback and not engine.tokens.any_tokens():
        return OPEN_ACCESS
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("this server needs an API token: send 'Authorization: Bearer <token>'")
    principal = engine.tokens.authenticate(token)
    if principal is None:
        raise Unauthorized("the API token is not valid (unknown or revoked)")
    return principal


def authorize(request: Request) -> None:
    """Router dependency: check role and namespace scope, remember the caller."""
    principal = principal_of(request)
    needed = role_needed(request.method, request.url.path)
    if principal.role < needed:
        raise Forbidden(
            f"token {principal.name!r} has role {principal.role.name.lower()}; "
            f"this needs {needed.name.lower()}"
        )
    if request.url.path.startswith("/api/v1/tokens") and principal.namespace is not None:
        raise Forbidden("managing tokens needs an admin token without a namespace scope")
    request.state.principal = principal
    namespace = request.path_params.get("namespace")
    if namespace is not None:
        check_namespace(request, namespace)


def scope_of(request: Request) -> str | None:
    """The namespace the caller is limited to, or None."""
    principal: Principal = getattr(request.state, "principal", OPEN_ACCESS)
    return principal.namespace


def check_namespace(request: Request, namespace: str) -> None:
    """Things outside a scoped token's namespace do not exist, as far as it knows."""
    scope = scope_of(request)
    if scope is not None and scope != namespace:
        raise NotFound(f"namespace {namespace!r} does not exist")
