"""Every hook method against the emulator, a real HTTP server on 127.0.0.1, including injected faults."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid

import psutil
import pytest

from airflow_provider_cfworkflows import deadlines, protocol
from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowsAuthError,
    CloudflareWorkflowsConflictError,
    CloudflareWorkflowsConnectionError,
    CloudflareWorkflowsError,
    CloudflareWorkflowsNotFoundError,
    CloudflareWorkflowsRateLimitError,
    CloudflareWorkflowsResponseError,
    CloudflareWorkflowsResponseTooLargeError,
    CloudflareWorkflowsServerError,
)
from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook
from tests.helpers import ACCOUNT_ID, connection_json

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
CREATES = ("create", "batch_create")
CRON_ID = "*/5 * * * *-1786599900000"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def hook(cloudflare_conn):
    return CloudflareWorkflowsHook()


@pytest.fixture
def no_wait(monkeypatch, limiter_clock):
    """Record the retry waits the hook computes, and skip sleeping them (rate-limit waits: limiter_clock)."""
    waits: list[float] = []
    real_delay = protocol.retry_delay

    def record(attempt, error, jitter=None):
        waits.append(real_delay(attempt, error, jitter=0.0))
        return 0.0

    monkeypatch.setattr(protocol, "retry_delay", record)
    return waits


def put_workflow(emulator, name: str, steps: list[dict], **extra) -> str:
    emulator.put_workflow(
        {"name": name, "class_name": "Demo", "script_name": "demo", "steps": steps, **extra}
    )
    return name


@pytest.fixture
def quick_workflow(cloudflare_conn):
    """A workflow that completes in one emulated second with a large JSON output."""
    name = unique("quick")
    rows = [{"row": i, "text": "x" * 20} for i in range(200)]
    return put_workflow(
        cloudflare_conn,
        name,
        [{"name": "fetch data", "duration": 1, "output": {"rows": rows}}],
        output={"done": True},
    )


def test_workflows_and_versions(hook, quick_workflow):
    names = [workflow["name"] for workflow in hook.list_workflows()]
    assert quick_workflow in names
    assert [w["name"] for w in hook.list_workflows(search=quick_workflow)] == [quick_workflow]
    assert hook.get_workflow(quick_workflow)["name"] == quick_workflow
    versions = list(hook.list_versions(quick_workflow))
    assert len(versions) == 1
    assert versions[0]["id"]


def test_create_get_and_full_step_output(hook, cloudflare_conn, quick_workflow):
    created = hook.create_instance(quick_workflow, instance_id="run-1", params={"day": "2026-11-28"})
    assert created["id"] == "run-1"
    assert created["status"] == "queued"
    cloudflare_conn.advance(5)

    details = hook.get_instance(quick_workflow, "run-1")
    assert details["status"] == "complete"
    assert details["params"] == {"day": "2026-11-28"}
    preview = details["steps"][0]["output"]
    assert preview.endswith("[truncated output]")
    assert len(preview) == 1024 + len("[truncated output]")
    assert hook.get_instance(quick_workflow, "run-1", simple=True).get("steps") in (None, [])

    step = hook.get_step_output(quick_workflow, "run-1", "fetch data-1")
    assert step.status == "complete"
    assert len(step.output["rows"]) == 200
    assert len(json.dumps(step.output)) > 1024


def test_duplicate_instance_id_is_a_recognisable_conflict(hook, quick_workflow):
    hook.create_instance(quick_workflow, instance_id="dup")
    with pytest.raises(CloudflareWorkflowsConflictError) as caught:
        hook.create_instance(quick_workflow, instance_id="dup")
    assert caught.value.is_already_exists


def test_create_without_id_gets_a_generated_one(hook, quick_workflow):
    created = hook.create_instance(quick_workflow)
    assert created["id"]
    assert hook.get_instance(quick_workflow, created["id"], simple=True)["status"]


def test_list_instances_pages_and_filters(hook, cloudflare_conn, quick_workflow):
    hook.create_instances_batch(quick_workflow, [{"instance_id": f"b-{i}"} for i in range(5)])
    ids = [item["id"] for item in hook.list_instances(quick_workflow, per_page=2, direction="asc")]
    assert sorted(ids) == [f"b-{i}" for i in range(5)]
    pages = [
        r for r in cloudflare_conn.requests_log() if r["raw_path"].endswith(f"/{quick_workflow}/instances")
    ]
    assert len(pages) == 3

    hook.change_instance_status(quick_workflow, "b-0", "terminate")
    terminated = [item["id"] for item in hook.list_instances(quick_workflow, status="terminated")]
    assert terminated == ["b-0"]


def test_batch_create_skips_existing_ids(hook, quick_workflow):
    first = hook.create_instances_batch(quick_workflow, [{"instance_id": "x1"}, {"instance_id": "x2"}])
    again = hook.create_instances_batch(quick_workflow, [{"instance_id": "x2"}, {"instance_id": "x3"}])
    assert [item["id"] for item in first] == ["x1", "x2"]
    assert [item["id"] for item in again] == ["x3"]


def test_status_changes(hook, cloudflare_conn):
    name = put_workflow(cloudflare_conn, unique("slow"), [{"name": "nap", "type": "sleep", "duration": 600}])
    hook.create_instance(name, instance_id="s1")
    cloudflare_conn.advance(1)
    assert hook.change_instance_status(name, "s1", "pause")["status"] in ("paused", "waitingForPause")
    assert hook.get_instance(name, "s1", simple=True)["status"] in ("paused", "waitingForPause")
    hook.change_instance_status(name, "s1", "resume")
    assert hook.get_instance(name, "s1", simple=True)["status"] in ("running", "waiting")
    hook.change_instance_status(name, "s1", "terminate", rollback=False)
    assert hook.get_instance(name, "s1", simple=True)["status"] == "terminated"
    hook.change_instance_status(name, "s1", "restart")
    assert hook.get_instance(name, "s1", simple=True)["status"] in ("queued", "running", "waiting")


def test_send_event_completes_wait_for_event(hook, cloudflare_conn):
    name = put_workflow(
        cloudflare_conn,
        unique("approval"),
        [{"name": "approval", "type": "waitForEvent", "event_type": "approval", "timeout": 600}],
    )
    hook.create_instance(name, instance_id="e1")
    cloudflare_conn.advance(1)
    waiting = hook.get_step_output(name, "e1", "approval-1", "waitForEvent")
    assert waiting.status == "waiting"

    hook.send_event(name, "e1", "approval", {"approved_by": "airflow"})
    cloudflare_conn.advance(1)

    done = hook.get_step_output(name, "e1", "approval-1", "waitForEvent")
    assert (done.status, done.output) == ("complete", {"approved_by": "airflow"})


def test_cron_ids_and_step_names_with_spaces_are_encoded(hook, cloudflare_conn, quick_workflow):
    cloudflare_conn.create_cron_instance(quick_workflow, CRON_ID)
    cloudflare_conn.advance(5)
    assert hook.get_instance(quick_workflow, CRON_ID, simple=True)["status"] == "complete"
    assert hook.get_step_output(quick_workflow, CRON_ID, "fetch data-1").status == "complete"
    paths = [r["raw_path"] for r in cloudflare_conn.requests_log()]
    assert any("%2A%2F5%20%2A%20%2A%20%2A%20%2A-1786599900000" in path for path in paths)


def test_step_retrying_and_attempts(hook, cloudflare_conn):
    name = put_workflow(
        cloudflare_conn,
        unique("flaky"),
        [
            {
                "name": "load",
                "duration": 1,
                "fail_attempts": 1,
                "error": {"name": "Error", "message": "upstream 503"},
                "retries": {"limit": 3, "delay": 30, "backoff": "constant"},
                "output": {"ok": True},
            }
        ],
    )
    hook.create_instance(name, instance_id="f1")
    cloudflare_conn.advance(2)
    retrying = hook.get_step_output(name, "f1", "load-1")
    assert retrying.is_retrying
    assert retrying.error.message == "upstream 503"
    cloudflare_conn.advance(60)
    assert hook.get_step_output(name, "f1", "load-1").output == {"ok": True}
    first_attempt = hook.get_step_output(name, "f1", "load-1", attempt=1)
    assert (first_attempt.status, first_attempt.error.message) == ("errored", "upstream 503")


def test_not_found(hook, quick_workflow):
    with pytest.raises(CloudflareWorkflowsNotFoundError):
        hook.get_instance(quick_workflow, "nope")
    with pytest.raises(CloudflareWorkflowsNotFoundError):
        hook.get_workflow(unique("missing"))
    hook.create_instance(quick_workflow, instance_id="nf")
    with pytest.raises(CloudflareWorkflowsNotFoundError, match="no such step-1"):
        hook.get_step_output(quick_workflow, "nf", "no such step-1")


@pytest.mark.parametrize(
    ("fault", "expected_waits", "limiter_wait"),
    [
        ({"kind": "rate_limit", "retry_after": "2"}, [], 2.0),  # waited by the rate limiter, not backoff
        ({"kind": "server_error", "status": 503}, [0.5], 0.0),
        ({"kind": "drop_connection"}, [0.5], 0.0),
        ({"kind": "success_false"}, [0.5], 0.0),
        ({"kind": "malformed_json"}, [0.5], 0.0),
    ],
    ids=lambda value: value["kind"] if isinstance(value, dict) else "",
)
def test_transient_faults_are_retried(
    hook, cloudflare_conn, quick_workflow, no_wait, limiter_clock, fault, expected_waits, limiter_wait
):
    hook.create_instance(quick_workflow, instance_id="t1")
    cloudflare_conn.inject_fault(path="/instances/t1$", method="GET", count=1, **fault)

    assert hook.get_instance(quick_workflow, "t1", simple=True)["status"]

    assert no_wait == expected_waits
    assert limiter_wait <= sum(limiter_clock.slept) <= limiter_wait * 1.1
    gets = [r for r in cloudflare_conn.requests_log() if r["raw_path"].endswith("/instances/t1")]
    assert [r["fault"] for r in gets] == [fault["kind"], None]


def test_rate_limit_with_http_date_retry_after(hook, cloudflare_conn, quick_workflow, no_wait, limiter_clock):
    from email.utils import formatdate

    hook.create_instance(quick_workflow, instance_id="d1")
    cloudflare_conn.inject_fault(
        path="/instances/d1$", method="GET", count=1, kind="rate_limit", retry_after=formatdate(usegmt=True)
    )
    hook.get_instance(quick_workflow, "d1", simple=True)
    assert no_wait == []  # the limiter waits a 429, not the retry backoff
    assert sum(limiter_clock.slept) <= 1.1


def test_persistent_faults_surface_the_typed_error(hook, cloudflare_conn, quick_workflow, no_wait):
    hook.create_instance(quick_workflow, instance_id="p1")
    cloudflare_conn.inject_fault(
        path="/instances/p1$", method="GET", count=10, kind="rate_limit", retry_after="1"
    )
    with pytest.raises(CloudflareWorkflowsRateLimitError) as caught:
        hook.get_instance(quick_workflow, "p1")
    assert caught.value.retry_after == 1.0
    gets = [r for r in cloudflare_conn.requests_log() if r["raw_path"].endswith("/instances/p1")]
    assert len(gets) == 4  # the first try and max_retries=3 of the test connection
    cloudflare_conn.clear_faults()
    cloudflare_conn.inject_fault(
        path="/instances/p1$", method="GET", count=10, kind="server_error", status=500
    )
    with pytest.raises(CloudflareWorkflowsServerError, match="HTTP 500"):
        hook.get_instance(quick_workflow, "p1")


def test_dropped_stream_raises_connection_error(hook, cloudflare_conn):
    name = put_workflow(
        cloudflare_conn,
        unique("blob"),
        [{"name": "blob", "duration": 1, "stream": {"size": 4 * MIB, "seed": 3}}],
    )
    hook.create_instance(name, instance_id="b1")
    cloudflare_conn.advance(5)
    cloudflare_conn.inject_fault(
        path="/step$", method="GET", count=1, kind="drop_connection", after_bytes=MIB
    )
    with (
        pytest.raises(CloudflareWorkflowsConnectionError, match=r"cut off|ended after"),
        hook.stream_step_output(name, "b1", "blob-1") as stream,
    ):
        for _chunk in stream.chunks:
            pass


def test_wrong_token_and_connection_test(cloudflare_conn, monkeypatch):
    assert CloudflareWorkflowsHook().test_connection()[0] is True
    monkeypatch.setenv(
        "AIRFLOW_CONN_CF_WRONG", connection_json(cloudflare_conn.api_base, password="wrong-token-0xdead")
    )
    wrong = CloudflareWorkflowsHook("cf_wrong")
    success, message = wrong.test_connection()
    assert not success
    assert "HTTP 403" in message
    assert "Authentication error" in message
    assert "wrong-token-0xdead" not in message
    with pytest.raises(CloudflareWorkflowsAuthError) as caught:
        wrong.get_workflow("anything")
    assert "wrong-token-0xdead" not in str(caught.value)
    assert "wrong-token-0xdead" not in repr(wrong.settings)


def test_legacy_global_key_auth(cloudflare_conn, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_CF_LEGACY",
        connection_json(
            cloudflare_conn.api_base,
            password=None,
            extra={"email": "dev@example.com", "api_key": "emulator-global-key"},
        ),
    )
    assert CloudflareWorkflowsHook("cf_legacy").test_connection()[0] is True
    assert cloudflare_conn.requests_log()[-1]["auth"] == "legacy"


def test_airflow_connections_test_cli(cloudflare_conn):
    env = {**os.environ, "AIRFLOW__CORE__TEST_CONNECTION": "Enabled"}
    env["AIRFLOW_CONN_CLOUDFLARE_DEFAULT"] = connection_json(cloudflare_conn.api_base)
    env["AIRFLOW_CONN_CF_WRONG"] = connection_json(cloudflare_conn.api_base, password="wrong-token-0xdead")
    command = [sys.executable, "-m", "airflow", "connections", "test"]

    good = subprocess.run(
        [*command, "cloudflare_default"], env=env, capture_output=True, text=True, check=False
    )
    bad = subprocess.run([*command, "cf_wrong"], env=env, capture_output=True, text=True, check=False)

    assert good.returncode == 0, good.stdout + good.stderr
    assert "Connection success" in good.stdout
    assert bad.returncode == 1
    assert "Authentication error" in bad.stdout
    assert "wrong-token-0xdead" not in bad.stdout + bad.stderr


class PeakRss:
    """Sample this process's RSS in a thread; ``growth`` is the peak above the starting RSS."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self.start = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.start


def test_500_mb_stream_has_bounded_memory(hook, cloudflare_conn):
    size = 500 * MIB
    name = put_workflow(
        cloudflare_conn,
        unique("huge"),
        [{"name": "export", "duration": 1, "stream": {"size": size, "seed": 11}}],
    )
    hook.create_instance(name, instance_id="h1")
    cloudflare_conn.advance(5)
    expected = cloudflare_conn.stream_digest(name, "h1", "export-1")

    digest = hashlib.sha256()
    received = 0
    with PeakRss() as memory, hook.stream_step_output(name, "h1", "export-1") as stream:
        assert stream.content_length == size
        for chunk in stream.chunks:
            digest.update(chunk)
            received += len(chunk)

    assert received == size
    assert {"size": received, "sha256": digest.hexdigest()} == expected
    assert memory.growth < 64 * MIB, f"peak RSS grew by {memory.growth / MIB:.0f} MiB for a 500 MiB stream"


def test_account_override_and_foreign_account(hook, quick_workflow):
    other = "fedcba9876543210fedcba9876543210"
    with pytest.raises(CloudflareWorkflowsAuthError):
        hook.get_workflow(quick_workflow, account_id=other)
    assert hook.get_workflow(quick_workflow, account_id=ACCOUNT_ID)["name"] == quick_workflow


# --- issue 12: bounded calls, bounded bodies, faults that need a second look ---------------------------


@pytest.fixture
def quick_hook(cloudflare_conn, monkeypatch, no_retry_waits):
    """A hook whose attempts may take 2 s (the connection timeout) and whose retries do not wait."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_CF_QUICK",
        connection_json(cloudflare_conn.api_base, extra={"max_retries": 3, "timeout": 2}),
    )
    return CloudflareWorkflowsHook("cf_quick")


def gets_of(emulator, instance_id):
    return [
        r
        for r in emulator.requests_log()
        if r["method"] == "GET" and r["raw_path"].endswith(f"/{instance_id}")
    ]


def test_a_dripping_answer_is_cut_at_the_timeout_and_retried(quick_hook, cloudflare_conn, quick_workflow):
    quick_hook.create_instance(quick_workflow, instance_id="drip")
    # One byte a second: the ~300-byte answer would take minutes; the timeout bounds the whole attempt.
    cloudflare_conn.inject_fault(path="/instances/drip$", method="GET", count=1, kind="drip", interval=1)
    started = time.monotonic()
    assert quick_hook.get_instance(quick_workflow, "drip", simple=True)["status"]
    assert time.monotonic() - started < 10
    assert [r["fault"] for r in gets_of(cloudflare_conn, "drip")] == ["drip", None]


async def test_a_dripping_answer_is_cut_at_the_timeout_async(quick_hook, cloudflare_conn, quick_workflow):
    quick_hook.create_instance(quick_workflow, instance_id="adrip")
    cloudflare_conn.inject_fault(path="/instances/adrip$", method="GET", count=1, kind="drip", interval=1)
    started = time.monotonic()
    try:
        assert (await quick_hook.aget_instance(quick_workflow, "adrip", simple=True))["status"]
    finally:
        await quick_hook.aclose()
    assert time.monotonic() - started < 10
    assert [r["fault"] for r in gets_of(cloudflare_conn, "adrip")] == ["drip", None]


def test_retries_stop_at_the_waits_deadline(quick_hook, cloudflare_conn, quick_workflow):
    quick_hook.create_instance(quick_workflow, instance_id="late")
    cloudflare_conn.inject_fault(path="/instances/late$", method="GET", count=10, kind="drip", interval=1)
    started = time.monotonic()
    with (
        deadlines.calls_end_by(time.time() + 3),
        pytest.raises(CloudflareWorkflowsConnectionError, match="timed out"),
    ):
        quick_hook.get_instance(quick_workflow, "late", simple=True)
    assert time.monotonic() - started < 6  # 2 s, then the 1 s left: not 4 attempts of 2 s
    assert len(gets_of(cloudflare_conn, "late")) == 2


async def read_instance(hook, transport, workflow_name, instance_id):
    if transport == "sync":
        return hook.get_instance(workflow_name, instance_id)
    try:
        return await hook.aget_instance(workflow_name, instance_id)
    finally:
        await hook.aclose()


@pytest.mark.parametrize("transport", ["sync", "async"])
async def test_an_endless_json_answer_fails_without_exhausting_memory(
    hook, cloudflare_conn, quick_workflow, transport
):
    hook.create_instance(quick_workflow, instance_id="endless")
    cloudflare_conn.inject_fault(path="/instances/endless$", method="GET", count=5, kind="endless_json")
    with PeakRss() as memory, pytest.raises(CloudflareWorkflowsResponseTooLargeError, match="16 MiB"):
        await read_instance(hook, transport, quick_workflow, "endless")
    assert memory.growth < 96 * MIB
    assert len(gets_of(cloudflare_conn, "endless")) == 1  # a fault a retry would only repeat


def test_a_cut_short_chunked_json_body_fails_to_parse(hook, cloudflare_conn, quick_workflow, no_wait):
    hook.create_instance(quick_workflow, instance_id="cut")
    cloudflare_conn.inject_fault(path="/instances/cut$", method="GET", count=1, kind="truncated_chunked")
    assert hook.get_instance(quick_workflow, "cut")["status"]  # the retry reads it whole
    assert [r["fault"] for r in gets_of(cloudflare_conn, "cut")] == ["truncated_chunked", None]

    cloudflare_conn.inject_fault(path="/instances/cut$", method="GET", count=10, kind="truncated_chunked")
    with pytest.raises(CloudflareWorkflowsResponseError, match="not a JSON envelope"):
        hook.get_instance(quick_workflow, "cut")


@pytest.mark.parametrize("status", [409, 400])
@pytest.mark.parametrize("first_fault", ["lost_answer", "drip"])
def test_a_create_whose_answer_was_lost_returns_the_instance_it_made(
    quick_hook, cloudflare_conn, quick_workflow, status, first_fault
):
    cloudflare_conn.set_options(already_exists_status=status)
    cloudflare_conn.inject_fault(path="/instances$", method="POST", count=1, kind=first_fault, interval=1)
    created = quick_hook.create_instance(quick_workflow, instance_id="lost-1", params={"n": 1})
    assert created["id"] == "lost-1"
    assert created["status"] in ("queued", "running", "complete")
    posts = [r for r in cloudflare_conn.requests_log() if r["endpoint"] == "create"]
    assert [r["status"] for r in posts][1:] == [status]  # the retry met "already exists"
    assert cloudflare_conn.request_stats()["creates"] == 1
    # The first attempt's answer was not lost: "already exists" is an error for the caller to judge.
    with pytest.raises(CloudflareWorkflowsError) as caught:
        quick_hook.create_instance(quick_workflow, instance_id="lost-1")
    assert caught.value.is_already_exists
    assert caught.value.http_status == status


def test_a_terminate_whose_answer_was_lost_is_done(hook, cloudflare_conn, no_wait):
    name = put_workflow(cloudflare_conn, unique("nap"), [{"name": "nap", "type": "sleep", "duration": 600}])
    hook.create_instance(name, instance_id="t-lost")
    cloudflare_conn.advance(1)
    cloudflare_conn.inject_fault(path="/t-lost/status$", method="PATCH", count=1, kind="lost_answer")
    assert hook.change_instance_status(name, "t-lost", "terminate")["status"] == "terminated"
    patches = [r["status"] for r in cloudflare_conn.requests_log() if r["endpoint"] == "change_status"]
    assert patches == [None, 409]


def test_step_output_by_the_name_as_written(hook, cloudflare_conn, quick_workflow):
    hook.create_instance(quick_workflow, instance_id="named")
    cloudflare_conn.advance(5)
    assert len(hook.get_step_output(quick_workflow, "named", "fetch data").output["rows"]) == 200
    with pytest.raises(CloudflareWorkflowsNotFoundError) as caught:
        hook.get_step_output(quick_workflow, "named", "fetch dta")
    assert "no step is logged as 'fetch dta-1'" in str(caught.value)
    assert "Steps the instance has: 'fetch data-1' (step)" in str(caught.value)


def test_an_unknown_workflow_lists_the_accounts_workflows(hook, cloudflare_conn, quick_workflow):
    cloudflare_conn.clear_requests_log()
    with pytest.raises(CloudflareWorkflowsNotFoundError) as caught:
        hook.get_instance(quick_workflow + "x", "i")
    assert f"Workflow '{quick_workflow}x' was not found in account {ACCOUNT_ID}" in str(caught.value)
    assert f"did you mean '{quick_workflow}'?" in str(caught.value)
    assert [r["endpoint"] for r in cloudflare_conn.requests_log()] == ["get_instance", "list_workflows"]


def test_location_hint_and_deleting_instances(hook, cloudflare_conn, quick_workflow):
    hook.create_instance(quick_workflow, instance_id="near", location_hint="weur")
    ids = [f"del-{n}" for n in range(120)]
    hook.create_instances_batch(
        quick_workflow, [{"instance_id": i, "location_hint": "oc"} for i in ids[:100]]
    )
    hook.create_instances_batch(quick_workflow, [{"instance_id": i} for i in ids[100:]])
    create, batch = [r["body"] for r in cloudflare_conn.requests_log() if r["endpoint"] in CREATES][:2]
    assert create["location_hint"] == "weur"
    assert {item["location_hint"] for item in batch} == {"oc"}

    outcome = hook.delete_instances(quick_workflow, [*ids, "never-was"])

    assert sorted(outcome["deleted"]) == sorted(ids)
    assert [(e["id"], e["code"]) for e in outcome["errors"]] == [("never-was", 10400)]
    deletes = [r for r in cloudflare_conn.requests_log() if r["endpoint"] == "batch_delete"]
    assert len(deletes) == 2
    with pytest.raises(CloudflareWorkflowsNotFoundError):
        hook.get_instance(quick_workflow, "del-0")


@pytest.mark.parametrize("encoding", ["object", "string"])
def test_params_encoding_against_a_strict_emulator(cloudflare_conn, monkeypatch, quick_workflow, encoding):
    cloudflare_conn.set_options(params_encoding=encoding)
    monkeypatch.setenv(
        "AIRFLOW_CONN_CF_ENC",
        connection_json(cloudflare_conn.api_base, extra={"params_encoding": encoding}),
    )
    hook = CloudflareWorkflowsHook("cf_enc")
    hook.create_instance(quick_workflow, instance_id="enc", params={"day": "2026-11-28"})
    assert hook.get_instance(quick_workflow, "enc")["params"] == {"day": "2026-11-28"}
    other = "string" if encoding == "object" else "object"
    monkeypatch.setenv(
        "AIRFLOW_CONN_CF_WRONG_ENC",
        connection_json(cloudflare_conn.api_base, extra={"params_encoding": other}),
    )
    with pytest.raises(
        CloudflareWorkflowsError, match=f"set the connection extra params_encoding to '{encoding}'"
    ):
        CloudflareWorkflowsHook("cf_wrong_enc").create_instance(
            quick_workflow, instance_id="enc2", params={"a": 1}
        )


def test_allow_http_to_a_named_host(cloudflare_conn, monkeypatch, capsys):
    """A non-loopback name (resolved to 127.0.0.1 here) over plain http with allow_http, and a warning."""
    real_getaddrinfo = socket.getaddrinfo

    def resolve(host, *args, **kwargs):
        return real_getaddrinfo("127.0.0.1" if host == "cfw-emulator.test" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    port = cloudflare_conn.api_base.split(":")[2].split("/")[0]
    monkeypatch.setenv(
        "AIRFLOW_CONN_CF_NAMED",
        connection_json(f"http://cfw-emulator.test:{port}", extra={"allow_http": True}),
    )
    assert CloudflareWorkflowsHook("cf_named").test_connection()[0] is True
    assert "over plain http://" in capsys.readouterr().out


def test_a_429_pauses_every_hook_of_the_credential(cloudflare_conn, quick_workflow, limiter_clock):
    first, second = CloudflareWorkflowsHook(max_retries=0), CloudflareWorkflowsHook()
    first.create_instance(quick_workflow, instance_id="r1")
    cloudflare_conn.inject_fault(
        path="/instances/r1$", method="GET", count=1, kind="rate_limit", retry_after="3"
    )
    with pytest.raises(CloudflareWorkflowsRateLimitError):
        first.get_instance(quick_workflow, "r1")
    assert limiter_clock.slept == []

    assert second.get_workflow(quick_workflow)["name"] == quick_workflow  # another hook, same credential

    assert len(limiter_clock.slept) == 1
    assert 3.0 <= limiter_clock.slept[0] <= 3.0 * 1.1


@pytest.mark.parametrize("transport", ["sync", "async"])
async def test_gzip_json_answers_are_decoded(hook, cloudflare_conn, quick_workflow, transport):
    cloudflare_conn.set_options(gzip=True)
    hook.create_instance(quick_workflow, instance_id="zipped", params={"day": "2026-11-28"})
    details = await read_instance(hook, transport, quick_workflow, "zipped")
    assert details["params"] == {"day": "2026-11-28"}
