"""Injected faults (every kind), the request log and the rest of the control API."""

from __future__ import annotations

import json
import time
from email.utils import formatdate

import httpx
import pytest

from airflow_provider_cfworkflows.emulator.server import EmulatorError
from tests.emulator._helpers import error, result

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


@pytest.fixture
def workflow(client, make_workflow):
    name = make_workflow([{"name": "a", "duration": 1, "output": {"rows": list(range(50))}}])
    result(client.post(f"/{name}/instances", json={"instance_id": "i"}))
    return name


def test_rate_limit(client, emu, workflow):
    emu.inject_fault(path=r"/instances$", method="POST", kind="rate_limit", count=2)
    emu.inject_fault(path=r"/instances/i$", kind="rate_limit", retry_after=formatdate(usegmt=True))
    for _ in range(2):
        limited = client.post(f"/{workflow}/instances", json={"instance_id": "never"})
        assert error(limited, 429) == (971, "Please wait and consider throttling your request speed")
        assert limited.headers["retry-after"] == "1"
    dated = client.get(f"/{workflow}/instances/i")
    assert dated.status_code == 429
    assert dated.headers["retry-after"].endswith("GMT")
    # The rejected creates did not happen; the fault is used up.
    assert error(client.get(f"/{workflow}/instances/never"), 404)[0] == 10400
    assert result(client.post(f"/{workflow}/instances", json={"instance_id": "never"}))["id"] == "never"


def test_server_error(client, emu, workflow):
    emu.inject_fault(path="/instances/i/status", kind="server_error", status=503)
    emu.inject_fault(path="/instances/i$", method="GET", kind="server_error")
    assert error(client.patch(f"/{workflow}/instances/i/status", json={"status": "terminate"}), 503) == (
        10001,
        "workflows.api.error.internal_server",
    )
    assert error(client.get(f"/{workflow}/instances/i"), 500)[0] == 10001
    assert result(client.get(f"/{workflow}/instances/i"))["status"] == "running"  # not terminated


def test_success_false_keeps_the_real_result(client, emu, workflow):
    emu.inject_fault(path="/instances/i$", kind="success_false")
    response = client.get(f"/{workflow}/instances/i")
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is False
    assert body["errors"] == [{"code": 10001, "message": "workflows.api.error.internal_server"}]
    assert body["result"]["status"] == "running"
    assert body["result"]["steps"][0]["name"] == "a-1"


def test_malformed_json(client, emu, workflow):
    emu.inject_fault(path="/instances$", method="POST", kind="malformed_json")
    response = client.post(f"/{workflow}/instances", json={"instance_id": "m"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert result(client.get(f"/{workflow}/instances/m"))["status"] == "running"  # it was created


def received_before_drop(emu, url: str, **params: object) -> tuple[int, int]:
    """``(Content-Length, bytes received)`` of a response whose connection is cut."""
    received = 0
    with httpx.stream("GET", url, params=params, headers=emu.auth_headers, timeout=30) as response:
        length = int(response.headers["content-length"])
        try:
            for chunk in response.iter_raw():
                received += len(chunk)
        except httpx.RemoteProtocolError:
            return length, received
    raise AssertionError("the connection was not dropped")


def test_drop_connection_json(client, emu, workflow):
    url = f"{emu.workflows_url}/{workflow}/instances/i"
    whole = len(client.get(url).content)
    emu.inject_fault(path="/instances/i$", kind="drop_connection", count=2)
    assert received_before_drop(emu, url) == (whole, whole // 2)
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(url)
    emu.inject_fault(path="/instances/i$", kind="drop_connection", after_bytes=10)
    assert received_before_drop(emu, url) == (whole, 10)
    # A dropped POST still took effect.
    emu.inject_fault(path="/instances$", method="POST", kind="drop_connection")
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(f"/{workflow}/instances", json={"instance_id": "dropped"})
    assert result(client.get(f"/{workflow}/instances/dropped"))["status"] == "running"
    assert result(client.get(url))["status"] == "running"  # the next request is fine


def test_drop_connection_stream(client, emu, make_workflow):
    name = make_workflow([{"name": "blob", "stream": {"size": 8 * MIB, "seed": 1}}])
    result(client.post(f"/{name}/instances", json={"instance_id": "s"}))
    url = f"{emu.workflows_url}/{name}/instances/s/step"
    emu.inject_fault(path="/step$", kind="drop_connection")
    assert received_before_drop(emu, url, name="blob-1", type="step") == (8 * MIB, 4 * MIB)
    emu.inject_fault(path="/step$", kind="drop_connection", after_bytes=MIB + 5)
    assert received_before_drop(emu, url, name="blob-1", type="step") == (8 * MIB, MIB + 5)
    whole = client.get(url, params={"name": "blob-1", "type": "step"})
    assert len(whole.content) == 8 * MIB
    assert "Traceback" not in emu.stderr_tail  # dropped on purpose: not logged as an error


def test_delay_and_a_client_timeout(client, emu, workflow):
    emu.inject_fault(path="/instances/i$", kind="delay", seconds=0.3, count=2)
    started = time.monotonic()
    assert result(client.get(f"/{workflow}/instances/i"))["status"] == "running"
    assert time.monotonic() - started >= 0.3
    with pytest.raises(httpx.ReadTimeout):
        client.get(f"/{workflow}/instances/i", timeout=0.05)
    assert [entry["fault"] for entry in emu.requests_log()[-2:]] == ["delay", "delay"]


def test_header_drip_sends_the_head_slowly_then_the_whole_answer(client, emu, workflow):
    whole = client.get(f"/{workflow}/instances/i").content
    emu.inject_fault(path="/instances/i$", kind="header_drip", interval=0.01)
    started = time.monotonic()
    dripped = client.get(f"/{workflow}/instances/i")
    assert time.monotonic() - started >= 0.01 * 100  # over 100 bytes of status line and headers
    assert dripped.status_code == 200
    assert dripped.content == whole
    assert dripped.headers["connection"] == "close"
    assert "cf-ray" in dripped.headers
    # A client that gives up ends it; the next request is fine.
    emu.inject_fault(path="/instances/i$", kind="header_drip", interval=1)
    with pytest.raises(httpx.ReadTimeout):
        client.get(f"/{workflow}/instances/i", timeout=0.5)
    assert result(client.get(f"/{workflow}/instances/i"))["status"] == "running"
    assert [entry["fault"] for entry in emu.requests_log()[-3:]] == ["header_drip", "header_drip", None]
    assert "Traceback" not in emu.stderr_tail


def test_fault_matching_counts_and_listing(client, emu, workflow):
    emu.inject_fault(path="/never-matches", kind="server_error", count=3)
    emu.inject_fault(path="/instances/i$", method="PATCH", kind="server_error")
    emu.inject_fault(path="/instances/i$", kind="rate_limit", count=2)
    assert result(client.get(f"/{workflow}"))  # matches nothing
    assert client.get(f"/{workflow}/instances/i").status_code == 429  # GET skips the PATCH-only fault
    assert [(f["kind"], f["count"]) for f in emu.faults()] == [
        ("server_error", 3),
        ("server_error", 1),
        ("rate_limit", 1),
    ]
    assert httpx.get(f"{emu.workflows_url}/{workflow}/instances/i").status_code == 400  # no auth: no fault
    assert emu.faults()[-1]["count"] == 1
    emu.clear_faults()
    assert emu.faults() == []
    assert result(client.get(f"/{workflow}/instances/i"))


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"kind": "explode"}, "fault kind must be one of"),
        ({"path": "x"}, "a fault needs 'kind'"),
        ({"kind": "delay", "seconds": -1}, "fault seconds must be from 0"),
        ({"kind": "server_error", "status": 200}, "fault status must be an HTTP error status"),
        ({"kind": "rate_limit", "count": 0}, "fault count must be a whole number >= 1"),
        ({"kind": "rate_limit", "path": "("}, "is not a valid regular expression"),
        ({"kind": "rate_limit", "method": "FETCH"}, "fault method must be one of"),
        ({"kind": "rate_limit", "colour": "red"}, "unknown fault field(s) ['colour']"),
        ({"kind": "drip", "interval": 0}, "fault interval must be more than 0"),
        ({"kind": "html", "status": 302}, "fault status must be an HTTP error status"),
        ({"kind": "server_error", "status": 200}, "(400-599; html also 200)"),
        ({"kind": "server_error", "error_chain": [{"code": "x"}]}, "fault error_chain must be a list"),
    ],
)
def test_invalid_faults_are_rejected(emu, fault, message):
    with pytest.raises(EmulatorError, match="400") as caught:
        emu.inject_fault(**fault)
    assert message in str(caught.value)


def test_request_log(client, emu, workflow):
    emu.clear_requests_log()
    started = time.time()
    client.post(f"/{workflow}/instances", json={"instance_id": "logged", "params": {"k": "v"}})
    client.get(f"/{workflow}/instances", params={"per_page": 5, "status": "running"})
    emu.inject_fault(path="/instances/logged$", kind="rate_limit")
    client.get(f"/{workflow}/instances/logged")
    httpx.get(
        f"{emu.workflows_url}/{workflow}", headers={"X-Auth-Email": emu.email, "X-Auth-Key": emu.api_key}
    )
    log = emu.requests_log()
    times = [entry.pop("time") for entry in log]
    assert started - 1 <= times[0] <= times[1] <= times[2] <= times[3] <= time.time() + 1
    prefix = f"/client/v4/accounts/{emu.account_id}/workflows/{workflow}"
    assert log == [
        {
            "method": "POST",
            "raw_path": f"{prefix}/instances",
            "query": "",
            "endpoint": "create",
            "auth": "bearer",
            "credential": emu.token_label,
            "body": {"instance_id": "logged", "params": {"k": "v"}},
            "fault": None,
            "status": 200,
        },
        {
            "method": "GET",
            "raw_path": f"{prefix}/instances",
            "query": "per_page=5&status=running",
            "endpoint": "list_instances",
            "auth": "bearer",
            "credential": emu.token_label,
            "body": None,
            "fault": None,
            "status": 200,
        },
        {
            "method": "GET",
            "raw_path": f"{prefix}/instances/logged",
            "query": "",
            "endpoint": "get_instance",
            "auth": "bearer",
            "credential": emu.token_label,
            "body": None,
            "fault": "rate_limit",
            "status": 429,
        },
        {
            "method": "GET",
            "raw_path": prefix,
            "query": "",
            "endpoint": "get_workflow",
            "auth": "legacy",
            "credential": emu.key_label,
            "body": None,
            "fault": None,
            "status": 200,
        },
    ]
    assert emu.requests_log(since=times[2]) == emu.requests_log()[2:]
    stats = emu.request_stats()
    assert stats["total"] == 4
    assert stats["by_status"] == {"200": 3, "429": 1}
    assert stats["rate_limited"] == 1
    assert stats["creates"] == 1
    assert stats["events"] == 0
    assert stats["by_credential"] == {emu.token_label: 3, emu.key_label: 1}
    assert stats["by_endpoint"]["create"] == 1
    assert (stats["first_time"], stats["last_time"]) == (times[0], times[3])
    text = json.dumps(log)
    assert emu.api_token not in text
    assert emu.api_key not in text
    emu.clear_requests_log()
    assert emu.requests_log() == []


def test_reset_keeps_workflows(client, emu, workflow):
    emu.inject_fault(kind="rate_limit")
    emu.reset()
    assert emu.faults() == []
    assert emu.requests_log() == []
    assert result(client.get(f"/{workflow}"))["instances"] == {}
    assert error(client.get(f"/{workflow}/instances/i"), 404)[0] == 10400


def test_clock_control(emu):
    before = emu.now()
    assert emu.advance(30) == pytest.approx(before + 30, abs=0.01)
    emu.set_time_scale(1000)
    assert emu.now() > before + 30
    emu.set_time_scale(0)
    frozen = emu.now()
    assert emu.now() == frozen
    clock = httpx.get(f"{emu.url}/__emulator/clock").json()
    assert clock["time_scale"] == 0
    assert clock["now_iso"].endswith("Z")
    for body in ({"advance_seconds": -1}, {"time_scale": -2}, {"speed": 1}, {}):
        response = httpx.post(f"{emu.url}/__emulator/clock", json=body)
        assert response.status_code == 400
        assert "error" in response.json()


def test_control_workflow_and_instance_errors(emu, make_workflow):
    with pytest.raises(EmulatorError, match=r"400.*steps\[0\]\.type must be one of"):
        emu.put_workflow({"name": "broken", "steps": [{"name": "s", "type": "loop"}]})
    with pytest.raises(EmulatorError, match="404"):
        emu.create_cron_instance("no-such-workflow", "x")
    name = make_workflow([])
    emu.create_cron_instance(name, "cron id")
    with pytest.raises(EmulatorError, match="409"):
        emu.create_cron_instance(name, "cron id")
    with pytest.raises(EmulatorError, match="404"):
        emu.stream_digest(name, "cron id", "nothing-1")
    unknown = httpx.get(f"{emu.url}/__emulator/nothing")
    assert unknown.status_code == 404
    assert "no control route" in unknown.json()["error"]
