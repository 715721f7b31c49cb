"""Scenario files: the account, credentials and Workflows the emulator serves.

A scenario is YAML (``.yaml`` / ``.yml``) or JSON (``.json``), chosen by the file's extension. Every
field is optional except each workflow's and step's ``name``; unknown fields are errors, and every error
message names the offending field (e.g. ``workflows[0].steps[2].retries.backoff``). The format, with
an example that uses every field, is ``docs/emulator.md`` (section "Scenario files"); the step
semantics live in ``engine``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any

import yaml

DEFAULT_ACCOUNT_ID = "0123456789abcdef0123456789abcdef"
DEFAULT_API_TOKEN = "emulator-token"
DEFAULT_EMAIL = "dev@example.com"
DEFAULT_API_KEY = "emulator-global-key"
DEFAULT_CLASS_NAME = "EmulatedWorkflow"
DEFAULT_SCRIPT_NAME = "emulated-worker"
BUNDLED_DEMO = Path(__file__).parent / "scenarios" / "demo.yaml"

STEP_KINDS = ("do", "sleep", "waitForEvent")
BACKOFFS = ("constant", "linear", "exponential")
# Production defaults (docs: sleeping-and-retrying): 5 retries, 10 s delay, exponential backoff.
DEFAULT_RETRY_LIMIT = 5
DEFAULT_RETRY_DELAY = 10.0
DEFAULT_BACKOFF = "exponential"
DEFAULT_EVENT_TIMEOUT = 24 * 3600.0  # docs: waitForEvent defaults to 24 hours
MAX_WAIT_SECONDS = 365 * 24 * 3600.0  # docs: sleep and waitForEvent timeouts up to 365 days
MAX_RETRY_LIMIT = 10_000  # docs: retries per step
MAX_OUTPUT_BYTES = 1024 * 1024  # docs: a non-stream step.do result is at most 1 MiB (else the step fails)
MAX_SCENARIO_OUTPUT_BYTES = 8 * MAX_OUTPUT_BYTES  # what a scenario may give, to simulate that failure
ALREADY_EXISTS_STATUSES = (409, 400)
PARAMS_ENCODINGS = ("lenient", "object", "string")
OUTPUT_ENCODINGS = ("raw", "string")
LIST_DATE_FIELDS = ("created_on", "ended_on", "ignored")
# Cloudflare's client API limit: 1,200 requests per 5 minutes per user (DOCS limits).
DEFAULT_RATE_QUOTA = 1200
DEFAULT_RATE_WINDOW = 300
MAX_STEP_NAME = 256
MAX_WORKFLOW_NAME = 64
# Ids users may choose and event types alike (the API reference's path parameters); matched whole.
ID_PATTERN = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9_-]{0,99}")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")

_COMMON_STEP_FIELDS = frozenset({"name", "type"})
_STEP_FIELDS = {
    "do": frozenset(
        {"duration", "output", "stream", "sensitive", "fail_attempts", "fail_runs", "error", "retries"}
    ),
    "sleep": frozenset({"duration"}),
    "waitForEvent": frozenset({"event_type", "timeout"}),
}


class ScenarioError(ValueError):
    """A scenario file or workflow definition is invalid; the message names the field."""


@dataclass(frozen=True)
class RetryPolicy:
    """``step.do`` retry config: up to ``limit`` retries after the first attempt."""

    limit: int = DEFAULT_RETRY_LIMIT
    delay: float = DEFAULT_RETRY_DELAY
    backoff: str = DEFAULT_BACKOFF

    def delay_before(self, retry_number: int) -> float:
        """Seconds between the failure of attempt ``retry_number`` (1-based) and the next attempt."""
        # Inferred from the docs' names; the exact production formula is not documented.
        if self.backoff == "linear":
            return self.delay * retry_number
        if self.backoff == "exponential":
            return self.delay * 2.0 ** (retry_number - 1)
        return self.delay


@dataclass(frozen=True)
class StreamSpec:
    """A ``ReadableStream`` output: ``size`` deterministic bytes derived from ``seed`` (see ``streams``)."""

    size: int
    seed: int = 0
    text: bool = False


@dataclass(frozen=True)
class StepSpec:
    """One step of a Workflow (``kind`` is the scenario's ``type``)."""

    name: str
    kind: str = "do"
    duration: float = 0.0
    output: Any = None
    output_bytes: int = 0  # the output's size as JSON (UTF-8)
    stream: StreamSpec | None = None
    sensitive: bool = False
    fail_attempts: int = 0
    fail_runs: int = 0
    error: Mapping[str, str] = field(default_factory=lambda: {"name": "Error", "message": "step failed"})
    retries: RetryPolicy = field(default_factory=RetryPolicy)
    event_type: str | None = None
    timeout: float = DEFAULT_EVENT_TIMEOUT


@dataclass(frozen=True)
class WorkflowSpec:
    """A Workflow: its steps, in order."""

    name: str
    steps: tuple[StepSpec, ...] = ()
    class_name: str = DEFAULT_CLASS_NAME
    script_name: str = DEFAULT_SCRIPT_NAME
    queue_delay: float = 0.0
    output: Any = None


@dataclass(frozen=True)
class ApiOptions:
    """How the emulated API answers where production's behaviour is not documented (see ``api`` above)."""

    already_exists_status: int = 409
    params_encoding: str = "lenient"
    output_encoding: str = "raw"
    stream_content_length: bool = True
    gzip: bool = False
    pause_delay: float = 0.0
    rollback_duration: float = 0.0
    list_date_field: str = "created_on"
    list_lag: float = 0.0
    list_omit_every: int = 0


@dataclass(frozen=True)
class RateLimitSpec:
    """Cloudflare's request quota: ``quota`` requests per credential per ``window`` real seconds."""

    quota: int = DEFAULT_RATE_QUOTA
    window: int = DEFAULT_RATE_WINDOW
    headers: bool = True


@dataclass(frozen=True)
class Scenario:
    """Everything the emulator serves."""

    workflows: tuple[WorkflowSpec, ...] = ()
    account_id: str = DEFAULT_ACCOUNT_ID
    api_token: str = DEFAULT_API_TOKEN
    email: str = DEFAULT_EMAIL
    api_key: str = DEFAULT_API_KEY
    time_scale: float = 1.0
    api: ApiOptions = ApiOptions()
    rate_limit: RateLimitSpec | None = None


# --- field checks ------------------------------------------------------------------------------


def is_number(value: Any, kinds: type | UnionType = int | float) -> bool:
    """Whether ``value`` is one of ``kinds`` (a JSON number), and not a ``bool`` (which is an ``int``)."""
    return isinstance(value, kinds) and not isinstance(value, bool)


def _number(value: Any, where: str, *, minimum: float = 0.0, maximum: float = math.inf) -> float:
    if not is_number(value) or math.isnan(value) or not minimum <= value <= maximum:
        limits = f">= {minimum:g}" if maximum == math.inf else f"from {minimum:g} to {maximum:g}"
        raise ScenarioError(f"{where} must be a number {limits}, got {value!r}")
    return float(value)


def _integer(value: Any, where: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    if not is_number(value, int) or value < minimum or (maximum is not None and value > maximum):
        limits = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise ScenarioError(f"{where} must be a whole number {limits}, got {value!r}")
    return value


def _text(value: Any, where: str, *, max_length: int | None = None) -> str:
    if not isinstance(value, str) or not value:
        raise ScenarioError(f"{where} must be a non-empty string, got {value!r}")
    if max_length is not None and len(value) > max_length:
        raise ScenarioError(f"{where} must be at most {max_length} characters, got {len(value)}")
    return value


def _mapping(value: Any, where: str, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ScenarioError(f"{where} must be a mapping ({what}), got {value!r}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    """A list; None (or left out) is an empty one."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ScenarioError(f"{where} must be a list, got {value!r}")
    return value


def _check_keys(data: Mapping[str, Any], allowed: frozenset[str] | set[str], where: str) -> None:
    if unknown := set(data) - set(allowed):
        raise ScenarioError(f"{where} has unknown field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


def _json_size(value: Any, where: str) -> int:
    """The size of ``value`` as compact JSON (UTF-8), checking it is plain JSON."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as error:
        raise ScenarioError(
            f"{where} must be plain JSON (quote dates and other YAML-typed values): {error}"
        ) from None
    return len(text.encode("utf-8", "backslashreplace"))  # a lone surrogate: its escape


def _boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ScenarioError(f"{where} must be true or false, got {value!r}")
    return value


# --- parsers -----------------------------------------------------------------------------------


def parse_step(data: Any, where: str) -> StepSpec:
    """Validate one step definition; ``where`` names it in error messages."""
    data = _mapping(data, where, "a step")
    kind = data.get("type", "do")
    if kind not in STEP_KINDS:
        raise ScenarioError(f"{where}.type must be one of {list(STEP_KINDS)}, got {kind!r}")
    allowed = _COMMON_STEP_FIELDS | _STEP_FIELDS[kind]
    for key in data:
        if key not in allowed and any(key in fields for fields in _STEP_FIELDS.values()):
            kinds = [name for name, fields in _STEP_FIELDS.items() if key in fields]
            raise ScenarioError(f"{where}.{key} applies only to {' / '.join(kinds)} steps, not {kind!r}")
    _check_keys(data, allowed, where)
    name = _text(data.get("name"), f"{where}.name", max_length=MAX_STEP_NAME)
    if _CONTROL_CHARACTERS.search(name):
        raise ScenarioError(f"{where}.name must not contain control characters, got {name!r}")
    max_duration = MAX_WAIT_SECONDS if kind == "sleep" else math.inf
    duration = _number(data.get("duration", 0), f"{where}.duration", maximum=max_duration)
    if kind == "waitForEvent":
        event_type = _text(data.get("event_type"), f"{where}.event_type")
        if not ID_PATTERN.fullmatch(event_type):
            raise ScenarioError(
                f"{where}.event_type must match ^[a-zA-Z0-9_][a-zA-Z0-9-_]*$ (at most 100 characters), "
                f"got {event_type!r}"
            )
        timeout = _number(
            data.get("timeout", DEFAULT_EVENT_TIMEOUT),
            f"{where}.timeout",
            minimum=0.001,
            maximum=MAX_WAIT_SECONDS,
        )
        return StepSpec(name=name, kind=kind, event_type=event_type, timeout=timeout)
    if kind == "sleep":
        return StepSpec(name=name, kind=kind, duration=duration)
    return _parse_do(data, name, duration, where)


def _parse_do(data: Mapping[str, Any], name: str, duration: float, where: str) -> StepSpec:
    stream = None
    if "stream" in data:
        if "output" in data:
            raise ScenarioError(f"{where} has both 'output' and 'stream'; pick one")
        raw = _mapping(data["stream"], f"{where}.stream", "{size, seed}")
        _check_keys(raw, {"size", "seed", "text"}, f"{where}.stream")
        stream = StreamSpec(
            size=_integer(raw.get("size"), f"{where}.stream.size"),
            seed=_integer(raw.get("seed", 0), f"{where}.stream.seed", minimum=-(2**63), maximum=2**63 - 1),
            text=_boolean(raw.get("text", False), f"{where}.stream.text"),
        )
    output = data.get("output")
    output_bytes = _json_size(output, f"{where}.output")
    if output_bytes > MAX_SCENARIO_OUTPUT_BYTES:
        raise ScenarioError(
            f"{where}.output is {output_bytes} bytes as JSON; at most {MAX_SCENARIO_OUTPUT_BYTES} here "
            "(over 1 MiB already fails the step; use 'stream' for big outputs)"
        )
    retries_data = _mapping(data.get("retries", {}), f"{where}.retries", "limit, delay, backoff")
    _check_keys(retries_data, {"limit", "delay", "backoff"}, f"{where}.retries")
    backoff = retries_data.get("backoff", DEFAULT_BACKOFF)
    if backoff not in BACKOFFS:
        raise ScenarioError(f"{where}.retries.backoff must be one of {list(BACKOFFS)}, got {backoff!r}")
    retries = RetryPolicy(
        limit=_integer(
            retries_data.get("limit", DEFAULT_RETRY_LIMIT), f"{where}.retries.limit", maximum=MAX_RETRY_LIMIT
        ),
        delay=_number(retries_data.get("delay", DEFAULT_RETRY_DELAY), f"{where}.retries.delay"),
        backoff=str(backoff),
    )
    error_data = _mapping(
        data.get("error", {"name": "Error", "message": f"{name} failed"}), f"{where}.error", "{name, message}"
    )
    _check_keys(error_data, {"name", "message"}, f"{where}.error")
    error = {
        "name": _text(error_data.get("name", "Error"), f"{where}.error.name"),
        "message": error_data.get("message", f"{name} failed"),
    }
    if not isinstance(error["message"], str):
        raise ScenarioError(f"{where}.error.message must be a string, got {error['message']!r}")
    return StepSpec(
        name=name,
        kind="do",
        duration=duration,
        output=output,
        output_bytes=output_bytes,
        stream=stream,
        sensitive=_boolean(data.get("sensitive", False), f"{where}.sensitive"),
        fail_attempts=_integer(data.get("fail_attempts", 0), f"{where}.fail_attempts"),
        fail_runs=_integer(data.get("fail_runs", 0), f"{where}.fail_runs"),
        error=error,
        retries=retries,
    )


def parse_workflow(data: Any, where: str = "workflow") -> WorkflowSpec:
    """Validate one workflow definition; ``where`` names it in error messages."""
    data = _mapping(data, where, "a workflow")
    _check_keys(data, {"name", "class_name", "script_name", "queue_delay", "output", "steps"}, where)
    name = _text(data.get("name"), f"{where}.name", max_length=MAX_WORKFLOW_NAME)
    steps = _list(data.get("steps"), f"{where}.steps")
    _json_size(data.get("output"), f"{where}.output")
    return WorkflowSpec(
        name=name,
        steps=tuple(parse_step(step, f"{where}.steps[{i}]") for i, step in enumerate(steps)),
        class_name=_text(data.get("class_name", DEFAULT_CLASS_NAME), f"{where}.class_name", max_length=255),
        script_name=_text(
            data.get("script_name", DEFAULT_SCRIPT_NAME), f"{where}.script_name", max_length=255
        ),
        queue_delay=_number(data.get("queue_delay", 0), f"{where}.queue_delay"),
        output=data.get("output"),
    )


def parse_scenario(data: Any) -> Scenario:
    """Validate a whole scenario document (already parsed from YAML or JSON)."""
    if data is None:
        data = {}
    data = _mapping(data, "scenario", "with a 'workflows' list")
    _check_keys(
        data,
        {"account_id", "api_token", "email", "api_key", "time_scale", "api", "rate_limit", "workflows"},
        "scenario",
    )
    workflows = _list(data.get("workflows"), "scenario.workflows")
    parsed = tuple(parse_workflow(item, f"workflows[{i}]") for i, item in enumerate(workflows))
    names = [workflow.name for workflow in parsed]
    if duplicates := sorted({name for name in names if names.count(name) > 1}):
        raise ScenarioError(f"workflows[].name must be unique; repeated: {duplicates}")
    account_id = data.get("account_id", DEFAULT_ACCOUNT_ID)
    if not isinstance(account_id, str) or not re.fullmatch(r"[0-9a-f]{32}", account_id):
        raise ScenarioError(f"scenario.account_id must be 32 lowercase hex characters, got {account_id!r}")
    return Scenario(
        workflows=parsed,
        account_id=account_id,
        api_token=_text(data.get("api_token", DEFAULT_API_TOKEN), "scenario.api_token"),
        email=_text(data.get("email", DEFAULT_EMAIL), "scenario.email"),
        api_key=_text(data.get("api_key", DEFAULT_API_KEY), "scenario.api_key"),
        time_scale=_number(data.get("time_scale", 1.0), "scenario.time_scale", maximum=1e9),
        api=parse_api_options(data.get("api") or {}, "scenario.api"),
        rate_limit=parse_rate_limit(data.get("rate_limit"), "scenario.rate_limit"),
    )


def parse_api_options(data: Any, where: str = "api", base: ApiOptions = ApiOptions()) -> ApiOptions:
    """Validate ``api`` options; fields not given keep their value in ``base``."""
    data = _mapping(data, where, "of API options")
    _check_keys(data, {f.name for f in dataclasses.fields(ApiOptions)}, where)
    changes: dict[str, Any] = {}
    for key, choices in (
        ("already_exists_status", ALREADY_EXISTS_STATUSES),  # never a bool: True and False are 1 and 0
        ("params_encoding", PARAMS_ENCODINGS),
        ("output_encoding", OUTPUT_ENCODINGS),
        ("list_date_field", LIST_DATE_FIELDS),
    ):
        if key in data:
            if data[key] not in choices:
                raise ScenarioError(f"{where}.{key} must be one of {list(choices)}, got {data[key]!r}")
            changes[key] = data[key]
    for key in ("stream_content_length", "gzip"):
        if key in data:
            changes[key] = _boolean(data[key], f"{where}.{key}")
    for key in ("pause_delay", "rollback_duration", "list_lag"):
        if key in data:
            changes[key] = _number(data[key], f"{where}.{key}", maximum=MAX_WAIT_SECONDS)
    if "list_omit_every" in data:
        changes["list_omit_every"] = _integer(data["list_omit_every"], f"{where}.list_omit_every")
    return dataclasses.replace(base, **changes)


def parse_rate_limit(data: Any, where: str = "rate_limit") -> RateLimitSpec | None:
    """Validate a ``rate_limit`` mapping; None or false means no limit."""
    if data is None or data is False:
        return None
    data = _mapping(data, where, "quota, window, headers")
    _check_keys(data, {"quota", "window", "headers"}, where)
    return RateLimitSpec(
        quota=_integer(data.get("quota", DEFAULT_RATE_QUOTA), f"{where}.quota", minimum=1),
        window=_integer(data.get("window", DEFAULT_RATE_WINDOW), f"{where}.window", minimum=1),
        headers=_boolean(data.get("headers", True), f"{where}.headers"),
    )


def load_scenario(path: Path | None) -> Scenario:
    """Read a scenario file (YAML or JSON, by extension); ``None`` means the bundled demo."""
    path = Path(path) if path is not None else BUNDLED_DEMO
    text = path.read_text(encoding="utf-8")
    is_json = path.suffix.lower() == ".json"
    try:
        data = json.loads(text) if is_json else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise ScenarioError(f"{path}: not valid {'JSON' if is_json else 'YAML'}: {error}") from None
    try:
        return parse_scenario(data)
    except ScenarioError as error:
        raise ScenarioError(f"{path}: {error}") from None
