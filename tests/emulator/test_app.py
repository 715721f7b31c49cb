"""The emulator over HTTP: auth, validation and control-API behaviour the hook tests do not reach."""

from __future__ import annotations

import subprocess
import sys
import uuid

import httpx
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def workflow(fresh_emulator):
    name = f"app-{uuid.uuid4().hex[:6]}"
    fresh_emulator.put_workflow(
        {
            "name": name,
            "steps": [
                {"name": "a", "duration": 1, "output": {"x": 1}},
                {"name": "wait", "type": "waitForEvent", "event_type": "go", "timeout": 60},
            ],
        }
    )
    return name


@pytest.fixture
def api(fresh_emulator, workflow):
    with httpx.Client(
        base_url=f"{fresh_emulator.api_base}/accounts/{fresh_emulator.account_id}/workflows/{workflow}",
        headers={"Authorization": f"Bearer {fresh_emulator.api_token}"},
    ) as client:
        yield client


def errors(response):
    body = response.json()
    assert body["success"] is False
    assert body["result"] is None
    return [(e["code"], e["message"]) for e in body["errors"]]


def test_missing_and_wrong_credentials(fresh_emulator, workflow):
    url = f"{fresh_emulator.api_base}/accounts/{fresh_emulator.account_id}/workflows"
    missing = httpx.get(url)
    wrong = httpx.get(url, headers={"Authorization": "Bearer wrong-token-0xdead"})
    legacy_wrong = httpx.get(url, headers={"X-Auth-Email": "dev@example.com", "X-Auth-Key": "nope"})
    assert (missing.status_code, errors(missing)[0][0]) == (401, 9106)
    assert (wrong.status_code, errors(wrong)) == (403, [(10000, "Authentication error")])
    assert legacy_wrong.status_code == 403
    log = fresh_emulator.requests_log()
    assert [entry["auth"] for entry in log] == ["none", "bearer", "legacy"]
    assert "wrong-token-0xdead" not in str(log)


def test_validation_errors(api):
    assert api.post("/instances", json={"instance_id": "-bad"}).status_code == 400
    assert api.post("/instances", json={"instance_id": "cf_" + "a" * 64}).status_code == 400
    assert api.post("/instances/batch", json=[{"instance_id": "d"}, {"instance_id": "d"}]).status_code == 400
    api.post("/instances", json={"instance_id": "v"})
    assert api.post("/instances/v/events/bad.type", json={}).status_code == 400
    assert api.post("/instances/v/events/go", content=b'"' + b"x" * (1024 * 1024) + b'"').status_code == 400
    assert (
        api.get(
            "/instances/v/step", params={"name": "wait-1", "type": "waitForEvent", "attempt": 1}
        ).status_code
        == 400
    )
    assert api.get("/instances/v/step", params={"name": "a-1", "type": "sleep"}).status_code == 400
    assert api.get("/instances", params={"status": "done"}).status_code == 400
    assert api.patch("/instances/v/status", json={"status": "stop"}).status_code == 400


def test_not_found_codes(api, fresh_emulator):
    base = f"{fresh_emulator.api_base}/accounts/{fresh_emulator.account_id}/workflows"
    headers = {"Authorization": f"Bearer {fresh_emulator.api_token}"}
    assert errors(httpx.get(f"{base}/nope", headers=headers))[0][0] == 10200
    assert errors(api.get("/instances/ghost"))[0][0] == 10400
    api.post("/instances", json={"instance_id": "n"})
    missing_step = api.get("/instances/n/step", params={"name": "a-2", "type": "step"})
    assert missing_step.status_code == 404
    assert "Step 'a-2' not found for instance 'n'" in errors(missing_step)[0][1]


def test_terminal_instances_refuse_pause(api, fresh_emulator):
    api.post("/instances", json={"instance_id": "t"})
    api.patch("/instances/t/status", json={"status": "terminate"})
    assert api.patch("/instances/t/status", json={"status": "pause"}).status_code == 409


def test_fault_control_and_dropped_json(api, fresh_emulator):
    fresh_emulator.inject_fault(path="/instances$", method="GET", kind="drop_connection", count=2)
    fresh_emulator.inject_fault(path="/never-matches", kind="server_error")
    with pytest.raises(httpx.RemoteProtocolError):
        api.get("/instances")
    pending = fresh_emulator._call("GET", "/faults")
    assert [(f["kind"], f["count"]) for f in pending] == [("drop_connection", 1), ("server_error", 1)]
    fresh_emulator.clear_faults()
    assert api.get("/instances").status_code == 200


def test_cli_refuses_non_loopback_and_bad_scenario(tmp_path):
    command = [sys.executable, "-m", "airflow_provider_cfworkflows.emulator"]
    remote = subprocess.run([*command, "--host", "0.0.0.0"], capture_output=True, text=True, check=False)
    assert remote.returncode == 2
    assert "not a loopback address" in remote.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("workflows: [{name: w, steps: [{name: s, type: loop}]}]")
    broken = subprocess.run(
        [*command, "--scenario", str(bad), "--port", "0"], capture_output=True, text=True, check=False
    )
    assert broken.returncode == 2
    assert "type must be one of" in broken.stderr
