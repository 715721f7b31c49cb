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
