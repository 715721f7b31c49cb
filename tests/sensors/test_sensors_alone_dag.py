"""Sensors (and the step-output operator) whose first API call goes wrong, inside real DAG runs
(``dag.test()``): an API that never answers, a server slower than the wait's timeout, a bad account id.

The DAGs (``tests/dags/dag_sensors_alone.py``) have no upstream task, so the sensor's look is the
task's first call.
"""

from __future__ import annotations

import re
import socket
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.dags.dag_sensors_alone import LONG_TIMEOUT, SHORT_TIMEOUT
from tests.helpers import connection_json

pytestmark = pytest.mark.integration
# A name made to resolve to 127.0.0.1 (in this process, where dag.test() runs the task).
LOCAL_NAME = "api.cfw-test.example"
REFUSED = "ConnectionRefusedError: [Errno 111] Connection refused"
UNRESOLVED = "gaierror: [Errno -2] Name or service not known"
ERROR_LINE = re.compile(r"\[error\s*\] (.*?)(?:\s{2,}\[|$)", re.MULTILINE)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that is bound but never listens: every connection to it is refused."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield int(holder.getsockname()[1])


@pytest.fixture
def local_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """``LOCAL_NAME`` resolves to 127.0.0.1, ``*.invalid`` does not resolve; no resolver is asked."""
    resolve = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, str) and host.endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return resolve("127.0.0.1" if host == LOCAL_NAME else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def error_lines(text: str) -> list[str]:
    """The messages logged at error level."""
    return ERROR_LINE.findall(text)


def task_seconds(result) -> float:
    (ti,) = result.dag_run.get_task_instances()
    return (ti.end_date - ti.start_date).total_seconds()


# (sensor, mode, where the API is): every sensor and mode, each kind of address twice.
UNREACHABLE = [
    ("step", "poke", "closed port"),
    ("step", "reschedule", "local name"),
    ("step", "deferrable", "unresolvable"),
    ("instance", "poke", "unresolvable"),
    ("instance", "reschedule", "closed port"),
    ("instance", "deferrable", "local name"),
]


@pytest.mark.parametrize(("kind", "mode", "where"), UNREACHABLE)
def test_an_api_that_never_answers_fails_the_task_at_once(
    run_dag, closed_port, local_names, monkeypatch, capsys, kind, mode, where
):
    host, scheme, cause = {
        "closed port": (f"127.0.0.1:{closed_port}", "http", REFUSED),
        "local name": (f"{LOCAL_NAME}:{closed_port}", "https", REFUSED),
        "unresolvable": ("api.cfw-test.invalid", "https", UNRESOLVED),
    }[where]
    base = f"{scheme}://{host}/client/v4"
    monkeypatch.setenv("AIRFLOW_CONN_CLOUDFLARE_DEFAULT", connection_json(base))

    conf = {"workflow_name": "wf", "instance_id": "i-1", "step_name": "load"}
    result = run_dag(f"alone_{kind}_{mode}", conf)

    assert result.task_states() == {"wait": "failed"}
    assert task_seconds(result) < LONG_TIMEOUT / 30  # not the sensor's timeout
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert (
        f"Could not reach the Cloudflare Workflows API at {host} ({base}): {cause}. Check the connection's "
        "host and port"
    ) in text
    assert "No response to the first look of this task: it fails now instead of waiting for" in text
    assert "Retrying" not in text  # nothing ever answered: the hook does not retry a refusal or a bad name
    assert "Resumed after deferral" not in text  # the deferrable sensor failed on its first poke
    assert error_lines(text) == ["Task failed with exception"]  # and nothing else reads like a failure


@pytest.mark.parametrize(
    ("kind", "mode", "fault"),
    [
        ("step", "poke", {"kind": "drip", "interval": 0.5}),
        ("instance", "reschedule", {"kind": "rate_limit", "retry_after": "100"}),
    ],
)
def test_a_server_slower_than_the_timeout_ends_the_wait_by_its_timeout(
    run_dag, cloudflare_conn, capsys, kind, mode, fault
):
    conf = {"workflow_name": f"slow-{uuid.uuid4().hex[:8]}", "instance_id": "i-1", "step_name": "later"}
    cloudflare_conn.put_workflow(
        {"name": conf["workflow_name"], "steps": [{"name": "nap", "type": "sleep", "duration": 600}]}
    )
    cloudflare_conn.inject_fault(path="/instances/", method="GET", count=1000, **fault)
    requests_before = time.time()

    result = run_dag(f"alone_{kind}_{mode}_short", conf)

    assert result.task_states() == {"wait": "failed"}
    (ti,) = result.dag_run.get_task_instances()
    first_look = min(r["time"] for r in cloudflare_conn.requests_log(since=requests_before))
    # The wait started before its first look: it ended by its timeout, plus a margin for a loaded machine.
    assert ti.end_date.timestamp() - first_look < SHORT_TIMEOUT + 5
    captured = capsys.readouterr()
    assert "Sensor timed out: Timed out waiting for " in captured.out + captured.err


@pytest.mark.parametrize(
    "dag_id", ["alone_step_output", "alone_instance_deferrable", "alone_step_reschedule"]
)
def test_a_failure_before_the_first_call_logs_only_that_failure(run_dag, cloudflare_conn, capsys, dag_id):
    conf = {"workflow_name": "wf", "instance_id": "i-1", "step_name": "load", "account_id": "not-an-account"}

    result = run_dag(dag_id, conf)

    assert set(result.task_states().values()) == {"failed"}
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "Invalid Cloudflare account id" in text
    assert error_lines(text) == ["Task failed with exception"]  # no "XCom not found" for the link
    assert cloudflare_conn.requests_log() == []
