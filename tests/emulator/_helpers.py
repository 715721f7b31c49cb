"""Assertions shared by the emulator tests."""

from __future__ import annotations

from typing import Any

import httpx


def result(response: httpx.Response) -> Any:
    """The ``result`` of a successful envelope (asserting the envelope)."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["success"] is True, body
    assert body["errors"] == []
    assert body["messages"] == []
    return body["result"]


def error(response: httpx.Response, status: int) -> tuple[int, str]:
    """``(code, message)`` of a failure envelope with HTTP ``status``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["result"] is None
    assert body["messages"] == []
    assert len(body["errors"]) == 1
    return body["errors"][0]["code"], body["errors"][0]["message"]


def step_of(details: dict[str, Any], name: str, kind: str = "step") -> dict[str, Any]:
    """The entry of ``details["steps"]`` with this logged name and type."""
    matches = [s for s in details["steps"] if s.get("name") == name and s["type"] == kind]
    assert len(matches) == 1, details["steps"]
    return matches[0]
