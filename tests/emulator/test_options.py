"""The API options (scenario ``api``, CLI flags, ``/__emulator/options``): each mode over real HTTP."""

from __future__ import annotations

import gzip
import hashlib
import json
import socket
from urllib.parse import urlsplit

import httpx
import pytest

from airflow_provider_cfworkflows.emulator.scenario import ApiOptions, ScenarioError, parse_scenario
from airflow_provider_cfworkflows.emulator.server import EmulatorError
from tests.emulator._helpers import error, result

MIB = 1024 * 1024


def test_options_default_and_reset(emu):
    defaults = {
        "already_exists_status": 409,
        "params_encoding": "lenient",
        "output_encoding": "raw",
        "stream_content_length": True,
        "gzip": False,
        "pause_delay": 0.0,
        "rollback_duration": 0.0,
        "list_date_field": "created_on",
        "list_lag": 0.0,
        "list_omit_every": 0,
    }
    assert emu.options() == defaults
    assert emu.set_options(already_exists_status=400)["already_exists_status"] == 400
    emu.reset()
    assert emu.options() == defaults
    with pytest.raises(EmulatorError, match="already_exists_status must be one of"):
        emu.set_options(already_exists_status=404)
    with pytest.raises(EmulatorError, match=r"unknown field\(s\) \['colour'\]"):
        emu.set_options(colour="red")


def test_scenario_api_and_rate_limit_sections():
    scenario = parse_scenario(
        {"api": {"params_encoding": "object", "pause_delay": 3}, "rate_limit": {"quota": 120, "window": 30}}
    )
    assert scenario.api == ApiOptions(params_encoding="object", pause_delay=3.0)
    assert (scenario.rate_limit.quota, scenario.rate_limit.window, scenario.rate_limit.headers) == (  # type: ignore[union-attr]
        120,
        30,
        True,
    )
    assert parse_scenario({"rate_limit": None}).rate_limit is None
    with pytest.raises(ScenarioError, match=r"scenario\.api\.output_encoding must be one of \['raw', 'str"):
        parse_scenario({"api": {"output_encoding": "base64"}})
    with pytest.raises(ScenarioError, match=r"scenario\.rate_limit\.quota must be a whole number >= 1"):
        parse_scenario({"rate_limit": {"quota": -1}})


@pytest.mark.parametrize("status", [409, 400])
def test_already_exists_status(emu, client, make_workflow, status):
    emu.set_options(already_exists_status=status)
    name = make_workflow([])
    result(client.post(f"/{name}/instances", json={"instance_id": "twice"}))
    assert error(client.post(f"/{name}/instances", json={"instance_id": "twice"}), status) == (
        10405,
        "(instance.already_exists) Instance already exists",
    )


def test_params_encodings(emu, client, make_workflow):
    name = make_workflow([{"name": "wait", "duration": 100}])

    def create(instance_id: str, params: object) -> httpx.Response:
        return client.post(f"/{name}/instances", json={"instance_id": instance_id, "params": params})

    def received(instance_id: str) -> object:
        return result(client.get(f"/{name}/instances/{instance_id}"))["params"]

    # lenient (default): an object as it is, a JSON string decoded
    result(create("l1", {"a": 1}))
    result(create("l2", '{"a": 2}'))
    assert (received("l1"), received("l2")) == ({"a": 1}, {"a": 2})
    emu.set_options(params_encoding="object")
    message = error(create("o1", '{"a": 1}'), 400)[1]
    assert "params" in message
    assert "string" in message
    result(create("o2", {"a": 3}))
    result(create("o3", None))
    assert received("o2") == {"a": 3}
    batch = client.post(f"/{name}/instances/batch", json=[{"instance_id": "o4", "params": "[]"}])
    assert "params" in error(batch, 400)[1]
    emu.set_options(params_encoding="string")
    assert "params" in error(create("s1", {"a": 1}), 400)[1]
    assert "params" in error(create("s2", "not json"), 400)[1]
    result(create("s3", json.dumps({"a": [4]})))
    assert received("s3") == {"a": [4]}
    result(client.post(f"/{name}/instances/batch", json=[{"instance_id": "s4", "params": '"text"'}]))
    assert received("s4") == "text"


def test_output_encodings(emu, client, make_workflow):
    name = make_workflow([], output={"report": "r-1", "rows": 14})
    result(client.post(f"/{name}/instances", json={"instance_id": "o"}))
    assert result(client.get(f"/{name}/instances/o"))["output"] == {"report": "r-1", "rows": 14}
    emu.set_options(output_encoding="string")
    output = result(client.get(f"/{name}/instances/o"))["output"]
    assert output == '{"report":"r-1","rows":14}'
    nothing = make_workflow([])
    result(client.post(f"/{nothing}/instances", json={"instance_id": "n"}))
    assert result(client.get(f"/{nothing}/instances/n"))["output"] is None


def raw_get(url: str, path: str, headers: dict[str, str]) -> tuple[bytes, bytes]:
    """``(head, body)`` of a GET read straight from the socket (to see the framing)."""
    parts = urlsplit(url)
    request = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n"
    request += "".join(f"{key}: {value}\r\n" for key, value in headers.items()) + "\r\n"
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(request.encode())
        data = b""
        while chunk := sock.recv(1 << 20):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head.lower(), body


def test_streams_with_and_without_content_length(emu, client, make_workflow):
    name = make_workflow([{"name": "blob", "stream": {"size": 3 * MIB + 5, "seed": 4}}])
    result(client.post(f"/{name}/instances", json={"instance_id": "c"}))
    params = {"name": "blob-1", "type": "step"}
    expected = emu.stream_digest(name, "c", "blob-1")
    with_length = client.get(f"/{name}/instances/c/step", params=params)
    assert with_length.headers["content-length"] == str(3 * MIB + 5)
    emu.set_options(stream_content_length=False)
    chunked = client.get(f"/{name}/instances/c/step", params=params)
    assert "content-length" not in chunked.headers
    assert chunked.headers["transfer-encoding"] == "chunked"
    assert hashlib.sha256(chunked.content).hexdigest() == expected["sha256"]
    assert len(chunked.content) == expected["size"]
    json_answer = client.get(f"/{name}/instances/c")  # JSON answers keep their length
    assert json_answer.headers["content-length"] == str(len(json_answer.content))


def test_gzip_when_asked_and_accepted(emu, client, make_workflow):
    name = make_workflow([{"name": "blob", "stream": {"size": MIB, "seed": 8}}])
    result(client.post(f"/{name}/instances", json={"instance_id": "g"}))
    path = f"{urlsplit(emu.workflows_url).path}/{name}/instances/g"
    auth = {**emu.auth_headers, "Accept-Encoding": "gzip"}
    head, body = raw_get(emu.url, path, auth)
    assert b"content-encoding" not in head  # off by default
    emu.set_options(gzip=True)
    head, body = raw_get(emu.url, path, auth)
    assert b"content-encoding: gzip" in head
    assert f"content-length: {len(body)}".encode() in head  # the encoded length
    assert json.loads(gzip.decompress(body))["result"]["status"] == "complete"
    head, body = raw_get(emu.url, path, {**emu.auth_headers, "Accept-Encoding": "identity"})
    assert b"content-encoding" not in head
    assert json.loads(body)["success"] is True
    # A stream output is compressed too; its Content-Length is the encoded size (httpx decodes).
    stream = client.get(f"/{name}/instances/g/step", params={"name": "blob-1", "type": "step"})
    assert stream.headers["content-encoding"] == "gzip"
    assert int(stream.headers["content-length"]) != MIB
    assert hashlib.sha256(stream.content).hexdigest() == emu.stream_digest(name, "g", "blob-1")["sha256"]


def test_pause_passes_through_waiting_for_pause(emu, client, make_workflow):
    emu.set_options(pause_delay=10)
    name = make_workflow([{"name": "slow", "duration": 100, "output": 1}])
    result(client.post(f"/{name}/instances", json={"instance_id": "p"}))
    emu.advance(5)
    answer = result(client.patch(f"/{name}/instances/p/status", json={"status": "pause"}))
    assert answer["status"] == "waitingForPause"
    emu.advance(9)
    listed = result(client.get(f"/{name}/instances", params={"status": "waitingForPause"}))
    assert [item["id"] for item in listed] == ["p"]
    emu.advance(1)
    assert result(client.get(f"/{name}/instances/p"))["status"] == "paused"
    result(client.patch(f"/{name}/instances/p/status", json={"status": "resume"}))
    emu.advance(84)  # 5 + 10 run before the pause took effect: 99 of 100 seconds run now
    assert result(client.get(f"/{name}/instances/p"))["status"] == "running"
    emu.advance(1)
    assert result(client.get(f"/{name}/instances/p"))["status"] == "complete"
    # A resume while still waitingForPause cancels the pause.
    result(client.post(f"/{name}/instances", json={"instance_id": "q"}))
    result(client.patch(f"/{name}/instances/q/status", json={"status": "pause"}))
    emu.advance(3)
    resumed = result(client.patch(f"/{name}/instances/q/status", json={"status": "resume"}))
    assert resumed["status"] == "running"
    emu.advance(20)
    assert result(client.get(f"/{name}/instances/q"))["status"] == "running"


def test_terminate_with_rollback_passes_through_rolling_back(emu, client, make_workflow):
    emu.set_options(rollback_duration=30)
    name = make_workflow([{"name": "slow", "duration": 100}])
    for instance_id in ("r", "plain"):
        result(client.post(f"/{name}/instances", json={"instance_id": instance_id}))
    body = {"status": "terminate", "rollback": True}
    assert result(client.patch(f"/{name}/instances/r/status", json=body))["status"] == "rollingBack"
    terminate = {"status": "terminate"}
    assert result(client.patch(f"/{name}/instances/plain/status", json=terminate))["status"] == "terminated"
    details = result(client.get(f"/{name}/instances/r"))
    assert (details["status"], details["end"], details["rollback"]) == ("rollingBack", None, None)
    assert error(client.patch(f"/{name}/instances/r/status", json={"status": "pause"}), 409)[0] == 10409
    assert error(client.post(f"/{name}/instances/r/events/go", json={}), 409)[0] == 10409
    emu.advance(30)
    details = result(client.get(f"/{name}/instances/r"))
    assert details["status"] == "terminated"
    assert details["rollback"] == {"outcome": "complete", "error": None}


def test_listings_that_lag_or_miss_instances(emu, client, make_workflow):
    name = make_workflow([{"name": "work", "duration": 10}])
    for number in range(6):
        result(client.post(f"/{name}/instances", json={"instance_id": f"i{number}"}))
    emu.advance(5)
    result(client.post(f"/{name}/instances", json={"instance_id": "late"}))
    emu.advance(6)  # i0-i5 complete (11 s), late still runs (6 s)

    def listed(**params):
        pages = [client.get(f"/{name}/instances", params={"per_page": 2, **params})]
        while cursor := pages[-1].json()["result_info"]["cursor"]:
            pages.append(client.get(f"/{name}/instances", params={"per_page": 2, "cursor": cursor, **params}))
        return {item["id"]: item["status"] for page in pages for item in result(page)}, pages

    emu.set_options(list_lag=7)  # as of 4 s: i0-i5 still run; late as it was when created (running)
    lagging, pages = listed(status="running")
    assert lagging == {**{f"i{number}": "running" for number in range(6)}, "late": "running"}
    # Every page repeats the count of the first (carried in the cursor).
    assert [page.json()["result_info"]["total_count"] for page in pages] == [7, 7, 7, 7]
    assert result(client.get(f"/{name}/instances/i0"))["status"] == "complete"  # details never lag

    emu.set_options(list_lag=0, list_omit_every=2)
    everything, _ = listed()
    seqs = sorted(everything)  # the emulator numbers instances across workflows: about half are left out
    assert 3 <= len(seqs) <= 4
    assert set(seqs) < {*(f"i{number}" for number in range(6)), "late"}
    assert listed()[0] == everything  # the same ones every time
    assert error(client.get(f"/{name}/instances", params={"cursor": "e30"}), 400)[0] == 10021
