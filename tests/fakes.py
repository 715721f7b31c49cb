"""Test doubles: a clock, a task instance, the Workflows API of the waits (both transports), a hook that
only closes."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from contextlib import contextmanager
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

from tests.helpers import ACCOUNT_ID, MOCK_API_BASE, ok_envelope


class FakeClock:
    """A rate-limiter clock that only moves when someone sleeps on it (thread-safe); records the sleeps."""

    def __init__(self, start: float = 1000.0) -> None:
        self.time = start
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            self.time += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)
        await asyncio.sleep(0)


class RecordingTaskInstance:
    """A task instance for operators run directly: its identity, and the XComs pushed, in order."""

    dag_id, run_id, task_id, map_index = "dag", "run", "task", None
    try_number, max_tries = 1, 0  # a first try without retries

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


WORKFLOW = "wf"
INSTANCE = "i"
INSTANCE_PATH = f"/accounts/{ACCOUNT_ID}/workflows/{WORKFLOW}/instances/{INSTANCE}"


def step_result(status: str, error: tuple[str, str] | None = None, output: Any = None) -> dict[str, Any]:
    """A ``/step`` result."""
    return {
        "status": status,
        "error": {"name": error[0], "message": error[1]} if error else None,
        "output": output,
    }


def details_entry(name: str, kind: str, step: dict[str, Any]) -> dict[str, Any]:
    """The details' ``steps`` entry of a step that ``/step`` answers with ``step``."""
    status, error = step["status"], step["error"]
    if kind == "waitForEvent":
        finished = status in ("complete", "errored")
        return {"type": kind, "name": name, "finished": finished, "error": error if finished else None}
    if status == "complete":
        success, attempts = True, [{"success": True, "error": None}]
    elif status == "errored":
        success, attempts = False, [{"success": False, "error": error}]
    else:  # running (retrying when there is an error) or anything else /step may say: not finished
        success = None
        attempts = [{"success": False, "error": error}] if error else []
        attempts.append({"success": None, "error": None})
    return {"type": kind, "name": name, "success": success, "attempts": attempts}


class FakeApi:
    """
    A fake of the two endpoints the waits use, for both transports (``requests_mock`` and httpx).

    One instance (``wf`` / ``i``): its details come from :attr:`FakeApi.instance` and ``/step`` answers
    from :attr:`FakeApi.steps`, keyed by ``(logged name, type)`` (missing = 404, as Cloudflare answers for
    a step that has not started). The full details list every step of :attr:`FakeApi.steps` as Cloudflare
    would (:func:`details_entry`), after the entries written into ``instance["steps"]`` (which win for the
    same name and type). Queued :attr:`FakeApi.faults` answer first. Every call is recorded.
    """

    def __init__(self) -> None:
        self.steps: dict[tuple[str, str], dict[str, Any]] = {}
        self.instance: dict[str, Any] = {"status": "running", "error": None, "output": None, "steps": []}
        self.faults: list[tuple[int, dict[str, str]]] = []
        self.calls: list[str] = []

    def respond(self, url: str) -> tuple[int, dict[str, str], bytes]:
        """``(status, headers, body)`` for a GET of ``url``."""
        parts = urlsplit(url)
        path = unquote(parts.path)[len(urlsplit(MOCK_API_BASE).path) :]
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        json_headers = {"Content-Type": "application/json"}
        if path == f"{INSTANCE_PATH}/step":
            call = f"step {query['name']} ({query['type']})"
        elif path == INSTANCE_PATH:
            call = "instance simple" if query.get("simple") == "true" else "instance full"
        else:
            call = f"unexpected {path}"
        self.calls.append(call)
        if self.faults:
            status, headers = self.faults.pop(0)
            body = {"success": False, "errors": [{"code": 10000, "message": "fault"}], "result": None}
            return status, {**json_headers, **headers}, json.dumps(body).encode()
        result: Any = None
        if call.startswith("step "):
            result = self.steps.get((query["name"], query["type"]))
        elif call.startswith("instance"):
            result = dict(self.instance)
            if call == "instance simple":
                result.pop("steps", None)
            elif isinstance(result.get("steps"), list):
                written = {(entry.get("name"), entry.get("type")) for entry in result["steps"]}
                result["steps"] = result["steps"] + [
                    details_entry(name, kind, step)
                    for (name, kind), step in self.steps.items()
                    if (name, kind) not in written
                ]
        if result is None:
            body = {"success": False, "errors": [{"code": 10404, "message": "not found"}], "result": None}
            return 404, json_headers, json.dumps(body).encode()
        return 200, json_headers, json.dumps(ok_envelope(result)).encode()

    def install(self, requests_mock: Any) -> FakeApi:
        """Answer the sync hook (``requests``) through ``requests_mock``."""

        def callback(request: Any, context: Any) -> bytes:
            status, headers, body = self.respond(request.url)
            context.status_code = status
            context.headers.update(headers)
            return body

        requests_mock.get(re.compile(re.escape(MOCK_API_BASE)), content=callback)
        return self

    @contextmanager
    def async_hook(self) -> Any:
        """Answer the async hook (``httpx``) with a ``MockTransport``."""

        def handler(request: httpx.Request) -> httpx.Response:
            status, headers, body = self.respond(str(request.url))
            return httpx.Response(status, headers=headers, content=body)

        from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook

        # Every hook made meanwhile (the triggers make their own) answers through the fake.
        with mock.patch.object(CloudflareWorkflowsHook, "async_transport", httpx.MockTransport(handler)):
            yield self


class ClosingHook:
    """A hook as a registry of shared hooks sees it: made for a connection id, closed once done.

    :param cloudflare_conn_id: the connection id it was made for.
    """

    def __init__(self, cloudflare_conn_id: str) -> None:
        self.cloudflare_conn_id = cloudflare_conn_id
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True


class FakeTaskStateStore:
    """
    Airflow's task state store (``context["task_state_store"]``, a ``TaskStateStoreAccessor``) in a dict:
    ``get`` / ``set`` / ``delete`` of JSON values, checked as the real one checks them (no None, JSON only).
    Share one between the contexts of a task's tries, as Airflow does.
    """

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return json.loads(json.dumps(self.values[key])) if key in self.values else default

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        if value is None:
            raise ValueError("Cannot set value as None")
        self.values[key] = json.loads(json.dumps(value))

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


class FakeAssetStateStore:
    """
    The one method pair of Airflow's ``AssetStateStoreAccessors`` an asset watcher uses (``aget`` /
    ``aset``), kept in a dict that outlives the trigger objects (as the metadata DB does); values go
    through JSON as they do there.
    """

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.writes = 0

    async def aget(self, key: str, default: Any = None) -> Any:
        return json.loads(self.values[key]) if key in self.values else default

    async def aset(self, key: str, value: Any) -> None:
        self.values[key] = json.dumps(value)
        self.writes += 1
