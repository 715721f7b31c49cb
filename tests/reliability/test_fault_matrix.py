"""The fault matrix: every public operator and sensor under every fault the emulator can inject.

Each cell runs one component (``components.COMPONENTS``) with one fault (``FAULTS``) hitting the one
request the component's row names, and checks the outcome the table ``MATRIX`` expects:

- ``OK``: the task succeeds (the hook or the wait retried; in the rows "retried, task state store" and
  ``retry_from_failure``, a retry of the task decided from the instance), with exactly the side effects
  of one run.
- ``REFUSED``: nothing listens at the API's address: a ``CloudflareWorkflowsConnectionError`` saying it
  could not connect, nothing happened, and Airflow's task retries still apply.
- ``UNKNOWN_0`` / ``UNKNOWN_1``: a call that must not run twice (an event, a restart) got no usable
  answer after it may have reached the API: ``CloudflareWorkflowOutcomeUnknownError`` (an
  ``AirflowFailException``: no task retry), naming the cause; it took effect 0 or 1 times.
- ``TIMEOUT``: the wait could not get an answer before its own timeout (a rate-limit lockout longer than
  the wait): ``AirflowSensorTimeout`` (no task retry) naming the cause, after exactly the wait's timeout.
- ``CUT``: a byte stream ended early: a ``CloudflareWorkflowsConnectionError`` naming the cut, the
  ``file://`` target untouched (no partial file, no temporary left), a task retry writes it whole.

Every failing cell's message names the fault's cause. In every cell: the fault was used, no instance or
event is duplicated, no partial file exists, and a slow drip did not hold a JSON call past its timeout.
``docs/reliability.md`` shows this table; keep the two in step.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout

from airflow_provider_cfworkflows.emulator.server import run_emulator_process
from airflow_provider_cfworkflows.triggers import watchers
from tests.helpers import connection_json
from tests.reliability.components import COMPONENTS, WAIT_TIMEOUT, Component, Run, file_left_behind
from tests.reliability.guarded import SCENARIO, TOKEN_WITH_NEWLINE

pytestmark = pytest.mark.integration

MAX_RETRIES = 2
CONNECTION_TIMEOUT = 5.0
# A drip sends one byte every DRIP_INTERVAL s: a JSON answer of a few hundred bytes would take 15 s or
# more; its call must end by the connection timeout instead (then a retry, or a clear error).
DRIP_INTERVAL = 0.05
DRIP_TIMEOUT = 0.6
# A wait shorter than Cloudflare's 5-minute lockout, kept short so its timeout costs little.
LOCKOUT_WAIT_TIMEOUT = 2.0
# Scheduling noise allowed on top of a deadline on a loaded machine (the uncut drip takes 10x longer).
DEADLINE_SLACK = 1.5


@dataclass(frozen=True)
class Fault:
    """
    One column of the matrix.

    :param name: its column in the matrix.
    :param spec: the emulator fault (``faults.Fault`` fields); None: nothing listens at the API's address.
    :param cause: a regular expression the error of a failing cell must match (it names the cause).
    :param stream_spec: the fault for a byte-stream answer, when it differs.
    :param timeout: the connection's ``timeout`` (seconds one attempt may take).
    :param wait_timeout: the sensors' and waits' ``timeout``.
    """

    name: str
    spec: dict[str, Any] | None
    cause: str
    stream_spec: dict[str, Any] | None = None
    timeout: float = CONNECTION_TIMEOUT
    wait_timeout: float = WAIT_TIMEOUT


_NO_COMPLETE_ANSWER = r"complete response|cut off|ended after|[Dd]isconnected|Connection broken|aborted"
FAULTS: tuple[Fault, ...] = (
    Fault("429 + Retry-After", {"kind": "rate_limit", "retry_after": "1"}, r"HTTP 429"),
    # Cloudflare's 5-minute lockout: the rate limiter (on a fake clock here) waits it out where no wait's
    # deadline is shorter; a wait with a shorter timeout ends at it, saying why.
    Fault(
        "429, no Retry-After",
        {"kind": "server_error", "status": 429},
        r"HTTP 429|[Rr]ate.limit|budget",
        wait_timeout=LOCKOUT_WAIT_TIMEOUT,
    ),
    *(
        Fault(str(status), {"kind": "server_error", "status": status}, rf"HTTP {status}")
        for status in (500, 502, 503, 504)
    ),
    Fault("connection refused", None, r"could not connect|[Cc]onnection refused"),
    Fault("reset mid-response", {"kind": "drop_connection", "after_bytes": 0}, _NO_COMPLETE_ANSWER),
    # JSON: the body ends cleanly halfway without Content-Length (only parsing can tell); a byte stream
    # is cut halfway after its Content-Length (a stream without one cannot be verified: see the docs).
    Fault(
        "cut mid-body",
        {"kind": "truncated_chunked"},
        rf"JSON|{_NO_COMPLETE_ANSWER}",
        stream_spec={"kind": "drop_connection", "after_bytes": 6},
    ),
    Fault("200 success:false", {"kind": "success_false"}, r"10001|success"),
    Fault("malformed JSON", {"kind": "malformed_json"}, r"JSON|unreadable|malformed"),
    Fault("HTML error page", {"kind": "html", "status": 502}, r"HTTP 502"),
    Fault(
        "slow drip",
        {"kind": "drip", "interval": DRIP_INTERVAL},
        r"timed out|[Tt]imeout|deadline|took longer",
        timeout=DRIP_TIMEOUT,
    ),
    # The status line and headers a byte at a time: each byte within a socket read's timeout, so only
    # the attempt's own clock ends the call.
    Fault(
        "header drip",
        {"kind": "header_drip", "interval": DRIP_INTERVAL},
        r"timed out",
        timeout=DRIP_TIMEOUT,
    ),
    Fault("lost answer", {"kind": "lost_answer"}, _NO_COMPLETE_ANSWER),
)


@dataclass(frozen=True)
class Outcome:
    """
    What a cell must end in.

    :param code: its short name in the table.
    :param error: the error's class name (None: the task succeeds).
    :param effects: side effects left (None: as many as one successful run leaves).
    :param no_retry: whether the error must fail the task without retry (``AirflowFailException``).
    """

    code: str
    error: str | None = None
    effects: int | None = None
    no_retry: bool = False


OK = Outcome("ok")
REFUSED = Outcome("refused", "CloudflareWorkflowsConnectionError", effects=0)
UNKNOWN_0 = Outcome("unknown/0", "CloudflareWorkflowOutcomeUnknownError", effects=0, no_retry=True)
UNKNOWN_1 = Outcome("unknown/1", "CloudflareWorkflowOutcomeUnknownError", effects=1, no_retry=True)
CUT = Outcome("cut", "CloudflareWorkflowsConnectionError")
TIMEOUT = Outcome("timeout", "AirflowSensorTimeout", no_retry=True)

# fmt: off
# One row per component, one column per fault, in the order of FAULTS: 429 with Retry-After (RA), 429
# without, 500-504, connection refused (ref), reset mid-response (rst), cut mid-body (cut), 200 with
# success:false (s:f), malformed JSON (bad), HTML error page (htm), slow drip (drp), header drip (hdr),
# lost answer (lst).
# R refused, U0/U1 outcome unknown (0/1 effects), C cut, T timeout. docs/reliability.md shows this table.
R, U0, U1, C, T = REFUSED, UNKNOWN_0, UNKNOWN_1, CUT, TIMEOUT
MATRIX: dict[str, tuple[Outcome, ...]] = {
    #                                RA  429 500 502 503 504 ref rst cut s:f bad htm drp hdr lst
    "step sensor":                  (OK, T,  OK, OK, OK, OK, R,  OK, OK, OK, OK, OK, OK, OK, OK),
    "step sensor (deferrable)":     (OK, T,  OK, OK, OK, OK, R,  OK, OK, OK, OK, OK, OK, OK, OK),
    "instance sensor":              (OK, T,  OK, OK, OK, OK, R,  OK, OK, OK, OK, OK, OK, OK, OK),
    "instance sensor (deferrable)": (OK, T,  OK, OK, OK, OK, R,  OK, OK, OK, OK, OK, OK, OK, OK),
    "create":                       (OK, OK, OK, OK, OK, OK, R,  OK, OK, OK, OK, OK, OK, OK, OK),
    "create and wait":              (OK, T,  OK, OK, OK, OK, R,  OK, OK, OK, OK, OK, OK, OK, OK),
    "create and wait (deferrable)": (OK, T,  OK, OK, OK, OK, R,  OK, OK, OK, OK, OK, OK, OK, OK),
    "batch create":                 (OK, OK, OK, OK, OK, OK, R,  OK, OK, OK, OK, OK, OK, OK, OK),
    "send event":                   (OK, OK, U0, U0, U0, U0, R,  U1, U1, U1, U1, U0, U1, U1, U1),
    "terminate":                    (OK, OK, OK, OK, OK, OK, R,  OK, OK, OK, OK, OK, OK, OK, OK),
    "restart":                      (OK, OK, U0, U0, U0, U0, R,  U1, U1, U1, U1, U0, U1, U1, U1),
    # With Airflow's task state store, the task's retry settles what a lost answer left unknown.
    "send event (retried, task state store)":
                                    (OK, OK, U0, U0, U0, U0, R,  OK, OK, OK, OK, U0, OK, OK, OK),
    "restart (retried, task state store)":
                                    (OK, OK, U0, U0, U0, U0, R,  OK, OK, OK, OK, U0, OK, OK, OK),
    "create and wait, retry_from_failure":
                                    (OK, OK, U0, U0, U0, U0, R,  OK, OK, OK, OK, U0, OK, OK, OK),
    "delete instances":             (OK, OK, OK, OK, OK, OK, R,  OK, OK, OK, OK, OK, OK, OK, OK),
    "step output to XCom":          (OK, OK, OK, OK, OK, OK, R,  OK, OK, OK, OK, OK, OK, OK, OK),
    "step output to file://":       (OK, OK, OK, OK, OK, OK, R,  C,  C,  OK, OK, OK, OK, OK, OK),
}
# fmt: on


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


CELLS = [
    pytest.param(
        component, fault, MATRIX[component.name][column], id=f"{_slug(component.name)}--{_slug(fault.name)}"
    )
    for component in COMPONENTS
    for column, fault in enumerate(FAULTS)
]


def test_the_table_covers_every_component_and_fault() -> None:
    assert set(MATRIX) == {component.name for component in COMPONENTS}
    assert {len(row) for row in MATRIX.values()} == {len(FAULTS)}


@pytest.fixture(scope="module")
def matrix_emulator() -> Iterator[Any]:
    """One emulator for the module, its clock frozen (instances move on when a cell advances it)."""
    with run_emulator_process(SCENARIO, time_scale=0) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def refusing_address() -> Iterator[str]:
    """An API base URL on 127.0.0.1 where nothing listens: a bound socket that never listens."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{bound.getsockname()[1]}/client/v4"


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch, limiter_clock: Any, no_retry_waits: None) -> None:
    """The hook's and triggers' retries without their backoff; rate-limiter waits take no real time."""
    monkeypatch.setattr(watchers, "MIN_ERROR_BACKOFF_SECONDS", 0.01)


def _error_names(error: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(error).__mro__}


def _drip_gap(emulator: Any, kind: str, ended: float) -> float:
    """Seconds from the dripped request to the next request (the retry), or to the end of the run."""
    log = emulator.requests_log()
    (dripped,) = [entry for entry in log if entry["fault"] == kind]
    later = [entry["time"] for entry in log if entry["time"] > dripped["time"]]
    return min([*later, ended]) - float(dripped["time"])


@pytest.mark.parametrize(("component", "fault", "expected"), CELLS)
def test_fault_matrix(
    component: Component,
    fault: Fault,
    expected: Outcome,
    matrix_emulator: Any,
    refusing_address: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emulator = matrix_emulator
    emulator.reset()
    api_base = emulator.api_base if fault.spec is not None else refusing_address
    extra = {"max_retries": MAX_RETRIES, "timeout": fault.timeout}
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLOUDFLARE_DEFAULT", connection_json(api_base, password=TOKEN_WITH_NEWLINE, extra=extra)
    )
    spec = fault.stream_spec if component.body == "stream" and fault.stream_spec else fault.spec

    def inject() -> None:
        if spec is not None:
            emulator.inject_fault(**spec, method=component.method, path=component.path, count=1)

    run = Run(emulator, tmp_path, inject, wait_timeout=fault.wait_timeout)
    result: Any = None
    error: Exception | None = None
    try:
        result = component.run(run)
    except Exception as raised:
        error = raised
    ended = time.time()

    if spec is not None:
        assert emulator.faults() == [], "the fault never hit the component's request"
    if error is not None and expected.error is None:
        raise AssertionError(f"expected success, got {type(error).__name__}: {error}") from error
    if expected.error is None:
        if component.final_state is not None:
            component.final_state(run, result)
    else:
        assert error is not None, f"expected {expected.error}, but the task succeeded with {result!r}"
        assert expected.error in _error_names(error), f"{type(error).__name__}: {error}"
        assert re.search(fault.cause, str(error)), f"the error does not name the cause: {error}"
        no_retry = isinstance(error, AirflowFailException | AirflowSensorTimeout)
        assert no_retry == expected.no_retry, f"retry rule broken: {error!r}"
    if component.effects is not None and expected is not CUT:
        wanted = component.success_effects if expected.effects is None else expected.effects
        assert component.effects(run) == wanted, "a side effect happened a wrong number of times"
    if component.body == "stream":
        names, complete = file_left_behind(run)
        assert names == (["blob.bin"] if expected is OK else []), f"partial object or temporary: {names}"
        assert complete == (expected is OK)
    # A dripping JSON answer, or dripping headers of any answer, end by the attempt's clock (a byte
    # stream's body is bounded by the time without progress instead).
    kind = fault.spec["kind"] if fault.spec is not None else None
    if kind == "header_drip" or (kind == "drip" and component.body == "json"):
        gap = _drip_gap(emulator, kind, ended)
        assert gap <= fault.timeout + DEADLINE_SLACK, f"a dripping answer held the call {gap:.1f} s"
