"""Run the emulator: in this process (:func:`serve`) or as a child process (:func:`run_emulator_process`).

Typical test use::

    with run_emulator_process(None, time_scale=0) as emulator:   # None: the bundled demo scenario
        emulator.put_workflow({"name": "wf", "steps": [{"name": "a", "duration": 1}]})
        httpx.post(f"{emulator.workflows_url}/wf/instances", headers=emulator.auth_headers, json={})
        emulator.advance(5)
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import httpx
import uvicorn

from .app import create_app
from .auth import key_label, token_label
from .scenario import Scenario, load_scenario

URL_LINE_PREFIX = "EMULATOR_URL="
DEFAULT_START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
CONTROL_TIMEOUT = 300.0  # a stream digest of a 1 GiB output takes a few seconds
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class _AnnouncingServer(uvicorn.Server):
    """A uvicorn server that prints ``EMULATOR_URL=...`` once its socket accepts connections."""

    def __init__(self, config: uvicorn.Config, url: str) -> None:
        super().__init__(config)
        self.url = url

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            print(f"{URL_LINE_PREFIX}{self.url}", flush=True)


def serve(
    scenario: Scenario,
    *,
    host: str = "127.0.0.1",
    port: int = 8787,
    log_level: str = "warning",
    access_log: bool = False,
    exit_on_stdin_eof: bool = False,
) -> None:
    """
    Serve ``scenario`` until interrupted (SIGINT / SIGTERM); ``port=0`` picks a free port.

    :param exit_on_stdin_eof: also stop when standard input reaches its end, so a child process stops
        when its parent dies without stopping it (the parent holds the other end of a pipe).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    config = uvicorn.Config(
        create_app(scenario),
        log_level=log_level,
        access_log=access_log,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=5,
    )
    server = _AnnouncingServer(config, f"http://{shown_host}:{bound_port}")
    if exit_on_stdin_eof:
        threading.Thread(target=_stop_at_stdin_eof, args=(server,), daemon=True).start()
    server.run(sockets=[sock])


def _stop_at_stdin_eof(server: uvicorn.Server) -> None:
    try:
        while sys.stdin.buffer.read(65536):
            pass
    except (OSError, ValueError):
        pass
    server.should_exit = True


def _quote(segment: str) -> str:
    return quote(segment, safe="")


class EmulatorError(RuntimeError):
    """The emulator process did not start, or a control-API call failed."""


class EmulatorProcess:
    """
    A running emulator child process and a small client for its control API.

    :ivar url: e.g. ``http://127.0.0.1:54321``.
    :ivar api_base: ``url + "/client/v4"`` (a connection's host).
    :ivar account_id: the account the scenario serves.
    :ivar api_token: the Bearer token it accepts (``email`` / ``api_key`` for legacy auth).
    :ivar token_label: the non-secret label of ``api_token`` in the request log and rate-limit counters
        (``key_label`` for the email + key pair).
    """

    def __init__(
        self, url: str, scenario: Scenario, process: subprocess.Popen[str], stderr_tail: deque[str]
    ) -> None:
        self.url = url
        self.api_base = f"{url}/client/v4"
        self.account_id = scenario.account_id
        self.api_token = scenario.api_token
        self.email = scenario.email
        self.api_key = scenario.api_key
        self.token_label = token_label(scenario.api_token)
        self.key_label = key_label(scenario.email, scenario.api_key)
        self.process = process
        self._stderr_tail = stderr_tail
        self._control = httpx.Client(base_url=f"{url}/__emulator", timeout=CONTROL_TIMEOUT)

    def __repr__(self) -> str:  # never shows the credentials
        return f"EmulatorProcess(url={self.url!r}, pid={self.process.pid})"

    # --- conveniences for calling the emulated API -------------------------------------------

    @property
    def workflows_url(self) -> str:
        """``{api_base}/accounts/{account_id}/workflows``."""
        return f"{self.api_base}/accounts/{self.account_id}/workflows"

    @property
    def auth_headers(self) -> dict[str, str]:
        """``Authorization: Bearer <api_token>``."""
        return {"Authorization": f"Bearer {self.api_token}"}

    def api_client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client for the emulated API: base URL :attr:`workflows_url`, Bearer auth."""
        kwargs.setdefault("timeout", 30.0)
        headers = {**self.auth_headers, **kwargs.pop("headers", {})}
        return httpx.Client(base_url=self.workflows_url, headers=headers, **kwargs)

    @property
    def stderr_tail(self) -> str:
        """The last lines the process wrote to stderr (for diagnostics)."""
        return "".join(self._stderr_tail)

    # --- control API -------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._control.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise EmulatorError(
                f"emulator control {method} {path} failed: {response.status_code} {response.text}"
            )
        return response.json()

    def reset(self) -> None:
        """Drop instances, faults and the request log; back to the start's options and rate limit."""
        self._call("POST", "/reset")

    def put_workflow(self, workflow: dict[str, Any]) -> dict[str, Any]:
        """Add or replace a workflow (one workflow of the scenario schema, with ``name``)."""
        # ASCII JSON: any value goes, a string with a lone surrogate too (httpx's json= cannot send it).
        path, headers = f"/workflows/{_quote(workflow['name'])}", {"Content-Type": "application/json"}
        return dict(self._call("PUT", path, content=json.dumps(workflow), headers=headers))

    def create_cron_instance(
        self,
        workflow: str,
        instance_id: str,
        params: Any = None,
        *,
        cron: str | None = None,
        scheduled_time: float | None = None,
        trigger_source: str = "cron",
    ) -> dict[str, Any]:
        """
        Create an instance the way a trigger does, without id validation (ids like
        ``*/5 * * * *-1786599900000``). ``cron`` defaults to the id up to its last ``-``.
        """
        body: dict[str, Any] = {"id": instance_id, "params": params, "trigger_source": trigger_source}
        if cron is not None:
            body["cron"] = cron
        if scheduled_time is not None:
            body["scheduled_time"] = scheduled_time
        return dict(self._call("POST", f"/workflows/{_quote(workflow)}/instances", json=body))

    def now(self) -> float:
        """The emulated time (epoch seconds)."""
        return float(self._call("GET", "/clock")["now"])

    def advance(self, seconds: float) -> float:
        """Move the emulated clock forward by ``seconds``; returns the new emulated time."""
        return float(self._call("POST", "/clock", json={"advance_seconds": seconds})["now"])

    def set_time_scale(self, time_scale: float) -> None:
        """Emulated seconds per real second from now on (0 freezes the clock)."""
        self._call("POST", "/clock", json={"time_scale": time_scale})

    def inject_fault(self, **fault: Any) -> dict[str, Any]:
        """Inject a fault for the next ``count`` matching requests (fields: see ``faults.Fault``)."""
        return dict(self._call("POST", "/faults", json=fault))

    def faults(self) -> list[dict[str, Any]]:
        """Pending faults with their remaining counts."""
        return list(self._call("GET", "/faults"))

    def clear_faults(self) -> None:
        """Drop every pending fault."""
        self._call("DELETE", "/faults")

    def requests_log(self, since: float | None = None) -> list[dict[str, Any]]:
        """
        API requests so far (from epoch time ``since``): time, method, raw_path, query, endpoint, auth
        scheme, credential label, body, fault, status.
        """
        params = {} if since is None else {"since": repr(float(since))}
        return list(self._call("GET", "/requests", params=params))

    def request_stats(self, since: float | None = None) -> dict[str, Any]:
        """Counts over the request log: total, by_status, by_endpoint, by_credential, rate_limited, ..."""
        params = {} if since is None else {"since": repr(float(since))}
        return dict(self._call("GET", "/requests/stats", params=params))

    def options(self) -> dict[str, Any]:
        """The API options in force (``scenario.ApiOptions`` as JSON)."""
        return dict(self._call("GET", "/options"))

    def set_options(self, **options: Any) -> dict[str, Any]:
        """Change some API options (names of the scenario's ``api`` mapping); returns them all."""
        return dict(self._call("PATCH", "/options", json=options))

    def set_rate_limit(self, quota: int = 1200, window: int = 300, *, headers: bool = True) -> dict[str, Any]:
        """Enforce ``quota`` requests per credential per ``window`` seconds (counters restart)."""
        body = {"quota": quota, "window": window, "headers": headers}
        return dict(self._call("PUT", "/rate-limit", json=body))

    def disable_rate_limit(self) -> None:
        """No rate limit and no rate-limit headers."""
        self._call("DELETE", "/rate-limit")

    def rate_limit_status(self) -> dict[str, Any]:
        """The limit and, per credential label, requests, limited (429s), remaining, reset_in."""
        return dict(self._call("GET", "/rate-limit"))

    def reset_rate_limit(self) -> None:
        """Restart every window and counter."""
        self._call("POST", "/rate-limit/reset")

    def consume_rate_limit(self, count: int, credential: str | None = None) -> dict[str, Any]:
        """Use ``count`` requests of a credential's quota (default: the token's), like another client."""
        body: dict[str, Any] = {"count": count}
        if credential is not None:
            body["credential"] = credential
        return dict(self._call("POST", "/rate-limit/consume", json=body))

    def clear_requests_log(self) -> None:
        """Empty the request log."""
        self._call("DELETE", "/requests")

    def stream_digest(self, workflow: str, instance_id: str, step: str) -> dict[str, Any]:
        """``{size, sha256}`` of the stream output of ``step`` (the logged name, e.g. ``export-1``)."""
        path = f"/workflows/{_quote(workflow)}/instances/{_quote(instance_id)}/stream-digest"
        return dict(self._call("GET", path, params={"step": step}))

    def close(self) -> None:
        """Close the control client (the process is stopped by :func:`run_emulator_process`)."""
        self._control.close()


def _drain(stream: IO[str], sink: deque[str], found: list[str] | None, ready: threading.Event | None) -> None:
    for line in stream:
        if found is not None and ready is not None and not found and line.startswith(URL_LINE_PREFIX):
            found.append(line[len(URL_LINE_PREFIX) :].strip())
            ready.set()
        sink.append(line)
    if ready is not None:
        ready.set()  # EOF: the process ended


def _stop(process: subprocess.Popen[str]) -> None:
    if process.stdin is not None and not process.stdin.closed:
        try:
            process.stdin.close()  # the child stops by itself at the end of its stdin
            process.wait(timeout=STOP_TIMEOUT / 2)
        except (OSError, subprocess.TimeoutExpired):
            pass
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def run_emulator_process(
    scenario: Path | None = None,
    *,
    time_scale: float | None = None,
    start_timeout: float = DEFAULT_START_TIMEOUT,
    extra_args: Sequence[str] = (),
) -> Iterator[EmulatorProcess]:
    """
    Start ``python -m airflow_provider_cfworkflows.emulator --port 0`` on 127.0.0.1; stop it on exit.

    :param scenario: scenario file; None serves the bundled demo.
    :param time_scale: emulated seconds per real second (None: the scenario's ``time_scale``).
    :param start_timeout: seconds to wait for the ``EMULATOR_URL=`` line.
    :param extra_args: more CLI arguments (e.g. ``["--log-level", "info"]``).
    :raises EmulatorError: the process exited or did not announce its URL in time (with its stderr).
    """
    loaded = load_scenario(scenario)
    if time_scale is not None:
        loaded = dataclasses.replace(loaded, time_scale=time_scale)
    command = [
        sys.executable,
        "-m",
        "airflow_provider_cfworkflows.emulator",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--exit-on-stdin-eof",  # if this process dies, the emulator stops too
    ]
    if scenario is not None:
        command += ["--scenario", str(scenario)]
    if time_scale is not None:
        command += ["--time-scale", repr(float(time_scale))]
    command += list(extra_args)
    pythonpath = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": pythonpath},
    )
    found: list[str] = []
    ready = threading.Event()
    stdout_tail: deque[str] = deque(maxlen=50)
    stderr_tail: deque[str] = deque(maxlen=200)
    assert process.stdout is not None
    assert process.stderr is not None
    threading.Thread(target=_drain, args=(process.stdout, stdout_tail, found, ready), daemon=True).start()
    stderr_reader = threading.Thread(
        target=_drain, args=(process.stderr, stderr_tail, None, None), daemon=True
    )
    stderr_reader.start()
    emulator: EmulatorProcess | None = None
    try:
        if not ready.wait(start_timeout) or not found:
            timed_out = not ready.is_set()  # else stdout ended: the process is exiting
            _stop(process)
            stderr_reader.join(timeout=5)  # everything it wrote, for the message
            state = "timed out" if timed_out else f"exited with code {process.returncode}"
            raise EmulatorError(
                f"The emulator did not start ({state} after {' '.join(command[1:])}); its stderr:\n"
                + "".join(stderr_tail)[-4000:]
            )
        emulator = EmulatorProcess(found[0], loaded, process, stderr_tail)
        yield emulator
    finally:
        if emulator is not None:
            emulator.close()
        _stop(process)
