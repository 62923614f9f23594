"""End-to-end: HTTP triggers (``/hooks/{token}``) on a real server over real sockets.

Client addresses are real: requests leave from 127.0.0.x (``local_address``) or
::1, so the IP filter, the trusted-proxy rules and the event messages see what
a deployed server would see. Most tests share one SQLite server; only EventId
idempotency under concurrency runs on both databases.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support import JobyardServer, script_template, start_server, stop_server, wait_for

ClientFrom = Callable[[str], httpx.Client]
ADMIN_TOKEN = "jy_e2e_bootstrap_" + uuid.uuid4().hex

# -- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def hooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobyardServer]:
    """The shared server: SQLite, loopback, 127.0.0.1 is a trusted proxy."""
    jobyard = start_server(
        tmp_path_factory.mktemp("hooks"), extra_args=["--trusted-proxies", "127.0.0.1"]
    )
    yield jobyard
    stop_server(jobyard)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobyardServer]:
    """A server with a 1000-byte body limit behind a public URL."""
    jobyard = start_server(
        tmp_path_factory.mktemp("limited"),
        extra_args=["--max-body-bytes", "1000", "--public-url", "https://jobs.example.com/"],
    )
    yield jobyard
    stop_server(jobyard)


@pytest.fixture
def client_from() -> Iterator[ClientFrom]:
    """HTTP clients whose requests leave from a given local address."""
    made: list[httpx.Client] = []

    def make(address: str) -> httpx.Client:
        client = httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def http_template(
    server: JobyardServer, prefix: str, script: str = "true", **extra: Any
) -> dict[str, Any]:
    """Create a template with an HTTP trigger (``extra['trigger']`` merged in)."""
    trigger = {"type": "http", "methods": ["POST"], **extra.pop("trigger", {})}
    created = server.create_template(
        script_template(unique(prefix), script, **extra, trigger=trigger)
    )
    assert isinstance(created, dict)
    return created


def hook_url(server: JobyardServer, template: dict[str, Any]) -> str:
    """The template's hook on this server (trigger.url may name a public host)."""
    return server.url + urlsplit(template["trigger"]["url"]).path


def tasks_of(server: JobyardServer, template: dict[str, Any]) -> list[Any]:
    tasks = server.api("GET", f"/namespaces/default/templates/{template['name']}/tasks", expect=200)
    assert isinstance(tasks, list)
    return tasks


def rejections(server: JobyardServer, template: dict[str, Any]) -> list[Any]:
    events = server.events(reason="TriggerRejected", template=template["name"])
    assert isinstance(events, list)
    return events


def assert_rejected(
    server: JobyardServer,
    template: dict[str, Any],
    response: httpx.Response,
    status: int,
    client: str,
    *cause: str,
) -> None:
    """The answer says why; no task; a warning event names the client and the cause."""
    assert response.status_code == status, response.text
    message = response.json()["message"]
    for needle in cause:
        assert needle in message
    assert tasks_of(server, template) == []
    events = [e for e in rejections(server, template) if message in e["message"]]
    assert events, rejections(server, template)
    assert events[0]["severity"] == "warning"
    assert events[0]["source_type"] == "trigger"
    assert client in events[0]["message"]


def logs_of(server: JobyardServer, task_id: int) -> list[str]:
    """Every instance's log of a finished task, by instance index."""
    task = server.wait_task(task_id)
    assert task["status"] == "succeeded", task
    instances = sorted(server.instances(task_id), key=lambda i: i["index"])
    return [server.log(instance["id"]) for instance in instances]


# -- the URL -------------------------------------------------------------------------------


def test_an_http_template_gets_an_unguessable_absolute_url(hooks: JobyardServer) -> None:
    first = http_template(hooks, "url", trigger={"methods": ["POST", "GET"]})
    second = http_template(hooks, "url")
    url = first["trigger"]["url"]
    assert url.startswith(hooks.url + "/hooks/")
    token = url.rsplit("/", 1)[1]
    assert len(token) >= 32
    assert second["trigger"]["url"] != url
    assert first["trigger"]["methods"] == ["POST", "GET"]
    assert first["trigger"]["protocols"] == ["http", "https"]
    shown = hooks.api("GET", f"/namespaces/default/templates/{first['name']}", expect=200)
    assert shown["trigger"]["url"] == url


def test_the_url_is_built_from_the_public_base_url(limited: JobyardServer) -> None:
    template = http_template(limited, "public")
    url = template["trigger"]["url"]
    assert url.startswith("https://jobs.example.com/hooks/")
    assert "//hooks" not in url
    response = httpx.post(hook_url(limited, template))
    assert response.status_code == 202, response.text


def test_a_cron_or_manual_template_has_no_url(hooks: JobyardServer) -> None:
    name = unique("manual")
    created = hooks.create_template(script_template(name, "true"))
    assert created["trigger"] is None


def test_an_allowed_request_starts_a_task_and_answers_202(hooks: JobyardServer) -> None:
    template = http_template(hooks, "ok", "echo started")
    response = httpx.post(template["trigger"]["url"])
    assert response.status_code == 202, response.text
    task = response.json()
    assert task["trigger"] == "http"
    assert task["template"] == template["name"]
    assert task["status"] in ("pending", "running")
    assert [t["id"] for t in tasks_of(hooks, template)] == [task["id"]]
    assert logs_of(hooks, task["id"]) == ["started\n"]


def test_a_caller_that_leaves_before_its_body_arrives_starts_nothing(
    hooks: JobyardServer,
) -> None:
    """Headers that promise a body, part of it, then the connection closes: no task,
    an info line in the server's log, and no traceback."""
    template = http_template(hooks, "gone", "true")
    url = urlsplit(hook_url(hooks, template))
    logged = hooks.log_path.stat().st_size
    head = (
        f"POST {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    with socket.create_connection((url.hostname, url.port)) as conn:
        conn.sendall(head.encode() + b'{"envs": [')
    wait_for(lambda: "left before" in _log_since(hooks, logged), timeout=10)
    assert "Traceback" not in _log_since(hooks, logged)
    assert tasks_of(hooks, template) == []
    assert httpx.post(hook_url(hooks, template)).status_code == 202  # the URL still works


def _log_since(server: JobyardServer, offset: int) -> str:
    with server.log_path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def test_an_unknown_url_is_404(hooks: JobyardServer) -> None:
    response = httpx.post(hooks.url + "/hooks/" + "x" * 43)
    assert response.status_code == 404


def test_rotating_the_url_retires_the_old_one(hooks: JobyardServer) -> None:
    template = http_template(hooks, "rotate")
    old = template["trigger"]["url"]
    assert httpx.post(old).status_code == 202
    path = f"/namespaces/default/templates/{template['name']}/trigger/rotate"
    rotated = hooks.api("POST", path, expect=200)
    new = rotated["trigger"]["url"]
    assert new != old
    assert new.startswith(hooks.url + "/hooks/")
    assert httpx.post(old).status_code == 404
    assert httpx.post(new).status_code == 202
    assert len(tasks_of(hooks, template)) == 2
    shown = hooks.api("GET", f"/namespaces/default/templates/{template['name']}", expect=200)
    assert shown["trigger"]["url"] == new


def test_rotating_a_template_without_http_trigger_is_409(hooks: JobyardServer) -> None:
    name = unique("no-hook")
    hooks.create_template(script_template(name, "true"))
    hooks.api("POST", f"/namespaces/default/templates/{name}/trigger/rotate", expect=409)


def test_editing_the_filters_keeps_the_url(hooks: JobyardServer) -> None:
    template = http_template(hooks, "edit")
    spec = {**template["spec"], "trigger": {"type": "http", "methods": ["PUT"]}}
    path = f"/namespaces/default/templates/{template['name']}"
    edited = hooks.api("PUT", path, expect=200, json=spec)
    assert edited["trigger"]["url"] == template["trigger"]["url"]
    assert httpx.post(template["trigger"]["url"]).status_code == 405
    assert httpx.put(template["trigger"]["url"]).status_code == 202


def test_a_deleted_template_url_is_404(hooks: JobyardServer) -> None:
    template = http_template(hooks, "deleted")
    hooks.api("DELETE", f"/namespaces/default/templates/{template['name']}", expect=204)
    assert httpx.post(template["trigger"]["url"]).status_code == 404


# -- methods and protocols -----------------------------------------------------------------


def test_a_method_not_allowed_is_405_with_allow(hooks: JobyardServer) -> None:
    template = http_template(hooks, "method", trigger={"methods": ["POST", "GET"]})
    response = httpx.put(template["trigger"]["url"], content=b"{}")
    assert response.headers["allow"] == "POST, GET"
    assert_rejected(hooks, template, response, 405, "127.0.0.1", "PUT", "POST, GET")
    assert httpx.get(template["trigger"]["url"]).status_code == 202


@pytest.mark.parametrize("method", ["OPTIONS", "TRACE"])
def test_an_unrouted_method_is_refused_like_any_other(hooks: JobyardServer, method: str) -> None:
    template = http_template(hooks, "unrouted")
    response = httpx.request(method, template["trigger"]["url"])
    assert response.headers.get("allow") == "POST"
    assert_rejected(hooks, template, response, 405, "127.0.0.1", method)


def test_an_https_only_trigger_refuses_plain_http(
    hooks: JobyardServer, client_from: ClientFrom
) -> None:
    template = http_template(hooks, "https-only", trigger={"protocols": ["https"]})
    response = client_from("127.0.0.3").post(template["trigger"]["url"])
    assert_rejected(hooks, template, response, 403, "127.0.0.3", "HTTP", "https")


def test_forwarded_proto_is_believed_only_from_a_trusted_proxy(
    hooks: JobyardServer, client_from: ClientFrom
) -> None:
    template = http_template(hooks, "fwd-proto", trigger={"protocols": ["https"]})
    url = template["trigger"]["url"]
    https = {"X-Forwarded-Proto": "https"}
    spoofed = client_from("127.0.0.3").post(url, headers=https)
    assert_rejected(hooks, template, spoofed, 403, "127.0.0.3", "HTTP")
    proxied = client_from("127.0.0.1").post(url, headers=https)
    assert proxied.status_code == 202, proxied.text
    plain = client_from("127.0.0.1").post(url, headers={"X-Forwarded-Proto": "http"})
    assert plain.status_code == 403


# -- the IP filter -------------------------------------------------------------------------


def test_the_ip_filter_admits_listed_addresses_and_blocks(
    hooks: JobyardServer, client_from: ClientFrom
) -> None:
    security = {"mode": "ip", "ips": ["127.0.0.2", "127.0.5.0/24"]}
    template = http_template(hooks, "ip", trigger={"security": security})
    url = template["trigger"]["url"]
    refused = client_from("127.0.0.3").post(url)
    assert_rejected(hooks, template, refused, 403, "127.0.0.3", "127.0.0.3")
    for address in ("127.0.0.2", "127.0.5.9", "127.0.5.254"):
        response = client_from(address).post(url)
        assert response.status_code == 202, (address, response.text)
    assert len(tasks_of(hooks, template)) == 3


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(
    hooks: JobyardServer, client_from: ClientFrom
) -> None:
    security = {"mode": "ip", "ips": ["203.0.113.0/24"]}
    template = http_template(
        hooks, "xff", 'cat "$JOBYARD_PAYLOAD_FILE"', trigger={"security": security}
    )
    url = template["trigger"]["url"]
    forwarded = {"X-Forwarded-For": "203.0.113.7"}
    spoofed = client_from("127.0.0.3").post(url, headers=forwarded)
    assert_rejected(hooks, template, spoofed, 403, "127.0.0.3", "127.0.0.3")
    proxied = client_from("127.0.0.1").post(url, headers=forwarded)
    assert proxied.status_code == 202, proxied.text
    (log,) = logs_of(hooks, proxied.json()["id"])
    assert json.loads(log)["client"] == "203.0.113.7"
    real_ip = client_from("127.0.0.1").post(url, headers={"X-Real-IP": "203.0.113.8"})
    assert real_ip.status_code == 202, real_ip.text


def test_a_trusted_proxy_forwarding_an_outsider_is_refused(
    hooks: JobyardServer, client_from: ClientFrom
) -> None:
    # The proxy's own address is allowed, but the client it forwards is not.
    security = {"mode": "ip", "ips": ["127.0.0.1"]}
    template = http_template(hooks, "xff-out", trigger={"security": security})
    response = client_from("127.0.0.1").post(
        template["trigger"]["url"], headers={"X-Forwarded-For": "198.51.100.1"}
    )
    assert_rejected(hooks, template, response, 403, "198.51.100.1", "198.51.100.1")


# -- the referer filter --------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Referer": "https://example.org/page"},
        {"Referer": "http://sub.example.com/a?b=c"},
        {"Referer": "https://a.b.example.com:8443/"},
        {"Origin": "https://sub.example.com"},
    ],
)
def test_the_referer_filter_admits(hooks: JobyardServer, headers: dict[str, str]) -> None:
    security = {"mode": "referer", "referers": ["example.org", "*.example.com"]}
    template = http_template(hooks, "ref-ok", trigger={"security": security})
    response = httpx.post(template["trigger"]["url"], headers=headers)
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    ("headers", "cause"),
    [
        ({"Referer": "https://example.com/"}, "example.com"),
        ({"Referer": "https://badexample.com/"}, "badexample.com"),
        ({"Referer": "https://sub.example.org/"}, "sub.example.org"),
        ({"Referer": "https://sub.example.com.evil.net/"}, "sub.example.com.evil.net"),
        ({"Origin": "https://evil.net"}, "evil.net"),
        ({}, "Referer"),
    ],
)
def test_the_referer_filter_refuses(
    hooks: JobyardServer, headers: dict[str, str], cause: str
) -> None:
    security = {"mode": "referer", "referers": ["example.org", "*.example.com"]}
    template = http_template(hooks, "ref-no", trigger={"security": security})
    response = httpx.post(template["trigger"]["url"], headers=headers)
    assert_rejected(hooks, template, response, 403, "127.0.0.1", cause)


def test_a_suspended_template_refuses_its_hook(hooks: JobyardServer) -> None:
    template = http_template(hooks, "suspended")
    path = f"/namespaces/default/templates/{template['name']}"
    hooks.api("POST", path + "/suspend", expect=200)
    response = httpx.post(template["trigger"]["url"])
    assert_rejected(hooks, template, response, 403, "127.0.0.1", "suspended")
    hooks.api("POST", path + "/resume", expect=200)
    assert httpx.post(template["trigger"]["url"]).status_code == 202


# -- what a request carries ----------------------------------------------------------------

ENV_SCRIPT = 'echo "aaa=$aaa count=$JOBYARD_INSTANCE_COUNT index=$JOBYARD_INSTANCE_INDEX"'


@pytest.mark.parametrize(
    "payload",
    [
        {"Envs": [{"name": "aaa", "value": "bbb"}], "Replicas": "3"},
        {"Envs": [{"name": "aaa", "value": "bbb"}], "Replicas": 3},
        {"envs": [{"name": "aaa", "value": "bbb"}], "replicas": 3},
        {"Envs": json.dumps([{"name": "aaa", "value": "bbb"}]), "Replicas": "3"},
    ],
    ids=["sae-string-replicas", "sae-number-replicas", "lowercase", "envs-as-json-text"],
)
def test_overrides_reach_the_instances(hooks: JobyardServer, payload: dict[str, Any]) -> None:
    template = http_template(hooks, "overrides", ENV_SCRIPT, env=[{"name": "aaa", "value": "tpl"}])
    response = httpx.post(template["trigger"]["url"], json=payload)
    assert response.status_code == 202, response.text
    task = response.json()
    assert task["instance_count"] == 3
    assert task["overrides"]["replicas"] == 3
    assert logs_of(hooks, task["id"]) == [f"aaa=bbb count=3 index={i}\n" for i in range(3)]
    # Overrides are for that task only.
    plain = httpx.post(template["trigger"]["url"])
    assert logs_of(hooks, plain.json()["id"]) == ["aaa=tpl count=1 index=0\n"]


def test_the_request_reaches_every_instance_as_a_payload_file(hooks: JobyardServer) -> None:
    template = http_template(hooks, "payload", 'cat "$JOBYARD_PAYLOAD_FILE"', replicas=2)
    sent = json.dumps({"order": 17, "items": ["a", "b"]})
    secrets = {
        "Authorization": "Bearer secret-auth-value",
        "Cookie": "session=secret-cookie-value",
        "Proxy-Authorization": "Basic secret-proxy-value",
    }
    response = httpx.post(
        template["trigger"]["url"] + "?a=1&b=two",
        content=sent,
        headers={"Content-Type": "application/json", "X-Custom": "kept", **secrets},
    )
    assert response.status_code == 202, response.text
    logs = logs_of(hooks, response.json()["id"])
    assert len(logs) == 2
    for log in logs:
        assert "secret-" not in log
        saved = json.loads(log)
        assert saved["method"] == "POST"
        assert saved["path"] == urlsplit(template["trigger"]["url"]).path
        assert saved["query"] == "a=1&b=two"
        assert saved["body"] == sent
        assert saved["headers"]["x-custom"] == "kept"
        assert saved["headers"]["content-type"] == "application/json"
        assert {"authorization", "cookie", "proxy-authorization"}.isdisjoint(
            name.lower() for name in saved["headers"]
        )


def test_a_get_hook_saves_its_query(hooks: JobyardServer) -> None:
    template = http_template(
        hooks, "get", 'cat "$JOBYARD_PAYLOAD_FILE"', trigger={"methods": ["GET"]}
    )
    response = httpx.get(template["trigger"]["url"], params={"source": "ci", "n": "3"})
    assert response.status_code == 202, response.text
    (log,) = logs_of(hooks, response.json()["id"])
    saved = json.loads(log)
    assert saved["method"] == "GET"
    assert saved["query"] == "source=ci&n=3"
    assert saved["body"] == ""


def test_an_opaque_body_is_passed_on_untouched(hooks: JobyardServer) -> None:
    template = http_template(hooks, "opaque", 'cat "$JOBYARD_PAYLOAD_FILE"')
    response = httpx.post(
        template["trigger"]["url"],
        content=b"line one\nline two",
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 202, response.text
    (log,) = logs_of(hooks, response.json()["id"])
    assert json.loads(log)["body"] == "line one\nline two"


# -- refused bodies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (json.dumps({"Envs": [{"name": "1bad", "value": "x"}]}), "Envs[0].name"),
        (json.dumps({"Envs": [{"name": "bad-name", "value": "x"}]}), "Envs[0].name"),
        (json.dumps({"Envs": [{"name": "JOBYARD_TASK_ID", "value": "1"}]}), "reserved"),
        (json.dumps({"Envs": "not a list"}), "Envs"),
        (json.dumps({"Replicas": 0}), "Replicas"),
        (json.dumps({"Replicas": 101}), "Replicas"),
        (json.dumps({"Replicas": "0"}), "Replicas"),
        (json.dumps({"Replicas": "x"}), "Replicas"),
        (json.dumps({"replicas": -1}), "Replicas"),
        ('{"Envs": [', "JSON"),
        ("[1, 2, 3]", "object"),
    ],
)
def test_a_bad_body_is_400_naming_the_problem(
    hooks: JobyardServer, content: str, needle: str
) -> None:
    template = http_template(hooks, "bad-body")
    response = httpx.post(
        template["trigger"]["url"], content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert needle in response.json()["message"]
    assert tasks_of(hooks, template) == []


def test_a_body_over_the_limit_is_413(limited: JobyardServer) -> None:
    template = http_template(limited, "big")
    url = hook_url(limited, template)
    declared = httpx.post(url, content=b"x" * 1001, headers={"Content-Type": "text/plain"})
    assert declared.status_code == 413, declared.text
    assert "1000" in declared.json()["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        for _ in range(4):
            yield b"y" * 400

    streamed = httpx.post(url, content=chunks(), headers={"Content-Type": "text/plain"})
    assert streamed.status_code == 413, streamed.text
    assert "1000" in streamed.json()["message"]
    tasks = limited.api("GET", f"/namespaces/default/templates/{template['name']}/tasks")
    assert tasks == []
    at_limit = httpx.post(url, content=b"z" * 1000, headers={"Content-Type": "text/plain"})
    assert at_limit.status_code == 202, at_limit.text


def test_the_default_body_limit_is_one_mebibyte(hooks: JobyardServer) -> None:
    template = http_template(hooks, "mib")
    url = template["trigger"]["url"]
    too_big = httpx.post(url, content=b"x" * (1024 * 1024 + 1))
    assert too_big.status_code == 413, too_big.text
    assert tasks_of(hooks, template) == []
    assert httpx.post(url, content=b"x" * (1024 * 1024)).status_code == 202


# -- concurrency policy --------------------------------------------------------------------


def test_a_forbid_template_refuses_a_hook_while_a_task_runs(hooks: JobyardServer) -> None:
    template = http_template(
        hooks, "forbid", "sleep 60", concurrency_policy="Forbid", termination_grace_period=1
    )
    url = template["trigger"]["url"]
    first = httpx.post(url, json={"EventId": "first"})
    assert first.status_code == 202, first.text
    second = httpx.post(url)
    assert second.status_code == 409, second.text
    assert second.json()["active_task_id"] == first.json()["id"]
    assert "forbids" in second.json()["message"]
    # A repeat of the running task's EventId is a repeat, not a new task.
    again = httpx.post(url, json={"EventId": "first"})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    events = hooks.events(reason="ConcurrencyForbidden", template=template["name"])
    assert events
    assert events[0]["severity"] == "warning"
    assert len(tasks_of(hooks, template)) == 1
    hooks.api("POST", f"/tasks/{first.json()['id']}/stop", expect=200)
    assert hooks.wait_task(first.json()["id"])["status"] == "stopped"
    assert httpx.post(url).status_code == 202


# -- EventId -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "where",
    ["body", "query", "header"],
)
def test_an_event_id_makes_one_task(hooks: JobyardServer, where: str) -> None:
    template = http_template(hooks, f"event-{where}")
    event_id = unique("evt")
    url = template["trigger"]["url"]

    def fire() -> httpx.Response:
        if where == "body":
            return httpx.post(url, json={"EventId": event_id})
        if where == "query":
            return httpx.post(url, params={"EventId": event_id})
        return httpx.post(url, headers={"Idempotency-Key": event_id})

    first = fire()
    assert first.status_code == 202, first.text
    assert first.json()["event_id"] == event_id
    repeat = fire()
    assert repeat.status_code == 200, repeat.text
    assert repeat.json()["id"] == first.json()["id"]
    assert len(tasks_of(hooks, template)) == 1
    other = http_template(hooks, f"event-{where}-other")
    assert httpx.post(other["trigger"]["url"], json={"EventId": event_id}).status_code == 202


def test_a_repeat_does_not_apply_new_overrides(hooks: JobyardServer) -> None:
    template = http_template(hooks, "event-overrides")
    url = template["trigger"]["url"]
    first = httpx.post(url, json={"EventId": "same", "Replicas": 2})
    repeat = httpx.post(url, json={"EventId": "same", "Replicas": 5})
    assert (first.status_code, repeat.status_code) == (202, 200)
    assert repeat.json()["instance_count"] == 2


@pytest.fixture
def db_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JobyardServer]:
    """A server on each database kind."""
    jobyard = start_server(tmp_path_factory.mktemp("hooks-db"), database_url)
    yield jobyard
    stop_server(jobyard)


def test_concurrent_identical_event_ids_make_exactly_one_task(db_server: JobyardServer) -> None:
    template = http_template(db_server, "race", "true")
    url = template["trigger"]["url"]
    callers = 50
    barrier = threading.Barrier(callers)

    def fire(_: int) -> httpx.Response:
        with httpx.Client(timeout=60) as client:
            client.get(db_server.url + "/healthz")  # connected before the race starts
            barrier.wait(timeout=30)
            return client.post(url, json={"EventId": "race-1", "Replicas": 1})

    with ThreadPoolExecutor(max_workers=callers) as pool:
        responses = list(pool.map(fire, range(callers)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * (callers - 1) + [202], [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    tasks = tasks_of(db_server, template)
    assert len(tasks) == 1
    assert tasks[0]["event_id"] == "race-1"
    created = db_server.events(reason="TaskCreated", template=template["name"])
    assert len(created) == 1


def test_an_overlong_event_id_is_400_wherever_it_comes_from(db_server: JobyardServer) -> None:
    template = http_template(db_server, "long-event")
    url = template["trigger"]["url"]
    event_id = "e" * 200
    for response in (
        httpx.post(url, json={"EventId": event_id}),
        httpx.post(url, params={"EventId": event_id}),
        httpx.post(url, headers={"Idempotency-Key": event_id}),
    ):
        assert response.status_code == 400, response.text
        assert "EventId" in response.json()["message"]
    assert tasks_of(db_server, template) == []


# -- IPv6 and a server beyond loopback -----------------------------------------------------


@pytest.fixture(scope="module")
def dual_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobyardServer]:
    """A server on ``--host ::`` (not loopback: it needs a token), reached via ::1."""
    jobyard = start_server(
        tmp_path_factory.mktemp("ipv6"),
        extra_args=["--host", "::"],
        env={"JOBYARD_ADMIN_TOKEN": ADMIN_TOKEN},
        connect_host="::1",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    yield jobyard
    stop_server(jobyard)


def test_a_server_on_all_interfaces_needs_a_token_but_its_hooks_do_not(
    dual_stack: JobyardServer,
) -> None:
    assert httpx.get(dual_stack.url + "/api/v1/templates").status_code == 401
    template = http_template(dual_stack, "v6-open")
    response = httpx.post(hook_url(dual_stack, template))
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    ("networks", "status"),
    [(["::1/128"], 202), (["::1"], 202), (["127.0.0.0/8"], 403), (["2001:db8::/32"], 403)],
)
def test_the_ip_filter_on_ipv6(
    dual_stack: JobyardServer, client_from: ClientFrom, networks: list[str], status: int
) -> None:
    template = http_template(
        dual_stack, "v6", trigger={"security": {"mode": "ip", "ips": networks}}
    )
    response = client_from("::1").post(hook_url(dual_stack, template))
    assert response.status_code == status, response.text
    if status == 403:
        assert_rejected(dual_stack, template, response, 403, "::1", "::1")


def test_the_default_url_of_a_server_on_all_interfaces_is_reachable(
    dual_stack: JobyardServer,
) -> None:
    template = http_template(dual_stack, "v6-url")
    response = httpx.post(template["trigger"]["url"], timeout=5)
    assert response.status_code == 202, response.text


# -- a replica's kept copy of the template ------------------------------------------------


def edit_on_other_replica(
    database_url: str, data_dir: Any, edit: Callable[[JobyardServer], None]
) -> None:
    """Start a second server on the same database, let it edit, stop it.

    It runs only while the first has no task in play, so the two controllers never
    share work."""
    other = start_server(data_dir, database_url)
    try:
        edit(other)
    finally:
        stop_server(other)


def test_a_replica_never_acts_on_a_stale_copy_of_the_template(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Each replica keeps templates by hook token between requests; another replica's
    suspension, edit, URL rotation or deletion must still decide the very next request."""
    first = start_server(tmp_path_factory.mktemp("first"), database_url)
    try:
        template = http_template(first, "replicas")
        name, url = template["name"], hook_url(first, template)
        path = f"/namespaces/default/templates/{name}"
        first.wait_task(httpx.post(url).json()["id"])  # the first replica now keeps a copy

        def suspend(other: JobyardServer) -> None:
            other.api("POST", path + "/suspend", expect=200)

        edit_on_other_replica(database_url, tmp_path_factory.mktemp("other"), suspend)
        assert httpx.post(url).status_code == 403

        def resume_and_allow_only_put(other: JobyardServer) -> None:
            other.api("POST", path + "/resume", expect=200)
            spec = {**template["spec"], "trigger": {"type": "http", "methods": ["PUT"]}}
            other.api("PUT", path, expect=200, json=spec)

        edit_on_other_replica(
            database_url, tmp_path_factory.mktemp("other"), resume_and_allow_only_put
        )
        assert httpx.post(url).status_code == 405
        started = httpx.put(url)
        assert started.status_code == 202
        assert started.json()["template_version"] == 2
        first.wait_task(started.json()["id"])
        assert httpx.put(url).status_code == 202  # the fresh copy is kept in turn
        for task in tasks_of(first, template):
            first.wait_task(task["id"])

        rotated: list[str] = []

        def rotate(other: JobyardServer) -> None:
            answer = other.api("POST", path + "/trigger/rotate", expect=200)
            rotated.append(first.url + urlsplit(answer["trigger"]["url"]).path)

        edit_on_other_replica(database_url, tmp_path_factory.mktemp("other"), rotate)
        assert httpx.put(url).status_code == 404
        new_task = httpx.put(rotated[0])
        assert new_task.status_code == 202
        first.wait_task(new_task.json()["id"])

        def delete(other: JobyardServer) -> None:
            other.api("DELETE", path, expect=204)

        edit_on_other_replica(database_url, tmp_path_factory.mktemp("other"), delete)
        assert httpx.put(rotated[0]).status_code == 404
    finally:
        stop_server(first)
