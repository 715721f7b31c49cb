"""CloudflareWorkflowStepOutputOperator end to end: real DAG runs against the emulator, file:// and moto S3.

The 200 MB streams are the slow part: each is transferred once to file:// and once to s3://, with the
peak RSS growth of this process (where ``dag.test()`` runs the task) measured during the transfer.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowOutputRejectedError,
    CloudflareWorkflowStepFailedError,
    CloudflareWorkflowStepNotReadyError,
)
from airflow_provider_cfworkflows.links.workflows import INSTANCE_URL_XCOM_KEY
from airflow_provider_cfworkflows.operators.workflows import CloudflareWorkflowStepOutputOperator
from airflow_provider_cfworkflows.output_storage import PARTIAL_SUFFIX
from tests.fakes import RecordingTaskInstance
from tests.helpers import s3_keys

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
BIG_STREAM = 200 * MIB
SMALL_STREAM = 20 * MIB
# Peak RSS growth allowed while streaming 200 MB: a few write blocks plus s3fs/botocore buffers.
MAX_RSS_GROWTH = 64 * MIB

ROWS = [{"row": i, "text": f"value {i} " + "x" * 30} for i in range(100)]  # ~5 KB: > 1024 characters
HUGE = {"blob": "h" * 100_000}  # > 64 KiB default max_xcom_bytes

OK_WORKFLOW = "output-ok"
BROKEN_WORKFLOW = "output-broken"
WAITING_WORKFLOW = "output-waiting"
FLAKY_WORKFLOW = "output-flaky"


@pytest.fixture
def workflows(cloudflare_conn):
    """The Workflows these tests read; returns the (reset) emulator."""
    emulator = cloudflare_conn
    emulator.put_workflow(
        {
            "name": OK_WORKFLOW,
            "steps": [
                {"name": "fetch data", "output": {"rows": ROWS}},
                {"name": "huge", "output": HUGE},
                {"name": "secret", "sensitive": True, "output": "s3cr3t"},
                {"name": "blob", "stream": {"size": BIG_STREAM, "seed": 11}},
                {"name": "small blob", "stream": {"size": SMALL_STREAM, "seed": 12}},
            ],
        }
    )
    emulator.put_workflow(
        {
            "name": BROKEN_WORKFLOW,
            "steps": [
                {
                    "name": "load",
                    "fail_attempts": 10,
                    "error": {"name": "QuotaError", "message": "daily quota exceeded"},
                    "retries": {"limit": 1, "delay": 0, "backoff": "constant"},
                }
            ],
        }
    )
    emulator.put_workflow(
        {
            "name": WAITING_WORKFLOW,
            "steps": [
                {"name": "approval", "type": "waitForEvent", "event_type": "approval"},
                {"name": "publish", "output": 1},
            ],
        }
    )
    emulator.put_workflow(
        {
            "name": FLAKY_WORKFLOW,
            "steps": [
                {
                    "name": "call api",
                    "fail_attempts": 1,
                    "error": {"name": "Error", "message": "upstream 503"},
                    "retries": {"limit": 3, "delay": 3600, "backoff": "constant"},
                }
            ],
        }
    )
    return emulator


def start(emulator, hook_workflow: str) -> str:
    """Create an instance and let its (zero-duration) steps run; returns the instance id."""
    from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook

    instance_id = f"run-{uuid.uuid4().hex[:10]}"
    CloudflareWorkflowsHook().create_instance(hook_workflow, instance_id=instance_id)
    emulator.advance(5)
    return instance_id


@pytest.fixture
def ok_instance(workflows):
    return start(workflows, OK_WORKFLOW)


def step_requests(emulator) -> list[dict[str, Any]]:
    return [entry for entry in emulator.requests_log() if entry["raw_path"].endswith("/step")]


class PeakRss:
    """Samples this process's RSS in a background thread; ``growth`` is peak minus the starting value."""

    def __init__(self, interval: float = 0.002) -> None:
        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.baseline = self.peak = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(self._interval)

    def __enter__(self) -> PeakRss:
        self.baseline = self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(MIB):
            digest.update(block)
    return digest.hexdigest()


def task_instance(result, task_id: str):
    return next(ti for ti in result.dag_run.get_task_instances() if ti.task_id == task_id)


def storage_conf(instance_id: str, step_name: str, output_path: str) -> dict[str, str]:
    return {
        "workflow_name": OK_WORKFLOW,
        "instance_id": instance_id,
        "step_name": step_name,
        "output_path": output_path,
    }


def asset_event_extras(result) -> list[dict[str, Any]]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = (
            select(AssetEvent.extra)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == "cfwf_test_step_output", AssetEvent.source_run_id == result.run_id)
        )
        return [dict(extra) for extra in session.scalars(query)]


# --- S3 on moto ----------------------------------------------------------------------------------


def s3_sha256(client, bucket: str, key: str) -> str:
    digest = hashlib.sha256()
    for block in client.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(MIB):
        digest.update(block)
    return digest.hexdigest()


# --- XCom ----------------------------------------------------------------------------------------


def test_json_output_reaches_the_downstream_task_untruncated(run_dag, ok_instance, workflows):
    result = run_dag(
        "output_xcom",
        {"workflow_name": OK_WORKFLOW, "instance_id": ok_instance, "step_name": "fetch data"},
    )

    assert result.state == "success"
    consumed = result.xcom("consume")
    assert consumed["type"] == "dict"
    assert consumed["value"] == {"rows": ROWS}
    assert consumed["json_length"] > 1024  # the instance-details preview would stop at 1024
    assert result.xcom("fetch_output") == {"rows": ROWS}
    assert result.xcom("fetch_output", INSTANCE_URL_XCOM_KEY).endswith(
        f"/workers/workflows/{OK_WORKFLOW}/instance/{ok_instance}"
    )
    [request] = step_requests(workflows)
    assert request["query"] == "name=fetch%20data-1&type=step"


def test_oversize_output_fails_without_retry_in_a_dag(run_dag, ok_instance, capfd):
    result = run_dag(
        "output_xcom", {"workflow_name": OK_WORKFLOW, "instance_id": ok_instance, "step_name": "huge"}
    )
    task_log = capfd.readouterr().out  # dag.test() prints the task logs

    assert result.state == "failed"
    assert result.task_states() == {"fetch_output": "failed", "consume": "upstream_failed"}
    assert task_instance(result, "fetch_output").try_number == 1  # retries=1, but not retried
    assert "CloudflareWorkflowOutputRejectedError" in task_log
    assert "more than max_xcom_bytes=65536. Set output_path" in task_log


def test_step_not_started_is_retried_in_a_dag(run_dag, workflows, capfd):
    instance_id = start(workflows, WAITING_WORKFLOW)

    result = run_dag(
        "output_xcom", {"workflow_name": WAITING_WORKFLOW, "instance_id": instance_id, "step_name": "publish"}
    )

    assert result.state == "failed"
    assert task_instance(result, "fetch_output").try_number == 2  # may be complete on the next try
    assert "Put a CloudflareWorkflowStepSensor for this step upstream" in capfd.readouterr().out
    assert [r["query"] for r in step_requests(workflows)] == ["name=publish-1&type=step"] * 2


def test_a_misspelled_step_of_a_finished_instance_fails_without_retry_listing_its_steps(
    run_dag, ok_instance, workflows, capfd
):
    result = run_dag(
        "output_xcom", {"workflow_name": OK_WORKFLOW, "instance_id": ok_instance, "step_name": "fetch dta"}
    )

    assert result.task_states() == {"fetch_output": "failed", "consume": "upstream_failed"}
    assert task_instance(result, "fetch_output").try_number == 1  # retries=1, but a retry cannot help
    task_log = capfd.readouterr().out
    assert (
        f"Step 'fetch dta' of instance {ok_instance!r} of workflow {OK_WORKFLOW!r} never ran (no step is "
        "logged as 'fetch dta-1'): the instance is complete and will not run it. Steps the instance has: "
        "'fetch data-1' (step), "
        "'huge-1' (step), 'secret-1' (step), 'blob-1' (step), 'small blob-1' (step)." in task_log
    )
    assert "Put a CloudflareWorkflowStepSensor" not in task_log
    details = [r for r in workflows.requests_log() if r["raw_path"].endswith(f"/instances/{ok_instance}")]
    assert len(details) == 1  # one extra GET, only on this error


# --- object storage ------------------------------------------------------------------------------


def test_json_output_to_file(run_dag, ok_instance, tmp_path):
    target = tmp_path / "json" / "rows.json"

    result = run_dag("output_storage", storage_conf(ok_instance, "fetch data", f"file://{target}"))

    assert result.state == "success"
    data = target.read_bytes()
    assert data.decode("utf-8").startswith('{"rows":[')
    assert result.xcom("fetch_output") == f"file://{target}"
    assert result.xcom("fetch_output", "content_type") == "application/json"
    assert result.xcom("fetch_output", "size_bytes") == len(data)
    assert result.xcom("fetch_output", "sha256") == hashlib.sha256(data).hexdigest()
    assert result.xcom("describe") == {"path": f"file://{target}", "size": len(data)}
    assert asset_event_extras(result) == [
        {
            "workflow_name": OK_WORKFLOW,
            "instance_id": ok_instance,
            "step_name": "fetch data-1",
            "output_path": f"file://{target}",
            "content_type": "application/json",
            "size_bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    ]


def test_the_next_try_removes_what_killed_tries_of_the_same_task_left(run_dag, ok_instance, tmp_path):
    target = tmp_path / "out" / "rows.json"

    result = run_dag(
        "output_leftovers",
        {
            "workflow_name": OK_WORKFLOW,
            "instance_id": ok_instance,
            "step_name": "fetch data",
            "target": str(target),
        },
    )

    assert result.state == "success"
    planted = result.xcom("plant")
    assert not Path(planted["own"]).exists()
    assert Path(planted["other"]).read_bytes() == b"half of an earlier try"
    assert target.read_bytes().startswith(b'{"rows":[')
    assert sorted(path.name for path in target.parent.iterdir()) == sorted(
        [target.name, Path(planted["other"]).name]
    )


def test_200mb_stream_to_file_with_bounded_memory(run_dag, ok_instance, workflows, tmp_path):
    run_dag("output_storage", storage_conf(ok_instance, "fetch data", f"file://{tmp_path}/warm-up.json"))
    target = tmp_path / "streams" / "blob.bin"

    with PeakRss() as rss:
        result = run_dag("output_storage", storage_conf(ok_instance, "blob", f"file://{target}"))

    assert result.state == "success"
    expected = workflows.stream_digest(OK_WORKFLOW, ok_instance, "blob-1")
    assert expected["size"] == BIG_STREAM == target.stat().st_size
    assert sha256_file(target) == expected["sha256"] == result.xcom("fetch_output", "sha256")
    assert result.xcom("fetch_output", "size_bytes") == BIG_STREAM
    assert result.xcom("fetch_output", "content_type") == "application/octet-stream"
    assert result.xcom("describe")["size"] == BIG_STREAM
    assert sorted(p.name for p in target.parent.iterdir()) == ["blob.bin"]
    assert rss.growth < MAX_RSS_GROWTH, f"peak RSS grew by {rss.growth / MIB:.0f} MiB"


def test_json_and_200mb_stream_to_s3(run_dag, ok_instance, workflows, s3_bucket):
    client, bucket = s3_bucket
    json_url = f"s3://aws_test@{bucket}/outputs/{ok_instance}/rows.json"
    blob_url = f"s3://aws_test@{bucket}/outputs/{ok_instance}/blob.bin"

    json_result = run_dag("output_storage", storage_conf(ok_instance, "fetch data", json_url))
    with PeakRss() as rss:
        blob_result = run_dag("output_storage", storage_conf(ok_instance, "blob", blob_url))

    assert (json_result.state, blob_result.state) == ("success", "success")
    assert json_result.xcom("fetch_output") == json_url
    rows = client.get_object(Bucket=bucket, Key=f"outputs/{ok_instance}/rows.json")["Body"].read()
    assert rows.decode("utf-8").startswith('{"rows":[')
    assert json_result.xcom("fetch_output", "sha256") == hashlib.sha256(rows).hexdigest()

    expected = workflows.stream_digest(OK_WORKFLOW, ok_instance, "blob-1")
    assert blob_result.xcom("fetch_output") == blob_url
    assert blob_result.xcom("describe") == {"path": blob_url, "size": BIG_STREAM}
    assert s3_sha256(client, bucket, f"outputs/{ok_instance}/blob.bin") == expected["sha256"]
    assert blob_result.xcom("fetch_output", "sha256") == expected["sha256"]
    assert s3_keys(client, bucket) == [f"outputs/{ok_instance}/blob.bin", f"outputs/{ok_instance}/rows.json"]
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert rss.growth < MAX_RSS_GROWTH, f"peak RSS grew by {rss.growth / MIB:.0f} MiB"


@pytest.mark.parametrize("store", ["file", "s3"])
@pytest.mark.parametrize(("drops", "retried_ok"), [(1, True), (2, False)])
def test_dropped_connection_leaves_nothing_and_the_retry_writes_it_all(
    run_dag, ok_instance, workflows, tmp_path, request, store, drops, retried_ok
):
    if store == "s3":
        client, bucket = request.getfixturevalue("s3_bucket")
        url = f"s3://aws_test@{bucket}/dropped/blob.bin"

        def leftovers() -> list[str]:
            return s3_keys(client, bucket)
    else:
        url = f"file://{tmp_path}/dropped/blob.bin"

        def leftovers() -> list[str]:
            folder = tmp_path / "dropped"
            return sorted(p.name for p in folder.iterdir()) if folder.exists() else []

    workflows.inject_fault(
        path="/step$", method="GET", count=drops, kind="drop_connection", after_bytes=5 * MIB
    )

    result = run_dag("output_storage", storage_conf(ok_instance, "small blob", url))

    fetch = task_instance(result, "fetch_output")
    assert fetch.try_number == 2
    assert [r["fault"] is not None for r in step_requests(workflows)] == [True, drops == 2]
    if retried_ok:
        assert result.state == "success"
        expected = workflows.stream_digest(OK_WORKFLOW, ok_instance, "small blob-1")
        assert result.xcom("fetch_output", "sha256") == expected["sha256"]
        assert result.xcom("fetch_output", "size_bytes") == SMALL_STREAM
        if store == "s3":
            assert leftovers() == ["dropped/blob.bin"]
            assert s3_sha256(client, bucket, "dropped/blob.bin") == expected["sha256"]
        else:
            assert leftovers() == ["blob.bin"]
            assert sha256_file(tmp_path / "dropped" / "blob.bin") == expected["sha256"]
    else:
        assert result.state == "failed"
        assert leftovers() == []  # neither the object nor a *.partial temporary
    assert not any(name.endswith(PARTIAL_SUFFIX) for name in leftovers())


# --- clear errors (the operator run directly, against the emulator) --------------------------------


def run_operator(
    workflow: str, instance_id: str, step_name: str, **kwargs: Any
) -> tuple[Any, RecordingTaskInstance]:
    ti = RecordingTaskInstance()
    operator = CloudflareWorkflowStepOutputOperator(
        task_id="fetch_output", workflow_name=workflow, instance_id=instance_id, step_name=step_name, **kwargs
    )
    return operator.execute({"ti": ti}), ti  # type: ignore[arg-type]


def test_redacted_fails_by_default_and_warn_passes_the_marker(ok_instance):
    with pytest.raises(CloudflareWorkflowOutputRejectedError) as raised:
        run_operator(OK_WORKFLOW, ok_instance, "secret")
    assert "is '[REDACTED]': the step is marked sensitive in the Workflow" in str(raised.value)
    assert isinstance(raised.value, AirflowFailException)

    value, _ = run_operator(OK_WORKFLOW, ok_instance, "secret", on_redacted="warn")
    assert value == "[REDACTED]"


def test_oversize_and_binary_without_path_name_output_path(ok_instance):
    with pytest.raises(CloudflareWorkflowOutputRejectedError, match="more than max_xcom_bytes=65536") as big:
        run_operator(OK_WORKFLOW, ok_instance, "huge")
    assert "Set output_path" in str(big.value)

    with pytest.raises(CloudflareWorkflowOutputRejectedError, match="is binary") as binary:
        run_operator(OK_WORKFLOW, ok_instance, "blob")
    assert f"{BIG_STREAM} bytes" in str(binary.value)
    assert "Binary outputs never go to XCom: set output_path" in str(binary.value)


def test_errored_step_and_attempt(workflows):
    instance_id = start(workflows, BROKEN_WORKFLOW)

    with pytest.raises(CloudflareWorkflowStepFailedError) as raised:
        run_operator(BROKEN_WORKFLOW, instance_id, "load")
    assert "Step 'load-1' of instance" in str(raised.value)
    assert "errored: QuotaError: daily quota exceeded" in str(raised.value)

    with pytest.raises(CloudflareWorkflowStepFailedError, match="Attempt 1 of step 'load-1'") as first:
        run_operator(BROKEN_WORKFLOW, instance_id, "load", attempt=1)
    assert "QuotaError: daily quota exceeded" in str(first.value)

    with pytest.raises(
        CloudflareWorkflowStepFailedError, match="Attempt 5 of step 'load' of instance"
    ) as never:
        run_operator(BROKEN_WORKFLOW, instance_id, "load", attempt=5)
    assert "the step ran 2 attempt(s) and the instance is errored" in str(never.value)


def test_not_yet_complete_steps_ask_for_the_sensor(workflows):
    waiting = start(workflows, WAITING_WORKFLOW)
    flaky = start(workflows, FLAKY_WORKFLOW)

    cases = [
        (
            (WAITING_WORKFLOW, waiting, "approval", {"step_type": "waitForEvent"}),
            "still waiting for its event",
        ),
        ((WAITING_WORKFLOW, waiting, "publish", {}), "Step 'publish' of instance"),
        (
            (FLAKY_WORKFLOW, flaky, "call api", {}),
            "is retrying after an attempt failed with Error: upstream 503",
        ),
    ]
    for (workflow, instance_id, step, kwargs), expected in cases:
        with pytest.raises(CloudflareWorkflowStepNotReadyError) as raised:
            run_operator(workflow, instance_id, step, **kwargs)
        assert expected in str(raised.value)
        assert "Put a CloudflareWorkflowStepSensor for this step upstream" in str(raised.value)
