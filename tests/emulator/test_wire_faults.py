"""The faults that break the wire: drip, HTML pages, lost answers, endless and cut-short chunked bodies."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.emulator._helpers import error, result

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


@pytest.fixture
def workflow(client, make_workflow):
    name = make_workflow([{"name": "gate", "type": "waitForEvent", "event_type": "go"}])
    result(client.post(f"/{name}/instances", json={"instance_id": "i"}))
    return name


def test_drip_sends_one_byte_at_a_time(client, emu, workflow):
    whole = client.get(f"/{workflow}/instances/i").content
    emu.inject_fault(path="/instances/i$", kind="drip", interval=0.002)
    started = time.monotonic()
    arrivals = 0
    with client.stream("GET", f"/{workflow}/instances/i") as dripping:
        assert dripping.headers["content-length"] == str(len(whole))
        body = b""
        for chunk in dripping.iter_raw():
            body += chunk
            arrivals += 1
    assert time.monotonic() - started >= 0.002 * (len(whole) - 1)
    assert arrivals > len(whole) // 4  # bytes come a few at a time, not in one piece
    assert json.loads(body)["result"]["status"] == "waiting"
    # A client that gives up is not an error on the server, and the next request is served at once.
    emu.inject_fault(path="/instances/i$", kind="drip", interval=5)
    with pytest.raises(httpx.ReadTimeout):
        client.get(f"/{workflow}/instances/i", timeout=httpx.Timeout(10, read=0.3))
    assert result(client.get(f"/{workflow}/instances/i"))["status"] == "waiting"
    assert "Traceback" not in emu.stderr_tail


@pytest.mark.parametrize("status", [502, 200])
def test_html_error_page(client, emu, workflow, status):
    emu.inject_fault(path="/events/go$", kind="html", status=status)
    page = client.post(f"/{workflow}/instances/i/events/go", json={"ok": True})
    assert page.status_code == status
    assert page.headers["content-type"].startswith("text/html")
    assert page.text.startswith("<html>")
    assert ("502 Bad Gateway" if status == 502 else "200 OK") in page.text
    assert result(client.get(f"/{workflow}/instances/i"))["status"] == "waiting"  # the event never arrived


def test_lost_answer_takes_effect_without_answering(client, emu, workflow):
    emu.inject_fault(path="/events/go$", method="POST", kind="lost_answer")
    emu.inject_fault(path="/instances$", method="POST", kind="lost_answer")
    with pytest.raises(httpx.RemoteProtocolError, match="without sending"):
        client.post(f"/{workflow}/instances/i/events/go", json={"ok": True})
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(f"/{workflow}/instances", json={"instance_id": "created-anyway"})
    assert result(client.get(f"/{workflow}/instances/i"))["status"] == "complete"  # the event was delivered
    assert result(client.get(f"/{workflow}/instances/created-anyway"))["status"] == "waiting"
    lost = [entry for entry in emu.requests_log() if entry["fault"] == "lost_answer"]
    assert [(e["endpoint"], e["status"]) for e in lost] == [("send_event", None), ("create", None)]
    stats = emu.request_stats()
    assert (stats["events"], stats["creates"]) == (1, 2)
    assert "Traceback" not in emu.stderr_tail
    # Also when the call itself fails (here: already exists), nothing is answered.
    emu.inject_fault(path="/instances$", method="POST", kind="lost_answer")
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(f"/{workflow}/instances", json={"instance_id": "created-anyway"})


def test_endless_json_never_ends(client, emu, workflow):
    emu.inject_fault(path="/instances/i$", kind="endless_json")
    received = 0
    with client.stream("GET", f"/{workflow}/instances/i") as endless:
        assert endless.status_code == 200
        assert endless.headers["content-type"] == "application/json"
        assert "content-length" not in endless.headers
        for chunk in endless.iter_raw():
            received += len(chunk)
            if received > 8 * MIB:
                break
    assert received > 8 * MIB
    assert result(client.get(f"/{workflow}/instances/i"))["status"] == "waiting"


def test_truncated_chunked_looks_complete(client, emu, workflow, make_workflow):
    whole = client.get(f"/{workflow}/instances/i").content
    emu.inject_fault(path="/instances/i$", kind="truncated_chunked")
    cut = client.get(f"/{workflow}/instances/i")  # no error from the HTTP layer
    assert cut.status_code == 200
    assert "content-length" not in cut.headers
    assert cut.content == whole[: len(whole) // 2]
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut.content)
    name = make_workflow([{"name": "blob", "stream": {"size": 4 * MIB, "seed": 5}}])
    result(client.post(f"/{name}/instances", json={"instance_id": "s"}))
    emu.inject_fault(path="/step$", kind="truncated_chunked", after_bytes=MIB + 3)
    stream = client.get(f"/{name}/instances/s/step", params={"name": "blob-1", "type": "step"})
    assert len(stream.content) == MIB + 3
    assert "content-length" not in stream.headers


def test_server_error_with_an_error_chain(client, emu, workflow):
    chain = [{"code": 6111, "message": "Invalid format for Authorization header"}]
    emu.inject_fault(path="/instances/i$", kind="server_error", status=502, error_chain=chain)
    answer = client.get(f"/{workflow}/instances/i")
    assert error(answer, 502)[0] == 10001
    assert answer.json()["errors"][0]["error_chain"] == chain
