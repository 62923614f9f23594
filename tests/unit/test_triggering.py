"""The pure rules of HTTP triggers: client address, scheme, filters, bodies, the saved request."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from jobyard import triggering
from jobyard.errors import BadRequest
from jobyard.spec import HttpTrigger

JSON = "application/json"


def trigger(**extra: Any) -> HttpTrigger:
    return HttpTrigger.model_validate({"type": "http", **extra})


def body(data: Any) -> bytes:
    return json.dumps(data).encode()


# -- in_networks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "networks", "inside"),
    [
        ("127.0.0.2", ["127.0.0.2"], True),
        ("127.0.0.3", ["127.0.0.2"], False),
        ("10.1.2.3", ["192.168.0.0/16", "10.0.0.0/8"], True),
        ("11.0.0.1", ["10.0.0.0/8"], False),
        ("192.168.1.200", ["192.168.1.128/25"], True),
        ("192.168.1.100", ["192.168.1.128/25"], False),
        ("::1", ["::1/128"], True),
        ("::1", ["::1"], True),
        ("2001:db8::42", ["2001:db8::/32"], True),
        ("2001:db9::42", ["2001:db8::/32"], False),
        ("[::1]", ["::1/128"], True),
        # a v4 client seen on a dual-stack socket is still a v4 client
        ("::ffff:10.1.2.3", ["10.0.0.0/8"], True),
        ("::ffff:127.0.0.1", ["127.0.0.0/8"], True),
        ("::ffff:10.1.2.3", ["11.0.0.0/8"], False),
        # versions never match across
        ("::1", ["127.0.0.0/8"], False),
        ("127.0.0.1", ["::1/128"], False),
        ("127.0.0.1", ["::/0"], False),
        # a host address given with host bits set is taken as its network
        ("10.0.0.7", ["10.0.0.1/24"], True),
        ("not-an-address", ["0.0.0.0/0"], False),
        ("", ["0.0.0.0/0"], False),
        ("127.0.0.1", [], False),
    ],
)
def test_in_networks(address: str, networks: list[str], inside: bool) -> None:
    assert triggering.in_networks(address, networks) is inside


# -- client_address ------------------------------------------------------------------------


def test_the_peer_is_the_client_without_trusted_proxies() -> None:
    headers = {"x-forwarded-for": "203.0.113.9", "x-real-ip": "203.0.113.8"}
    assert triggering.client_address("127.0.0.1", headers, []) == "127.0.0.1"


def test_forwarded_headers_from_an_untrusted_peer_are_ignored() -> None:
    headers = {"x-forwarded-for": "203.0.113.9", "x-real-ip": "203.0.113.8"}
    assert triggering.client_address("127.0.0.3", headers, ["127.0.0.1"]) == "127.0.0.3"


def test_a_trusted_proxy_names_the_client() -> None:
    headers = {"x-forwarded-for": "203.0.113.9"}
    assert triggering.client_address("127.0.0.1", headers, ["127.0.0.1"]) == "203.0.113.9"


def test_a_chain_of_trusted_proxies_is_walked_back_to_the_first_untrusted_hop() -> None:
    headers = {"x-forwarded-for": "203.0.113.9, 10.0.0.5, 10.0.0.6"}
    proxies = ["127.0.0.1", "10.0.0.0/8"]
    assert triggering.client_address("127.0.0.1", headers, proxies) == "203.0.113.9"


def test_a_client_cannot_spoof_past_the_nearest_untrusted_hop() -> None:
    # The client wrote "6.6.6.6" itself; the trusted proxy appended the real peer.
    headers = {"x-forwarded-for": "6.6.6.6, 203.0.113.9"}
    assert triggering.client_address("127.0.0.1", headers, ["127.0.0.1"]) == "203.0.113.9"


def test_x_real_ip_from_a_trusted_proxy() -> None:
    headers = {"x-real-ip": "198.51.100.7"}
    assert triggering.client_address("127.0.0.1", headers, ["127.0.0.0/8"]) == "198.51.100.7"


def test_garbage_from_a_trusted_proxy_falls_back_to_the_peer() -> None:
    headers = {"x-forwarded-for": "unknown", "x-real-ip": "also-unknown"}
    assert triggering.client_address("127.0.0.1", headers, ["127.0.0.1"]) == "127.0.0.1"


def test_only_trusted_hops_fall_back_to_the_peer() -> None:
    headers = {"x-forwarded-for": "127.0.0.1"}
    assert triggering.client_address("127.0.0.1", headers, ["127.0.0.1"]) == "127.0.0.1"


def test_ipv6_proxies_and_clients() -> None:
    headers = {"x-forwarded-for": "2001:db8::7"}
    assert triggering.client_address("::1", headers, ["::1/128"]) == "2001:db8::7"
    assert triggering.client_address("::2", headers, ["::1/128"]) == "::2"


# -- request_scheme ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tls", "peer", "headers", "proxies", "scheme"),
    [
        (True, "127.0.0.3", {}, [], "https"),
        (True, "127.0.0.1", {"x-forwarded-proto": "http"}, [], "https"),
        (False, "127.0.0.1", {}, [], "http"),
        (False, "127.0.0.1", {"x-forwarded-proto": "https"}, [], "http"),
        (False, "127.0.0.3", {"x-forwarded-proto": "https"}, ["127.0.0.1"], "http"),
        (False, "127.0.0.1", {"x-forwarded-proto": "https"}, ["127.0.0.1"], "https"),
        (False, "127.0.0.1", {"x-forwarded-proto": "HTTPS"}, ["127.0.0.1"], "https"),
        (False, "127.0.0.1", {"x-forwarded-proto": "https, http"}, ["127.0.0.1"], "https"),
        (False, "127.0.0.1", {"x-forwarded-proto": "ftp"}, ["127.0.0.1"], "http"),
        (False, "::1", {"x-forwarded-proto": "https"}, ["::1"], "https"),
    ],
)
def test_request_scheme(
    tls: bool, peer: str, headers: dict[str, str], proxies: list[str], scheme: str
) -> None:
    assert triggering.request_scheme(tls, peer, headers, proxies) == scheme


# -- referring domains ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "host"),
    [
        ({"referer": "https://Sub.Example.com:8443/page?x=1"}, "sub.example.com"),
        ({"origin": "https://example.org"}, "example.org"),
        ({"referer": "https://a.example.com/", "origin": "https://b.example.com"}, "a.example.com"),
        ({"referer": "https://example.com./"}, "example.com"),
        ({"referer": "https://user@evil.net/?to=example.com"}, "evil.net"),
        ({"origin": "null"}, None),
        ({}, None),
    ],
)
def test_referer_host(headers: dict[str, str], host: str | None) -> None:
    assert triggering.referer_host(headers) == host


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("example.org", True),
        ("sub.example.org", False),  # an exact domain is only that domain
        ("sub.example.com", True),
        ("a.b.example.com", True),
        ("example.com", False),  # the wildcard needs a subdomain
        ("badexample.com", False),
        ("sub.example.com.evil.net", False),
        ("example.org.evil.net", False),
        ("other.net", False),
    ],
)
def test_domain_allowed(host: str, allowed: bool) -> None:
    assert triggering.domain_allowed(host, ["example.org", "*.example.com"]) is allowed


# -- rejection -----------------------------------------------------------------------------


def test_an_allowed_request_is_not_rejected() -> None:
    assert triggering.rejection(trigger(), "POST", "http", "127.0.0.1", {}) is None
    assert triggering.rejection(trigger(), "post", "https", "127.0.0.1", {}) is None


def test_a_method_outside_the_list_is_405_naming_the_allowed_ones() -> None:
    refused = triggering.rejection(trigger(methods=["POST", "GET"]), "PUT", "http", "127.0.0.1", {})
    assert refused is not None
    status, cause = refused
    assert status == 405
    assert "PUT" in cause and "POST, GET" in cause


def test_a_protocol_outside_the_list_is_403() -> None:
    refused = triggering.rejection(trigger(protocols=["https"]), "POST", "http", "127.0.0.1", {})
    assert refused is not None
    assert refused[0] == 403
    assert "HTTP" in refused[1] and "https" in refused[1]


def test_ip_mode() -> None:
    ip_trigger = trigger(security={"mode": "ip", "ips": ["10.0.0.0/8", "::1"]})
    assert triggering.rejection(ip_trigger, "POST", "http", "10.9.8.7", {}) is None
    assert triggering.rejection(ip_trigger, "POST", "http", "::1", {}) is None
    refused = triggering.rejection(ip_trigger, "POST", "http", "192.0.2.1", {})
    assert refused is not None
    assert refused[0] == 403
    assert "192.0.2.1" in refused[1]


def test_referer_mode() -> None:
    ref_trigger = trigger(security={"mode": "referer", "referers": ["*.example.com"]})
    ok = {"referer": "https://app.example.com/x"}
    assert triggering.rejection(ref_trigger, "POST", "http", "127.0.0.1", ok) is None
    missing = triggering.rejection(ref_trigger, "POST", "http", "127.0.0.1", {})
    assert missing is not None
    assert missing[0] == 403
    assert "Referer" in missing[1]
    wrong = triggering.rejection(
        ref_trigger, "POST", "http", "127.0.0.1", {"origin": "https://evil.net"}
    )
    assert wrong is not None
    assert wrong[0] == 403
    assert "evil.net" in wrong[1]


def test_the_method_is_checked_before_the_filters() -> None:
    strict = trigger(
        protocols=["https"], methods=["POST"], security={"mode": "ip", "ips": ["10.0.0.1"]}
    )
    refused = triggering.rejection(strict, "GET", "http", "192.0.2.1", {})
    assert refused is not None
    assert refused[0] == 405


# -- parse_body ----------------------------------------------------------------------------


def test_an_empty_body_overrides_nothing() -> None:
    parsed = triggering.parse_body(b"", JSON)
    assert parsed.overrides.envs == []
    assert parsed.overrides.replicas is None
    assert parsed.event_id is None
    assert parsed.command is None


def test_the_sae_exec_job_body() -> None:
    data = {"Envs": [{"name": "aaa", "value": "bbb"}], "Replicas": "3", "EventId": "e-1"}
    parsed = triggering.parse_body(body(data), JSON)
    assert [(e.name, e.value) for e in parsed.overrides.envs] == [("aaa", "bbb")]
    assert parsed.overrides.replicas == 3
    assert parsed.event_id == "e-1"


@pytest.mark.parametrize("replicas", [3, "3", " 3 "])
def test_replicas_as_number_or_text(replicas: Any) -> None:
    assert triggering.parse_body(body({"Replicas": replicas}), JSON).overrides.replicas == 3


def test_lowercase_envs_and_replicas() -> None:
    data = {"envs": [{"name": "A_1", "value": "x"}], "replicas": 2}
    parsed = triggering.parse_body(body(data), JSON)
    assert [(e.name, e.value) for e in parsed.overrides.envs] == [("A_1", "x")]
    assert parsed.overrides.replicas == 2


def test_envs_as_json_text() -> None:
    data = {"Envs": json.dumps([{"name": "aaa", "value": "bbb"}])}
    parsed = triggering.parse_body(body(data), JSON)
    assert [(e.name, e.value) for e in parsed.overrides.envs] == [("aaa", "bbb")]


@pytest.mark.parametrize("key", ["EventId", "eventId", "event_id"])
def test_event_id_spellings(key: str) -> None:
    assert triggering.parse_body(body({key: "abc"}), JSON).event_id == "abc"


def test_a_numeric_event_id_is_text() -> None:
    assert triggering.parse_body(body({"EventId": 42}), JSON).event_id == "42"


def test_an_event_id_up_to_the_limit() -> None:
    longest = "e" * triggering.MAX_EVENT_ID
    assert triggering.parse_body(body({"EventId": longest}), JSON).event_id == longest
    with pytest.raises(BadRequest, match="EventId"):
        triggering.parse_body(body({"EventId": longest + "e"}), JSON)


def test_command_and_args_in_the_body() -> None:
    data = {"Command": "/bin/echo", "CommandArgs": ["hello", "sae"]}
    assert triggering.parse_body(body(data), JSON).command == ["/bin/echo", "hello", "sae"]


def test_json_is_recognised_without_a_content_type() -> None:
    parsed = triggering.parse_body(body({"replicas": 4}), "")
    assert parsed.overrides.replicas == 4


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b"just some text", "text/plain"),
        (b"a=1&b=2", "application/x-www-form-urlencoded"),
        (b"\xff\xfe binary", "application/octet-stream"),
        (b"   \n ", JSON),
    ],
)
def test_an_opaque_body_overrides_nothing(raw: bytes, content_type: str) -> None:
    parsed = triggering.parse_body(raw, content_type)
    assert parsed.overrides.envs == []
    assert parsed.overrides.replicas is None
    assert parsed.event_id is None


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b'{"Envs": [', "not valid JSON"),
        (b"{nope}", "not valid JSON"),
        (b"\xff{", "not valid JSON"),
        (b"[1, 2]", "must be an object"),
        (b'"text"', "must be an object"),
        (b"null", "must be an object"),
        (body({"Envs": [{"name": "1bad", "value": "x"}]}), "Envs[0].name"),
        (body({"Envs": [{"name": "ok"}, {"name": "bad-name"}]}), "Envs[1].name"),
        (body({"Envs": [{"name": "JOBYARD_TASK_ID", "value": "1"}]}), "reserved"),
        (body({"Envs": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}), "unique"),
        (body({"Envs": {"name": "A", "value": "1"}}), "Envs"),
        (body({"Envs": "[not json"}), "Envs"),
        (body({"Envs": [{"name": "A", "value": "1", "extra": 1}]}), "Envs[0]"),
        (body({"Replicas": 0}), "Replicas"),
        (body({"Replicas": 101}), "Replicas"),
        (body({"Replicas": "0"}), "Replicas"),
        (body({"Replicas": "101"}), "Replicas"),
        (body({"Replicas": "x"}), "Replicas"),
        (body({"Replicas": "-1"}), "Replicas"),
        (body({"Replicas": 2.5}), "Replicas"),
        (body({"replicas": []}), "Replicas"),
        (body({"Command": 5}), "Command"),
        (body({"Command": "/bin/echo", "CommandArgs": [1]}), "CommandArgs"),
    ],
)
def test_bad_bodies_name_the_problem(raw: bytes, needle: str) -> None:
    with pytest.raises(BadRequest) as caught:
        triggering.parse_body(raw, JSON)
    assert needle in str(caught.value)


# -- parse_command -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        (None, None, None),
        ("", '["x"]', None),
        ("/bin/echo", None, ["/bin/echo"]),
        ("/bin/echo", "", ["/bin/echo"]),
        ("/bin/echo", [], ["/bin/echo"]),
        ("/bin/echo", ["hello", "sae"], ["/bin/echo", "hello", "sae"]),
        ("/bin/echo", '["hello", "sae"]', ["/bin/echo", "hello", "sae"]),
        ("/bin/echo", '["a b", "$HOME"]', ["/bin/echo", "a b", "$HOME"]),
    ],
)
def test_parse_command(command: Any, args: Any, expected: list[str] | None) -> None:
    assert triggering.parse_command(command, args) == expected


@pytest.mark.parametrize(
    ("command", "args", "needle"),
    [
        (["/bin/echo"], None, "Command must be a string"),
        ("/bin/echo", "[not json", "CommandArgs"),
        ("/bin/echo", '{"a": 1}', "CommandArgs"),
        ("/bin/echo", '"hello"', "CommandArgs"),
        ("/bin/echo", [1, 2], "CommandArgs"),
        ("/bin/echo", {"a": "b"}, "CommandArgs"),
    ],
)
def test_bad_commands(command: Any, args: Any, needle: str) -> None:
    with pytest.raises(BadRequest, match=needle):
        triggering.parse_command(command, args)


# -- parse_overrides (SAE query parameters) ------------------------------------------------


def test_parse_overrides_from_query_text() -> None:
    overrides = triggering.parse_overrides('[{"name": "aaa", "value": "bbb"}]', "3")
    assert [(e.name, e.value) for e in overrides.envs] == [("aaa", "bbb")]
    assert overrides.replicas == 3


def test_parse_overrides_empty() -> None:
    overrides = triggering.parse_overrides(None, None)
    assert overrides.envs == []
    assert overrides.replicas is None
    assert triggering.parse_overrides("", None).envs == []


# -- saved_request -------------------------------------------------------------------------


def test_saved_request_hides_secrets_and_keeps_the_rest() -> None:
    headers = {
        "Authorization": "Bearer secret-1",
        "cookie": "session=secret-2",
        "Proxy-Authorization": "Basic secret-3",
        "content-type": "application/json",
        "x-custom": "kept",
    }
    saved = triggering.saved_request(
        "POST", "/hooks/abc", "a=1&b=two", headers, b'{"k": "v"}', "203.0.113.9"
    )
    assert saved["method"] == "POST"
    assert saved["path"] == "/hooks/abc"
    assert saved["query"] == "a=1&b=two"
    assert saved["client"] == "203.0.113.9"
    assert saved["body"] == '{"k": "v"}'
    assert saved["headers"] == {"content-type": "application/json", "x-custom": "kept"}
    assert "secret" not in json.dumps(saved)


def test_saved_request_keeps_a_binary_body_as_base64() -> None:
    raw = b"\xff\x00\xfe binary"
    saved = triggering.saved_request("PUT", "/hooks/abc", "", {}, raw, "127.0.0.1")
    assert saved["body"] is None
    assert base64.b64decode(saved["body_base64"]) == raw
    json.dumps(saved)  # what instances get is JSON


def test_saved_request_with_an_empty_body() -> None:
    saved = triggering.saved_request("GET", "/hooks/abc", "", {}, b"", "::1")
    assert saved["body"] == ""
    assert "body_base64" not in saved
