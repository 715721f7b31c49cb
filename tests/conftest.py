"""Shared test setup: an isolated Airflow home with a SQLite metadata DB, the emulator, moto's S3 server.

Airflow reads its configuration at import time, so the environment is set here before anything
imports ``airflow`` (the assertion below keeps it that way).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    ACCOUNT_ID,
    MOCK_API_BASE,
    UNIT_TEST_TOKEN,
    connection_json,
    leaked_secrets,
)

assert "airflow" not in sys.modules, "tests/conftest.py must configure Airflow before it is imported"

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_DAGS = REPO_ROOT / "tests" / "dags"
EXAMPLE_DAGS = REPO_ROOT / "example_dags"

# One Airflow home per pytest-xdist worker: SQLite does not share well between processes.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix=f"cfwf-airflow-{_WORKER}-"))
DAGS_FOLDER = AIRFLOW_HOME / "dags"
os.environ.update(
    {
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    texts = [content for _name, content in report.sections]
    if report.longrepr is not None:
        texts.append(str(report.longrepr))
    leaked = leaked_secrets(texts)
    if leaked:
        report.outcome = "failed"
        report.longrepr = f"{len(leaked)} credential(s) appeared in the output of {item.nodeid}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


def _copy_dags() -> None:
    DAGS_FOLDER.mkdir(parents=True, exist_ok=True)
    for folder in (TEST_DAGS, EXAMPLE_DAGS):
        for source in folder.glob("*.py"):
            shutil.copy2(source, DAGS_FOLDER / source.name)


@pytest.fixture(autouse=True)
def fresh_rate_limiters() -> Iterator[None]:
    """No rate-limit state (pauses, budgets) carries from one test to the next."""
    from airflow_provider_cfworkflows import ratelimit

    ratelimit.reset_limiters()
    yield
    ratelimit.reset_limiters()


@pytest.fixture
def limiter_clock(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fake clock for the rate limiters hooks create: their waits take no time and are recorded."""
    from airflow_provider_cfworkflows import ratelimit
    from tests.fakes import FakeClock

    clock = FakeClock()
    monkeypatch.setattr(ratelimit, "default_clock", clock)
    return clock


@pytest.fixture
def no_retry_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook's retries without their backoff (``protocol.retry_delay`` is 0): faults are answered at
    once. Tests that look at the waits themselves record them with a fixture of their own."""
    from airflow_provider_cfworkflows import protocol

    monkeypatch.setattr(protocol, "retry_delay", lambda *args, **kwargs: 0.0)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata DB, with the test and example DAGs in the DAGs folder."""
    _copy_dags()
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
    from airflow import settings

    settings.configure_orm()
    return AIRFLOW_HOME


@pytest.fixture(scope="session")
def emulator() -> Iterator[Any]:
    """The Cloudflare Workflows emulator as a real HTTP server on 127.0.0.1 (one per test session)."""
    from airflow_provider_cfworkflows.emulator.server import run_emulator_process

    with run_emulator_process(None) as server:
        yield server


@pytest.fixture
def fresh_emulator(emulator: Any) -> Any:
    """The session emulator with no instances, faults or request log left by earlier tests."""
    emulator.reset()
    return emulator


@pytest.fixture
def cloudflare_conn(fresh_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``cloudflare_default`` pointing at the (reset) emulator; returns the emulator."""
    monkeypatch.setenv("AIRFLOW_CONN_CLOUDFLARE_DEFAULT", connection_json(fresh_emulator.api_base))
    return fresh_emulator


@pytest.fixture
def real_time_conn(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """
    ``cloudflare_default`` pointing at an emulator of its own, whose clock is this machine's (the session
    emulator's clock is moved by other tests): for code comparing Cloudflare's timestamps with local time.
    """
    from airflow_provider_cfworkflows.emulator.server import run_emulator_process

    with run_emulator_process(None) as server:
        monkeypatch.setenv("AIRFLOW_CONN_CLOUDFLARE_DEFAULT", connection_json(server.api_base))
        yield server


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def mocked_api_conn(monkeypatch: pytest.MonkeyPatch) -> str:
    """``cloudflare_default`` pointing at ``MOCK_API_BASE`` (mock the wire yourself); returns the base."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLOUDFLARE_DEFAULT",
        json.dumps(
            {
                "conn_type": "cloudflare_workflows",
                "login": ACCOUNT_ID,
                "password": UNIT_TEST_TOKEN,
                "host": MOCK_API_BASE,
            }
        ),
    )
    return MOCK_API_BASE


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[str]:
    """moto's S3-compatible server (its own process, on 127.0.0.1); yields its endpoint URL."""
    import httpx

    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # readiness check: the server answers once it is listening
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    stderr = process.stderr.read().decode() if process.stderr else ""
                    raise RuntimeError(f"moto server did not start: {stderr[-2000:]}") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def aws_conn(moto_s3: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """An ``aws`` connection ``aws_test`` reaching moto the way R2 is reached (``endpoint_url``)."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_TEST",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": moto_s3, "region_name": "us-east-1"},
            }
        ),
    )
    return "aws_test"


class DagRunResult:
    """What a ``dag.test()`` run left behind: states and XComs, read from the metadata DB."""

    def __init__(self, dag_run: Any) -> None:
        self.dag_run = dag_run
        self.run_id: str = dag_run.run_id
        self.state: str = str(dag_run.state)

    def task_states(self) -> dict[str, str]:
        """``{task_id (with [map_index] for mapped tasks): state}``."""
        states = {}
        for ti in self.dag_run.get_task_instances():
            key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
            states[key] = str(ti.state)
        return states

    def tries(self) -> dict[str, tuple[int, int]]:
        """``{task_id: (try_number, max_tries)}``, read afresh from the metadata DB."""
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            rows = session.execute(
                select(TaskInstance.task_id, TaskInstance.try_number, TaskInstance.max_tries).where(
                    TaskInstance.dag_id == self.dag_run.dag_id, TaskInstance.run_id == self.run_id
                )
            )
            return {task_id: (try_number, max_tries) for task_id, try_number, max_tries in rows}

    def xcom(self, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        """The deserialized XCom value pushed by ``task_id`` in this run (KeyError if none)."""
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        with create_session() as session:
            query = XComModel.get_many(
                run_id=self.run_id,
                key=key,
                task_ids=task_id,
                dag_ids=self.dag_run.dag_id,
                map_indexes=map_index,
            )
            row = session.scalars(query).first()
            if row is None:
                raise KeyError(f"no XCom {key!r} from {task_id!r} in run {self.run_id}")
            return XComModel.deserialize_value(row)


_DAG_BAG: Any = None


def load_dag(dag_id: str) -> Any:
    """A DAG from the test DAGs folder (test DAGs and example DAGs)."""
    global _DAG_BAG
    if _DAG_BAG is None:
        from airflow.dag_processing.dagbag import DagBag

        _DAG_BAG = DagBag(dag_folder=str(DAGS_FOLDER))
        assert not _DAG_BAG.import_errors, _DAG_BAG.import_errors
    dag = _DAG_BAG.get_dag(dag_id)
    assert dag is not None, f"DAG {dag_id!r} not found in {DAGS_FOLDER}"
    return dag


@pytest.fixture
def run_dag(airflow_db: Path) -> Any:
    """Run a DAG of the DAGs folder with ``dag.test(run_conf=...)``; returns a :class:`DagRunResult`."""

    def run(dag_id: str, conf: dict[str, Any] | None = None) -> DagRunResult:
        return DagRunResult(load_dag(dag_id).test(run_conf=conf))

    return run


@pytest.fixture
def s3_bucket(moto_s3: str, aws_conn: str) -> tuple[Any, str]:
    """A new, empty bucket on the moto server; returns ``(boto3 client, bucket name)``."""
    import uuid

    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=moto_s3,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    name = f"cfwf-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return client, name
