#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run every check: ruff, mypy and the pytest suite, less the
# multi-process Airflow tests (those run with scripts/test-airflow.sh: they take minutes, not seconds).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# Two workers on a 2-core machine; each gets its own Airflow home, SQLite DB and emulator.
# pytest exits 5 when it collects no test: set -e turns that into a failure too.
.venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile -m "not multiprocess" "$@"
