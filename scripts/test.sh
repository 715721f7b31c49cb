#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run every check: ruff, mypy, the pytest suite (two workers), then the
# multi-process Airflow tests (tests/multiprocess/: a real scheduler, dag-processor, triggerer and
# api-server each; one at a time). About 7 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# Two workers on a 2-core machine; each gets its own Airflow home, SQLite DB and emulator.
# pytest exits 5 when it collects no test: set -e turns that into a failure too.
.venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile -m "not multiprocess" "$@"
.venv/bin/python -m pytest -n 0 -m multiprocess tests/multiprocess
