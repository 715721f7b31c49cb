"""Details of the emulated API that follow Cloudflare: cf-ray, reserved and control-character ids,
deletion, events to finished instances, oversize outputs, sleep counters, text stream previews."""

from __future__ import annotations

import re
from urllib.parse import quote

import httpx
import pytest

from airflow_provider_cfworkflows.emulator.shapes import PREVIEW_LIMIT, TRUNCATED_MARKER
from airflow_provider_cfworkflows.emulator.streams import iter_stream_bytes
from tests.emulator._helpers import error, result, step_of

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
CF_RAY = re.compile(r"[0-9a-f]{16}-SJC")


def test_every_answer_has_a_cf_ray(client, emu, make_workflow):
    name = make_workflow([{"name": "blob", "stream": {"size": 10, "seed": 1}}])
    emu.inject_fault(path="/faulty", kind="rate_limit")
    answers = [
        client.get(f"/{name}"),
        client.get("/no-such-workflow"),
        client.get(f"/{name}/faulty/route"),
        httpx.get(f"{emu.workflows_url}/{name}"),
        client.post(f"/{name}/instances", json={"instance_id": "s"}),
        client.get(f"/{name}/instances/s/step", params={"name": "blob-1", "type": "step"}),
    ]
    assert [a.status_code for a in answers] == [200, 404, 429, 400, 200, 200]
    rays = [a.headers["cf-ray"] for a in answers]
    assert all(CF_RAY.fullmatch(ray) for ray in rays), rays
    assert len(set(rays)) == len(rays)


@pytest.mark.parametrize(
    "instance_id", ["batch", "terminate", "terminateAll", "cf_" + "0" * 64, "abc\n", "a\x00b", "x" * 101]
)
def test_reserved_and_malformed_ids_are_refused_on_create(client, make_workflow, instance_id):
    name = make_workflow([])
    assert error(client.post(f"/{name}/instances", json={"instance_id": instance_id}), 400) == (
        10021,
        "Provided Workflow ID is not valid.",
    )
    batch = client.post(f"/{name}/instances/batch", json=[{"instance_id": instance_id}])
    assert error(batch, 400)[0] == 10021
    assert result(client.get(f"/{name}/instances")) == []


def test_control_characters_in_paths_are_refused(client, make_workflow):
    name = make_workflow([{"name": "gate", "type": "waitForEvent", "event_type": "go"}])
    result(client.post(f"/{name}/instances", json={"instance_id": "i"}))
    for bad_id in ("i\n", "i\r", "\x7fi"):
        assert error(client.get(f"/{name}/instances/{quote(bad_id)}"), 400)[0] == 10021
    for bad_type in ("go\n", "go\t", "g\x00o"):
        code, message = error(client.post(f"/{name}/instances/i/events/{quote(bad_type)}", json={}), 400)
        assert (code, message) == (10021, "workflow.invalid_event_type")
    assert result(client.get(f"/{name}/instances/i"))["status"] == "waiting"  # nothing was delivered


def test_location_hint_on_create_and_batch(client, make_workflow):
    name = make_workflow([])
    result(client.post(f"/{name}/instances", json={"instance_id": "a", "location_hint": "apac-ne"}))
    result(client.post(f"/{name}/instances/batch", json=[{"instance_id": "b", "location_hint": "me"}]))
    bad = client.post(f"/{name}/instances/batch", json=[{"instance_id": "c", "location_hint": "mars"}])
    assert "location_hint must be one of wnam, weur" in error(bad, 400)[1]


def test_delete_one_instance(client, make_workflow):
    name = make_workflow([{"name": "slow", "duration": 100}])
    result(client.post(f"/{name}/instances", json={"instance_id": "gone"}))
    deleted = result(client.delete(f"/{name}/instances/gone"))
    assert deleted["instanceId"] == "gone"
    assert deleted["timestamp"].endswith("Z")
    assert error(client.get(f"/{name}/instances/gone"), 404)[0] == 10400
    assert error(client.delete(f"/{name}/instances/gone"), 404)[0] == 10400
    result(client.post(f"/{name}/instances", json={"instance_id": "gone"}))  # the id is free again


def test_batch_delete(client, make_workflow, emu):
    name = make_workflow([{"name": "slow", "duration": 100}])
    result(client.post(f"/{name}/instances/batch", json=[{"instance_id": i} for i in ("a", "b", "c")]))
    answer = result(client.post(f"/{name}/instances/batch/delete", json={"instances": ["a", "ghost", "c"]}))
    assert answer == {
        "deleted": [{"id": "a"}, {"id": "c"}],
        "errors": [{"id": "ghost", "code": 10400, "message": "workflows.api.error.instance.not_found"}],
    }
    assert [item["id"] for item in result(client.get(f"/{name}/instances"))] == ["b"]
    too_many = {"instances": [f"i{n}" for n in range(101)]}
    assert error(client.post(f"/{name}/instances/batch/delete", json=too_many), 400)[0] == 10021
    assert error(client.post(f"/{name}/instances/batch/delete", json=["b"]), 400)[0] == 10021
    assert emu.requests_log()[-2]["endpoint"] == "batch_delete"


def test_events_to_finished_instances_are_refused(client, make_workflow):
    name = make_workflow([{"name": "gate", "type": "waitForEvent", "event_type": "go"}])
    for instance_id in ("done", "stopped"):
        result(client.post(f"/{name}/instances", json={"instance_id": instance_id}))
    result(client.post(f"/{name}/instances/done/events/go", json=1))
    result(client.patch(f"/{name}/instances/stopped/status", json={"status": "terminate"}))
    for instance_id, status in (("done", "complete"), ("stopped", "terminated")):
        code, message = error(client.post(f"/{name}/instances/{instance_id}/events/go", json=2), 409)
        assert code == 10409
        assert status in message


def test_oversize_output_fails_the_step_without_retries(client, make_workflow, emu):
    big = "x" * MIB  # over 1 MiB as JSON (the quotes)
    name = make_workflow([{"name": "fetch", "duration": 1, "output": big, "retries": {"limit": 3}}])
    result(client.post(f"/{name}/instances", json={"instance_id": "big"}))
    emu.advance(1)
    run = result(client.get(f"/{name}/instances/big"))
    message = "Step fetch-1 output is too large. Maximum allowed size is 1MiB."
    assert run["status"] == "errored"
    assert run["error"] == {"name": "WorkflowInternalError", "message": message}
    entry = step_of(run, "fetch-1")
    assert (entry["success"], len(entry["attempts"])) == (False, 1)
    fits = make_workflow([{"name": "fetch", "output": "x" * (MIB - 2)}])
    result(client.post(f"/{fits}/instances", json={"instance_id": "ok"}))
    assert result(client.get(f"/{fits}/instances/ok"))["status"] == "complete"


def test_sleep_counters_follow_name_and_duration(client, make_workflow, emu):
    steps = [
        {"name": "nap", "type": "sleep", "duration": 5},
        {"name": "nap", "type": "sleep", "duration": 10},
        {"name": "nap", "type": "sleep", "duration": 5},
    ]
    name = make_workflow(steps)
    result(client.post(f"/{name}/instances", json={"instance_id": "z"}))
    emu.advance(20)
    run = result(client.get(f"/{name}/instances/z"))
    assert [(s["name"], s["end"] > s["start"]) for s in run["steps"]] == [
        ("nap-1", True),
        ("nap-1", True),
        ("nap-2", True),
    ]


@pytest.mark.parametrize(("size", "truncated"), [(100, False), (PREVIEW_LIMIT, False), (5 * MIB, True)])
def test_text_stream_previews(client, make_workflow, size, truncated):
    name = make_workflow([{"name": "report", "stream": {"size": size, "seed": 3, "text": True}}])
    result(client.post(f"/{name}/instances", json={"instance_id": "t"}))
    text = b"".join(iter_stream_bytes(min(size, 4096), 3, text=True)).decode("ascii")
    shown = step_of(result(client.get(f"/{name}/instances/t")), "report-1")["output"]
    expected = text[:PREVIEW_LIMIT] + (TRUNCATED_MARKER if truncated else "")
    assert shown == expected
    served = client.get(f"/{name}/instances/t/step", params={"name": "report-1", "type": "step"}).content
    assert served.isascii()
    assert served[:100] == text[:100].encode()
    assert len(served) == size
