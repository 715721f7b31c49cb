"""Run the emulator: in this process (``serve``) or as a child process tests and scripts control."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from .app import create_app
from .scenario import Scenario, load_scenario

URL_LINE_PREFIX = "EMULATOR_URL="
START_TIMEOUT_SECONDS = 60.0


class _AnnouncingServer(uvicorn.Server):
    """Prints the URL line once the socket accepts connections."""

    def __init__(self, config: uvicorn.Config, url: str) -> None:
        super().__init__(config)
        self.url = url

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        print(f"{URL_LINE_PREFIX}{self.url}", flush=True)


def serve(
    scenario: Scenario, *, host: str = "127.0.0.1", port: int = 8787, log_level: str = "warning"
) -> None:
    """Serve ``scenario`` until interrupted; ``port=0`` picks a free port."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    config = uvicorn.Config(
        create_app(scenario), log_level=log_level, access_log=False, timeout_keep_alive=30
    )
    _AnnouncingServer(config, f"http://{shown_host}:{bound_port}").run(sockets=[sock])


class EmulatorProcess:
    """
    A running emulator child process and a small client for its control API.

    :param url: e.g. ``http://127.0.0.1:54321``.
    :param scenario: the scenario it serves (for the account id and credentials).
    """

    def __init__(self, url: str, scenario: Scenario, process: subprocess.Popen[str]) -> None:
        self.url = url
        self.api_base = f"{url}/client/v4"
        self.account_id = scenario.account_id
        self.api_token = scenario.api_token
        self.email = scenario.email
        self.api_key = scenario.api_key
        self.process = process
        self._control = httpx.Client(base_url=f"{url}/__emulator", timeout=120)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._control.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(
                f"emulator control {method} {path} failed: {response.status_code} {response.text}"
            )
        return response.json()

    def reset(self) -> None:
        """Drop instances, faults and the request log (workflows stay)."""
        self._call("POST", "/reset")

    def put_workflow(self, workflow: dict[str, Any]) -> None:
        """Add or replace a workflow (scenario schema)."""
        self._call("PUT", f"/workflows/{_quote(workflow['name'])}", json=workflow)

    def create_cron_instance(self, workflow: str, instance_id: str, params: Any = None) -> None:
        """Create an instance the way a cron trigger does (any id, even with ``/``, ``*`` and spaces)."""
        self._call(
            "POST",
            f"/workflows/{_quote(workflow)}/instances",
            json={"id": instance_id, "params": params, "trigger_source": "cron"},
        )

    def advance(self, seconds: float) -> float:
        """Move the emulated clock forward; returns the new emulated time."""
        return float(self._call("POST", "/clock", json={"advance_seconds": seconds})["now"])

    def set_time_scale(self, time_scale: float) -> None:
        """Emulated seconds per real second from now on."""
        self._call("POST", "/clock", json={"time_scale": time_scale})

    def inject_fault(self, **fault: Any) -> None:
        """Inject a fault (see ``faults.Fault``) for the next ``count`` matching requests."""
        self._call("POST", "/faults", json=fault)

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def requests_log(self) -> list[dict[str, Any]]:
        """Every API request so far: method, raw_path, query, auth scheme, body, fault, status."""
        return list(self._call("GET", "/requests"))

    def stream_digest(self, workflow: str, instance_id: str, step: str) -> dict[str, Any]:
        """``{size, sha256}`` of a stream step's output."""
        return dict(
            self._call(
                "GET",
                f"/workflows/{_quote(workflow)}/instances/{_quote(instance_id)}/stream-digest",
                params={"step": step},
            )
        )

    def close(self) -> None:
        self._control.close()


def _quote(segment: str) -> str:
    from urllib.parse import quote

    return quote(segment, safe="")


@contextmanager
def run_emulator_process(
    scenario: Path | None, *, time_scale: float | None = None
) -> Iterator[EmulatorProcess]:
    """Start the emulator as a child process on a free loopback port; stop it on exit."""
    command = [sys.executable, "-m", "airflow_provider_cfworkflows.emulator", "--port", "0"]
    if scenario is not None:
        command += ["--scenario", str(scenario)]
    if time_scale is not None:
        command += ["--time-scale", str(time_scale)]
    loaded = load_scenario(scenario)
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = _wait_for_url(process)
    emulator = EmulatorProcess(url, loaded, process)
    try:
        yield emulator
    finally:
        emulator.close()
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_url(process: subprocess.Popen[str]) -> str:
    found: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(URL_LINE_PREFIX):
                found.append(line[len(URL_LINE_PREFIX) :].strip())
                break

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(START_TIMEOUT_SECONDS)
    if not found:
        process.kill()
        stderr = process.stderr.read() if process.stderr else ""
        raise RuntimeError(
            f"The emulator did not start within {START_TIMEOUT_SECONDS:.0f} s:\n{stderr[-4000:]}"
        )
    # Keep draining output so the child never blocks on a full pipe.
    for stream in (process.stdout, process.stderr):
        threading.Thread(target=lambda s=stream: [None for _ in s] if s else None, daemon=True).start()
    return found[0]
