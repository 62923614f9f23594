"""End-to-end: API tokens, roles, namespace scope and open mode on loopback.

A loopback server with no tokens is open; once a token exists (or the server
listens beyond loopback) every management call needs one. viewer reads;
operator also runs, stops, suspends and resumes; admin does everything.
Hook URLs are authorised by their own token and filters, never by API tokens.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.support import JobyardServer, script_template, start_server, stop_server

BOOTSTRAP = "jy_e2e_bootstrap_" + uuid.uuid4().hex
GUARDED_PATHS = [
    "/api/v1/templates",
    "/api/v1/namespaces",
    "/api/v1/info",
    "/docs",
    "/openapi.json",
]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_token(
    server: JobyardServer, name: str, role: str, namespace: str | None = None, **kwargs: Any
) -> str:
    body = {"name": name, "role": role, "namespace": namespace}
    created = server.api("POST", "/tokens", expect=201, json=body, **kwargs)
    assert created["name"] == name
    assert created["role"] == role
    token = created["token"]
    assert isinstance(token, str)
    return token


def http_spec(name: str, script: str = "sleep 30") -> dict[str, Any]:
    return script_template(
        name, script, trigger={"type": "http"}, termination_grace_period=1, retries=0
    )


# -- open mode, and what the first token changes (both databases) --------------------------


def test_loopback_without_tokens_is_open_until_the_first_token(server: JobyardServer) -> None:
    for path in GUARDED_PATHS:
        assert server.client.get(path).status_code == 200, path
    assert "open" in server.api("GET", "/info", expect=200)["auth"]
    token = new_token(server, "first-admin", "admin")
    assert token not in server.log_path.read_text()
    for path in GUARDED_PATHS:
        refused = server.client.get(path)
        assert refused.status_code == 401, path
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "token" in refused.json()["message"]
        assert server.client.get(path, headers=bearer(token)).status_code == 200, path
    wrong = server.client.get("/api/v1/templates", headers=bearer(token + "x"))
    assert wrong.status_code == 401
    assert "not valid" in wrong.json()["message"]
    basic = server.client.get("/api/v1/templates", headers={"Authorization": f"Basic {token}"})
    assert basic.status_code == 401
    assert server.client.get("/healthz").status_code == 200


def _stored_text(server: JobyardServer) -> str:
    """Everything the database holds, as text, to look for a clear token in."""
    if server.database_url.startswith("sqlite"):
        db = Path(server.database_url.removeprefix("sqlite:///"))
        files = [db, *db.parent.glob(db.name + "-*")]  # the WAL holds recent pages
        return "".join(path.read_bytes().decode("latin-1") for path in files if path.exists())
    chunks = []
    with psycopg.connect(server.database_url) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
        for (table,) in tables:
            rows = conn.execute(f'SELECT t::text FROM "{table}" t').fetchall()
            chunks.extend(row[0] for row in rows)
    return "\n".join(chunks)


def _token_rows(server: JobyardServer) -> list[tuple[Any, ...]]:
    query = "SELECT name, token_hash FROM api_tokens ORDER BY name"
    if server.database_url.startswith("sqlite"):
        import sqlite3

        path = server.database_url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            return list(conn.execute(query).fetchall())
    with psycopg.connect(server.database_url) as conn:
        return list(conn.execute(query).fetchall())


def test_tokens_are_stored_as_digests_and_never_shown_again(server: JobyardServer) -> None:
    admin = new_token(server, "admin", "admin")
    server.client.headers.update(bearer(admin))
    viewer = new_token(server, "viewer", "viewer")
    assert admin.startswith("jy_")
    assert len(admin) >= 32
    assert admin != viewer
    # Use them, so that last_used_at is written too.
    assert server.client.get("/api/v1/templates", headers=bearer(viewer)).status_code == 200
    listed = server.client.get("/api/v1/tokens")
    assert listed.status_code == 200
    assert admin not in listed.text and viewer not in listed.text
    rows = {row["name"]: row for row in listed.json()}
    assert set(rows) == {"admin", "viewer"}
    for row in rows.values():
        assert "token" not in row
        assert "token_hash" not in row
    assert rows["viewer"]["role"] == "viewer"
    assert rows["viewer"]["namespace"] is None
    assert rows["viewer"]["last_used_at"] is not None
    stored = _stored_text(server)
    assert "api_tokens" in stored or server.database_url.startswith("postgresql")
    for clear in (admin, viewer):
        assert clear not in stored
    digests = {name: digest for name, digest in _token_rows(server)}
    assert set(digests) == {"admin", "viewer"}
    assert admin not in digests.values()
    assert digests["admin"] != digests["viewer"]
    # Only a one-way digest: here SHA-256 of the token.
    assert digests["admin"] == hashlib.sha256(admin.encode()).hexdigest()
    assert admin not in server.log_path.read_text()


def test_a_revoked_token_is_refused(server: JobyardServer) -> None:
    admin = new_token(server, "admin", "admin")
    server.client.headers.update(bearer(admin))
    operator = new_token(server, "ops", "operator")
    assert server.client.get("/api/v1/templates", headers=bearer(operator)).status_code == 200
    assert server.client.delete("/api/v1/tokens/ops").status_code == 204
    refused = server.client.get("/api/v1/templates", headers=bearer(operator))
    assert refused.status_code == 401
    assert [t["name"] for t in server.api("GET", "/tokens", expect=200)] == ["admin"]
    assert server.client.delete("/api/v1/tokens/ops").status_code == 404
    assert server.client.get("/api/v1/templates").status_code == 200


def test_token_requests_are_checked(server: JobyardServer) -> None:
    admin = new_token(server, "admin", "admin")
    server.client.headers.update(bearer(admin))
    bad_role = server.api("POST", "/tokens", json={"name": "x", "role": "root"})
    assert "role" in bad_role["message"]
    duplicate = server.client.post("/api/v1/tokens", json={"name": "admin", "role": "viewer"})
    assert duplicate.status_code == 409
    unknown_namespace = server.client.post(
        "/api/v1/tokens", json={"name": "nowhere", "role": "viewer", "namespace": "nope"}
    )
    assert unknown_namespace.status_code == 404
    bad_name = server.client.post("/api/v1/tokens", json={"name": "Bad Name", "role": "viewer"})
    assert bad_name.status_code == 422
    assert [t["name"] for t in server.api("GET", "/tokens", expect=200)] == ["admin"]


# -- roles (one SQLite server with tokens) -------------------------------------------------


class Team:
    """A locked server and a client per token."""

    def __init__(self, server: JobyardServer) -> None:
        self.server = server
        self.admin_token = new_token(server, "admin", "admin")
        server.client.headers.update(bearer(self.admin_token))
        server.api("POST", "/namespaces", expect=201, json={"name": "team-a"})
        server.api("POST", "/namespaces", expect=201, json={"name": "team-b"})
        self.tokens = {
            "admin": self.admin_token,
            "operator": new_token(server, "operator", "operator"),
            "viewer": new_token(server, "viewer", "viewer"),
            "a-operator": new_token(server, "a-operator", "operator", "team-a"),
            "a-admin": new_token(server, "a-admin", "admin", "team-a"),
        }
        self.clients = {
            name: httpx.Client(base_url=server.url, headers=bearer(token), timeout=30)
            for name, token in self.tokens.items()
        }
        self.anonymous = httpx.Client(base_url=server.url, timeout=30)

    def close(self) -> None:
        for client in [*self.clients.values(), self.anonymous]:
            client.close()

    def template(self, namespace: str = "default", script: str = "sleep 30") -> dict[str, Any]:
        name = f"t-{uuid.uuid4().hex[:8]}"
        created = self.server.create_template(http_spec(name, script), namespace=namespace)
        assert isinstance(created, dict)
        return created


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    jobyard = start_server(tmp_path_factory.mktemp("auth"))
    made = Team(jobyard)
    yield made
    made.close()
    stop_server(jobyard)


def calls(template: dict[str, Any], task_id: int) -> dict[str, tuple[str, str, Any]]:
    """Every management call, by what it does: (method, path, json body)."""
    path = f"/api/v1/namespaces/{template['namespace']}/templates/{template['name']}"
    spec = {**template["spec"], "description": "edited"}
    return {
        "list": ("GET", "/api/v1/templates", None),
        "get": ("GET", path, None),
        "versions": ("GET", path + "/versions", None),
        "tasks": ("GET", path + "/tasks", None),
        "task": ("GET", f"/api/v1/tasks/{task_id}", None),
        "instances": ("GET", f"/api/v1/tasks/{task_id}/instances", None),
        "events": ("GET", "/api/v1/events", None),
        "info": ("GET", "/api/v1/info", None),
        "docs": ("GET", "/docs", None),
        "openapi": ("GET", "/openapi.json", None),
        "run": ("POST", path + "/run", None),
        "stop": ("POST", path + "/stop", None),
        "stop-task": ("POST", f"/api/v1/tasks/{task_id}/stop", None),
        "suspend": ("POST", path + "/suspend", None),
        "resume": ("POST", path + "/resume", None),
        "edit": ("PUT", path, spec),
        "rollback": ("POST", path + "/rollback", {"version": 1}),
        "rotate": ("POST", path + "/trigger/rotate", None),
        "create": ("POST", path.rsplit("/", 1)[0], {**spec, "name": f"n-{uuid.uuid4().hex[:8]}"}),
        "namespace": ("POST", "/api/v1/namespaces", {"name": f"ns-{uuid.uuid4().hex[:8]}"}),
        "list-tokens": ("GET", "/api/v1/tokens", None),
        "new-token": (
            "POST",
            "/api/v1/tokens",
            {"name": f"k-{uuid.uuid4().hex[:6]}", "role": "viewer"},
        ),
        "delete-task": ("DELETE", f"/api/v1/tasks/{task_id}", None),
        "delete": ("DELETE", path, None),
    }


READS = {
    "list",
    "get",
    "versions",
    "tasks",
    "task",
    "instances",
    "events",
    "info",
    "docs",
    "openapi",
}
OPERATES = {"run", "stop", "stop-task", "suspend", "resume"}
ADMINISTERS = {
    "edit",
    "rollback",
    "rotate",
    "create",
    "namespace",
    "list-tokens",
    "new-token",
    "delete-task",
    "delete",
}


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("viewer", READS),
        ("operator", READS | OPERATES),
        ("admin", READS | OPERATES | ADMINISTERS),
    ],
)
def test_what_each_role_may_do(team: Team, role: str, allowed: set[str]) -> None:
    template = team.template()
    task = team.server.run(template["name"])
    client = team.clients[role]
    for action, (method, path, body) in calls(template, task["id"]).items():
        response = client.request(method, path, json=body)
        if action in allowed:
            assert response.status_code < 300, (role, action, response.text)
        else:
            assert response.status_code == 403, (role, action, response.text)
            message = response.json()["message"]
            assert role in message, message
    if role != "admin":
        # What was refused left no trace: still there, version 1, one task.
        path = f"/namespaces/default/templates/{template['name']}"
        shown = team.server.api("GET", path, expect=200)
        assert shown["version"] == 1
        assert shown["trigger"]["url"] == template["trigger"]["url"]
        runs = team.server.api("GET", path + "/tasks", expect=200)
        assert len(runs) == (1 if role == "viewer" else 2)
    team.server.api("POST", f"/tasks/{task['id']}/stop")


def test_anonymous_calls_are_401(team: Team) -> None:
    template = team.template()
    for action, (method, path, body) in calls(template, 1).items():
        response = team.anonymous.request(method, path, json=body)
        assert response.status_code == 401, (action, response.text)
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("role", "exec_status"), [("viewer", 403), ("operator", 200), ("admin", 200)]
)
def test_roles_on_the_sae_endpoints(team: Team, role: str, exec_status: int) -> None:
    template = team.template(script="true")
    client = team.clients[role]
    execute = client.get("/pop/v1/sam/job/execJob", params={"AppId": template["id"]})
    assert execute.status_code == exec_status, execute.text
    suspend = client.get(
        "/pop/v1/sam/job/suspendJob", params={"AppId": template["id"], "Suspend": "false"}
    )
    assert suspend.status_code == exec_status, suspend.text
    if exec_status == 403:
        assert execute.json()["Success"] is False
        assert execute.json()["Code"] == "Forbidden"
        job = team.server.run(template["name"])["id"]
    else:
        job = execute.json()["Data"]["Data"]
    status = client.get(
        "/pop/v1/sam/job/describeJobStatus", params={"AppId": template["id"], "JobId": job}
    )
    assert status.status_code == 200, status.text
    anonymous = team.anonymous.get("/pop/v1/sam/job/execJob", params={"AppId": template["id"]})
    assert anonymous.status_code == 401
    assert anonymous.json()["Code"] == "Unauthorized"


def test_hooks_need_no_api_token(team: Team) -> None:
    template = team.template(script="true")
    url = template["trigger"]["url"]
    assert httpx.post(url).status_code == 202
    # An API token, even a bad one, neither helps nor hurts a hook.
    assert httpx.post(url, headers=bearer("not-a-token")).status_code == 202
    assert httpx.post(url, headers=bearer(team.tokens["viewer"])).status_code == 202


# -- namespace scope -----------------------------------------------------------------------


def test_a_scoped_token_works_in_its_namespace(team: Team) -> None:
    template = team.template("team-a", script="true")
    client = team.clients["a-operator"]
    path = f"/api/v1/namespaces/team-a/templates/{template['name']}"
    assert client.get(path).status_code == 200
    assert client.get("/api/v1/namespaces/team-a/templates").status_code == 200
    run = client.post(path + "/run")
    assert run.status_code == 201, run.text
    assert client.get(f"/api/v1/tasks/{run.json()['id']}").status_code == 200
    execute = client.get("/pop/v1/sam/job/execJob", params={"AppId": template["id"]})
    assert execute.status_code == 200, execute.text
    # A scoped admin edits its own namespace.
    admin = team.clients["a-admin"]
    created = admin.post("/api/v1/namespaces/team-a/templates", json=http_spec("by-a-admin"))
    assert created.status_code == 201, created.text
    assert admin.delete("/api/v1/namespaces/team-a/templates/by-a-admin").status_code == 204


def test_other_namespaces_do_not_exist_for_a_scoped_token(team: Team) -> None:
    other = team.template("team-b", script="true")
    client = team.clients["a-operator"]
    admin = team.clients["a-admin"]
    path = f"/api/v1/namespaces/team-b/templates/{other['name']}"
    for response in (
        client.get(path),
        client.get("/api/v1/namespaces/team-b/templates"),
        client.get(path + "/tasks"),
        client.post(path + "/run"),
        client.post(path + "/suspend"),
        admin.put(path, json=other["spec"]),
        admin.delete(path),
        admin.post("/api/v1/namespaces/team-b/templates", json=http_spec("sneaky")),
        admin.delete("/api/v1/namespaces/team-b"),
    ):
        assert response.status_code == 404, (response.request.url, response.text)
        assert "team-b" in response.json()["message"]
    execute = client.get("/pop/v1/sam/job/execJob", params={"AppId": other["id"]})
    assert execute.status_code == 404
    assert execute.json()["Code"] == "NotFound"
    suspend = client.get(
        "/pop/v1/sam/job/suspendJob", params={"AppId": other["id"], "Suspend": "true"}
    )
    assert suspend.status_code == 404
    default = team.template("default", script="true")
    assert client.get(f"/api/v1/namespaces/default/templates/{default['name']}").status_code == 404
    # Nothing happened over there.
    assert team.server.api("GET", f"/namespaces/team-b/templates/{other['name']}/tasks") == []
    assert (
        team.server.api("GET", f"/namespaces/team-b/templates/{other['name']}")["suspended"]
        is False
    )


def test_a_scoped_admin_cannot_manage_tokens(team: Team) -> None:
    admin = team.clients["a-admin"]
    assert admin.get("/api/v1/tokens").status_code == 403
    created = admin.post("/api/v1/tokens", json={"name": "escalate", "role": "admin"})
    assert created.status_code == 403


def test_a_scoped_token_lists_only_its_namespace(team: Team) -> None:
    mine = team.template("team-a", script="true")
    team.template("team-b", script="true")
    client = team.clients["a-operator"]
    templates = client.get("/api/v1/templates").json()
    assert {t["namespace"] for t in templates} == {"team-a"}
    assert mine["name"] in {t["name"] for t in templates}
    namespaces = client.get("/api/v1/namespaces").json()
    assert [n["name"] for n in namespaces] == ["team-a"]


def test_a_scoped_token_cannot_reach_other_namespaces_tasks(team: Team) -> None:
    other = team.template("team-b", script="echo secret-of-team-b")
    task = team.server.run(other["name"], namespace="team-b")
    team.server.wait_task(task["id"])
    (instance,) = team.server.instances(task["id"])
    client = team.clients["a-operator"]
    for response in (
        client.get(f"/api/v1/tasks/{task['id']}"),
        client.get(f"/api/v1/tasks/{task['id']}/instances"),
        client.get(f"/api/v1/instances/{instance['id']}"),
        client.get(f"/api/v1/instances/{instance['id']}/logs"),
        client.post(f"/api/v1/tasks/{task['id']}/stop"),
    ):
        assert response.status_code == 404, (response.request.url, response.text)
    events = client.get("/api/v1/events", params={"namespace": "team-b"})
    assert events.status_code == 404 or events.json() == []
    assert all(e["namespace"] in (None, "team-a") for e in client.get("/api/v1/events").json())


# -- beyond loopback, and the bootstrap token ----------------------------------------------


def test_a_server_on_all_interfaces_needs_a_token_even_without_tokens(
    tmp_path: Path,
) -> None:
    jobyard = start_server(
        tmp_path, extra_args=["--host", "0.0.0.0"], env={"JOBYARD_ADMIN_TOKEN": BOOTSTRAP}
    )
    try:
        for path in GUARDED_PATHS:
            assert jobyard.client.get(path).status_code == 401, path
        assert jobyard.client.get("/healthz").status_code == 200
        jobyard.client.headers.update(bearer(BOOTSTRAP))
        assert jobyard.api("GET", "/tokens", expect=200) == []
        for path in GUARDED_PATHS:
            assert jobyard.client.get(path).status_code == 200, path
        viewer = new_token(jobyard, "viewer", "viewer")
        viewing = httpx.get(jobyard.url + "/api/v1/templates", headers=bearer(viewer))
        assert viewing.status_code == 200
        template = jobyard.create_template(http_spec("open-hook", "true"))
        assert httpx.post(template["trigger"]["url"]).status_code == 202
    finally:
        stop_server(jobyard)


def test_without_a_bootstrap_token_nothing_gets_in_beyond_loopback(tmp_path: Path) -> None:
    jobyard = start_server(tmp_path, extra_args=["--host", "0.0.0.0"])
    try:
        assert jobyard.client.get("/api/v1/templates").status_code == 401
        guessed = jobyard.client.get("/api/v1/templates", headers=bearer("jy_" + "a" * 43))
        assert guessed.status_code == 401
    finally:
        stop_server(jobyard)


def test_a_bootstrap_token_closes_a_loopback_server(tmp_path: Path) -> None:
    jobyard = start_server(tmp_path, env={"JOBYARD_ADMIN_TOKEN": BOOTSTRAP})
    try:
        assert jobyard.client.get("/api/v1/templates").status_code == 401
        ok = jobyard.client.get("/api/v1/templates", headers=bearer(BOOTSTRAP))
        assert ok.status_code == 200
    finally:
        stop_server(jobyard)
