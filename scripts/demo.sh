#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the demo pipeline DAG on a real Airflow against the local
# emulator, or against Cloudflare when CLOUDFLARE_API_TOKEN and CLOUDFLARE_ACCOUNT_ID are set.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
