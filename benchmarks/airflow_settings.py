"""The Airflow settings every benchmark runs with: its own ``AIRFLOW_HOME``, no examples, quiet logs."""

from __future__ import annotations

from pathlib import Path


def airflow_environment(home: Path) -> dict[str, str]:
    """Environment variables for an Airflow at ``home`` (for ``os.environ`` or a child process)."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }
