"""Ask a Workflows API (Cloudflare's, or the emulator) every question the provider had to assume.

Behaviour probes go through the public hook (:class:`CloudflareWorkflowsHook`); probes of HTTP statuses,
codes and headers send the provider's own requests (``protocol.*_request``) over a plain ``requests``
session built from the same connection settings, and read the answers with the provider's protocol.
Every instance the check creates is deleted at the end, also when a probe fails.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from airflow_provider_cfworkflows import protocol
from airflow_provider_cfworkflows.connection import (
    USER_AGENT,
    ConnectionSettings,
    settings_from_connection,
)
from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowsConnectionError,
    CloudflareWorkflowsError,
    CloudflareWorkflowsNotFoundError,
)
from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook
from airflow_provider_cfworkflows.instance_changes import format_time, last_change
from airflow_provider_cfworkflows.models import JSON_CONTENT_TYPE
from airflow_provider_cfworkflows.protocol import ApiRequest, ParamsEncoding
from airflow_provider_cfworkflows.statuses import TERMINAL_INSTANCE_STATUSES, StatusAction
from tests.live.verdicts import (
    PROBE_PARAMS,
    Answer,
    Assumption,
    CreateObservation,
    FilterObservation,
    ListingObservation,
    OpenListingObservation,
    OutputObservation,
    RateLimitObservation,
    Row,
    StreamObservation,
    judge_already_exists,
    judge_auth,
    judge_date_filter,
    judge_date_filter_field,
    judge_modified_on,
    judge_open_listing,
    judge_order,
    judge_output,
    judge_params,
    judge_rate_limit,
    judge_status_filter,
    judge_step_not_found,
    judge_stream,
    not_exercised,
)

# The demo Workflow of the README ("Against real Cloudflare"): prepare -> waitForEvent("approval") ->
# "build report" (a ReadableStream output) -> returns an object.
DEMO_WORKFLOW_NAME = "demo-pipeline"
DEMO_EVENT_TYPE = "approval"
DEMO_STREAM_STEP = "build report-1"
CONNECTION_ID = "cfworkflows_live_check"
NO_SUCH_STEP = "live-check-no-such-step-1"
# The date window around the check's own instances: wide enough for the gap between an instance's
# `queued` time (what the details show) and its `created_on` (what the filter uses, inferred).
DATE_MARGIN = timedelta(minutes=2)
EXCLUDED_WINDOW = timedelta(hours=1)
# Upper bounds on listed items, so a busy account cannot make the check page for long.
MAX_PAGED_ITEMS = 100
MAX_EXCLUDED_ITEMS = 500


class CheckAborted(Exception):
    """The check cannot go on (the Workflow is missing, the credentials do not work, ...)."""


@dataclass(frozen=True)
class Target:
    """
    Where the check runs.

    :param account_id: the Cloudflare account id.
    :param api_token: the API token (never shown: not in ``repr``, logs or the table).
    :param workflow_name: the deployed demo Workflow.
    :param base_url: API base URL; None means Cloudflare's.
    :param event_type: the event the Workflow waits for before it goes on.
    :param stream_step: the logged name of the step whose output is a stream.
    :param finish_timeout: seconds to wait for the instance to finish.
    :param poll_interval: seconds between looks at the instance while waiting.
    """

    account_id: str
    api_token: str = field(repr=False)
    workflow_name: str = DEMO_WORKFLOW_NAME
    base_url: str | None = None
    event_type: str = DEMO_EVENT_TYPE
    stream_step: str = DEMO_STREAM_STEP
    finish_timeout: float = 180.0
    poll_interval: float = 2.0

    def connection(self) -> dict[str, Any]:
        """The Airflow connection (``AIRFLOW_CONN_*`` JSON form) the hook reads."""
        conn: dict[str, Any] = {
            "conn_type": "cloudflare_workflows",
            "login": self.account_id,
            "password": self.api_token,
        }
        if self.base_url:
            conn["host"] = self.base_url
        return conn

    def settings(self) -> ConnectionSettings:
        """The same validated settings the hook builds from :meth:`connection`."""
        return settings_from_connection(
            login=self.account_id, password=self.api_token, host=self.base_url, port=None, extras={}
        )


@contextmanager
def live_hook(target: Target) -> Iterator[CloudflareWorkflowsHook]:
    """A hook on ``target``, through a connection in the environment for as long as it is used."""
    variable = f"AIRFLOW_CONN_{CONNECTION_ID.upper()}"
    previous = os.environ.get(variable)
    os.environ[variable] = json.dumps(target.connection())
    hook = CloudflareWorkflowsHook(cloudflare_conn_id=CONNECTION_ID)
    try:
        yield hook
    finally:
        if "session" in hook.__dict__:
            hook.session.close()
        if previous is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = previous


class RawApi:
    """
    Sends the provider's requests with a plain ``requests`` session and reads each answer with the
    provider's protocol, keeping the status and headers a hook call would hide.

    :param settings: the connection settings (base URL, credentials, timeout).
    """

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self.session = requests.Session()

    def close(self) -> None:
        self.session.close()

    def send(
        self, request: ApiRequest, *, auth: Mapping[str, str] | None = None
    ) -> tuple[Answer, Mapping[str, str]]:
        """
        The answer and its headers.

        :param auth: authentication headers instead of the connection's (``{}`` sends none).
        """
        credentials = self.settings.credentials.headers() if auth is None else dict(auth)
        headers = {"User-Agent": USER_AGENT, "Accept": JSON_CONTENT_TYPE, **credentials, **request.headers()}
        try:
            response = self.session.request(
                request.method,
                request.url(self.settings.base_url),
                data=request.body,
                headers=headers,
                timeout=self.settings.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as error:
            failure = CloudflareWorkflowsConnectionError(
                f"No answer: {type(error).__name__}", method=request.method, path=request.path
            )
            return Answer(None, failure), {}
        try:
            envelope = protocol.parse_envelope(
                request, response.status_code, response.headers, response.content
            )
        except CloudflareWorkflowsError as error:
            return Answer(response.status_code, error), response.headers
        return Answer(response.status_code, None, envelope.result), response.headers


def _instance_request(account_id: str, workflow_name: str, instance_id: str, method: str) -> ApiRequest:
    """``<method> .../instances/{instance_id}`` (DELETE has no request builder in the provider)."""
    path = "/".join(
        protocol.encode_segment(segment)
        for segment in ("", "accounts", account_id, "workflows", workflow_name, "instances", instance_id)
    )
    return ApiRequest(method, path, idempotent=True)


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


class ContractProbe:
    """
    Runs every probe once against ``target`` and judges the answers (see :meth:`run`).

    :param target: where to run.
    :param hook: a hook on ``target`` (see :func:`live_hook`).
    :param say: progress lines (never holding a credential).
    """

    def __init__(self, target: Target, hook: CloudflareWorkflowsHook, say: Callable[[str], None]) -> None:
        self.target = target
        self.hook = hook
        self.say = say
        self.settings = target.settings()
        self.account_id = self.settings.resolve_account_id(target.account_id)
        self.raw = RawApi(self.settings)
        self.run_id = f"{int(time.time())}-{secrets.token_hex(3)}"
        self.created: list[str] = []
        self.leftovers: list[str] = []

    def run(self) -> list[Row]:
        """Every row of the table, in :class:`Assumption` order; deletes what it created, whatever happens."""
        try:
            rows = self._probe()
        finally:
            self._clean_up()
            self.raw.close()
        order = list(Assumption)
        return sorted(rows, key=lambda row: order.index(row.assumption))

    # --- the probes -----------------------------------------------------------------------------

    def _new_instance_id(self, label: str) -> str:
        instance_id = f"live-check-{self.run_id}-{label}"
        self.created.append(instance_id)  # before the call: a lost answer may still have created it
        return instance_id

    def _probe(self) -> list[Row]:
        name = self.target.workflow_name
        self.say(f"Workflow {name!r}: checking it exists")
        found, headers = self.raw.send(protocol.get_workflow_request(self.account_id, name))
        if not found.ok:
            raise CheckAborted(
                f"GET workflow {name!r} failed ({found.describe()}). Deploy the demo Workflow as the README "
                "shows, or set CLOUDFLARE_WORKFLOW_NAME; check CLOUDFLARE_ACCOUNT_ID and the token's "
                "permissions (Workers Scripts Write)."
            )
        rate_limit = RateLimitObservation(headers.get("ratelimit"), headers.get("ratelimit-policy"))
        rows = [judge_rate_limit(rate_limit, self.settings), *self._auth_rows()]

        self.say("Creating instances")
        created_after = datetime.now(UTC)
        main_id = self._new_instance_id("main")
        self.hook.create_instance(name, instance_id=main_id)
        again, _ = self.raw.send(protocol.create_instance_request(self.account_id, name, instance_id=main_id))
        rows.append(judge_already_exists(again))
        event_error = self._send_event(main_id)

        creates = {encoding: self._create_with_params(encoding) for encoding in ParamsEncoding}
        for encoding, (_, observation) in creates.items():
            other = creates[
                ParamsEncoding.STRING if encoding is ParamsEncoding.OBJECT else ParamsEncoding.OBJECT
            ]
            rows.append(judge_params(encoding, observation, other[1]))

        step_request = protocol.step_output_request(self.account_id, name, main_id, NO_SUCH_STEP)
        rows.append(judge_step_not_found(self.raw.send(step_request)[0]))

        waiting = [instance_id for instance_id, seen in creates.values() if seen.answer.ok]
        rows += self._open_listing_rows(waiting)
        listing = self._list([main_id, *waiting], (created_after, datetime.now(UTC)))
        rows += [judge_date_filter(listing), judge_order(listing)]

        finished = self._wait_until_finished(main_id)
        if event_error is not None and finished.status != "complete":
            rows.append(not_exercised(Assumption.OUTPUT, f"sending the event failed: {event_error}"))
        else:
            rows.append(judge_output(finished))
        rows.append(self._stream_row(main_id, finished))
        if finished.status == "complete":
            observation = self._filters(main_id, created_after)
            rows += [judge_date_filter_field(observation), judge_status_filter(observation)]
        else:
            why = f"the instance did not complete ({finished.status})"
            rows += [
                not_exercised(Assumption.DATE_FILTER_FIELD, why),
                not_exercised(Assumption.STATUS_FILTER, why),
            ]
        return rows

    def _filters(self, instance_id: str, created_after: datetime) -> FilterObservation:
        """How ``status`` and ``date_start`` select a finished instance (what the trigger relies on)."""
        name, start = self.target.workflow_name, created_after - DATE_MARGIN

        def listed(**filters: Any) -> list[dict[str, Any]]:
            return list(
                itertools.islice(self.hook.list_instances(name, per_page=100, **filters), MAX_EXCLUDED_ITEMS)
            )

        try:
            complete = listed(status="complete", date_start=start)
            running = listed(status="running", date_start=start)
            ours = next((item for item in complete if item.get("id") == instance_id), None)
            created = _parse_time(ours.get("created_on")) if ours else None
            ended = _parse_time(ours.get("ended_on")) if ours else None
            after_creation: bool | None = None
            if created is not None and ended is not None and ended - created >= timedelta(seconds=2):
                middle = created + (ended - created) / 2
                window = listed(status="complete", date_start=middle, date_end=middle + EXCLUDED_WINDOW)
                after_creation = any(item.get("id") == instance_id for item in window)
        except CloudflareWorkflowsError as error:
            return FilterObservation(error=error.message)
        return FilterObservation(
            created_on=ours.get("created_on") if ours else None,
            ended_on=ours.get("ended_on") if ours else None,
            complete_statuses=tuple(str(item.get("status")) for item in complete),
            in_complete=ours is not None,
            in_running=any(item.get("id") == instance_id for item in running),
            listed_after_creation=after_creation,
        )

    def _open_listing_rows(self, instance_ids: list[str]) -> list[Row]:
        """The instances that wait for an event (no event is sent to them): listed as waiting, and when."""
        name = self.target.workflow_name
        deadline = time.monotonic() + self.target.finish_timeout
        changes: dict[str, str | None] = {}
        try:
            for instance_id in instance_ids:  # past their first step: waiting for the event
                while (details := self.hook.get_instance(name, instance_id)).get("status") != "waiting":
                    if details.get("status") in TERMINAL_INSTANCE_STATUSES or time.monotonic() > deadline:
                        break
                    time.sleep(self.target.poll_interval)
                if details.get("status") == "waiting":
                    changes[instance_id] = format_time(last_change(details))
            listed_at = datetime.now(UTC)
            listed = {
                str(item.get("id")): item
                for item in itertools.islice(
                    self.hook.list_instances(name, status="waiting", per_page=100),
                    MAX_EXCLUDED_ITEMS,
                )
                if item.get("id") in changes
            }
        except CloudflareWorkflowsError as error:
            observation = OpenListingObservation(error=error.message)
        else:
            observation = OpenListingObservation(tuple(changes), listed, changes, format_time(listed_at))
        if not changes and observation.error is None:
            why = "no instance of ours was waiting for an event"
            return [not_exercised(Assumption.OPEN_LISTED, why), not_exercised(Assumption.MODIFIED_ON, why)]
        return [judge_open_listing(observation), judge_modified_on(observation)]

    def _auth_rows(self) -> list[Row]:
        request = protocol.get_workflow_request(self.account_id, self.target.workflow_name)
        # A made-up token of a real token's shape (40 characters), and a header Cloudflare cannot parse.
        cases = {
            Assumption.AUTH_MISSING: {},
            Assumption.AUTH_MALFORMED: {"Authorization": "Bearer not a single token"},
            Assumption.AUTH_WRONG_TOKEN: {"Authorization": f"Bearer {secrets.token_urlsafe(30)[:40]}"},
        }
        return [
            judge_auth(assumption, self.raw.send(request, auth=auth)[0]) for assumption, auth in cases.items()
        ]

    def _send_event(self, instance_id: str) -> str | None:
        """Let the demo Workflow go on (events sent before its waitForEvent are buffered)."""
        try:
            self.hook.send_event(
                self.target.workflow_name,
                instance_id,
                self.target.event_type,
                {"approved_by": "airflow-provider-cfworkflows live check"},
            )
        except CloudflareWorkflowsError as error:
            return error.message
        return None

    def _create_with_params(self, encoding: ParamsEncoding) -> tuple[str, CreateObservation]:
        name = self.target.workflow_name
        instance_id = self._new_instance_id(f"params-{encoding.value}")
        request = protocol.create_instance_request(
            self.account_id, name, instance_id=instance_id, params=PROBE_PARAMS, params_encoding=encoding
        )
        answer, _ = self.raw.send(request)
        if not answer.ok:
            return instance_id, CreateObservation(answer)
        try:
            details = self.hook.get_instance(name, instance_id, simple=True)
        except CloudflareWorkflowsError as error:
            return instance_id, CreateObservation(answer, read_error=error.message)
        return instance_id, CreateObservation(answer, received=details.get("params"))

    def _list(self, ours: list[str], client_times: tuple[datetime, datetime]) -> ListingObservation:
        """Filtered listings around the creation times the server gave our instances."""
        name = self.target.workflow_name
        moments = [
            _parse_time(self.hook.get_instance(name, instance_id, simple=True).get("queued"))
            for instance_id in ours
        ]
        # The server's times where the details give them, else this machine's (the margin covers skew).
        known = [moment for moment in moments if moment is not None] or list(client_times)
        # date_start in whole seconds and date_end with milliseconds: both forms the formatter sends.
        start = (min(known) - DATE_MARGIN).replace(microsecond=0)
        end = max(known) + DATE_MARGIN
        if not end.microsecond:
            end += timedelta(milliseconds=1)
        sent = (
            f"date_start={protocol.format_date_filter(start, 'date_start')}, "
            f"date_end={protocol.format_date_filter(end, 'date_end')}"
        )
        try:
            paged = tuple(
                item["id"]
                for item in itertools.islice(
                    self.hook.list_instances(name, date_start=start, date_end=end, per_page=1),
                    MAX_PAGED_ITEMS,
                )
            )
        except CloudflareWorkflowsError as error:
            failed = Answer(error.http_status, error)
            return ListingObservation(
                sent, tuple(ours), paged_error=failed, alternatives=self._date_forms(start, end)
            )
        try:
            excluded: tuple[str, ...] | None = tuple(
                item["id"]
                for item in itertools.islice(
                    self.hook.list_instances(
                        name, date_start=start - EXCLUDED_WINDOW, date_end=start, per_page=100
                    ),
                    MAX_EXCLUDED_ITEMS,
                )
            )
        except CloudflareWorkflowsError:
            excluded = None
        first, _ = self.raw.send(
            protocol.list_instances_request(
                self.account_id, name, date_start=start, date_end=end, per_page=100
            )
        )
        first_page = tuple(
            (str(item.get("id")), item.get("created_on"))
            for item in (first.result or [])
            if isinstance(item, dict)
        )
        return ListingObservation(sent, tuple(ours), paged, excluded=excluded, first_page=first_page)

    def _date_forms(self, start: datetime, end: datetime) -> dict[str, Answer]:
        """The other ways of writing the same window, asked only after the provider's form was refused."""
        request = protocol.list_instances_request(
            self.account_id, self.target.workflow_name, date_start=start, date_end=end, per_page=1
        )
        forms = {"+00:00": "+00:00", "no offset": ""}
        answers = {}
        for label, suffix in forms.items():
            query = tuple(
                (key, value[:-1] + suffix if key in ("date_start", "date_end") else value)
                for key, value in request.query
            )
            answers[label] = self.raw.send(dataclasses.replace(request, query=query))[0]
        return answers

    def _wait_until_finished(self, instance_id: str) -> OutputObservation:
        """Look at the instance every ``poll_interval`` until it ends or ``finish_timeout`` passes."""
        self.say(f"Waiting up to {self.target.finish_timeout:.0f} s for the instance to finish")
        started = time.monotonic()
        deadline = started + self.target.finish_timeout
        while True:
            details = self.hook.get_instance(self.target.workflow_name, instance_id, simple=True)
            status = details.get("status")
            if status in TERMINAL_INSTANCE_STATUSES or time.monotonic() >= deadline:
                return OutputObservation(status, details.get("output"), time.monotonic() - started)
            time.sleep(min(self.target.poll_interval, max(deadline - time.monotonic(), 0.0)))

    def _stream_row(self, instance_id: str, finished: OutputObservation) -> Row:
        step = self.target.stream_step
        if finished.status != "complete":
            return not_exercised(
                Assumption.STREAM_LENGTH, f"the instance did not complete ({finished.status})"
            )
        received, content_length = 0, None
        try:
            with self.hook.stream_step_output(self.target.workflow_name, instance_id, step) as stream:
                if not stream.step.is_stream:
                    return not_exercised(
                        Assumption.STREAM_LENGTH, f"step {step!r} has a JSON output, not a stream"
                    )
                content_length = stream.content_length
                for chunk in stream.chunks:
                    received += len(chunk)
        except CloudflareWorkflowsNotFoundError:
            return not_exercised(Assumption.STREAM_LENGTH, f"the Workflow has no step {step!r}")
        except CloudflareWorkflowsError as error:
            return judge_stream(StreamObservation(content_length, received, error))
        return judge_stream(StreamObservation(content_length, received))

    # --- clean-up -------------------------------------------------------------------------------

    def _clean_up(self) -> None:
        """Delete every instance the check created (terminate first when a delete is refused)."""
        name = self.target.workflow_name
        for instance_id in self.created:
            deleted, _ = self.raw.send(_instance_request(self.account_id, name, instance_id, "DELETE"))
            if deleted.ok or deleted.status == 404:
                continue
            terminate = protocol.change_instance_status_request(
                self.account_id, name, instance_id, StatusAction.TERMINATE.value
            )
            self.raw.send(terminate)
            deleted, _ = self.raw.send(_instance_request(self.account_id, name, instance_id, "DELETE"))
            if not (deleted.ok or deleted.status == 404):
                self.leftovers.append(f"{instance_id} ({deleted.describe()})")
