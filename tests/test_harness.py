"""The test harness itself: DAGs run on a real Airflow and their XComs can be read back."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_dag_runs_and_xcom_round_trips(run_dag):
    result = run_dag("infra_smoke", {"answer": 42})

    assert result.state == "success"
    assert result.task_states() == {"echo": "success"}
    assert result.xcom("echo") == {"conf": {"answer": 42}}
