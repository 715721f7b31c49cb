"""Plain helpers shared by the tests (fixtures live in conftest.py). Imports nothing from Airflow, so
conftest.py can use it before it configures Airflow."""

from __future__ import annotations

import json
from typing import Any

# Credentials of the emulator's test account (the emulator's scenario defaults).
ACCOUNT_ID = "0123456789abcdef0123456789abcdef"
API_TOKEN = "emulator-token"
LEGACY_EMAIL = "dev@example.com"
LEGACY_API_KEY = "emulator-global-key"

# A made-up HTTPS API for wire-level unit tests (requests_mock / httpx.MockTransport answer it).
MOCK_API_BASE = "https://api.cloudflare.test/client/v4"
UNIT_TEST_TOKEN = "unit-test-token-4c1d"

# Every credential the tests use. No test output (captured stdout/stderr/log records, or the text of
# a failure) may contain one: conftest.py fails the test that printed it.
SECRETS = (API_TOKEN, LEGACY_API_KEY, UNIT_TEST_TOKEN, "legacy-key-77", "wrong-token-0xdead")


def leaked_secrets(texts: list[str]) -> list[str]:
    """The test credentials that occur in any of ``texts``."""
    return sorted({secret for secret in SECRETS for text in texts if secret in text})


def connection_json(api_base: str, **overrides: Any) -> str:
    """An ``AIRFLOW_CONN_*`` value for a ``cloudflare_workflows`` connection to ``api_base``."""
    conn: dict[str, Any] = {
        "conn_type": "cloudflare_workflows",
        "login": ACCOUNT_ID,
        "password": API_TOKEN,
        "host": api_base,
        "extra": {"max_retries": 3},
    }
    conn.update(overrides)
    return json.dumps(conn)


def ok_envelope(result: Any) -> dict[str, Any]:
    """A successful Cloudflare response envelope."""
    return {"success": True, "errors": [], "messages": [], "result": result}


def s3_keys(client: Any, bucket: str) -> list[str]:
    """Every key in ``bucket``, sorted."""
    return sorted(item["Key"] for item in client.list_objects_v2(Bucket=bucket).get("Contents", []))


# The "fleet" workflow of the finished-instances tests: instances are created in cohorts, each under its
# own definition (an instance keeps the one it started with). "gated" ones wait for an event "go".
FLEET_WORKFLOW = "fleet"
_GATE = {"name": "go", "type": "waitForEvent", "event_type": "go", "timeout": 3600}
_WORK = {"name": "work", "duration": 0}
_FAIL = {
    **_WORK,
    "fail_attempts": 1,
    "retries": {"limit": 0, "delay": 1, "backoff": "constant"},
    "error": {"name": "Error", "message": "boom"},
}
FLEET_SPECS = {
    "quick": [_WORK],
    "quick_fail": [_FAIL],
    "gated": [_GATE, _WORK],
    "gated_fail": [_GATE, _FAIL],
}


def create_fleet_instances(emulator: Any, kind: str, ids: list[str]) -> list[str]:
    """Create ``ids`` in the emulator (batches of 100) under the definition ``kind`` of FLEET_SPECS."""
    emulator.put_workflow({"name": FLEET_WORKFLOW, "output": {"kind": kind}, "steps": FLEET_SPECS[kind]})
    with emulator.api_client() as client:
        for start in range(0, len(ids), 100):
            batch = [{"instance_id": instance_id} for instance_id in ids[start : start + 100]]
            client.post(f"/{FLEET_WORKFLOW}/instances/batch", json=batch).raise_for_status()
    return ids


def let_fleet_go(emulator: Any, ids: list[str]) -> None:
    """Send the event "go" to gated instances: they finish at once."""
    with emulator.api_client() as client:
        for instance_id in ids:
            client.post(f"/{FLEET_WORKFLOW}/instances/{instance_id}/events/go", json={}).raise_for_status()
