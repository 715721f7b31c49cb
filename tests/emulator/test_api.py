"""The emulated Workflows REST API over real HTTP, with the emulator's clock frozen."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from urllib.parse import quote

import httpx
import psutil
import pytest

from airflow_provider_cfworkflows.emulator.shapes import PREVIEW_LIMIT, TRUNCATED_MARKER
from airflow_provider_cfworkflows.emulator.streams import iter_stream_bytes
from tests.emulator._helpers import error, result, step_of

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
CRON_ID = "*/5 * * * *-1786599900000"


def enc(segment: str) -> str:
    return quote(segment, safe="")


def step_get(client: httpx.Client, workflow: str, instance_id: str, **params: object) -> httpx.Response:
    return client.get(f"/{enc(workflow)}/instances/{enc(instance_id)}/step", params=params)


def details(client: httpx.Client, workflow: str, instance_id: str, **params: object) -> dict:
    return result(client.get(f"/{enc(workflow)}/instances/{enc(instance_id)}", params=params))


# --- workflows and versions --------------------------------------------------------------------


def test_list_workflows_with_page_per_page_and_search(client, make_workflow):
    names = sorted(make_workflow([]) for _ in range(3))
    everything = client.get("", params={"per_page": 100}).json()
    assert everything["result_info"]["total_count"] >= 7
    listed = [w["name"] for w in everything["result"]]
    assert listed == sorted(listed)
    assert {"demo-pipeline", "demo-flaky", "demo-sensitive", *names} <= set(listed)

    prefix = names[0][:2]  # "t-": only this test's kind of names
    pages = [client.get("", params={"search": prefix, "per_page": 2, "page": p}) for p in (1, 2)]
    first, second = (result(page) for page in pages)
    assert pages[0].json()["result_info"]["total_pages"] == -(
        -pages[0].json()["result_info"]["total_count"] // 2
    )
    assert len(first) == 2
    assert not {w["name"] for w in first} & {w["name"] for w in second}
    assert [w["name"] for w in result(client.get("", params={"search": names[1].upper()}))] == [names[1]]
    assert result(client.get("", params={"search": "no-such-workflow"})) == []
    assert error(client.get("", params={"per_page": 101}), 400)[0] == 10021
    assert error(client.get("", params={"page": 0}), 400)[0] == 10021


def test_get_workflow_counts_instances_and_versions(client, make_workflow, emu):
    name = make_workflow([{"name": "a", "duration": 10}], class_name="MyFlow", script_name="my-worker")
    workflow = result(client.get(f"/{name}"))
    assert workflow["class_name"] == "MyFlow"
    assert workflow["script_name"] == "my-worker"
    assert workflow["instances"] == {}
    assert workflow["triggered_on"] is None
    result(client.post(f"/{name}/instances", json={"instance_id": "one"}))
    result(client.post(f"/{name}/instances", json={"instance_id": "two"}))
    result(client.patch(f"/{name}/instances/two/status", json={"status": "terminate"}))
    workflow = result(client.get(f"/{name}"))
    assert workflow["instances"] == {"running": 1, "terminated": 1}
    assert workflow["triggered_on"] is not None
    assert workflow["id"] == str(uuid.UUID(workflow["id"]))

    versions = client.get(f"/{name}/versions")
    [version] = result(versions)
    assert versions.json()["result_info"]["total_count"] == 1
    assert version["workflow_id"] == workflow["id"]
    assert version["class_name"] == "MyFlow"
    assert result(client.get(f"/{name}/versions/{version['id']}")) == version
    assert details(client, name, "one")["versionId"] == version["id"]
    assert error(client.get(f"/{name}/versions/{uuid.uuid4()}"), 404)[0] == 10300
    assert error(client.get(f"/{name}/versions/{uuid.uuid4()}/graph"), 404)[0] == 10300
    graph = result(client.get(f"/{name}/versions/{version['id']}/graph"))
    assert graph["id"] == version["id"]
    assert [node["name"] for node in graph["graph"]["workflow"]["nodes"]] == ["a"]
    # Replacing the definition keeps the one stable version.
    emu.put_workflow({"name": name, "steps": []})
    assert result(client.get(f"/{name}/versions"))[0]["id"] == version["id"]


def test_unknown_workflow_instance_and_route(client, make_workflow):
    assert error(client.get("/nope"), 404) == (10200, "workflows.api.error.workflow.not_found")
    assert error(client.get("/nope/instances"), 404)[0] == 10200
    assert error(client.post("/nope/instances", json={}), 404)[0] == 10200
    name = make_workflow([])
    assert error(client.get(f"/{name}/instances/ghost"), 404) == (
        10400,
        "workflows.api.error.instance.not_found",
    )
    assert error(client.patch(f"/{name}/instances/ghost/status", json={"status": "pause"}), 404)[0] == 10400
    assert error(client.post(f"/{name}/instances/ghost/events/go", json={}), 404)[0] == 10400
    # Unknown paths and methods: 400, 7000, as Cloudflare answers (sources: AUTH_ERROR_HINTS in protocol.py).
    assert error(client.get(f"/{name}/instances/ghost/nothing/here"), 400) == (7000, "No route for that URI")
    assert error(client.delete(f"/{name}/instances"), 400)[0] == 7000


# --- create --------------------------------------------------------------------------------------


def test_create_instance(client, make_workflow):
    name = make_workflow([{"name": "a", "duration": 5}])
    created = result(client.post(f"/{name}/instances", json={"instance_id": "run_1-a", "params": {"day": 1}}))
    workflow = result(client.get(f"/{name}"))
    assert created == {
        "id": "run_1-a",
        "status": "queued",
        "version_id": result(client.get(f"/{name}/versions"))[0]["id"],
        "workflow_id": workflow["id"],
        "trigger_source": "api",
    }
    assert details(client, name, "run_1-a")["params"] == {"day": 1}

    as_string = result(client.post(f"/{name}/instances", json={"instance_id": "s", "params": '{"day": 2}'}))
    assert details(client, name, as_string["id"])["params"] == {"day": 2}
    generated = result(client.post(f"/{name}/instances", json={}))
    assert str(uuid.UUID(generated["id"])) == generated["id"]
    no_body = result(client.post(f"/{name}/instances"))
    assert no_body["id"] != generated["id"]
    full = {
        "instance_id": "full",
        "instance_retention": {"error_retention": 60000, "success_retention": "5 minutes"},
        "location_hint": "weur",
    }
    assert result(client.post(f"/{name}/instances", json=full))["id"] == "full"
    assert result(client.post(f"/{name}/instances", json={"instance_id": "cf_" + "a" * 63}))


def test_duplicate_instance_id_is_409(client, make_workflow):
    name = make_workflow([])
    result(client.post(f"/{name}/instances", json={"instance_id": "dup"}))
    assert error(client.post(f"/{name}/instances", json={"instance_id": "dup"}), 409) == (
        10405,
        "(instance.already_exists) Instance already exists",
    )
    other = make_workflow([])  # ids are per workflow
    assert result(client.post(f"/{other}/instances", json={"instance_id": "dup"}))["id"] == "dup"


@pytest.mark.parametrize(
    "body",
    [
        {"instance_id": "-leading-dash"},
        {"instance_id": "has space"},
        {"instance_id": "a/b"},
        {"instance_id": ""},
        {"instance_id": "x" * 101},
        {"instance_id": 42},
        {"instance_id": "cf_" + "0123456789abcdef" * 4},
    ],
)
def test_invalid_instance_ids_are_400(client, make_workflow, body):
    name = make_workflow([])
    assert error(client.post(f"/{name}/instances", json=body), 400) == (
        10021,
        "Provided Workflow ID is not valid.",
    )


def test_other_create_validation(client, make_workflow):
    name = make_workflow([])
    assert result(client.post(f"/{name}/instances", json={"instance_id": "x" * 100}))
    assert error(client.post(f"/{name}/instances", json={"location_hint": "mars"}), 400)[0] == 10021
    assert error(client.post(f"/{name}/instances", json={"instance_retention": 5}), 400)[0] == 10021
    assert error(client.post(f"/{name}/instances", json=["not", "an", "object"]), 400)[0] == 10021
    malformed = client.post(
        f"/{name}/instances", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert error(malformed, 400) == (6007, "Malformed JSON in request body")


def test_a_body_nested_too_deeply_to_read_is_refused_not_a_crash(client, emu, make_workflow):
    name = make_workflow([])
    deep = b"[" * 100_000 + b"]" * 100_000  # valid JSON, deeper than Python's recursion limit
    refused = client.post(f"/{name}/instances", content=deep, headers={"content-type": "application/json"})
    assert error(refused, 400) == (6007, "Malformed JSON in request body")
    control = httpx.put(f"{emu.url}/__emulator/workflows/{name}", content=deep, timeout=10)
    assert (control.status_code, control.json()) == (400, {"error": "the body is not valid JSON"})


def test_batch_create_skips_existing_ids(client, make_workflow):
    name = make_workflow([{"name": "a", "duration": 1}])
    result(client.post(f"/{name}/instances", json={"instance_id": "b2"}))
    created = result(
        client.post(
            f"/{name}/instances/batch",
            json=[{"instance_id": "b1", "params": {"n": 1}}, {"instance_id": "b2"}, {}],
        )
    )
    assert [item["id"] for item in created][:1] == ["b1"]
    assert len(created) == 2  # b2 already existed: silently missing from the result
    assert all(item["status"] == "queued" and item["trigger_source"] == "api" for item in created)
    assert details(client, name, "b1")["params"] == {"n": 1}
    assert error(client.post(f"/{name}/instances/batch", json=[]), 400)[0] == 10021
    assert error(client.post(f"/{name}/instances/batch", json=[{}] * 101), 400)[0] == 10021
    assert error(client.post(f"/{name}/instances/batch", json={"instance_id": "x"}), 400)[0] == 10021
    assert error(client.post(f"/{name}/instances/batch", json=[{"instance_id": "-x"}]), 400)[0] == 10021
    duplicate = client.post(f"/{name}/instances/batch", json=[{"instance_id": "d"}, {"instance_id": "d"}])
    assert error(duplicate, 400)[0] == 10415
    assert error(client.get(f"/{name}/instances/d"), 404)[0] == 10400  # nothing of a rejected batch


# --- list instances ------------------------------------------------------------------------------


def collect(client: httpx.Client, name: str, **params: object) -> tuple[list[str], list[dict]]:
    ids: list[str] = []
    infos: list[dict] = []
    cursor = None
    while True:
        page = client.get(f"/{name}/instances", params={**params, **({"cursor": cursor} if cursor else {})})
        items = result(page)
        infos.append(page.json()["result_info"])
        ids += [item["id"] for item in items]
        cursor = page.json()["result_info"].get("cursor")
        if not cursor:
            return ids, infos


def test_list_instances_cursor_pagination(client, make_workflow, emu):
    name = make_workflow([{"name": "a", "duration": 1}])
    for i in range(7):
        result(client.post(f"/{name}/instances", json={"instance_id": f"i{i}"}))
        emu.advance(1)
    ids, infos = collect(client, name, per_page=3)
    assert ids == [f"i{i}" for i in range(7)]
    assert [info["count"] for info in infos] == [3, 3, 1]
    assert all(info["per_page"] == 3 and info["total_count"] == 7 for info in infos)
    assert infos[-1]["cursor"] == ""
    assert collect(client, name, per_page=3, direction="desc")[0] == [f"i{i}" for i in reversed(range(7))]
    assert collect(client, name)[1][0]["per_page"] == 50

    # A cursor stays valid when instances are created between pages.
    first = client.get(f"/{name}/instances", params={"per_page": 4}).json()
    result(client.post(f"/{name}/instances", json={"instance_id": "late"}))
    rest = result(
        client.get(f"/{name}/instances", params={"per_page": 4, "cursor": first["result_info"]["cursor"]})
    )
    assert [i["id"] for i in first["result"] + rest] == [*(f"i{i}" for i in range(7)), "late"]
    # Deprecated page numbers still work.
    assert [i["id"] for i in result(client.get(f"/{name}/instances", params={"per_page": 3, "page": 2}))] == [
        "i3",
        "i4",
        "i5",
    ]


def test_list_instances_filters(client, make_workflow, emu):
    name = make_workflow([{"name": "a", "duration": 100}])
    result(client.post(f"/{name}/instances", json={"instance_id": "old"}))
    emu.advance(50)
    middle = result(client.post(f"/{name}/instances", json={"instance_id": "middle"}))
    assert middle
    started = details(client, name, "middle")["queued"]
    emu.advance(50)
    result(client.post(f"/{name}/instances", json={"instance_id": "new"}))
    result(client.patch(f"/{name}/instances/new/status", json={"status": "pause"}))
    emu.advance(1)

    def ids(**params: object) -> list[str]:
        return [i["id"] for i in result(client.get(f"/{name}/instances", params=params))]

    assert ids(status="complete") == ["old"]
    assert ids(status="running") == ["middle"]
    assert ids(status="paused") == ["new"]
    assert ids(status="errored") == []
    assert ids(date_start=started) == ["middle", "new"]
    assert ids(date_end=started.replace("Z", "")) == ["old", "middle"]
    assert ids(date_start=started, date_end=started) == ["middle"]
    listed = {i["id"]: i for i in result(client.get(f"/{name}/instances"))}
    assert listed["old"]["ended_on"] is not None
    assert listed["middle"]["started_on"] is not None
    assert listed["middle"]["ended_on"] is None
    for params in (
        {"status": "done"},
        {"direction": "up"},
        {"per_page": 0},
        {"per_page": 101},
        {"cursor": "zz"},
    ):
        assert error(client.get(f"/{name}/instances", params=params), 400)[0] == 10021
    assert error(client.get(f"/{name}/instances", params={"date_start": "yesterday"}), 400)[0] == 10021


# --- instance details ----------------------------------------------------------------------------


def test_instance_details_through_a_run(client, make_workflow, emu):
    name = make_workflow(
        [{"name": "a", "duration": 2, "output": {"n": 1}}, {"name": "b", "duration": 2, "output": "text"}],
        output={"done": True},
        queue_delay=1,
    )
    result(client.post(f"/{name}/instances", json={"instance_id": "d", "params": {"p": 1}}))
    queued = details(client, name, "d")
    assert queued == {
        "status": "queued",
        "params": {"p": 1},
        "trigger": {"source": "api"},
        "versionId": result(client.get(f"/{name}/versions"))[0]["id"],
        "queued": queued["queued"],
        "start": None,
        "end": None,
        "success": None,
        "error": None,
        "output": None,
        "rollback": None,
        "step_count": 0,
        "steps": [],
    }
    assert queued["queued"].endswith("Z")
    emu.advance(2)
    running = details(client, name, "d")
    assert (running["status"], running["step_count"], running["success"]) == ("running", 1, None)
    entry = running["steps"][0]
    assert entry["type"] == "step"
    assert entry["name"] == "a-1"
    assert (entry["end"], entry["success"], entry["output"]) == (None, None, None)
    assert entry["attempts"] == [{"start": entry["start"], "end": None, "success": None, "error": None}]
    assert entry["config"] == {
        "retries": {"limit": 5, "delay": 10000, "backoff": "exponential"},
        "timeout": "10 minutes",
    }
    emu.advance(3)
    done = details(client, name, "d")
    assert (done["status"], done["success"], done["output"], done["step_count"]) == (
        "complete",
        True,
        {"done": True},
        2,
    )
    assert [s["output"] for s in done["steps"]] == ['{"n":1}', "text"]
    assert done["end"] is not None
    assert [s["name"] for s in details(client, name, "d", order="desc")["steps"]] == ["b-1", "a-1"]
    simple = details(client, name, "d", simple="true")
    assert (simple["steps"], simple["step_count"], simple["status"]) == ([], 2, "complete")
    assert details(client, name, "d", simple="false")["steps"] == done["steps"]
    assert error(client.get(f"/{name}/instances/d", params={"simple": "yes"}), 400)[0] == 10021
    assert error(client.get(f"/{name}/instances/d", params={"order": "random"}), 400)[0] == 10021


def test_truncated_preview_and_full_output(client, emu):
    result(client.post("/demo-pipeline/instances", json={"instance_id": "p"}))
    emu.advance(2)
    prepare = step_of(details(client, "demo-pipeline", "p"), "prepare-1")
    assert prepare["success"] is True
    assert prepare["output"].endswith(TRUNCATED_MARKER)
    assert len(prepare["output"]) == PREVIEW_LIMIT + len(TRUNCATED_MARKER)
    full = result(step_get(client, "demo-pipeline", "p", name="prepare-1", type="step"))
    assert full["status"] == "complete"
    assert full["error"] is None
    assert "event_type" not in full
    stringified = json.dumps(full["output"], separators=(",", ":"), ensure_ascii=False)
    assert len(stringified) > PREVIEW_LIMIT
    assert prepare["output"] == stringified[:PREVIEW_LIMIT] + TRUNCATED_MARKER


def test_truncation_counts_javascript_characters(client, make_workflow):
    text = "é" * 600 + "😀" * 300  # 600 + 600 UTF-16 code units
    name = make_workflow([{"name": "u", "output": text}, {"name": "short", "output": "é" * 1024}])
    result(client.post(f"/{name}/instances", json={"instance_id": "u"}))
    steps = details(client, name, "u")["steps"]
    assert steps[0]["output"] == "é" * 600 + "😀" * 212 + TRUNCATED_MARKER
    assert steps[1]["output"] == "é" * 1024


def test_stream_output_is_raw_bytes(client, emu):
    result(client.post("/demo-pipeline/instances", json={"instance_id": "s"}))
    emu.advance(2)
    assert error(step_get(client, "demo-pipeline", "s", name="build report-1", type="step"), 404)[0] == 10404
    result(client.post("/demo-pipeline/instances/s/events/approval", json={"ok": True}))
    emu.advance(1)
    running = result(step_get(client, "demo-pipeline", "s", name="build report-1", type="step"))
    assert running == {"status": "running", "error": None, "output": None}
    emu.advance(2)
    entry = step_of(details(client, "demo-pipeline", "s"), "build report-1")
    assert entry["output"] == f"[ReadableStream (binary): {5 * MIB} bytes]"

    digest = hashlib.sha256()
    with client.stream(
        "GET", "/demo-pipeline/instances/s/step", params={"name": "build report-1", "type": "step"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.headers["content-length"] == str(5 * MIB)
        received = 0
        for chunk in response.iter_raw():
            digest.update(chunk)
            received += len(chunk)
    assert received == 5 * MIB
    assert emu.stream_digest("demo-pipeline", "s", "build report-1") == {
        "size": 5 * MIB,
        "sha256": digest.hexdigest(),
    }
    assert digest.hexdigest() == hashlib.sha256(b"".join(iter_stream_bytes(5 * MIB, 42))).hexdigest()
    attempt = step_get(client, "demo-pipeline", "s", name="build report-1", type="step", attempt=1)
    assert attempt.headers["content-type"] == "application/octet-stream"
    assert len(attempt.content) == 5 * MIB


def test_sensitive_output_is_redacted(client, emu):
    result(client.post("/demo-sensitive/instances", json={"instance_id": "r"}))
    emu.advance(5)
    run = details(client, "demo-sensitive", "r")
    secret = step_of(run, "mint token-1")
    assert secret["output"] == "[REDACTED]"
    assert secret["config"]["sensitive"] == "output"
    assert "sensitive" not in step_of(run, "use token-1")["config"]
    assert result(step_get(client, "demo-sensitive", "r", name="mint token-1", type="step")) == {
        "status": "complete",
        "error": None,
        "output": "[REDACTED]",
    }
    assert "tok_live" not in json.dumps(run)


# --- step endpoint -------------------------------------------------------------------------------


def test_retries_show_running_with_the_error(client, emu):
    result(client.post("/demo-flaky/instances", json={"instance_id": "f"}))
    upstream = {"name": "Error", "message": "upstream answered 503"}

    def step(**extra: object) -> dict:
        return result(step_get(client, "demo-flaky", "f", name="call upstream-1", type="step", **extra))

    emu.advance(0.5)  # attempt 1 running
    assert details(client, "demo-flaky", "f")["status"] == "running"
    assert step() == {"status": "running", "error": None, "output": None}
    emu.advance(1)  # attempt 1 failed, waiting 1 s for the retry
    assert details(client, "demo-flaky", "f")["status"] == "waiting"
    assert step() == {"status": "running", "error": upstream, "output": None}
    assert step(attempt=1) == {"status": "errored", "error": upstream, "output": None}
    assert (
        error(step_get(client, "demo-flaky", "f", name="call upstream-1", type="step", attempt=2), 404)[0]
        == 10404
    )
    emu.advance(1)  # attempt 2 running
    assert details(client, "demo-flaky", "f")["status"] == "running"
    assert step() == {"status": "running", "error": upstream, "output": None}
    assert step(attempt=2) == {"status": "running", "error": None, "output": None}
    emu.advance(3)  # attempt 2 failed at 3, attempt 3 from 4 to 5 succeeded
    run = details(client, "demo-flaky", "f")
    assert run["status"] == "complete"
    attempts = step_of(run, "call upstream-1")["attempts"]
    assert [(a["success"], a["error"]) for a in attempts] == [
        (False, upstream),
        (False, upstream),
        (True, None),
    ]
    assert step() == {"status": "complete", "error": None, "output": {"attempts_needed": 3}}
    assert step(attempt=3)["output"] == {"attempts_needed": 3}


def test_failed_step_errors_the_instance(client, make_workflow, emu):
    name = make_workflow(
        [
            {
                "name": "load",
                "duration": 1,
                "fail_attempts": 3,
                "error": {"name": "QuotaError", "message": "daily quota exceeded"},
                "retries": {"limit": 1, "delay": 1, "backoff": "constant"},
            }
        ]
    )
    result(client.post(f"/{name}/instances", json={"instance_id": "e"}))
    emu.advance(10)
    run = details(client, name, "e")
    quota = {"name": "QuotaError", "message": "daily quota exceeded"}
    assert (run["status"], run["success"], run["error"], run["output"]) == ("errored", False, quota, None)
    assert step_of(run, "load-1")["success"] is False
    assert result(step_get(client, name, "e", name="load-1", type="step")) == {
        "status": "errored",
        "error": quota,
        "output": None,
    }


def test_step_query_validation_and_not_found(client, make_workflow):
    name = make_workflow([{"name": "a", "duration": 100}, {"name": "later"}])
    result(client.post(f"/{name}/instances", json={"instance_id": "q"}))
    assert error(step_get(client, name, "q", type="step"), 400)[0] == 10021
    assert error(step_get(client, name, "q", name="", type="step"), 400)[0] == 10021
    assert error(step_get(client, name, "q", name="a-1"), 400)[0] == 10021
    assert error(step_get(client, name, "q", name="a-1", type="do"), 400)[0] == 10021
    assert error(step_get(client, name, "q", name="a-1", type="step", attempt=0), 400)[0] == 10021
    assert error(step_get(client, name, "q", name="a-1", type="step", attempt="x"), 400)[0] == 10021
    not_started = error(step_get(client, name, "q", name="later-1", type="step"), 404)
    assert not_started == (10404, "Step 'later-1' not found for instance 'q'")
    assert error(step_get(client, name, "q", name="a", type="step"), 404)[0] == 10404  # without the suffix
    assert error(step_get(client, name, "q", name="a-1", type="waitForEvent"), 404)[0] == 10404


def test_counter_suffixes_and_the_type_parameter(client, make_workflow, emu):
    name = make_workflow(
        [
            {"name": "fetch", "output": 1},
            {"name": "fetch", "output": 2},
            {"name": "approve", "output": "do"},
            {"name": "approve", "type": "waitForEvent", "event_type": "approve", "timeout": 60},
        ]
    )
    result(client.post(f"/{name}/instances", json={"instance_id": "c"}))
    result(client.post(f"/{name}/instances/c/events/approve", json="event"))
    run = details(client, name, "c")
    assert [(s["name"], s["type"]) for s in run["steps"]] == [
        ("fetch-1", "step"),
        ("fetch-2", "step"),
        ("approve-1", "step"),
        ("approve-1", "waitForEvent"),
    ]
    assert result(step_get(client, name, "c", name="fetch-2", type="step"))["output"] == 2
    assert result(step_get(client, name, "c", name="approve-1", type="step"))["output"] == "do"
    assert result(step_get(client, name, "c", name="approve-1", type="waitForEvent"))["output"] == "event"


# --- events, sleep -------------------------------------------------------------------------------


def test_wait_for_event_and_send_event(client, emu):
    result(client.post("/demo-pipeline/instances", json={"instance_id": "w"}))
    emu.advance(2.5)
    run = details(client, "demo-pipeline", "w")
    assert run["status"] == "waiting"
    waiting_entry = step_of(run, "approval-1", "waitForEvent")
    assert waiting_entry["finished"] is False
    assert waiting_entry["event_type"] == "approval"
    assert "output" not in waiting_entry
    assert result(step_get(client, "demo-pipeline", "w", name="approval-1", type="waitForEvent")) == {
        "status": "waiting",
        "error": None,
        "output": None,
        "event_type": "approval",
    }
    bad = step_get(client, "demo-pipeline", "w", name="approval-1", type="waitForEvent", attempt=1)
    assert error(bad, 400) == (10021, "'attempt' is not supported when type is 'waitForEvent'.")
    sent = result(client.post("/demo-pipeline/instances/w/events/approval", json={"approved_by": "ops"}))
    assert sent["instanceId"] == "w"
    assert sent["timestamp"].endswith("Z")
    received = step_of(details(client, "demo-pipeline", "w"), "approval-1", "waitForEvent")
    assert (received["finished"], received["output"]) == (True, '{"approved_by":"ops"}')
    assert result(step_get(client, "demo-pipeline", "w", name="approval-1", type="waitForEvent")) == {
        "status": "complete",
        "error": None,
        "output": {"approved_by": "ops"},
        "event_type": "approval",
    }
    assert details(client, "demo-pipeline", "w")["status"] == "running"  # building the report


def test_an_early_event_is_buffered(client, make_workflow, emu):
    name = make_workflow(
        [{"name": "slow", "duration": 60}, {"name": "gate", "type": "waitForEvent", "event_type": "go"}]
    )
    result(client.post(f"/{name}/instances", json={"instance_id": "b"}))
    result(client.post(f"/{name}/instances/b/events/go", json=[1, 2, 3]))
    assert error(step_get(client, name, "b", name="gate-1", type="waitForEvent"), 404)[0] == 10404
    emu.advance(60)
    assert details(client, name, "b")["status"] == "complete"
    assert result(step_get(client, name, "b", name="gate-1", type="waitForEvent"))["output"] == [1, 2, 3]


def test_wait_for_event_timeout_errors(client, make_workflow, emu):
    name = make_workflow([{"name": "gate", "type": "waitForEvent", "event_type": "go", "timeout": 30}])
    result(client.post(f"/{name}/instances", json={"instance_id": "t"}))
    emu.advance(31)
    run = details(client, name, "t")
    assert run["status"] == "errored"
    assert run["error"]["name"] == "WorkflowTimeoutError"
    entry = step_of(run, "gate-1", "waitForEvent")
    assert (entry["finished"], entry["error"]) == (True, run["error"])
    answer = result(step_get(client, name, "t", name="gate-1", type="waitForEvent"))
    assert (answer["status"], answer["error"], answer["output"]) == ("errored", run["error"], None)


def test_event_validation(client, make_workflow):
    name = make_workflow([{"name": "gate", "type": "waitForEvent", "event_type": "go"}])
    result(client.post(f"/{name}/instances", json={"instance_id": "v"}))
    assert error(client.post(f"/{name}/instances/v/events/bad.type", json={}), 400) == (
        10021,
        "workflow.invalid_event_type",
    )
    assert error(client.post(f"/{name}/instances/v/events/{'x' * 101}", json={}), 400)[0] == 10021
    assert error(client.post(f"/{name}/instances/v/events/-x", json={}), 400)[0] == 10021
    too_big = b'"' + b"x" * MIB + b'"'
    assert error(client.post(f"/{name}/instances/v/events/go", content=too_big), 400)[0] == 10021
    just_fits = b'"' + b"x" * (MIB - 2) + b'"'
    assert result(client.post(f"/{name}/instances/v/events/go", content=just_fits))
    # The instance completed with the last event: more are refused (see test_events_to_finished_instances).
    result(client.post(f"/{name}/instances", json={"instance_id": "w"}))
    assert result(client.post(f"/{name}/instances/w/events/{'x' * 100}"))  # no body: payload null


def test_sleep_step(client, make_workflow, emu):
    name = make_workflow([{"name": "nap", "type": "sleep", "duration": 600}, {"name": "after", "output": 1}])
    result(client.post(f"/{name}/instances", json={"instance_id": "z"}))
    emu.advance(300)
    run = details(client, name, "z")
    entry = step_of(run, "nap-1", "sleep")
    assert run["status"] == "waiting"
    assert (entry["finished"], entry["error"]) == (False, None)
    assert entry["end"] > entry["start"]  # the planned wake-up
    assert error(step_get(client, name, "z", name="nap-1", type="step"), 404)[0] == 10404
    emu.advance(300)
    run = details(client, name, "z")
    assert run["status"] == "complete"
    assert step_of(run, "nap-1", "sleep")["finished"] is True


# --- status changes ------------------------------------------------------------------------------


def patch(client: httpx.Client, name: str, instance_id: str, **body: object) -> httpx.Response:
    return client.patch(f"/{enc(name)}/instances/{enc(instance_id)}/status", json=body)


def test_pause_resume_terminate(client, make_workflow, emu):
    name = make_workflow([{"name": "work", "duration": 10, "output": 1}])
    result(client.post(f"/{name}/instances", json={"instance_id": "x"}))
    emu.advance(4)
    paused = result(patch(client, name, "x", status="pause"))
    assert paused["status"] == "paused"
    assert paused["timestamp"].endswith("Z")
    assert result(patch(client, name, "x", status="pause"))["status"] == "paused"  # no change
    emu.advance(1000)
    assert details(client, name, "x")["status"] == "paused"
    assert result(patch(client, name, "x", status="resume"))["status"] == "running"
    assert result(patch(client, name, "x", status="resume"))["status"] == "running"  # no change
    emu.advance(5.5)
    assert details(client, name, "x")["status"] == "running"  # 4 + 5.5 < 10 s of running time
    emu.advance(0.5)
    assert details(client, name, "x")["status"] == "complete"
    for action in ("pause", "resume", "terminate"):
        assert error(patch(client, name, "x", status=action), 409)[0] == 10409

    result(client.post(f"/{name}/instances", json={"instance_id": "y"}))
    emu.advance(2)
    assert result(patch(client, name, "y", status="terminate", rollback=True))["status"] == "terminated"
    run = details(client, name, "y")
    assert (run["status"], run["success"], run["output"]) == ("terminated", False, None)
    assert run["rollback"] == {"outcome": "complete", "error": None}
    assert run["steps"][-1] == {"type": "termination", "trigger": {"source": "api"}}
    assert run["step_count"] == 1
    in_flight = step_of(run, "work-1")
    assert (in_flight["end"], in_flight["success"]) == (None, None)
    emu.advance(100)
    assert details(client, name, "y")["status"] == "terminated"
    assert error(patch(client, name, "y", status="resume"), 409)[0] == 10409


def test_restart(client, make_workflow, emu):
    name = make_workflow(
        [{"name": "a", "duration": 5, "output": "A"}, {"name": "b", "duration": 5, "output": "B"}],
        queue_delay=1,
    )
    result(client.post(f"/{name}/instances", json={"instance_id": "r"}))
    assert error(patch(client, name, "r", status="restart"), 409) == (
        10409,
        "Instance not in a restartable state.",
    )
    emu.advance(20)
    first = details(client, name, "r")
    assert first["status"] == "complete"
    assert result(patch(client, name, "r", status="restart"))["status"] == "queued"
    again = details(client, name, "r")
    assert (again["status"], again["steps"], again["output"], again["end"]) == ("queued", [], None, None)
    emu.advance(20)
    assert details(client, name, "r")["status"] == "complete"

    # From a step: the steps before it keep their records, the rest runs again.
    restarted = result(
        patch(client, name, "r", status="restart", **{"from": {"name": "b", "count": 1, "type": "do"}})
    )
    assert restarted["status"] == "queued"
    emu.advance(2)
    run = details(client, name, "r")
    assert run["status"] == "running"
    assert [(s["name"], s["success"]) for s in run["steps"]] == [("a-1", True), ("b-1", None)]
    assert step_of(run, "a-1")["start"] == step_of(details(client, name, "r"), "a-1")["start"]
    emu.advance(5)
    assert details(client, name, "r")["status"] == "complete"

    bad_from = patch(client, name, "r", status="restart", **{"from": {"name": "nope"}})
    assert error(bad_from, 400) == (10404, f"Step 'nope' (count 1) not found in workflow '{name}'")
    assert (
        error(patch(client, name, "r", status="restart", **{"from": {"name": "b", "count": 0}}), 400)[0]
        == 10021
    )
    assert error(patch(client, name, "r", status="restart", **{"from": "b"}), 400)[0] == 10021
    assert error(patch(client, name, "r", status="pause", **{"from": {"name": "b"}}), 400)[0] == 10021

    result(client.post(f"/{name}/instances", json={"instance_id": "early"}))
    emu.advance(2)  # step a running: b cannot be restarted from yet
    too_early = patch(client, name, "early", status="restart", **{"from": {"name": "b"}})
    assert error(too_early, 409)[0] == 10409
    assert result(patch(client, name, "early", status="restart"))["status"] == "queued"


def test_status_body_validation(client, make_workflow):
    name = make_workflow([{"name": "a", "duration": 5}])
    result(client.post(f"/{name}/instances", json={"instance_id": "v"}))
    for body in ({"status": "stop"}, {}, {"status": "terminate", "rollback": "yes"}):
        assert error(client.patch(f"/{name}/instances/v/status", json=body), 400)[0] == 10021
    assert error(client.patch(f"/{name}/instances/v/status", json=["pause"]), 400)[0] == 10021


# --- encoding ------------------------------------------------------------------------------------


def test_cron_ids_and_step_names_with_spaces(client, make_workflow, emu):
    name = make_workflow(
        [
            {"name": "fetch data", "duration": 1, "output": {"ok": 1}},
            {"name": "gate", "type": "waitForEvent", "event_type": "go"},
        ]
    )
    emu.create_cron_instance(name, CRON_ID, {"scheduled": True})
    path = f"/{name}/instances/{enc(CRON_ID)}"
    assert "%2F" in path
    assert "%20" in path
    run = result(client.get(path))
    assert run["trigger"] == {"source": "cron"}
    assert run["schedule"] == {"cron": "*/5 * * * *", "scheduledTime": run["schedule"]["scheduledTime"]}
    assert run["params"] == {"scheduled": True}
    emu.advance(2)
    output = result(client.get(f"{path}/step", params={"name": "fetch data-1", "type": "step"}))
    assert output["output"] == {"ok": 1}
    result(client.post(f"{path}/events/go", json={"x": 1}))
    assert details(client, name, CRON_ID)["status"] == "complete"
    assert result(client.patch(f"{path}/status", json={"status": "restart"}))["status"] == "running"
    listed = result(client.get(f"/{name}/instances"))
    assert [(i["id"], i["trigger_source"]) for i in listed] == [(CRON_ID, "cron")]
    # The path is routed on its raw form: an unencoded "/" splits the id and does not find it.
    assert client.get(f"/{name}/instances/*/5 * * * *-1786599900000").status_code == 400  # no route
    log = [entry for entry in emu.requests_log() if entry["method"] == "GET" and "/step" in entry["raw_path"]]
    assert log[0]["raw_path"].endswith("/instances/%2A%2F5%20%2A%20%2A%20%2A%20%2A-1786599900000/step")
    assert log[0]["query"] in ("name=fetch%20data-1&type=step", "name=fetch+data-1&type=step")


def test_workflow_names_are_decoded_per_segment(client, emu):
    emu.put_workflow({"name": "with space", "steps": []})
    assert result(client.get("/with%20space"))["name"] == "with space"
    emu.put_workflow({"name": "a/b", "steps": []})
    assert result(client.get("/a%2Fb"))["name"] == "a/b"
    assert error(client.get("/a/b"), 400)[0] == 7000  # no such route


# --- auth ----------------------------------------------------------------------------------------


def test_auth_like_cloudflare(emu):
    url = f"{emu.workflows_url}/demo-flaky"
    legacy = {"X-Auth-Email": emu.email, "X-Auth-Key": emu.api_key}
    # As Cloudflare answers (protocol.AUTH_ERROR_HINTS): missing -> 400 9106, malformed -> 400 6003 +
    # chain, wrong -> 403.
    assert error(httpx.get(url), 400) == (9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers")
    assert error(httpx.get(url, headers={"X-Auth-Email": emu.email}), 400)[0] == 9106
    assert error(httpx.get(url, headers={"Authorization": "Bearer wrong-token-0xdead"}), 403) == (
        10000,
        "Authentication error",
    )
    malformed = httpx.get(url, headers={"Authorization": f"Basic {emu.api_token}"})
    assert error(malformed, 400) == (6003, "Invalid request headers")
    assert malformed.json()["errors"][0]["error_chain"] == [
        {"code": 6111, "message": "Invalid format for Authorization header"}
    ]
    assert error(httpx.get(url, headers={**legacy, "X-Auth-Key": "legacy-key-77"}), 403)[0] == 10000
    assert result(httpx.get(url, headers=legacy))["name"] == "demo-flaky"
    assert result(httpx.get(url, headers=emu.auth_headers))["name"] == "demo-flaky"
    other_account = url.replace(emu.account_id, "f" * 32)
    assert error(httpx.get(other_account, headers=emu.auth_headers), 403)[0] == 10000
    assert error(httpx.get(other_account, headers=legacy), 403)[0] == 10000

    log = emu.requests_log()
    assert [entry["auth"] for entry in log] == [
        "none",
        "legacy",
        "bearer",
        "bearer",
        "legacy",
        "legacy",
        "bearer",
        "bearer",
        "legacy",
    ]
    assert [entry["status"] for entry in log] == [400, 400, 403, 400, 403, 200, 200, 403, 403]
    assert [entry["credential"] for entry in log][-4:] == [
        emu.key_label,
        emu.token_label,
        emu.token_label,
        emu.key_label,
    ]
    text = json.dumps(log)
    for secret in (emu.api_token, emu.api_key, "wrong-token-0xdead", "legacy-key-77"):
        assert secret not in text


def test_big_stream_is_served_fast_with_constant_memory(client, make_workflow, emu):
    size = 512 * MIB
    name = make_workflow([{"name": "export", "stream": {"size": size, "seed": 99}}])
    result(client.post(f"/{name}/instances", json={"instance_id": "big"}))
    server = psutil.Process(emu.process.pid)
    baseline = server.memory_info().rss
    peak = baseline
    received = 0
    started = time.perf_counter()
    with client.stream(
        "GET", f"/{name}/instances/big/step", params={"name": "export-1", "type": "step"}
    ) as answer:
        assert answer.headers["content-length"] == str(size)
        for chunk in answer.iter_raw(4 * MIB):
            received += len(chunk)
            if received % (64 * MIB) < len(chunk):
                peak = max(peak, server.memory_info().rss)
    elapsed = time.perf_counter() - started
    assert received == size
    assert peak - baseline < 48 * MIB, f"the server grew by {(peak - baseline) / MIB:.0f} MiB"
    # Typically 400+ MB/s on loopback; the bound is loose for busy CI machines.
    assert size / elapsed > 60e6, f"{size / elapsed / 1e6:.0f} MB/s"


def test_other_methods_get_the_envelope_too(client, make_workflow):
    name = make_workflow([])
    assert error(client.request("OPTIONS", f"/{name}"), 400)[0] == 7000
    assert client.head(f"/{name}").status_code == 400
    assert error(client.put(f"/{name}", json={}), 400)[0] == 7000


def test_restart_erases_events_sent_just_before_it(client, make_workflow):
    name = make_workflow([{"name": "gate", "type": "waitForEvent", "event_type": "go"}])
    result(client.post(f"/{name}/instances", json={"instance_id": "e"}))
    result(client.post(f"/{name}/instances/e/events/go", json="before"))
    assert details(client, name, "e")["status"] == "complete"
    result(client.patch(f"/{name}/instances/e/status", json={"status": "restart"}))  # same emulated moment
    assert details(client, name, "e")["status"] == "waiting"
    result(client.post(f"/{name}/instances/e/events/go", json="after"))
    assert result(step_get(client, name, "e", name="gate-1", type="waitForEvent"))["output"] == "after"
