"""Sign in with an API token (kept in a secure, HttpOnly cookie), sign out, and ``/``."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import Form, Request
from fastapi.responses import RedirectResponse, Response

from jobyard.api.deps import EngineDep
from jobyard.web import session
from jobyard.web.rendering import render
from jobyard.web.routing import console_router

router = console_router()


@router.get("/")
def home(request: Request, namespace: str = "") -> Response:
    """The job templates of the namespace asked for (the switcher), or of the home one."""
    session.principal(request)
    target = namespace.strip() or session.home_namespace(request)
    return RedirectResponse(f"/namespaces/{quote(target, safe='')}/templates", 303)


@router.get("/login")
def sign_in_page(request: Request, next: str = "/") -> Response:
    if not session.needs_sign_in(request):
        return RedirectResponse(session.local_path(next), 303)
    return render(request, "login.html", {"next": session.local_path(next), "error": ""})


@router.post("/login")
def sign_in(
    request: Request,
    engine: EngineDep,
    token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    target = session.local_path(next)
    found = engine.tokens.authenticate(token.strip()) if token.strip() else None
    if found is None:
        error = "Enter an API token." if not token.strip() else "This token is not valid."
        context = {"next": target, "error": error}
        return render(request, "login.html", context, status_code=401)
    response = session.redirect(target, f"Signed in as {found.name} ({found.role.name.lower()}).")
    session.keep_token(request, response, token.strip())
    return response


@router.post("/logout")
def sign_out(request: Request) -> Response:
    response = session.redirect("/login", "Signed out.")
    session.forget_token(response)
    return response
