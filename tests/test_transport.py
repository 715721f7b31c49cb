"""The transport's rule for an API that never answered: a refused connection, a host name that does not
exist or a plain-HTTP server at an ``https://`` URL fails the first call at once (no retries), naming
host:port, the cause in full and what to check, for operators, sensors and ``connections test`` alike;
once the API has answered, the same errors are retried, and each retry warning carries the whole cause."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
import requests

from airflow_provider_cfworkflows import protocol
from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsConnectionError
from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook
from airflow_provider_cfworkflows.operators.workflows import CloudflareWorkflowCreateInstanceOperator
from airflow_provider_cfworkflows.sensors.workflows import CloudflareWorkflowStepSensor
from airflow_provider_cfworkflows.transport import CloudflareWorkflowsTransport, nothing_answers
from tests.fakes import RecordingTaskInstance
from tests.helpers import ACCOUNT_ID, ok_envelope

TOKEN = "unit-test-token-4c1d"
REFUSED = "ConnectionRefusedError: [Errno 111] Connection refused"
WHAT_TO_CHECK = (
    "Check the connection's host and port, and that the API (or the local emulator) is running and "
    "reachable from this machine."
)


@pytest.fixture(autouse=True)
def _no_retry_waits(monkeypatch):
    monkeypatch.setattr(protocol, "retry_delay", lambda *a, **k: 0)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that is bound but never listens: every connection to it is refused."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield int(holder.getsockname()[1])


def use_host(monkeypatch: pytest.MonkeyPatch, host: str, max_retries: int = 5) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLOUDFLARE_DEFAULT",
        json.dumps(
            {
                "conn_type": "cloudflare_workflows",
                "login": ACCOUNT_ID,
                "password": TOKEN,
                "host": host,
                "extra": {"max_retries": max_retries},
            }
        ),
    )


@pytest.fixture
def attempts() -> Iterator[list[str]]:
    """The paths of the requests the sync transport tried to send, in order."""
    sent: list[str] = []
    original = CloudflareWorkflowsTransport._open

    def recording_open(self: Any, request: Any, clock: Any) -> Any:
        sent.append(request.path)
        return original(self, request, clock)

    with mock.patch.object(CloudflareWorkflowsTransport, "_open", recording_open):
        yield sent


def run_create(context: dict[str, Any]) -> Any:
    operator = CloudflareWorkflowCreateInstanceOperator(task_id="create", workflow_name="wf", instance_id="i")
    return operator.execute(context)


def run_sensor(context: dict[str, Any]) -> Any:
    sensor = CloudflareWorkflowStepSensor(
        task_id="wait", workflow_name="wf", instance_id="i", step_name="load", poke_interval=1, timeout=60
    )
    return sensor.execute(context)


@pytest.mark.parametrize("run", [run_create, run_sensor], ids=["create operator", "step sensor"])
def test_a_closed_port_fails_the_first_call_at_once_naming_host_and_cause(
    monkeypatch, closed_port, attempts, run, capsys
):
    use_host(monkeypatch, f"http://127.0.0.1:{closed_port}")

    with pytest.raises(CloudflareWorkflowsConnectionError) as failed:
        run({"ti": RecordingTaskInstance()})

    host = f"127.0.0.1:{closed_port}"
    assert failed.value.message.startswith(
        f"Could not reach the Cloudflare Workflows API at {host} (http://{host}/client/v4): {REFUSED}. "
        f"{WHAT_TO_CHECK}"
    )
    assert not failed.value.request_sent  # so task retries apply, and nothing may have happened twice
    assert len(attempts) == 1  # not retried: nothing at that address ever answered
    assert "Retrying" not in capsys.readouterr().out


def test_connections_test_against_a_closed_port(monkeypatch, closed_port, attempts):
    use_host(monkeypatch, f"http://127.0.0.1:{closed_port}")

    ok, message = CloudflareWorkflowsHook().test_connection()

    host = f"127.0.0.1:{closed_port}"
    assert not ok
    assert message == (
        f"Could not reach the Cloudflare Workflows API at {host} (http://{host}/client/v4): {REFUSED}. "
        f"{WHAT_TO_CHECK} | request: GET /accounts/{ACCOUNT_ID}/workflows"
    )
    assert len(attempts) == 1


async def test_the_async_path_follows_the_same_rule(monkeypatch, closed_port):
    use_host(monkeypatch, f"http://127.0.0.1:{closed_port}")
    hook = CloudflareWorkflowsHook()
    sent: list[str] = []
    original = CloudflareWorkflowsTransport._aopen

    async def recording_aopen(self: Any, request: Any, clock: Any) -> Any:
        sent.append(request.path)
        return await original(self, request, clock)

    with (
        mock.patch.object(CloudflareWorkflowsTransport, "_aopen", recording_aopen),
        pytest.raises(CloudflareWorkflowsConnectionError) as failed,
    ):
        await hook.aget_instance("wf", "i")
    await hook.aclose()

    host = f"127.0.0.1:{closed_port}"
    assert failed.value.message.startswith(
        f"Could not reach the Cloudflare Workflows API at {host} (http://{host}/client/v4): "
        "ConnectionRefusedError: [Errno 111] Connect call failed"
    )
    assert len(sent) == 1


def resolver(monkeypatch: pytest.MonkeyPatch, code: int) -> list[str]:
    """getaddrinfo failing with ``code`` for every name (no resolver is asked); records the names."""
    asked: list[str] = []

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(host)
        raise socket.gaierror(code, "Name or service not known" if code == socket.EAI_NONAME else "Try again")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def test_a_name_that_does_not_exist_is_not_retried(monkeypatch, attempts):
    use_host(monkeypatch, "https://api.cfw.invalid")
    resolver(monkeypatch, socket.EAI_NONAME)

    with pytest.raises(CloudflareWorkflowsConnectionError) as failed:
        CloudflareWorkflowsHook().get_instance("wf", "i")

    assert failed.value.message == (
        "Could not reach the Cloudflare Workflows API at api.cfw.invalid "
        f"(https://api.cfw.invalid/client/v4): gaierror: [Errno {socket.EAI_NONAME}] Name or service not "
        f"known. {WHAT_TO_CHECK}"
    )
    assert len(attempts) == 1


def test_a_resolver_that_did_not_answer_is_retried(monkeypatch, attempts):
    use_host(monkeypatch, "https://api.cfw.invalid", max_retries=2)
    resolver(monkeypatch, socket.EAI_AGAIN)

    with pytest.raises(CloudflareWorkflowsConnectionError, match=r"Could not reach .* Try again"):
        CloudflareWorkflowsHook().get_instance("wf", "i")
    assert len(attempts) == 3  # a temporary DNS failure may pass: the hook's retries apply


@pytest.fixture
def plain_http_server() -> Iterator[int]:
    """An HTTP (not HTTPS) server on 127.0.0.1; yields its port."""
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


def test_a_host_without_scheme_at_a_plain_http_server_explains_the_rule(
    monkeypatch, plain_http_server, attempts
):
    host = f"127.0.0.1:{plain_http_server}"
    use_host(monkeypatch, host)  # as a URI connection without a scheme gives it

    ok, message = CloudflareWorkflowsHook().test_connection()

    assert not ok
    assert message.startswith(
        f"Could not reach the Cloudflare Workflows API at {host} (https://{host}/client/v4)"
    )
    assert "WRONG_VERSION_NUMBER" in message or "RECORD_LAYER_FAILURE" in message
    assert (
        "The server there answers plain HTTP, not HTTPS: a connection host without a scheme means https://. "
        f"Write the scheme in the host (http://{host} for the local emulator; in a URI: "
        f"cloudflare-workflows://http://<account id>:<token>@{host})."
    ) in message
    assert len(attempts) == 1


@pytest.fixture
def refused(closed_port: int) -> requests.ConnectionError:
    """What requests raises for a closed local port (a real error chain, down to the OS error)."""
    try:
        requests.get(f"http://127.0.0.1:{closed_port}/", timeout=5)
    except requests.ConnectionError as error:
        return error
    raise AssertionError("the closed port answered")


def test_after_an_answer_a_refused_connection_is_retried_with_the_whole_cause(
    monkeypatch, refused, requests_mock, capsys
):
    base = "https://api.cloudflare.test/client/v4"
    use_host(monkeypatch, base)
    url = f"{base}/accounts/{ACCOUNT_ID}/workflows/wf/instances/i"
    requests_mock.get(
        url,
        [
            {"json": ok_envelope({"status": "running"})},
            {"exc": refused},
            {"exc": refused},
            {"json": ok_envelope({"status": "complete"})},
        ],
    )
    hook = CloudflareWorkflowsHook()

    assert hook.get_instance("wf", "i")["status"] == "running"
    assert hook.get_instance("wf", "i")["status"] == "complete"  # a passing refusal: retried

    out = capsys.readouterr().out
    assert out.count("Retrying") == 2
    for attempt in (2, 3):
        assert (
            f"Retrying GET /accounts/{ACCOUNT_ID}/workflows/wf/instances/i (attempt {attempt} of 6) in 0.0 s "
            f"after: Request to api.cloudflare.test could not connect (nothing was sent): {REFUSED} | "
            f"request: GET /accounts/{ACCOUNT_ID}/workflows/wf/instances/i"
        ) in out


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        (ConnectionRefusedError(111, "Connection refused"), True),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), True),
        (socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), False),
        (TimeoutError("timed out"), False),
        (OSError(113, "No route to host"), False),
    ],
)
def test_what_nothing_answers_means(cause, expected):
    def raised(request_sent: bool) -> CloudflareWorkflowsConnectionError:
        try:
            try:
                raise cause
            except OSError:
                raise CloudflareWorkflowsConnectionError("x", request_sent=request_sent) from None
        except CloudflareWorkflowsConnectionError as error:
            return error

    assert nothing_answers(raised(request_sent=False)) is expected
    assert nothing_answers(raised(request_sent=True)) is False  # it may have arrived: not this rule
