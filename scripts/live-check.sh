#!/usr/bin/env bash
# The live contract check: ask the real Cloudflare Workflows API every question the provider had to
# assume and print what it answered and whether the provider handles it (see tests/live/check.py).
#
#   CLOUDFLARE_API_TOKEN=... CLOUDFLARE_ACCOUNT_ID=... bash scripts/live-check.sh [--finish-timeout 180]
#
# Optional: CLOUDFLARE_WORKFLOW_NAME (default demo-pipeline, deployed as the README shows),
# CLOUDFLARE_API_BASE_URL (default Cloudflare's API; e.g. a local emulator's .../client/v4).
# Exit codes: 0 all handled, 1 something not handled, 2 could not run, 77 skipped (no credentials).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh --runtime
exec .venv/bin/python -m tests.live.check "$@"
