#!/usr/bin/env bash
# Create .venv (if needed) and install the provider. Idempotent; run by the other scripts.
# Needs only Python >= 3.11 and access to PyPI.
#
#   bash scripts/setup.sh            the provider, the emulator and the test and lint tools (scripts/test.sh)
#   bash scripts/setup.sh --runtime  the provider and the emulator (its `emulator` extra) only (scripts/demo.sh)
#
# A stamp file per profile records what is installed for the current pyproject.toml + constraints.txt;
# a full (test) install also serves the runtime profile.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

case "${1:-}" in
    "") profile=test ;;
    --runtime) profile=runtime ;;
    *) echo "usage: bash scripts/setup.sh [--runtime]" >&2; exit 2 ;;
esac

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "Python >= 3.11 is required (found: $("$PYTHON" --version 2>&1)). Set PYTHON=/path/to/python3.11." >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
digest=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
test_stamp=.venv/.installed-test-$digest
runtime_stamp=.venv/.installed-runtime-$digest
if [ -f "$test_stamp" ] || { [ "$profile" = runtime ] && [ -f "$runtime_stamp" ]; }; then
    exit 0
fi
if [ "$profile" = test ]; then target=".[emulator,test]"; else target=".[emulator]"; fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c constraints.txt -e "$target"
rm -f .venv/.installed-*
touch ".venv/.installed-$profile-$digest"
