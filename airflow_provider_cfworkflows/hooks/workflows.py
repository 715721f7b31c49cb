"""Hook for the Cloudflare Workflows REST API.

.. seealso:: https://developers.cloudflare.com/api/resources/workflows/
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

import httpx
import requests
import tenacity
import urllib3.exceptions
from airflow.sdk import BaseHook
from airflow.sdk.log import amask_secret, mask_secret

from airflow_provider_cfworkflows import deadlines, protocol, ratelimit
from airflow_provider_cfworkflows.body_reader import ResponseBodyReader
from airflow_provider_cfworkflows.connection import (
    CONN_TYPE,
    DEFAULT_CONN_ID,
    ConnectionSettings,
    insecure_http_warning,
    settings_from_connection,
)
from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowsConfigurationError,
    CloudflareWorkflowsConflictError,
    CloudflareWorkflowsConnectionError,
    CloudflareWorkflowsError,
    CloudflareWorkflowsNotFoundError,
    CloudflareWorkflowsRateLimitError,
    CloudflareWorkflowsUnknownWorkflowError,
    is_transient_error,
)
from airflow_provider_cfworkflows.models import (
    OCTET_STREAM_CONTENT_TYPE,
    StepOutput,
    StepOutputStream,
)
from airflow_provider_cfworkflows.statuses import StepType
from airflow_provider_cfworkflows.validation import (
    MAX_BATCH_SIZE,
    validate_instance_id,
    validate_status_action,
)
from airflow_provider_cfworkflows.waiting import describe_steps, status_of, step_name_candidates

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from airflow_provider_cfworkflows.protocol import ApiRequest, Envelope

DEFAULT_CHUNK_SIZE = 1024 * 1024
# Largest piece of a JSON answer read at once: each read returns what has arrived, so the attempt's
# clock and the size cap are checked between reads.
JSON_READ_SIZE = 64 * 1024
# Page size of the page-numbered listings (workflows, versions): the API's maximum.
LISTING_PAGE_SIZE = 100
_Position = TypeVar("_Position", int, str)


class CloudflareWorkflowsHook(BaseHook):
    """
    Calls the Cloudflare Workflows REST API with the credentials of an Airflow connection.

    Idempotent calls (GETs, a create with an explicit ``instance_id``, pause/resume/terminate) are
    retried on 408, 429 (honouring ``Retry-After``), 5xx, ``success: false``, malformed responses,
    timeouts and dropped connections, with exponential backoff and jitter; each retry is logged with its
    reason. Calls that must not run twice (an event, a restart, a create without an id) are retried only
    when the request provably never arrived (a failure to connect, a 429). Retries never start past the
    deadline of the wait they serve (:mod:`airflow_provider_cfworkflows.deadlines`). Errors are typed
    (see :mod:`airflow_provider_cfworkflows.exceptions`) and never contain a credential.

    :param cloudflare_conn_id: connection of type ``cloudflare_workflows``: login = Account ID,
        password = API Token, host = API base URL (optional), extras ``email`` + ``api_key`` (legacy
        global API key), ``timeout``, ``max_retries``, ``allow_http``, ``params_encoding``.
    :param timeout: seconds one attempt of a call may take, from connecting to the last byte of its JSON
        answer (for byte-stream outputs: seconds without any byte arriving); overrides the connection's
        extra.
    :param max_retries: retries of a call; overrides the connection's extra.
    """

    conn_name_attr = "cloudflare_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "Cloudflare Workflows"
    # For tests: an httpx transport for the async client (e.g. ``httpx.MockTransport``); None means
    # the network. Set it on the class or an instance before the first async call.
    async_transport: httpx.AsyncBaseTransport | None = None

    def __init__(
        self,
        cloudflare_conn_id: str = DEFAULT_CONN_ID,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
    ) -> None:
        super().__init__()
        self.cloudflare_conn_id = cloudflare_conn_id
        self._timeout_override = timeout
        self._max_retries_override = max_retries
        self._async_settings: ConnectionSettings | None = None
        self._async_client: httpx.AsyncClient | None = None
        self._rate_limiter: ratelimit.RateLimiter | None = None

    # --- connection and transports --------------------------------------------------------------

    def _settings_from(self, conn: Connection, extras: Mapping[str, Any]) -> ConnectionSettings:
        return settings_from_connection(
            login=conn.login,
            password=conn.password,
            host=conn.host,
            port=conn.port,
            extras=extras,
            timeout=self._timeout_override,
            max_retries=self._max_retries_override,
        )

    @cached_property
    def settings(self) -> ConnectionSettings:
        """The connection's validated settings (sync code only; triggers use :meth:`aget_settings`)."""
        conn = self.get_connection(self.cloudflare_conn_id)
        settings = self._settings_from(conn, conn.extra_dejson)
        for secret in settings.credentials.secrets:
            mask_secret(secret)
        self._warn_if_insecure(settings)
        return settings

    async def aget_settings(self) -> ConnectionSettings:
        """The connection's settings, resolved with Airflow's async connection API (safe on an event loop)."""
        if self._async_settings is None:
            conn = await BaseHook.aget_connection(self.cloudflare_conn_id)
            settings = self._settings_from(conn, await conn.aextra_dejson())
            for secret in settings.credentials.secrets:
                await amask_secret(secret)
            self._warn_if_insecure(settings)
            self._async_settings = settings
        return self._async_settings

    def _warn_if_insecure(self, settings: ConnectionSettings) -> None:
        """Log, once per hook, that ``allow_http`` sends requests unencrypted to a remote host."""
        warning = insecure_http_warning(settings)
        if warning is not None:
            self.log.warning(warning)

    @cached_property
    def session(self) -> requests.Session:
        """A ``requests`` session reusing connections across calls."""
        session = requests.Session()
        session.headers.update(self.settings.headers())
        return session

    def _retrying(self, request: ApiRequest, max_retries: int) -> dict[str, Any]:
        """Tenacity arguments shared by the sync and async transports."""

        def retryable(error: BaseException) -> bool:
            # A call that must not run twice is repeated only when it provably never arrived.
            return is_transient_error(error) and (
                request.idempotent
                or not (isinstance(error, CloudflareWorkflowsError) and error.may_have_taken_effect)
            )

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, CloudflareWorkflowsRateLimitError):
                return 0.0  # the rate limiter holds the next attempt (and every other caller) past the 429
            return protocol.retry_delay(state.attempt_number, error)

        def stop(state: tenacity.RetryCallState) -> bool:
            # Tenacity computes the wait before asking: a retry that would start past the wait's deadline
            # is not made (the last error is raised now instead of after a pointless sleep).
            return state.attempt_number > max_retries or not protocol.retry_fits_deadline(
                state.upcoming_sleep
            )

        def log_retry(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            self.log.warning(
                "Retrying %s (attempt %d of %d) in %.1f s after: %s",
                request.describe(),
                state.attempt_number + 1,
                max_retries + 1,
                state.upcoming_sleep,
                error,
            )

        return {
            "stop": stop,
            "wait": wait,
            "retry": tenacity.retry_if_exception(retryable),
            "before_sleep": log_retry,
            "reraise": True,
        }

    def _limiter(self, settings: ConnectionSettings) -> ratelimit.RateLimiter:
        """The rate limiter shared by every caller of this credential in the process."""
        if self._rate_limiter is None:
            self._rate_limiter = ratelimit.limiter_for_settings(settings)
        return self._rate_limiter

    def _open(self, request: ApiRequest, clock: protocol.AttemptClock) -> requests.Response:
        """Send one request and return the response with its body not yet read."""
        limiter = self._limiter(self.settings)
        limiter.wait_sync(_limiter_deadline(limiter))
        try:
            socket_timeout = clock.start(request)  # the attempt's time runs from here
            response = self.session.request(
                request.method,
                request.url(self.settings.base_url),
                data=request.body,
                headers=request.headers(),
                timeout=socket_timeout,
                stream=True,
                allow_redirects=False,
            )
        except BaseException as error:  # no response: the slot is given back
            limiter.release()
            if isinstance(error, requests.RequestException | ValueError):
                raise _transport_error(request, error) from None
            raise
        limiter.observe_response(response.status_code, response.headers)
        return response

    def _read_body(
        self, request: ApiRequest, response: requests.Response, clock: protocol.AttemptClock
    ) -> bytes:
        """The whole JSON body, within the attempt's time and the size cap (an endless body fails)."""
        body = bytearray()
        try:
            declared = protocol.parse_content_length(response.headers)
            if declared is not None:
                protocol.check_json_body_size(request, declared, http_status=response.status_code)
            while True:
                clock.check(request, len(body))
                _set_read_timeout(response, clock.socket_timeout())
                # read1 returns what has arrived (one socket read): a slow drip cannot hold the call
                # past its clock, as read(n) would until n bytes came.
                chunk = response.raw.read1(JSON_READ_SIZE, decode_content=True)
                if not chunk:
                    return bytes(body)
                body += chunk
                protocol.check_json_body_size(request, len(body), http_status=response.status_code)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
            raise _transport_error(request, error) from None
        finally:
            response.close()

    def _attempt(self, request: ApiRequest, *, accept_stream: bool) -> Envelope | requests.Response:
        """One attempt of :meth:`_send`."""
        clock = protocol.AttemptClock(self.settings.timeout)
        response = self._open(request, clock)
        if accept_stream and protocol.is_byte_stream(response.status_code, response.headers):
            # A stream is bounded by progress, not in total: each read may wait the full timeout.
            _set_read_timeout(response, self.settings.timeout)
            return response
        body = self._read_body(request, response, clock)
        return protocol.parse_envelope(request, response.status_code, response.headers, body)

    @overload
    def _send(self, request: ApiRequest) -> Envelope: ...

    @overload
    def _send(self, request: ApiRequest, *, accept_stream: Literal[True]) -> Envelope | requests.Response: ...

    def _send(self, request: ApiRequest, *, accept_stream: bool = False) -> Envelope | requests.Response:
        """
        The sync send path: open, then either hand back a byte stream unread (only with
        ``accept_stream``) or read and parse the JSON envelope; the whole is retried as one attempt.
        """
        uncertain = False
        try:
            for attempt in tenacity.Retrying(**self._retrying(request, self.settings.max_retries)):
                with attempt:
                    try:
                        return self._attempt(request, accept_stream=accept_stream)
                    except CloudflareWorkflowsError as error:
                        uncertain = _note_attempt(error, uncertain)
                        raise
        except CloudflareWorkflowsNotFoundError as error:
            if not protocol.is_workflow_not_found(request, error):
                raise
            raise protocol.workflow_not_found_error(request, error, self._workflow_names(request)) from None
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def _workflow_names(self, request: ApiRequest) -> list[str] | None:
        """The names on the first page of the request's account's workflows (None if they cannot be read)."""
        try:
            listing = self._send(
                protocol.list_workflows_request(request.account_id or "", per_page=LISTING_PAGE_SIZE)
            )
        except CloudflareWorkflowsError:
            return None
        return _names(listing.result)

    def _call(self, request: ApiRequest) -> Any:
        """Send ``request`` (with retries) and return the envelope's ``result``."""
        return self._send(request).result

    def _paginate(
        self,
        request_at: Callable[[_Position], ApiRequest],
        first: _Position,
        following: Callable[[_Position, Envelope, int], _Position | None],
    ) -> Iterator[dict[str, Any]]:
        """
        Every item of a listing, page after page.

        :param request_at: the request for a position (a page number, or a cursor).
        :param first: the first position.
        :param following: the next position from the current one, its envelope and its item count;
            None ends the listing.
        """
        position: _Position | None = first
        while position is not None:
            envelope = self._send(request_at(position))
            items = list(envelope.result or [])
            yield from items
            position = following(position, envelope, len(items))

    def _numbered_pages(self, request_for_page: Callable[[int], ApiRequest]) -> Iterator[dict[str, Any]]:
        """A page-numbered listing (pages of ``LISTING_PAGE_SIZE`` from 1, ``total_pages`` ends it)."""

        def following(page: int, envelope: Envelope, received: int) -> int | None:
            more = protocol.has_next_page(envelope.result_info, page, received, LISTING_PAGE_SIZE)
            return page + 1 if more else None

        return self._paginate(request_for_page, 1, following)

    async def _aclient(self) -> httpx.AsyncClient:
        if self._async_client is None:
            settings = await self.aget_settings()
            self._async_client = httpx.AsyncClient(
                headers=settings.headers(),
                timeout=settings.timeout,
                follow_redirects=False,
                transport=self.async_transport,
            )
        return self._async_client

    async def aclose(self) -> None:
        """Close the async client (triggers call this when they finish)."""
        if self._async_client is not None:
            await self._async_client.aclose()
            self._async_client = None

    async def _aopen(self, request: ApiRequest, clock: protocol.AttemptClock) -> httpx.Response:
        """Send one request and return the response with its body not yet read."""
        settings = await self.aget_settings()
        try:
            client = await self._aclient()
            http_request = client.build_request(
                request.method,
                request.url(settings.base_url),
                content=request.body,
                headers=request.headers(),
            )
        except (httpx.HTTPError, ValueError) as error:
            raise _transport_error(request, error) from None
        limiter = self._limiter(settings)
        await limiter.wait_async(_limiter_deadline(limiter))
        try:
            # The attempt's time runs from here; httpx's per-request "timeout" extension bounds each step.
            http_request.extensions["timeout"] = httpx.Timeout(clock.start(request)).as_dict()
            async with asyncio.timeout(clock.seconds_left()):
                response = await client.send(http_request, stream=True)
        except BaseException as error:  # also a cancelled trigger: the slot is given back
            limiter.release()
            if isinstance(error, TimeoutError):
                raise clock.timeout_error(request, 0) from None
            if isinstance(error, httpx.HTTPError | ValueError):
                raise _transport_error(request, error) from None
            raise
        limiter.observe_response(response.status_code, response.headers)
        return response

    async def _aread_body(
        self, request: ApiRequest, response: httpx.Response, clock: protocol.AttemptClock
    ) -> bytes:
        """Async :meth:`_read_body`."""
        body = bytearray()
        try:
            declared = protocol.parse_content_length(response.headers)
            if declared is not None:
                protocol.check_json_body_size(request, declared, http_status=response.status_code)
            async with asyncio.timeout(clock.seconds_left()):
                async for chunk in response.aiter_bytes():
                    body += chunk
                    protocol.check_json_body_size(request, len(body), http_status=response.status_code)
        except TimeoutError:
            raise clock.timeout_error(request, len(body)) from None
        except httpx.HTTPError as error:
            raise _transport_error(request, error) from None
        finally:
            await response.aclose()
        return bytes(body)

    async def _aattempt(
        self, request: ApiRequest, settings: ConnectionSettings, *, accept_stream: bool
    ) -> Envelope | None:
        """One attempt of :meth:`_asend`."""
        clock = protocol.AttemptClock(settings.timeout)
        response = await self._aopen(request, clock)
        if accept_stream and protocol.is_byte_stream(response.status_code, response.headers):
            await response.aclose()
            return None
        body = await self._aread_body(request, response, clock)
        return protocol.parse_envelope(request, response.status_code, response.headers, body)

    @overload
    async def _asend(self, request: ApiRequest) -> Envelope: ...

    @overload
    async def _asend(self, request: ApiRequest, *, accept_stream: Literal[True]) -> Envelope | None: ...

    async def _asend(self, request: ApiRequest, *, accept_stream: bool = False) -> Envelope | None:
        """
        The async send path, as :meth:`_send`; a byte stream (only with ``accept_stream``) is closed
        unread and answered with None: the async side only ever needs a step's status.
        """
        settings = await self.aget_settings()
        uncertain = False
        try:
            async for attempt in tenacity.AsyncRetrying(**self._retrying(request, settings.max_retries)):
                with attempt:
                    try:
                        return await self._aattempt(request, settings, accept_stream=accept_stream)
                    except CloudflareWorkflowsError as error:
                        uncertain = _note_attempt(error, uncertain)
                        raise
        except CloudflareWorkflowsNotFoundError as error:
            if not protocol.is_workflow_not_found(request, error):
                raise
            names = await self._aworkflow_names(request)
            raise protocol.workflow_not_found_error(request, error, names) from None
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def _aworkflow_names(self, request: ApiRequest) -> list[str] | None:
        """Async :meth:`_workflow_names`."""
        try:
            listing = await self._asend(
                protocol.list_workflows_request(request.account_id or "", per_page=LISTING_PAGE_SIZE)
            )
        except CloudflareWorkflowsError:
            return None
        return _names(listing.result)

    async def _acall(self, request: ApiRequest) -> Any:
        """Async :meth:`_call`."""
        return (await self._asend(request)).result

    def _account(self, account_id: str | None) -> str:
        return self.settings.resolve_account_id(account_id)

    # --- connection test ------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """List one workflow: proves the base URL, the credentials and the account id in one cheap GET."""
        try:
            account_id = self._account(None)
            self._call(protocol.list_workflows_request(account_id, per_page=1))
        except CloudflareWorkflowsError as error:
            return False, str(error)
        return True, f"Connected to Cloudflare Workflows for account {account_id}."

    # --- workflows ------------------------------------------------------------------------------

    def list_workflows(
        self, *, search: str | None = None, account_id: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """
        Iterate over the account's workflows (every page).

        :param search: only workflows whose name contains this text.
        :param account_id: defaults to the connection's login.
        """
        account = self._account(account_id)
        yield from self._numbered_pages(
            lambda page: protocol.list_workflows_request(
                account, page=page, per_page=LISTING_PAGE_SIZE, search=search
            )
        )

    def get_workflow(self, workflow_name: str, *, account_id: str | None = None) -> dict[str, Any]:
        """Details of one workflow, including instance counts by status."""
        return self._call(protocol.get_workflow_request(self._account(account_id), workflow_name))

    def list_versions(self, workflow_name: str, *, account_id: str | None = None) -> Iterator[dict[str, Any]]:
        """Iterate over the deployed versions of a workflow (every page)."""
        account = self._account(account_id)
        yield from self._numbered_pages(
            lambda page: protocol.list_versions_request(
                account, workflow_name, page=page, per_page=LISTING_PAGE_SIZE
            )
        )

    # --- instances ------------------------------------------------------------------------------

    def list_instances(
        self,
        workflow_name: str,
        *,
        status: str | None = None,
        date_start: datetime | str | None = None,
        date_end: datetime | str | None = None,
        direction: str | None = None,
        per_page: int = 50,
        account_id: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """
        Iterate over a workflow's instances, following the pagination cursor to the end.

        :param status: only instances in this status (one of the nine instance statuses).
        :param date_start: only instances at or after this time: a timezone-aware datetime (converted to
            UTC) or an ISO 8601 string (UTC when it has no offset); naive datetimes are refused.
        :param date_end: only instances at or before this time, as ``date_start``.
        :param direction: ``"asc"`` or ``"desc"``: the order of the pages after the first. Cloudflare
            takes it only together with a cursor, so the first page comes in the server's default order
            (not documented; the emulator returns oldest first).
        :param per_page: page size, 1-100.
        """
        account = self._account(account_id)

        def request_at(cursor: str) -> ApiRequest:
            return protocol.list_instances_request(
                account,
                workflow_name,
                cursor=cursor or None,  # "" is the first page
                direction=direction,
                status=status,
                date_start=date_start,
                date_end=date_end,
                per_page=per_page,
            )

        yield from self._paginate(
            request_at, "", lambda _cursor, envelope, _received: protocol.next_cursor(envelope.result_info)
        )

    def get_instance(
        self,
        workflow_name: str,
        instance_id: str,
        *,
        simple: bool = False,
        order: str | None = None,
        account_id: str | None = None,
    ) -> dict[str, Any]:
        """
        Status, params, output, error and step log of an instance.

        :param simple: omit the steps (cheap status check).
        :param order: ``"asc"`` (oldest step first, the default) or ``"desc"``.
        """
        request = protocol.get_instance_request(
            self._account(account_id), workflow_name, instance_id, simple=simple, order=order
        )
        return self._call(request)

    def create_instance(
        self,
        workflow_name: str,
        *,
        instance_id: str | None = None,
        params: Any = None,
        instance_retention: Mapping[str, Any] | None = None,
        location_hint: str | None = None,
        account_id: str | None = None,
    ) -> dict[str, Any]:
        """
        Start a new instance. With an explicit ``instance_id`` the call is idempotent and retried.

        When a retry meets "already exists" after an attempt whose answer was lost (a timeout, a dropped
        connection, a 5xx), that attempt created the instance: one GET confirms it and the call returns
        ``{"id", "status"}`` as if it had been answered. "Already exists" on the first attempt is raised.

        :param instance_id: 1-100 characters of ``[a-zA-Z0-9_-]``; generated by Cloudflare when None.
        :param params: JSON-serializable value passed to the Workflow's ``run(event)`` as ``event.payload``.
        :param instance_retention: ``{"success_retention": ..., "error_retention": ...}``.
        :param location_hint: where to run the instance: one of ``validation.LOCATION_HINTS``
            (``"wnam"``, ``"weur"``, ``"enam"``, ``"eeur"``, ``"apac"``, ``"apac-ne"``, ``"apac-se"``,
            ``"oc"``, ``"sam"``, ``"afr"``, ``"me"``).
        """
        account = self._account(account_id)
        request = protocol.create_instance_request(
            account,
            workflow_name,
            instance_id=instance_id,
            params=params,
            instance_retention=instance_retention,
            params_encoding=self.settings.params_encoding,
            location_hint=location_hint,
        )
        try:
            return self._call(request)
        except CloudflareWorkflowsError as error:
            if instance_id is None or not (error.is_already_exists and error.follows_uncertain_attempt):
                raise
        existing = self.get_instance(workflow_name, instance_id, simple=True, account_id=account)
        self.log.info(
            "The answer to creating instance %r was lost and the retry found it (status %s): the lost "
            "attempt created it.",
            instance_id,
            existing.get("status"),
        )
        return {"id": instance_id, "status": existing.get("status")}

    def create_instances_batch(
        self, workflow_name: str, instances: Sequence[Mapping[str, Any]], *, account_id: str | None = None
    ) -> list[dict[str, Any]]:
        """
        Start up to 100 instances in one call.

        Cloudflare silently skips ids that already exist (they are missing from the result).

        :param instances: items ``{"instance_id"?, "params"?, "instance_retention"?, "location_hint"?}``.
        """
        request = protocol.create_instances_batch_request(
            self._account(account_id), workflow_name, instances, params_encoding=self.settings.params_encoding
        )
        return list(self._call(request) or [])

    def delete_instances(
        self, workflow_name: str, instance_ids: Sequence[str], *, account_id: str | None = None
    ) -> dict[str, list[Any]]:
        """
        Delete instances (any status), 100 ids per call of the batch delete endpoint.

        :param instance_ids: the ids; repeated ids are sent once, an empty list makes no call.
        :return: ``{"deleted": [ids], "errors": [{"id", "code", "message"}, ...]}``; an id that does not
            exist (any more) is reported under ``errors`` with code 10400.
        """
        if isinstance(instance_ids, str) or not isinstance(instance_ids, Sequence):
            raise CloudflareWorkflowsConfigurationError(
                f"instance_ids must be a list of instance ids, got {type(instance_ids).__name__}."
            )
        ids = list(dict.fromkeys(validate_instance_id(instance_id) for instance_id in instance_ids))
        account = self._account(account_id)
        outcome: dict[str, list[Any]] = {"deleted": [], "errors": []}
        for start in range(0, len(ids), MAX_BATCH_SIZE):
            request = protocol.delete_instances_request(
                account, workflow_name, ids[start : start + MAX_BATCH_SIZE]
            )
            result = self._call(request)
            result = result if isinstance(result, Mapping) else {}
            outcome["deleted"] += _names(result.get("deleted"), key="id")
            outcome["errors"] += [item for item in result.get("errors") or [] if isinstance(item, Mapping)]
        return outcome

    def change_instance_status(
        self,
        workflow_name: str,
        instance_id: str,
        action: str,
        *,
        rollback: bool | None = None,
        restart_from: Mapping[str, Any] | None = None,
        account_id: str | None = None,
    ) -> dict[str, Any]:
        """
        Pause, resume, terminate or restart an instance.

        A 409 to ``terminate`` or ``pause`` is accepted when one GET shows the instance already is where
        the action takes it (``terminated``; ``paused`` or ``waitingForPause``), e.g. because the answer
        to an earlier attempt was lost; the instance's details are returned then.

        :param action: ``"pause"``, ``"resume"``, ``"terminate"`` or ``"restart"``.
        :param rollback: with ``terminate``: run the rollback handlers first.
        :param restart_from: with ``restart``: ``{"name": <step name as written>, "count"?: n}``.
        """
        account = self._account(account_id)
        request = protocol.change_instance_status_request(
            account,
            workflow_name,
            instance_id,
            action,
            rollback=rollback,
            restart_from=restart_from,
        )
        try:
            return self._call(request)
        except CloudflareWorkflowsConflictError:
            if validate_status_action(action) not in protocol.ACTION_REACHED_STATUSES:
                raise
            details = self.get_instance(workflow_name, instance_id, simple=True, account_id=account)
            if not protocol.reached_status(action, status_of(details)):
                raise
        self._log_reached(instance_id, action, details)
        return details

    def _log_reached(self, instance_id: str, action: str, details: Mapping[str, Any]) -> None:
        self.log.info(
            "Cloudflare answered 409 to %s instance %r, which already is %s: nothing left to do.",
            action,
            instance_id,
            status_of(details),
        )

    def send_event(
        self,
        workflow_name: str,
        instance_id: str,
        event_type: str,
        payload: Any = None,
        *,
        account_id: str | None = None,
    ) -> Any:
        """
        Send an event to an instance (buffered if the instance is not waiting for it yet). Never retried.

        :param event_type: the ``type`` given to ``step.waitForEvent``.
        :param payload: JSON-serializable value, at most 1 MiB encoded.
        """
        request = protocol.send_event_request(
            self._account(account_id), workflow_name, instance_id, event_type, payload
        )
        return self._call(request)

    # --- step output ----------------------------------------------------------------------------

    def get_step_output(
        self,
        workflow_name: str,
        instance_id: str,
        step_name: str,
        step_type: str = StepType.STEP,
        attempt: int | None = None,
        *,
        account_id: str | None = None,
    ) -> StepOutput:
        """
        Status, error and full output of one step (``GET .../step``).

        The name may be given as written in the Workflow (``"load rows"``) or as logged, with its
        counter (``"load rows-1"``): the logged forms are tried in turn, as the sensors do
        (:func:`waiting.step_name_candidates`). When none exists, one GET of the instance makes the
        404 list the steps it has.

        A byte-stream output is read whole into ``output`` as ``bytes``; for large outputs use
        :meth:`stream_step_output` (which takes the exact logged name).

        :param step_name: the step's name, as written or as logged.
        :param step_type: ``"step"`` or ``"waitForEvent"``.
        :param attempt: a specific attempt (>= 1) of a ``step``; None for the latest.
        """
        candidates = step_name_candidates(step_name)
        not_found: CloudflareWorkflowsNotFoundError | None = None
        for candidate in candidates:
            try:
                with self.stream_step_output(
                    workflow_name, instance_id, candidate, step_type, attempt, account_id=account_id
                ) as stream:
                    if not stream.step.is_stream:
                        return stream.step
                    data = b"".join(stream.chunks)
                return StepOutput(
                    status=stream.step.status, error=None, output=data, content_type=OCTET_STREAM_CONTENT_TYPE
                )
            except CloudflareWorkflowsUnknownWorkflowError:
                raise  # _send already named the workflows the account has
            except CloudflareWorkflowsNotFoundError as error:
                not_found = error
        assert not_found is not None  # every candidate answered 404
        details = self.get_instance(workflow_name, instance_id, account_id=account_id)
        tried = " or ".join(repr(candidate) for candidate in candidates)
        raise CloudflareWorkflowsNotFoundError(
            f"Step {step_name!r} ({step_type}) of instance {instance_id!r} of workflow {workflow_name!r} was "
            f"not found as {tried}: it has not started, or has another name. The instance is "
            f"{status_of(details)} and has these steps: {describe_steps(details)}",
            http_status=not_found.http_status,
            errors=not_found.errors,
            cf_ray=not_found.cf_ray,
            method=not_found.method,
            path=not_found.path,
        )

    @contextmanager
    def stream_step_output(
        self,
        workflow_name: str,
        instance_id: str,
        step_name: str,
        step_type: str = StepType.STEP,
        attempt: int | None = None,
        *,
        account_id: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        stall_timeout: float | None = None,
    ) -> Iterator[StepOutputStream]:
        """
        Open a step's output for reading in chunks, so a multi-GB output never sits in memory.

        Opening the response is retried like any GET; a connection dropped while reading the body
        raises :class:`CloudflareWorkflowsConnectionError` (restart the read to try again). JSON answers
        are parsed as by :meth:`get_step_output` and yield no chunks.

        ``chunks`` also has ``readinto(buffer)``, which fills a caller's buffer (see
        :class:`~airflow_provider_cfworkflows.body_reader.ResponseBodyReader`).

        :param stall_timeout: seconds without a single byte of the body before the read fails (the
            total time is not bounded: a big output may take long); defaults to the connection timeout.
        """
        request = protocol.step_output_request(
            self._account(account_id), workflow_name, instance_id, step_name, step_type, attempt
        )
        opened = self._open_step_output(request)
        if isinstance(opened, StepOutput):
            yield StepOutputStream(step=opened, content_length=None)
            return
        try:
            content_length = protocol.parse_content_length(opened.headers)
            yield StepOutputStream(
                step=protocol.stream_step_status(),
                content_length=content_length,
                chunks=self._iter_body(request, opened, content_length, chunk_size, stall_timeout),
            )
        finally:
            opened.close()

    def _open_step_output(self, request: ApiRequest) -> requests.Response | StepOutput:
        """Open ``/step``: an unread octet-stream response, or the parsed JSON answer."""
        answer = self._send(request, accept_stream=True)
        if isinstance(answer, requests.Response):
            return answer
        return protocol.parse_step_output(answer.result)

    def _iter_body(
        self,
        request: ApiRequest,
        response: requests.Response,
        content_length: int | None,
        chunk_size: int,
        stall_timeout: float | None = None,
    ) -> ResponseBodyReader:
        return ResponseBodyReader(
            response=response,
            request=request,
            content_length=content_length,
            chunk_size=chunk_size,
            stall_timeout=self.settings.timeout if stall_timeout is None else stall_timeout,
        )

    # --- async twins (used by triggers) ---------------------------------------------------------

    async def aget_instance(
        self,
        workflow_name: str,
        instance_id: str,
        *,
        simple: bool = False,
        order: str | None = None,
        account_id: str | None = None,
    ) -> dict[str, Any]:
        """Async :meth:`get_instance`."""
        settings = await self.aget_settings()
        request = protocol.get_instance_request(
            settings.resolve_account_id(account_id), workflow_name, instance_id, simple=simple, order=order
        )
        return await self._acall(request)

    async def achange_instance_status(
        self,
        workflow_name: str,
        instance_id: str,
        action: str,
        *,
        rollback: bool | None = None,
        restart_from: Mapping[str, Any] | None = None,
        account_id: str | None = None,
    ) -> dict[str, Any]:
        """Async :meth:`change_instance_status` (a trigger's ``on_kill`` terminates with it)."""
        settings = await self.aget_settings()
        account = settings.resolve_account_id(account_id)
        request = protocol.change_instance_status_request(
            account,
            workflow_name,
            instance_id,
            action,
            rollback=rollback,
            restart_from=restart_from,
        )
        try:
            return await self._acall(request)
        except CloudflareWorkflowsConflictError:
            if validate_status_action(action) not in protocol.ACTION_REACHED_STATUSES:
                raise
            details = await self.aget_instance(workflow_name, instance_id, simple=True, account_id=account)
            if not protocol.reached_status(action, status_of(details)):
                raise
        self._log_reached(instance_id, action, details)
        return details

    async def aget_step_output(
        self,
        workflow_name: str,
        instance_id: str,
        step_name: str,
        step_type: str = StepType.STEP,
        attempt: int | None = None,
        *,
        account_id: str | None = None,
    ) -> StepOutput:
        """
        Async :meth:`get_step_output` for status checks: a byte-stream output is not downloaded
        (``output`` is None, ``content_type`` is ``application/octet-stream``).
        """
        settings = await self.aget_settings()
        request = protocol.step_output_request(
            settings.resolve_account_id(account_id), workflow_name, instance_id, step_name, step_type, attempt
        )
        envelope = await self._asend(request, accept_stream=True)
        if envelope is None:
            return protocol.stream_step_status()
        return protocol.parse_step_output(envelope.result)


def _limiter_deadline(limiter: ratelimit.RateLimiter) -> float | None:
    """The wait's deadline on the limiter's clock (a monotonic scale), or None."""
    left = deadlines.seconds_left()
    return None if left is None else limiter.clock.now() + left


def _note_attempt(error: CloudflareWorkflowsError, uncertain: bool) -> bool:
    """Mark ``error`` when an earlier attempt may have taken effect; whether any attempt so far may have."""
    error.follows_uncertain_attempt = uncertain
    return uncertain or error.may_have_taken_effect


def _names(items: Any, *, key: str = "name") -> list[str]:
    """The ``key`` of each item of a listing (items without one are skipped)."""
    if not isinstance(items, list):
        return []
    return [item[key] for item in items if isinstance(item, Mapping) and isinstance(item.get(key), str)]


def _set_read_timeout(response: requests.Response, seconds: float) -> None:
    """
    Set the socket timeout of the response's next reads: urllib3 applies the one given to the request
    to every read, and an attempt's clock needs the time left instead.
    """
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(seconds)


def _never_sent(error: BaseException) -> bool:
    """Whether a transport error proves the request never left: resolving or connecting failed."""
    if isinstance(
        error, requests.ConnectTimeout | httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout
    ):
        return True
    if isinstance(error, requests.ConnectionError) and error.args:
        # requests wraps connect failures as MaxRetryError(reason=NewConnectionError / NameResolutionError /
        # ConnectTimeoutError); both subclass urllib3's ConnectTimeoutError.
        reason = getattr(error.args[0], "reason", None)
        return isinstance(reason, urllib3.exceptions.ConnectTimeoutError)
    return False


def _is_header_error(error: BaseException) -> bool:
    """A header value HTTP cannot carry (its text would show the value, e.g. a token with a newline)."""
    if isinstance(error, requests.exceptions.InvalidHeader | httpx.LocalProtocolError):
        return True
    return isinstance(error, ValueError) and not isinstance(error, requests.RequestException)


def _transport_error(request: ApiRequest, error: BaseException) -> CloudflareWorkflowsError:
    """
    Wrap a transport error. Its text holds at most the URL, which never carries a credential, except
    for header errors: those are described without their text.
    """
    if _is_header_error(error):
        return CloudflareWorkflowsConfigurationError(
            "A request header could not be built: a connection field (the API token, email or API key) "
            "holds characters an HTTP header cannot carry. The value is not shown; re-enter it.",
            method=request.method,
            path=request.path,
        )
    timed_out = isinstance(
        error, requests.Timeout | httpx.TimeoutException | urllib3.exceptions.TimeoutError | TimeoutError
    )
    never_sent = _never_sent(error)
    what = "timed out" if timed_out else "failed before a complete response"
    if never_sent:
        what = "could not connect (nothing was sent)"
    return CloudflareWorkflowsConnectionError(
        f"Request {what}: {type(error).__name__}: {str(error)[:300]}",
        request_sent=not never_sent,
        method=request.method,
        path=request.path,
    )
