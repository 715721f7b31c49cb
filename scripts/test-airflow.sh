#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the multi-process tests (tests/multiprocess/): each starts a real
# Airflow (scheduler, dag-processor, triggerer, api-server; LocalExecutor, SQLite) with the emulator,
# two at a time. A few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh

.venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist load -m multiprocess tests/multiprocess "$@"
