"""End-to-end: the SAE-compatible job API (``/pop/v1/sam/job/...``) on a real server.

A script written for Alibaba Cloud SAE's ExecJob, DescribeJobStatus and
SuspendJob should work against jobyard by changing only the host: AppId is the
template's id, JobId the task's, and every answer has SAE's shape.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.support import JobyardServer, script_template, start_server, stop_server, wait_for

SAE = "/pop/v1/sam/job/"
ENV_SCRIPT = 'echo "aaa=$aaa index=$JOBYARD_INSTANCE_INDEX trigger=$JOBYARD_TRIGGER"'


@pytest.fixture(scope="module")
def sae(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobyardServer]:
    jobyard = start_server(tmp_path_factory.mktemp("sae"))
    yield jobyard
    stop_server(jobyard)


def template(server: JobyardServer, script: str = "true", **extra: Any) -> dict[str, Any]:
    name = f"sae-{uuid.uuid4().hex[:8]}"
    created = server.create_template(script_template(name, script, **extra))
    assert isinstance(created, dict)
    return created


def call(server: JobyardServer, action: str, method: str = "GET", **kwargs: Any) -> httpx.Response:
    return server.client.request(method, SAE + action, **kwargs)


def succeeded(response: httpx.Response) -> Any:
    """The Data of a successful SAE answer, after checking its shape."""
    assert response.status_code == 200, response.text
    answer = response.json()
    assert {"RequestId", "Code", "Success", "Message", "Data"} <= answer.keys()
    assert answer["Success"] is True
    assert answer["Code"] == "200"
    assert answer["RequestId"]
    return answer["Data"]


def failed(response: httpx.Response, status: int, code: str, *needles: str) -> dict[str, Any]:
    """An SAE error: Success false, SAE's Code, a message naming the problem."""
    assert response.status_code == status, response.text
    answer = response.json()
    assert {"RequestId", "Code", "Success", "Message"} <= answer.keys()
    assert answer["Success"] is False
    assert answer["Code"] == code
    for needle in needles:
        assert needle in answer["Message"]
    assert isinstance(answer, dict)
    return answer


def job_id(response: httpx.Response) -> int:
    data = succeeded(response)
    assert data["Success"] is True
    assert isinstance(data["Data"], str)
    return int(data["Data"])


def logs(server: JobyardServer, task_id: int) -> list[str]:
    task = server.wait_task(task_id)
    assert task["status"] == "succeeded", task
    instances = sorted(server.instances(task_id), key=lambda i: i["index"])
    return [server.log(instance["id"]) for instance in instances]


def tasks_of(server: JobyardServer, app: dict[str, Any]) -> list[Any]:
    found = server.api("GET", f"/namespaces/default/templates/{app['name']}/tasks", expect=200)
    assert isinstance(found, list)
    return found


# -- ExecJob -------------------------------------------------------------------------------


def test_exec_job_with_a_get_query(sae: JobyardServer) -> None:
    app = template(sae, ENV_SCRIPT, env=[{"name": "aaa", "value": "tpl"}])
    envs = json.dumps([{"name": "aaa", "value": "bbb"}])
    response = call(sae, "execJob", params={"AppId": app["id"], "Envs": envs, "Replicas": "2"})
    task_id = job_id(response)
    task = sae.task(task_id)
    assert task["template_id"] == app["id"]
    assert task["instance_count"] == 2
    assert logs(sae, task_id) == [f"aaa=bbb index={i} trigger=http\n" for i in range(2)]


def test_exec_job_with_a_json_post(sae: JobyardServer) -> None:
    app = template(sae, ENV_SCRIPT)
    body = {
        "AppId": app["id"],
        "Envs": json.dumps([{"name": "aaa", "value": "json"}]),
        "Replicas": 3,
    }
    task_id = job_id(call(sae, "execJob", "POST", json=body))
    assert logs(sae, task_id) == [f"aaa=json index={i} trigger=http\n" for i in range(3)]


def test_exec_job_with_envs_as_a_json_list(sae: JobyardServer) -> None:
    app = template(sae, ENV_SCRIPT)
    body = {"AppId": app["id"], "Envs": [{"name": "aaa", "value": "list"}]}
    task_id = job_id(call(sae, "execJob", "POST", json=body))
    assert logs(sae, task_id) == ["aaa=list index=0 trigger=http\n"]


def test_exec_job_with_a_form_post(sae: JobyardServer) -> None:
    app = template(sae, ENV_SCRIPT)
    form = {"AppId": app["id"], "Envs": json.dumps([{"name": "aaa", "value": "form"}])}
    task_id = job_id(call(sae, "execJob", "POST", data=form))
    assert logs(sae, task_id) == ["aaa=form index=0 trigger=http\n"]


def test_exec_job_query_and_body_together(sae: JobyardServer) -> None:
    app = template(sae, ENV_SCRIPT)
    body = {"Envs": json.dumps([{"name": "aaa", "value": "mixed"}])}
    response = call(sae, "execJob", "POST", params={"AppId": app["id"]}, json=body)
    assert logs(sae, job_id(response)) == ["aaa=mixed index=0 trigger=http\n"]


def test_exec_job_command_replaces_the_script(sae: JobyardServer) -> None:
    app = template(sae, "echo from-the-template")
    params = {"AppId": app["id"], "Command": "/bin/echo", "CommandArgs": '["hello","sae"]'}
    assert logs(sae, job_id(call(sae, "execJob", params=params))) == ["hello sae\n"]
    # Arguments are passed as they are: no shell word splitting or expansion.
    body = {"AppId": app["id"], "Command": "/bin/echo", "CommandArgs": ["a  b", "$HOME"]}
    assert logs(sae, job_id(call(sae, "execJob", "POST", json=body))) == ["a  b $HOME\n"]
    # For that task only.
    assert logs(sae, job_id(call(sae, "execJob", params={"AppId": app["id"]}))) == [
        "from-the-template\n"
    ]


def test_exec_job_event_id_makes_one_task(sae: JobyardServer) -> None:
    app = template(sae)
    params = {"AppId": app["id"], "EventId": "sae-event-1"}
    first = job_id(call(sae, "execJob", params=params))
    again = job_id(call(sae, "execJob", "POST", json=params))
    assert again == first
    assert [t["id"] for t in tasks_of(sae, app)] == [first]
    assert sae.task(first)["event_id"] == "sae-event-1"
    other = job_id(call(sae, "execJob", params={"AppId": app["id"], "EventId": "sae-event-2"}))
    assert other != first


def test_exec_job_and_hooks_share_event_ids(sae: JobyardServer) -> None:
    app = template(sae, trigger={"type": "http"})
    hooked = httpx.post(app["trigger"]["url"], json={"EventId": "shared-1"})
    assert hooked.status_code == 202, hooked.text
    again = job_id(call(sae, "execJob", params={"AppId": app["id"], "EventId": "shared-1"}))
    assert again == hooked.json()["id"]
    assert len(tasks_of(sae, app)) == 1


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"Replicas": "0"}, "Replicas"),
        ({"Replicas": "101"}, "Replicas"),
        ({"Replicas": "many"}, "Replicas"),
        ({"Envs": '[{"name": "1bad", "value": "x"}]'}, "Envs[0].name"),
        ({"Envs": "[not json"}, "Envs"),
        ({"Command": "/bin/echo", "CommandArgs": "[not json"}, "CommandArgs"),
    ],
)
def test_exec_job_bad_parameters(sae: JobyardServer, params: dict[str, str], needle: str) -> None:
    app = template(sae)
    response = call(sae, "execJob", params={"AppId": app["id"], **params})
    failed(response, 400, "InvalidParameter", needle)
    assert tasks_of(sae, app) == []


def test_exec_job_without_app_id(sae: JobyardServer) -> None:
    failed(call(sae, "execJob"), 400, "InvalidParameter", "AppId")


def test_exec_job_unknown_app_id(sae: JobyardServer) -> None:
    failed(call(sae, "execJob", params={"AppId": str(uuid.uuid4())}), 404, "NotFound")


def test_exec_job_malformed_json(sae: JobyardServer) -> None:
    response = call(
        sae, "execJob", "POST", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    failed(response, 400, "InvalidParameter", "JSON")


# -- DescribeJobStatus ---------------------------------------------------------------------


def millis(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def describe(server: JobyardServer, app: dict[str, Any], task_id: int) -> Any:
    response = call(server, "describeJobStatus", params={"AppId": app["id"], "JobId": task_id})
    return succeeded(response)


def test_describe_a_succeeded_job(sae: JobyardServer) -> None:
    app = template(sae)
    task_id = job_id(call(sae, "execJob", params={"AppId": app["id"], "Replicas": 3}))
    task = sae.wait_task(task_id)
    status = describe(sae, app, task_id)
    assert status["JobId"] == str(task_id)
    assert status["AppId"] == app["id"]
    assert status["State"] == "Succeeded"
    assert (status["Active"], status["Succeeded"], status["Failed"]) == (0, 3, 0)
    assert status["StartTime"] == millis(task["started_at"])
    assert status["CompletionTime"] == millis(task["finished_at"])
    assert status["CompletionTime"] >= status["StartTime"]


def test_describe_an_active_then_stopped_job(sae: JobyardServer) -> None:
    app = template(sae, "sleep 60", termination_grace_period=1)
    task_id = job_id(call(sae, "execJob", params={"AppId": app["id"], "Replicas": 2}))

    def active() -> Any:
        status = describe(sae, app, task_id)
        return status if status["State"] == "Active" and status["Active"] == 2 else None

    status = wait_for(active)
    assert status["CompletionTime"] is None
    assert isinstance(status["StartTime"], int)
    sae.api("POST", f"/tasks/{task_id}/stop", expect=200)
    sae.wait_task(task_id)
    stopped = describe(sae, app, task_id)
    assert stopped["State"] == "Stopped"
    assert stopped["Active"] == 0
    assert isinstance(stopped["CompletionTime"], int)


def test_describe_a_failed_job(sae: JobyardServer) -> None:
    app = template(sae, "exit 3", retries=0)
    task_id = job_id(call(sae, "execJob", params={"AppId": app["id"]}))
    assert sae.wait_task(task_id)["status"] == "failed"
    status = describe(sae, app, task_id)
    assert status["State"] == "Failed"
    assert (status["Active"], status["Succeeded"], status["Failed"]) == (0, 0, 1)
    assert status["Message"]


def test_describe_errors(sae: JobyardServer) -> None:
    app = template(sae)
    other = template(sae)
    task_id = job_id(call(sae, "execJob", params={"AppId": app["id"]}))
    endpoint = "describeJobStatus"
    failed(call(sae, endpoint, params={"JobId": task_id}), 400, "InvalidParameter", "AppId")
    failed(call(sae, endpoint, params={"AppId": app["id"]}), 400, "InvalidParameter", "JobId")
    bad = {"AppId": app["id"], "JobId": "abc"}
    failed(call(sae, endpoint, params=bad), 400, "InvalidParameter", "JobId")
    missing = {"AppId": app["id"], "JobId": "999999"}
    failed(call(sae, endpoint, params=missing), 404, "NotFound")
    elsewhere = {"AppId": other["id"], "JobId": task_id}
    failed(call(sae, endpoint, params=elsewhere), 404, "NotFound")
    unknown = {"AppId": str(uuid.uuid4()), "JobId": task_id}
    failed(call(sae, endpoint, params=unknown), 404, "NotFound")


def test_describe_a_job_id_out_of_range(sae: JobyardServer) -> None:
    app = template(sae)
    params = {"AppId": app["id"], "JobId": "99999999999999999999"}
    response = call(sae, "describeJobStatus", params=params)
    assert response.status_code in (400, 404), response.text
    assert response.json()["Success"] is False


# -- SuspendJob ----------------------------------------------------------------------------


def test_suspend_and_resume_a_job(sae: JobyardServer) -> None:
    app = template(sae, trigger={"type": "cron", "schedule": "0 3 * * *"})
    path = f"/namespaces/default/templates/{app['name']}"
    data = succeeded(call(sae, "suspendJob", params={"AppId": app["id"], "Suspend": "true"}))
    assert data["Suspend"] is True
    shown = sae.api("GET", path, expect=200)
    assert shown["suspended"] is True
    assert shown["schedule"]["next_fire_times"] == []
    body = {"AppId": app["id"], "Suspend": False}
    data = succeeded(call(sae, "suspendJob", "POST", json=body))
    assert data["Suspend"] is False
    shown = sae.api("GET", path, expect=200)
    assert shown["suspended"] is False
    assert shown["schedule"]["next_fire_times"]


def test_suspend_errors(sae: JobyardServer) -> None:
    app = template(sae)
    failed(call(sae, "suspendJob", params={"Suspend": "true"}), 400, "InvalidParameter", "AppId")
    bad = {"AppId": app["id"], "Suspend": "maybe"}
    failed(call(sae, "suspendJob", params=bad), 400, "InvalidParameter", "Suspend")
    unknown = {"AppId": str(uuid.uuid4()), "Suspend": "true"}
    failed(call(sae, "suspendJob", params=unknown), 404, "NotFound")
    assert sae.api("GET", f"/namespaces/default/templates/{app['name']}")["suspended"] is False


def test_sae_endpoints_are_in_the_openapi_document(sae: JobyardServer) -> None:
    paths = sae.client.get("/openapi.json").json()["paths"]
    for action in ("execJob", "describeJobStatus", "suspendJob"):
        assert SAE + action in paths
