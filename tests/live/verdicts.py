"""What the server answered, and whether the provider's code handles it: pure functions, no I/O.

Each ``judge_*`` function takes what a probe observed (see :mod:`tests.live.probes`) and returns one
:class:`Row` of the table. "Handled" is decided by the provider's own code wherever it has one: the
error mapping (``protocol.error_for_response``), ``is_already_exists``, the date formatter, the
instance sensor's output summary, the rate-limit header parser.
"""

from __future__ import annotations

import importlib
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from airflow_provider_cfworkflows.checks import summary_output
from airflow_provider_cfworkflows.connection import ConnectionSettings
from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowsAuthError,
    CloudflareWorkflowsError,
    CloudflareWorkflowsNotFoundError,
)
from airflow_provider_cfworkflows.instance_changes import (
    ListedInstance,
    listing_is_behind,
    parse_time,
    watch_fingerprint,
)
from airflow_provider_cfworkflows.protocol import ParamsEncoding

# The params every create of the check sends (the demo Workflow ignores them).
PROBE_PARAMS: dict[str, Any] = {"probe": "live-check", "numbers": [1, 2.5], "nested": {"ok": True}}
_ANSWER_TEXT_LIMIT = 160


class Assumption(StrEnum):
    """Every behaviour issue 10 had to assume, one table row each."""

    ALREADY_EXISTS = "a repeated create with the same id is answered 'already exists'"
    PARAMS_OBJECT = "params sent as a JSON object (params_encoding=object)"
    PARAMS_STRING = "params sent as a JSON-encoded string (params_encoding=string)"
    OUTPUT = "a finished instance's output: raw JSON value or JSON string"
    AUTH_MISSING = "auth error shape: no credentials"
    AUTH_MALFORMED = "auth error shape: malformed Authorization header"
    AUTH_WRONG_TOKEN = "auth error shape: wrong token"
    DATE_FILTER = "date_start/date_end sent in UTC marked Z"
    FIRST_PAGE_ORDER = "order of the first page of instances (no direction)"
    DATE_FILTER_FIELD = "date_start selects instances on created_on (finished-instances trigger)"
    STATUS_FILTER = "status= lists only, and every, instance in that status (finished-instances trigger)"
    OPEN_LISTED = "status=waiting lists every waiting instance (waits on many instances of one workflow)"
    MODIFIED_ON = "a listed modified_on is at or after the last change the details show (step waits on many)"
    STEP_NOT_FOUND = "the answer for a step that does not exist"
    STREAM_LENGTH = "Content-Length of a stream step output"
    RATE_LIMIT_HEADERS = "Ratelimit / Ratelimit-Policy headers"


class Handled(StrEnum):
    """Whether the provider's code copes with what the server answered."""

    YES = "yes"
    NO = "no"
    NOT_EXERCISED = "not exercised"


@dataclass(frozen=True)
class Row:
    """
    One line of the table.

    :param assumption: what the provider assumes.
    :param answer: what the server answered, in words.
    :param handled: the verdict.
    :param reason: why (which part of the provider's code decided).
    """

    assumption: Assumption
    answer: str
    handled: Handled
    reason: str


@dataclass(frozen=True)
class Answer:
    """
    One API answer as the provider's protocol reads it.

    :param status: HTTP status, or None when no response came.
    :param error: the provider's typed error for it (``protocol.error_for_response`` /
        ``parse_envelope``), or None for a success.
    :param result: the envelope's ``result`` of a success.
    """

    status: int | None
    error: CloudflareWorkflowsError | None = None
    result: Any = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def describe(self) -> str:
        """``HTTP 409, 10405: message`` (error items with their chain), shortened."""
        parts = [f"HTTP {self.status}" if self.status is not None else "no HTTP answer"]
        if self.error is not None:
            if self.error.errors:
                parts.extend(str(item) for item in self.error.errors)
            elif self.status is None:
                parts.append(self.error.message)
        return _shorten(", ".join(parts))


@dataclass(frozen=True)
class CreateObservation:
    """
    A create with params and what the instance holds afterwards.

    :param answer: the create's answer.
    :param received: the instance's ``params`` read back with a GET (what the Workflow receives), or
        ``read_error`` when it could not be read.
    """

    answer: Answer
    received: Any = None
    read_error: str | None = None


@dataclass(frozen=True)
class OutputObservation:
    """
    The wait for an instance to finish.

    :param status: its last status.
    :param output: its ``output`` (meaningful when ``status`` is ``complete``).
    :param waited_seconds: how long the check waited.
    """

    status: str | None
    output: Any
    waited_seconds: float


@dataclass(frozen=True)
class ListingObservation:
    """
    Listings of the check's own instances, filtered by a date window around their creation.

    :param sent_dates: the ``date_start`` and ``date_end`` values the provider sent (its formatter's output).
    :param expected_ids: the instances the check created (all inside the window).
    :param paged: the ids listed through the hook's pagination (one per page), or ``paged_error``.
    :param excluded: the ids listed for a window that ends before the check began (none of ours
        should be there), or None when that listing failed.
    :param first_page: ``(id, created_on)`` of the first page, as the server ordered it (no direction).
    :param alternatives: when the ``Z`` form was refused, the answer to other forms of the same time.
    """

    sent_dates: str
    expected_ids: tuple[str, ...]
    paged: tuple[str, ...] = ()
    paged_error: Answer | None = None
    excluded: tuple[str, ...] | None = None
    first_page: tuple[tuple[str, str | None], ...] = ()
    alternatives: Mapping[str, Answer] = field(default_factory=dict)


@dataclass(frozen=True)
class FilterObservation:
    """
    Listings of the check's finished (``complete``) instance, for the finished-instances trigger.

    :param created_on: its ``created_on`` as listed (None when it was not listed at all).
    :param ended_on: its ``ended_on`` as listed.
    :param complete_statuses: the statuses of the items a ``status=complete`` listing gave.
    :param in_complete: whether ours was in the ``status=complete`` listing.
    :param in_running: whether ours was in the ``status=running`` listing.
    :param listed_after_creation: whether ours was listed with ``date_start`` halfway between its creation
        and its end (None when the gap was too short to tell).
    :param error: the error of a listing that failed.
    """

    created_on: str | None = None
    ended_on: str | None = None
    complete_statuses: tuple[str, ...] = ()
    in_complete: bool = False
    in_running: bool = False
    listed_after_creation: bool | None = None
    error: str | None = None


@dataclass(frozen=True)
class OpenListingObservation:
    """
    The check's instances waiting for an event, read one by one and then listed with ``status=waiting``.

    :param expected_ids: the instances that were ``waiting`` when read.
    :param listed: their items in the ``status=waiting`` listing made after the reads (missing: not listed).
    :param last_changes: the last change each one's details showed (``instance_changes.last_change``).
    :param listed_at: when the listing was asked for (this machine's clock, ISO 8601).
    :param error: the error of a call that failed.
    """

    expected_ids: tuple[str, ...] = ()
    listed: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    last_changes: Mapping[str, str | None] = field(default_factory=dict)
    listed_at: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class StreamObservation:
    """
    A stream step output read through the hook.

    :param content_length: the ``Content-Length`` header, None when the answer had none (chunked).
    :param received: bytes the hook yielded.
    :param error: the hook's error, if reading failed.
    """

    content_length: int | None
    received: int
    error: CloudflareWorkflowsError | None = None


@dataclass(frozen=True)
class RateLimitObservation:
    """The ``Ratelimit`` and ``Ratelimit-Policy`` headers of an authenticated answer (None: absent)."""

    ratelimit: str | None
    policy: str | None


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _ANSWER_TEXT_LIMIT else text[: _ANSWER_TEXT_LIMIT - 1] + "…"


def _describe_value(value: Any) -> str:
    return _shorten(json.dumps(value, sort_keys=True, default=str))


def not_exercised(assumption: Assumption, why: str) -> Row:
    """A row for a probe that could not run (``why`` says what was missing)."""
    return Row(assumption, f"not asked: {why}", Handled.NOT_EXERCISED, "no answer to judge")


# --- judges ------------------------------------------------------------------------------------


def judge_already_exists(answer: Answer) -> Row:
    """A second create with the check's own id: the provider must recognise "already exists"."""
    if answer.ok:
        return Row(
            Assumption.ALREADY_EXISTS,
            f"{answer.describe()}: accepted again",
            Handled.YES,
            "a repeated create that succeeds needs no recognition",
        )
    assert answer.error is not None
    if answer.error.is_already_exists:
        return Row(
            Assumption.ALREADY_EXISTS,
            answer.describe(),
            Handled.YES,
            "CloudflareWorkflowsError.is_already_exists is true: the create operators confirm and succeed",
        )
    return Row(
        Assumption.ALREADY_EXISTS,
        answer.describe(),
        Handled.NO,
        "is_already_exists is false: a retried create task would fail (exceptions.ALREADY_EXISTS_*)",
    )


def _describe_received(received: Any) -> str:
    if received == PROBE_PARAMS:
        return "the Workflow receives the object sent"
    if received == json.dumps(PROBE_PARAMS) or (
        isinstance(received, str) and _loads_or_none(received) == PROBE_PARAMS
    ):
        return "the Workflow receives a JSON string, not the object"
    return f"the Workflow receives {_describe_value(received)}"


def _loads_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def judge_params(
    encoding: ParamsEncoding, observation: CreateObservation, other: CreateObservation | None
) -> Row:
    """
    A create with ``params`` in one encoding. Handled when the Workflow receives the object sent, or
    when the server refuses the encoding with an error that names the ``params_encoding`` setting and
    the other encoding works.
    """
    assumption = Assumption.PARAMS_OBJECT if encoding is ParamsEncoding.OBJECT else Assumption.PARAMS_STRING
    answer = observation.answer
    if answer.ok:
        if observation.read_error is not None:
            return Row(
                assumption,
                f"{answer.describe()}; params not read back: {observation.read_error}",
                Handled.NO,
                "what the Workflow receives is unknown",
            )
        text = f"{answer.describe()}: accepted; {_describe_received(observation.received)}"
        if observation.received == PROBE_PARAMS:
            return Row(assumption, text, Handled.YES, "the instance holds the params as sent")
        return Row(
            assumption,
            text,
            Handled.NO,
            f"params_encoding={encoding.value} is accepted but changes what the Workflow receives",
        )
    assert answer.error is not None
    names_setting = "params_encoding" in str(answer.error)
    other_works = other is not None and other.answer.ok and other.received == PROBE_PARAMS
    if names_setting and other_works:
        return Row(
            assumption,
            f"{answer.describe()}: refused",
            Handled.YES,
            "the provider's error names the params_encoding setting, and the other encoding works",
        )
    why = (
        "the other encoding does not deliver the params either"
        if names_setting
        else "the provider's error does not point to params_encoding (protocol._params_hint)"
    )
    return Row(assumption, f"{answer.describe()}: refused", Handled.NO, why)


def output_form(output: Any) -> str:
    """``raw`` (a JSON value other than a string), ``string`` (JSON text in a string), or ``other``."""
    if isinstance(output, str):
        return "string" if _loads_or_none(output) is not None or output == "null" else "other"
    return "raw"


def judge_output(observation: OutputObservation) -> Row:
    """
    The ``output`` of the finished demo instance (its Workflow returns an object). Handled when it is
    one of the two forms the provider documents and the instance sensor passes it on whole.
    """
    if observation.status != "complete":
        return not_exercised(
            Assumption.OUTPUT,
            f"the instance was {observation.status} after {observation.waited_seconds:.0f} s, not complete",
        )
    form = output_form(observation.output)
    given = summary_output(observation.output)
    kind = type(given["output"]).__name__
    if form == "raw":
        answer = f"a raw JSON value ({type(observation.output).__name__})"
    elif form == "string":
        answer = f"a JSON-encoded string ({_describe_value(observation.output)})"
    else:
        answer = f"a string that is not JSON ({_describe_value(observation.output)})"
    if form == "other":
        return Row(Assumption.OUTPUT, answer, Handled.NO, "neither of the two documented forms")
    if given.get("output_truncated"):
        return Row(
            Assumption.OUTPUT, answer, Handled.NO, "the instance sensor drops it (over its size limit)"
        )
    return Row(Assumption.OUTPUT, answer, Handled.YES, f"the instance sensor returns it as a {kind}")


def judge_auth(assumption: Assumption, answer: Answer) -> Row:
    """A request with missing, malformed or wrong credentials must raise the provider's auth error."""
    if answer.ok:
        return Row(
            assumption, f"{answer.describe()}: accepted", Handled.NO, "the credentials were not checked"
        )
    if isinstance(answer.error, CloudflareWorkflowsAuthError):
        hint = answer.error.message.split(":")[0]
        return Row(
            assumption, answer.describe(), Handled.YES, f"raises CloudflareWorkflowsAuthError ({hint})"
        )
    kind = type(answer.error).__name__
    return Row(assumption, answer.describe(), Handled.NO, f"raises {kind}, not CloudflareWorkflowsAuthError")


def judge_date_filter(observation: ListingObservation) -> Row:
    """Filtering by a window in the provider's date format keeps the check's instances in and out."""
    sent = observation.sent_dates
    if observation.paged_error is not None:
        tried = "; ".join(f"{form}: {answer.describe()}" for form, answer in observation.alternatives.items())
        answer = f"{sent}: {observation.paged_error.describe()}" + (
            f" (other forms: {tried})" if tried else ""
        )
        return Row(
            Assumption.DATE_FILTER, answer, Handled.NO, "protocol.format_date_filter's form is refused"
        )
    missing = [i for i in observation.expected_ids if i not in observation.paged]
    leaked = [i for i in observation.expected_ids if i in (observation.excluded or ())]
    answer = f"{sent}: accepted"
    if missing or leaked or observation.excluded is None:
        detail = (
            f"{len(missing)} of ours missing inside the window, {len(leaked)} listed outside it"
            if observation.excluded is not None
            else "the listing outside the window failed"
        )
        return Row(
            Assumption.DATE_FILTER, f"{answer}; {detail}", Handled.NO, "the filter does not select by time"
        )
    return Row(
        Assumption.DATE_FILTER,
        f"{answer}; ours listed inside the window, none before it",
        Handled.YES,
        "protocol.format_date_filter's form filters by creation time",
    )


def first_page_order(first_page: Sequence[tuple[str, str | None]]) -> str:
    """``ascending``, ``descending`` or ``undetermined`` by ``created_on``."""
    moments = []
    for _id, created in first_page:
        try:
            moments.append(datetime.fromisoformat(created or ""))
        except ValueError:
            return "undetermined"
    pairs = list(itertools.pairwise(moments))
    if len(pairs) == 0 or any(a == b for a, b in pairs):
        return "undetermined"
    if all(a < b for a, b in pairs):
        return "ascending"
    if all(a > b for a, b in pairs):
        return "descending"
    return "undetermined"


def judge_order(observation: ListingObservation) -> Row:
    """
    The first page's order (informative: the provider assumes none) and whether the hook's cursor
    pagination lists each instance exactly once without ``direction``: that is what it relies on.
    """
    if observation.paged_error is not None:
        return not_exercised(Assumption.FIRST_PAGE_ORDER, "the filtered listing failed (see the date row)")
    order = first_page_order(observation.first_page)
    named = {
        "ascending": "oldest first (ascending)",
        "descending": "newest first (descending)",
        "undetermined": "order undetermined",
    }[order]
    counts = {i: observation.paged.count(i) for i in observation.expected_ids}
    answer = f"{named}; one per page: each of our {len(counts)} instances listed"
    if all(count == 1 for count in counts.values()):
        return Row(
            Assumption.FIRST_PAGE_ORDER,
            f"{answer} once",
            Handled.YES,
            "hook.list_instances follows the cursor without direction and relies on no order",
        )
    wrong = ", ".join(f"{i}: {count}x" for i, count in counts.items() if count != 1)
    return Row(
        Assumption.FIRST_PAGE_ORDER,
        f"{named}; one per page: {wrong}",
        Handled.NO,
        "the cursor pagination misses or repeats instances",
    )


def judge_date_filter_field(observation: FilterObservation) -> Row:
    """
    Which time ``date_start`` compares: an instance listed with ``date_start`` after its creation but
    before its end means a later time (``modified_on`` / ``ended_on``) rather than ``created_on``.
    """
    if observation.error is not None:
        return Row(Assumption.DATE_FILTER_FIELD, observation.error, Handled.NO, "the listing failed")
    if observation.listed_after_creation is None:
        return not_exercised(
            Assumption.DATE_FILTER_FIELD, "the instance ended too soon after its creation to tell"
        )
    if observation.listed_after_creation:
        return Row(
            Assumption.DATE_FILTER_FIELD,
            "a later time than created_on: listed with date_start after its creation",
            Handled.YES,
            "instance_changes notices it and lists without the date filter (each look then reads the "
            "whole history): change instance_changes.DATE_FILTER_FIELD and its listings",
        )
    return Row(
        Assumption.DATE_FILTER_FIELD,
        "created_on: not listed with date_start after its creation, before its end",
        Handled.YES,
        "instance_changes.DATE_FILTER_FIELD",
    )


def judge_status_filter(observation: FilterObservation) -> Row:
    """``status=complete`` lists ours and nothing else; ``status=running`` does not list it."""
    if observation.error is not None:
        return Row(Assumption.STATUS_FILTER, observation.error, Handled.NO, "the listing failed")
    others = sorted(set(observation.complete_statuses) - {"complete"})
    answer = (
        f"status=complete: ours {'listed' if observation.in_complete else 'missing'}"
        f"{', also ' + ', '.join(others) if others else ', nothing else'}; "
        f"status=running: ours {'listed' if observation.in_running else 'not listed'}"
    )
    if not observation.in_complete or observation.in_running:
        return Row(
            Assumption.STATUS_FILTER, answer, Handled.NO, "the trigger's catch-up listing would miss it"
        )
    reason = "instance_changes classifies items by the status they carry"
    return Row(Assumption.STATUS_FILTER, answer, Handled.YES, reason + (" (costlier)" if others else ""))


def judge_open_listing(observation: OpenListingObservation) -> Row:
    """Every instance seen ``waiting`` is in the ``status=waiting`` listing made after."""
    if observation.error is not None:
        return Row(Assumption.OPEN_LISTED, observation.error, Handled.NO, "the listing failed")
    missing = [i for i in observation.expected_ids if i not in observation.listed]
    shown = {str(item.get("status")) for item in observation.listed.values()}
    answer = (
        f"{len(observation.expected_ids) - len(missing)} of our {len(observation.expected_ids)} waiting "
        f"instances listed (status {', '.join(sorted(shown)) or 'none'})"
    )
    if missing:
        return Row(
            Assumption.OPEN_LISTED,
            answer,
            Handled.YES,
            "the listers look at each instance a listing misses, and fall back to per-instance looks for "
            "a workflow whose listings keep missing one (costlier)",
        )
    return Row(
        Assumption.OPEN_LISTED,
        answer,
        Handled.YES,
        "triggers/listers.py lists the open statuses instead of looking at each instance",
    )


def judge_modified_on(observation: OpenListingObservation) -> Row:
    """
    Each listed ``modified_on`` is at or after the last change (a step's end, the instance's start) that
    the details read before the listing showed. With the demo Workflow every such change is also a change
    of status, so a ``modified_on`` that moves only with the status passes too.
    """
    if observation.error is not None:
        return Row(Assumption.MODIFIED_ON, observation.error, Handled.NO, "the listing failed")
    listed_at = parse_time(observation.listed_at)
    pairs = [
        (ListedInstance.from_item(item), parse_time(observation.last_changes.get(instance_id)))
        for instance_id, item in observation.listed.items()
    ]
    pairs = [(listed, change) for listed, change in pairs if listed is not None and change is not None]
    if not pairs or listed_at is None:
        return not_exercised(Assumption.MODIFIED_ON, "none of our waiting instances was listed")
    if any(watch_fingerprint(listed, steps=True) is None for listed, _change in pairs):
        return Row(
            Assumption.MODIFIED_ON,
            "no readable modified_on",
            Handled.YES,
            "step waits on many instances then look at each instance themselves (watch_fingerprint)",
        )
    # The listing was asked for after the details were read: no margin for it to catch up.
    behind = [
        listed for listed, change in pairs if listing_is_behind(listed, change, listed_at, timedelta(0))
    ]
    if behind:
        return Row(
            Assumption.MODIFIED_ON,
            f"{len(behind)} of {len(pairs)} listed as modified before the last change their details showed",
            Handled.YES,
            "the listers notice a listing behind the details and fall back to per-instance looks (costlier); "
            "set instance_changes.MODIFIED_ON_COVERS_STEPS = False",
        )
    return Row(
        Assumption.MODIFIED_ON,
        f"modified_on at or after the last change for all {len(pairs)} (the demo's step ends change the "
        "status too)",
        Handled.YES,
        "instance_changes.MODIFIED_ON_COVERS_STEPS: an unchanged modified_on vouches for a step wait",
    )


def judge_step_not_found(answer: Answer) -> Row:
    """``/step`` for a step name the instance never ran: the waits treat only a 404 as "not yet"."""
    if isinstance(answer.error, CloudflareWorkflowsNotFoundError):
        return Row(
            Assumption.STEP_NOT_FOUND,
            answer.describe(),
            Handled.YES,
            "CloudflareWorkflowsNotFoundError: sensors wait, the output operator explains",
        )
    kind = "a success" if answer.ok else type(answer.error).__name__
    return Row(
        Assumption.STEP_NOT_FOUND,
        answer.describe(),
        Handled.NO,
        f"{kind}, not CloudflareWorkflowsNotFoundError: a sensor waiting for a step not started yet fails",
    )


def judge_stream(observation: StreamObservation) -> Row:
    """A stream output read to its end by the hook, with or without ``Content-Length``."""
    length = (
        f"Content-Length {observation.content_length}"
        if observation.content_length is not None
        else "no Content-Length (chunked)"
    )
    if observation.error is not None:
        return Row(
            Assumption.STREAM_LENGTH,
            f"{length}; read failed after {observation.received} bytes",
            Handled.NO,
            _shorten(str(observation.error)),
        )
    if observation.content_length is not None and observation.content_length != observation.received:
        return Row(
            Assumption.STREAM_LENGTH,
            f"{length}; {observation.received} bytes received",
            Handled.NO,
            "the hook yielded another byte count without an error",
        )
    return Row(
        Assumption.STREAM_LENGTH,
        f"{length}; {observation.received} bytes received",
        Handled.YES,
        "hook.stream_step_output reads it whole (checks the length when there is one)",
    )


_RATELIMIT_FIELDS = re.compile(r"\b([a-z])=(\d+)")


def _fields(value: str) -> dict[str, int]:
    return {key: int(number) for key, number in _RATELIMIT_FIELDS.findall(value)}


def provider_ratelimit_reading(ratelimit: str, policy: str | None) -> dict[str, int] | None:
    """
    ``{r, t, q?, w?}`` as the provider's rate limiter reads the headers, or None when this version of
    the provider has no header parser (``airflow_provider_cfworkflows.ratelimit``).
    """
    try:
        module = importlib.import_module("airflow_provider_cfworkflows.ratelimit")
    except ImportError:
        return None
    reading: dict[str, int] = {}
    for budget in module.parse_ratelimit(ratelimit)[:1]:
        reading.update(r=int(budget.remaining), t=round(budget.reset_seconds))
    for quota in module.parse_ratelimit_policy(policy)[:1]:
        reading.update(q=int(quota.quota), w=round(quota.window_seconds))
    return reading


def judge_rate_limit(observation: RateLimitObservation, settings: ConnectionSettings) -> Row:
    """
    With the headers, the provider must read the same numbers; without them it paces by the connection's
    ``rate_limit`` budget.
    """
    if observation.ratelimit is None:
        return Row(
            Assumption.RATE_LIMIT_HEADERS,
            "absent",
            Handled.YES,
            f"the provider paces by the connection's rate_limit ({settings.rate_limit} per 5 minutes)",
        )
    fields = {**_fields(observation.ratelimit), **_fields(observation.policy or "")}
    answer = f"Ratelimit: {observation.ratelimit}; Ratelimit-Policy: {observation.policy or '(absent)'}"
    reading = provider_ratelimit_reading(observation.ratelimit, observation.policy)
    if reading is None:
        return Row(
            Assumption.RATE_LIMIT_HEADERS,
            _shorten(answer),
            Handled.NO,
            "this provider version does not read them",
        )
    if reading and all(reading.get(key) == value for key, value in fields.items() if key in "rtqw"):
        shown = ", ".join(f"{key}={value}" for key, value in sorted(reading.items()))
        return Row(
            Assumption.RATE_LIMIT_HEADERS, _shorten(answer), Handled.YES, f"the rate limiter reads {shown}"
        )
    return Row(
        Assumption.RATE_LIMIT_HEADERS,
        _shorten(answer),
        Handled.NO,
        f"the rate limiter reads {reading or 'nothing'}, the headers say {fields}",
    )


# --- the table ---------------------------------------------------------------------------------


def render_table(rows: Sequence[Row]) -> str:
    """A Markdown table: assumption | what the server answered | handled by the provider."""
    lines = [
        "| assumption | what the server answered | handled by the provider |",
        "|---|---|---|",
    ]
    for row in rows:
        cells = (row.assumption.value, row.answer, f"{row.handled.value}: {row.reason}")
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def summarize(rows: Sequence[Row]) -> str:
    """One line: how many rows are handled, not handled, not exercised."""
    counts = {handled: sum(1 for row in rows if row.handled is handled) for handled in Handled}
    return (
        f"{counts[Handled.YES]} handled, {counts[Handled.NO]} not handled, "
        f"{counts[Handled.NOT_EXERCISED]} not exercised (of {len(rows)} assumptions)"
    )
