"""``jobyard token create|list|revoke``: API tokens and their roles."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from jobyard.cli.client import segment
from jobyard.cli.output import local_time, note, show, table
from jobyard.cli.session import Output, Session


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"


def create(
    session: Session,
    name: Annotated[str, typer.Option("--name", help="what the token is for", show_default=False)],
    role: Annotated[Role, typer.Option("--role", help="admin, operator or viewer")],
) -> None:
    """Create a token and print it (it is shown only this once).

    The token is limited to a namespace only when --namespace/-n is given on the
    command line; otherwise it works in every namespace.
    """
    scope = session.namespace if session.namespace_from_command_line else None
    created = session.api.post("/tokens", {"name": name, "role": role.value, "namespace": scope})
    if session.output == Output.TABLE:
        where = f"namespace {scope}" if scope else "every namespace"
        note(f"token {name} ({role.value}, {where}) created; it is shown only this once:")
    show(session, created, lambda t: str(t["token"]))


def list_tokens(session: Session) -> None:
    """List tokens (never their secret)."""
    found = session.api.get("/tokens")
    if not found and session.output == Output.TABLE:
        note("no tokens")
        return
    show(session, found, _tokens_table)


def _tokens_table(found: list[Any]) -> str:
    rows = [
        (
            t["name"],
            t["role"],
            t.get("namespace") or "*",
            local_time(t.get("created_at")),
            local_time(t.get("last_used_at")),
        )
        for t in found
    ]
    return table(("NAME", "ROLE", "NAMESPACE", "CREATED", "LAST USED"), rows)


def revoke(
    session: Session,
    name: Annotated[str, typer.Argument(help="token name", show_default=False)],
) -> None:
    """Revoke a token: it stops working at once."""
    session.api.delete(f"/tokens/{segment(name)}")
    show(session, {"name": name, "revoked": True}, lambda r: f"token {r['name']} revoked")
