#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run every check: ruff, mypy, the pytest suite (two workers), then the
# multi-process Airflow tests (tests/multiprocess/: a real scheduler, dag-processor, triggerer and
# api-server each; two at a time). About 9 minutes on 2 cores, installing included.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# Two workers on a 2-core machine; each gets its own Airflow home, SQLite DB and emulator.
# pytest exits 5 when it collects no test: set -e turns that into a failure too.
.venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile -m "not multiprocess" "$@"
# The multi-process tests mostly wait on their Airflow processes: two stacks at a time fit 2 cores.
.venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist load -m multiprocess tests/multiprocess
