"""Scenario files: the accounts, credentials and Workflows the emulator serves.

YAML (``.yaml``/``.yml``) or JSON (``.json``)::

    account_id: 0123456789abcdef0123456789abcdef   # the only account the credentials may use
    api_token: emulator-token                      # accepted as "Authorization: Bearer <token>"
    email: dev@example.com                         # legacy X-Auth-Email + X-Auth-Key
    api_key: emulator-global-key
    time_scale: 1.0                                # emulated seconds per real second
    workflows:
      - name: demo-pipeline
        class_name: DemoPipeline                   # optional
        script_name: demo                          # optional
        queue_delay: 0                             # seconds an instance stays "queued"
        output: {"ok": true}                       # what run() returns (any JSON), default null
        steps:                                     # run in order
          - name: prepare                          # type "do" (step.do) is the default
            duration: 2                            # seconds per attempt
            output: {"rows": [1, 2, 3]}            # JSON output ...
          - name: export
            stream: {size: 5242880, seed: 7}       # ... or a ReadableStream of `size` bytes
          - name: token
            sensitive: true                        # output shown as "[REDACTED]"
            output: "s3cr3t"
          - name: flaky
            fail_attempts: 2                       # the first 2 attempts fail with `error`
            error: {name: Error, message: "upstream 503"}
            retries: {limit: 5, delay: 1, backoff: constant}   # constant | linear | exponential
          - name: approval
            type: waitForEvent
            event_type: approval
            timeout: 300                           # seconds; the step errors when it passes
          - name: nap
            type: sleep
            duration: 10

Repeated step names get counter suffixes per name and kind, as in production: two ``do`` steps named
``fetch`` are logged ``fetch-1`` and ``fetch-2``; a ``do`` and a ``waitForEvent`` both named
``approve`` are both ``approve-1``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_ACCOUNT_ID = "0123456789abcdef0123456789abcdef"
DEFAULT_API_TOKEN = "emulator-token"
DEFAULT_EMAIL = "dev@example.com"
DEFAULT_API_KEY = "emulator-global-key"
BUNDLED_DEMO = Path(__file__).parent / "scenarios" / "demo.yaml"

STEP_KINDS = ("do", "sleep", "waitForEvent")
BACKOFFS = ("constant", "linear", "exponential")
# Production defaults (docs: sleeping-and-retrying): 5 retries, 10 s delay, exponential backoff.
DEFAULT_RETRIES = {"limit": 5, "delay": 10.0, "backoff": "exponential"}
DEFAULT_EVENT_TIMEOUT = 24 * 3600.0
_EVENT_TYPE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9_-]{0,99}$")


class ScenarioError(ValueError):
    """A scenario file or workflow definition is invalid; the message names the field."""


@dataclass(frozen=True)
class RetryPolicy:
    """``step.do`` retry config."""

    limit: int
    delay: float
    backoff: str

    def delay_before(self, retry_number: int) -> float:
        """Seconds between attempt ``retry_number`` (1-based) failing and the next attempt."""
        if self.backoff == "linear":
            return self.delay * retry_number
        if self.backoff == "exponential":
            return self.delay * 2 ** (retry_number - 1)
        return self.delay


@dataclass(frozen=True)
class StreamSpec:
    """A ``ReadableStream`` output: ``size`` deterministic bytes derived from ``seed``."""

    size: int
    seed: int


@dataclass(frozen=True)
class StepSpec:
    """One step of a Workflow."""

    name: str
    kind: str = "do"
    duration: float = 0.0
    output: Any = None
    stream: StreamSpec | None = None
    sensitive: bool = False
    fail_attempts: int = 0
    error: Mapping[str, str] = field(default_factory=lambda: {"name": "Error", "message": "step failed"})
    retries: RetryPolicy = RetryPolicy(**DEFAULT_RETRIES)  # type: ignore[arg-type]
    event_type: str | None = None
    timeout: float = DEFAULT_EVENT_TIMEOUT


@dataclass(frozen=True)
class WorkflowSpec:
    """A Workflow: its steps, in order."""

    name: str
    steps: tuple[StepSpec, ...]
    class_name: str = "EmulatedWorkflow"
    script_name: str = "emulated-worker"
    queue_delay: float = 0.0
    output: Any = None


@dataclass(frozen=True)
class Scenario:
    """Everything the emulator serves."""

    workflows: tuple[WorkflowSpec, ...] = ()
    account_id: str = DEFAULT_ACCOUNT_ID
    api_token: str = DEFAULT_API_TOKEN
    email: str = DEFAULT_EMAIL
    api_key: str = DEFAULT_API_KEY
    time_scale: float = 1.0


def _number(value: Any, where: str, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ScenarioError(f"{where} must be a number >= {minimum:g}, got {value!r}")
    return float(value)


def _integer(value: Any, where: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ScenarioError(f"{where} must be a whole number >= {minimum}, got {value!r}")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ScenarioError(f"{where} must be a non-empty string, got {value!r}")
    return value


def _check_keys(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(data) - allowed
    if unknown:
        raise ScenarioError(f"{where} has unknown field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


def parse_step(data: Any, where: str) -> StepSpec:
    """Validate one step definition."""
    if not isinstance(data, Mapping):
        raise ScenarioError(f"{where} must be a mapping, got {data!r}")
    _check_keys(
        data,
        {
            "name",
            "type",
            "duration",
            "output",
            "stream",
            "sensitive",
            "fail_attempts",
            "error",
            "retries",
            "event_type",
            "timeout",
        },
        where,
    )
    name = _text(data.get("name"), f"{where}.name")
    kind = data.get("type", "do")
    if kind not in STEP_KINDS:
        raise ScenarioError(f"{where}.type must be one of {list(STEP_KINDS)}, got {kind!r}")
    stream = None
    if "stream" in data:
        raw = data["stream"]
        if kind != "do" or not isinstance(raw, Mapping):
            raise ScenarioError(f"{where}.stream must be {{size, seed}} on a 'do' step")
        stream = StreamSpec(
            _integer(raw.get("size"), f"{where}.stream.size"),
            _integer(raw.get("seed", 0), f"{where}.stream.seed"),
        )
        if "output" in data:
            raise ScenarioError(f"{where} has both 'output' and 'stream'; pick one")
    retries = dict(DEFAULT_RETRIES)
    if "retries" in data:
        if not isinstance(data["retries"], Mapping):
            raise ScenarioError(f"{where}.retries must be a mapping of limit, delay, backoff")
        _check_keys(data["retries"], {"limit", "delay", "backoff"}, f"{where}.retries")
        retries.update(data["retries"])
    if retries["backoff"] not in BACKOFFS:
        raise ScenarioError(
            f"{where}.retries.backoff must be one of {list(BACKOFFS)}, got {retries['backoff']!r}"
        )
    error = data.get("error", {"name": "Error", "message": f"{name} failed"})
    if not isinstance(error, Mapping) or not isinstance(error.get("message", ""), str):
        raise ScenarioError(f"{where}.error must be {{name, message}}")
    event_type = data.get("event_type")
    if kind == "waitForEvent":
        event_type = _text(event_type, f"{where}.event_type")
        if not _EVENT_TYPE.match(event_type):
            raise ScenarioError(f"{where}.event_type {event_type!r} must match ^[a-zA-Z0-9_][a-zA-Z0-9-_]*$")
    return StepSpec(
        name=name,
        kind=kind,
        duration=_number(data.get("duration", 0), f"{where}.duration"),
        output=data.get("output"),
        stream=stream,
        sensitive=bool(data.get("sensitive", False)),
        fail_attempts=_integer(data.get("fail_attempts", 0), f"{where}.fail_attempts"),
        error={"name": str(error.get("name", "Error")), "message": str(error.get("message", ""))},
        retries=RetryPolicy(
            limit=_integer(retries["limit"], f"{where}.retries.limit"),
            delay=_number(retries["delay"], f"{where}.retries.delay"),
            backoff=str(retries["backoff"]),
        ),
        event_type=event_type,
        timeout=_number(data.get("timeout", DEFAULT_EVENT_TIMEOUT), f"{where}.timeout", minimum=0.001),
    )


def parse_workflow(data: Any, where: str = "workflow") -> WorkflowSpec:
    """Validate one workflow definition."""
    if not isinstance(data, Mapping):
        raise ScenarioError(f"{where} must be a mapping, got {data!r}")
    _check_keys(data, {"name", "class_name", "script_name", "queue_delay", "output", "steps"}, where)
    name = _text(data.get("name"), f"{where}.name")
    if len(name) > 64:
        raise ScenarioError(f"{where}.name must be at most 64 characters")
    steps = data.get("steps", [])
    if not isinstance(steps, list):
        raise ScenarioError(f"{where}.steps must be a list")
    return WorkflowSpec(
        name=name,
        steps=tuple(parse_step(step, f"{where}.steps[{i}]") for i, step in enumerate(steps)),
        class_name=str(data.get("class_name", "EmulatedWorkflow")),
        script_name=str(data.get("script_name", "emulated-worker")),
        queue_delay=_number(data.get("queue_delay", 0), f"{where}.queue_delay"),
        output=data.get("output"),
    )


def parse_scenario(data: Any) -> Scenario:
    """Validate a whole scenario document."""
    if not isinstance(data, Mapping):
        raise ScenarioError("a scenario must be a mapping with a 'workflows' list")
    _check_keys(data, {"account_id", "api_token", "email", "api_key", "time_scale", "workflows"}, "scenario")
    workflows = data.get("workflows", [])
    if not isinstance(workflows, list):
        raise ScenarioError("scenario.workflows must be a list")
    parsed = tuple(parse_workflow(item, f"workflows[{i}]") for i, item in enumerate(workflows))
    names = [workflow.name for workflow in parsed]
    if len(set(names)) != len(names):
        raise ScenarioError(f"workflow names must be unique, got {names}")
    account_id = str(data.get("account_id", DEFAULT_ACCOUNT_ID))
    if not re.fullmatch(r"[0-9a-f]{32}", account_id):
        raise ScenarioError(f"scenario.account_id must be 32 lowercase hex characters, got {account_id!r}")
    return Scenario(
        workflows=parsed,
        account_id=account_id,
        api_token=_text(data.get("api_token", DEFAULT_API_TOKEN), "scenario.api_token"),
        email=_text(data.get("email", DEFAULT_EMAIL), "scenario.email"),
        api_key=_text(data.get("api_key", DEFAULT_API_KEY), "scenario.api_key"),
        time_scale=_number(data.get("time_scale", 1.0), "scenario.time_scale", minimum=0.0),
    )


def load_scenario(path: Path | None) -> Scenario:
    """Read a scenario file (YAML or JSON by extension); None means the bundled demo."""
    path = path or BUNDLED_DEMO
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise ScenarioError(
            f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {error}"
        ) from None
    try:
        return parse_scenario(data)
    except ScenarioError as error:
        raise ScenarioError(f"{path}: {error}") from None
