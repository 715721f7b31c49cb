#!/usr/bin/env bash
# Set up the provider and its emulator (scripts/setup.sh --runtime), then run the demo
# pipeline DAG on a real Airflow against the local emulator, or against Cloudflare when
# CLOUDFLARE_API_TOKEN and CLOUDFLARE_ACCOUNT_ID are set.
#   bash scripts/demo.sh             `airflow dags test` in one process
#   bash scripts/demo.sh --airflow   scheduler, dag-processor, triggerer and api-server; a manual trigger
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh --runtime
exec .venv/bin/python -m scripts.demo "$@"
