"""Hook for the Cloudflare Workflows REST API.

.. seealso:: https://developers.cloudflare.com/api/resources/workflows/
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

import httpx
import requests
import tenacity
from airflow.sdk import BaseHook
from airflow.sdk.log import amask_secret, mask_secret

from airflow_provider_cfworkflows import protocol, ratelimit
from airflow_provider_cfworkflows.connection import (
    CONN_TYPE,
    DEFAULT_CONN_ID,
    ConnectionSettings,
    settings_from_connection,
)
from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowsConnectionError,
    CloudflareWorkflowsError,
    CloudflareWorkflowsRateLimitError,
    is_transient_error,
)
from airflow_provider_cfworkflows.models import (
    OCTET_STREAM_CONTENT_TYPE,
    StepOutput,
    StepOutputStream,
)
from airflow_provider_cfworkflows.statuses import StepType

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from airflow_provider_cfworkflows.protocol import ApiRequest, Envelope

DEFAULT_CHUNK_SIZE = 1024 * 1024
# Page size of the page-numbered listings (workflows, versions): the API's maximum.
LISTING_PAGE_SIZE = 100
_Position = TypeVar("_Position", int, str)


class CloudflareWorkflowsHook(BaseHook):
    """
    Calls the Cloudflare Workflows REST API with the credentials of an Airflow connection.

    Idempotent calls (GETs, a create with an explicit ``instance_id``) are retried on 408, 429 (honouring
    ``Retry-After``), 5xx, ``success: false``, malformed responses, timeouts and dropped connections,
    with exponential backoff and jitter; each retry is logged with its reason. Errors are typed (see
    :mod:`airflow_provider_cfworkflows.exceptions`) and never contain a credential.

    :param cloudflare_conn_id: connection of type ``cloudflare_workflows``: login = Account ID,
        password = API Token, host = API base URL (optional), extras ``email`` + ``api_key`` (legacy
        global API key), ``timeout`` and ``max_retries``.
    :param timeout: seconds to wait for connecting and for each read; overrides the connection's extra.
    :param max_retries: retries of idempotent calls; overrides the connection's extra.
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
        return settings

    async def aget_settings(self) -> ConnectionSettings:
        """The connection's settings, resolved with Airflow's async connection API (safe on an event loop)."""
        if self._async_settings is None:
            conn = await BaseHook.aget_connection(self.cloudflare_conn_id)
            settings = self._settings_from(conn, await conn.aextra_dejson())
            for secret in settings.credentials.secrets:
                await amask_secret(secret)
            self._async_settings = settings
        return self._async_settings

    @cached_property
    def session(self) -> requests.Session:
        """A ``requests`` session reusing connections across calls."""
        session = requests.Session()
        session.headers.update(self.settings.headers())
        return session

    def _retrying(self, request: ApiRequest, max_retries: int) -> dict[str, Any]:
        """Tenacity arguments shared by the sync and async transports."""
        retries = max_retries if request.idempotent else 0

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, CloudflareWorkflowsRateLimitError):
                return 0.0  # the rate limiter holds the next attempt (and every other caller) past the 429
            return protocol.retry_delay(state.attempt_number, error)

        def log_retry(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            self.log.warning(
                "Retrying %s (attempt %d of %d) in %.1f s after: %s",
                request.describe(),
                state.attempt_number + 1,
                retries + 1,
                state.upcoming_sleep,
                error,
            )

        return {
            "stop": tenacity.stop_after_attempt(retries + 1),
            "wait": wait,
            "retry": tenacity.retry_if_exception(is_transient_error),
            "before_sleep": log_retry,
            "reraise": True,
        }

    def _limiter(self, settings: ConnectionSettings) -> ratelimit.RateLimiter:
        """The rate limiter shared by every caller of this credential in the process."""
        if self._rate_limiter is None:
            self._rate_limiter = ratelimit.limiter_for_settings(settings)
        return self._rate_limiter

    def _open(self, request: ApiRequest) -> requests.Response:
        """Send one request and return the response with its body not yet read."""
        limiter = self._limiter(self.settings)
        limiter.wait_sync()
        try:
            response = self.session.request(
                request.method,
                request.url(self.settings.base_url),
                data=request.body,
                headers=request.headers(),
                timeout=self.settings.timeout,
                stream=True,
                allow_redirects=False,
            )
        except BaseException as error:  # no response: the slot is given back
            limiter.release()
            if isinstance(error, requests.RequestException):
                raise _connection_error(request, error) from None
            raise
        limiter.observe_response(response.status_code, response.headers)
        return response

    def _read_body(self, request: ApiRequest, response: requests.Response) -> bytes:
        try:
            return response.content
        except requests.RequestException as error:
            raise _connection_error(request, error) from None
        finally:
            response.close()

    @overload
    def _send(self, request: ApiRequest) -> Envelope: ...

    @overload
    def _send(self, request: ApiRequest, *, accept_stream: Literal[True]) -> Envelope | requests.Response: ...

    def _send(self, request: ApiRequest, *, accept_stream: bool = False) -> Envelope | requests.Response:
        """
        The sync send path: open, then either hand back a byte stream unread (only with
        ``accept_stream``) or read and parse the JSON envelope; the whole is retried as one attempt.
        """
        for attempt in tenacity.Retrying(**self._retrying(request, self.settings.max_retries)):
            with attempt:
                response = self._open(request)
                if accept_stream and protocol.is_byte_stream(response.status_code, response.headers):
                    return response
                body = self._read_body(request, response)
                return protocol.parse_envelope(request, response.status_code, response.headers, body)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

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

    async def _aopen(self, request: ApiRequest) -> httpx.Response:
        """Send one request and return the response with its body not yet read."""
        client = await self._aclient()
        settings = await self.aget_settings()
        http_request = client.build_request(
            request.method, request.url(settings.base_url), content=request.body, headers=request.headers()
        )
        limiter = self._limiter(settings)
        await limiter.wait_async()
        try:
            response = await client.send(http_request, stream=True)
        except BaseException as error:  # also a cancelled trigger: the slot is given back
            limiter.release()
            if isinstance(error, httpx.HTTPError):
                raise _connection_error(request, error) from None
            raise
        limiter.observe_response(response.status_code, response.headers)
        return response

    async def _aread_body(self, request: ApiRequest, response: httpx.Response) -> bytes:
        try:
            return await response.aread()
        except httpx.HTTPError as error:
            raise _connection_error(request, error) from None
        finally:
            await response.aclose()

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
        async for attempt in tenacity.AsyncRetrying(**self._retrying(request, settings.max_retries)):
            with attempt:
                response = await self._aopen(request)
                if accept_stream and protocol.is_byte_stream(response.status_code, response.headers):
                    await response.aclose()
                    return None
                body = await self._aread_body(request, response)
                return protocol.parse_envelope(request, response.status_code, response.headers, body)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

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
        :param date_start: only instances created at or after this UTC time (ISO 8601, no offset).
        :param date_end: only instances created at or before this UTC time.
        :param direction: ``"asc"`` or ``"desc"``.
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
        account_id: str | None = None,
    ) -> dict[str, Any]:
        """
        Start a new instance. With an explicit ``instance_id`` the call is idempotent and retried.

        :param instance_id: 1-100 characters of ``[a-zA-Z0-9_-]``; generated by Cloudflare when None.
        :param params: JSON-serializable value passed to the Workflow's ``run(event)`` as ``event.payload``.
        :param instance_retention: ``{"success_retention": ..., "error_retention": ...}``.
        """
        request = protocol.create_instance_request(
            self._account(account_id),
            workflow_name,
            instance_id=instance_id,
            params=params,
            instance_retention=instance_retention,
        )
        return self._call(request)

    def create_instances_batch(
        self, workflow_name: str, instances: Sequence[Mapping[str, Any]], *, account_id: str | None = None
    ) -> list[dict[str, Any]]:
        """
        Start up to 100 instances in one call.

        Cloudflare silently skips ids that already exist (they are missing from the result).

        :param instances: items ``{"instance_id"?, "params"?, "instance_retention"?}``.
        """
        request = protocol.create_instances_batch_request(self._account(account_id), workflow_name, instances)
        return list(self._call(request) or [])

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

        :param action: ``"pause"``, ``"resume"``, ``"terminate"`` or ``"restart"``.
        :param rollback: with ``terminate``: run the rollback handlers first.
        :param restart_from: with ``restart``: ``{"name": <step name as written>, "count"?: n}``.
        """
        request = protocol.change_instance_status_request(
            self._account(account_id),
            workflow_name,
            instance_id,
            action,
            rollback=rollback,
            restart_from=restart_from,
        )
        return self._call(request)

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

        A byte-stream output is read whole into ``output`` as ``bytes``; for large outputs use
        :meth:`stream_step_output`.

        :param step_name: the name as logged, with its counter suffix (``"fetch data-1"``).
        :param step_type: ``"step"`` or ``"waitForEvent"``.
        :param attempt: a specific attempt (>= 1) of a ``step``; None for the latest.
        """
        with self.stream_step_output(
            workflow_name, instance_id, step_name, step_type, attempt, account_id=account_id
        ) as stream:
            if not stream.step.is_stream:
                return stream.step
            data = b"".join(stream.chunks)
        return StepOutput(
            status=stream.step.status, error=None, output=data, content_type=OCTET_STREAM_CONTENT_TYPE
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
    ) -> Iterator[StepOutputStream]:
        """
        Open a step's output for reading in chunks, so a multi-GB output never sits in memory.

        Opening the response is retried like any GET; a connection dropped while reading the body
        raises :class:`CloudflareWorkflowsConnectionError` (restart the read to try again). JSON answers
        are parsed as by :meth:`get_step_output` and yield no chunks.
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
                chunks=self._iter_body(request, opened, content_length, chunk_size),
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
        self, request: ApiRequest, response: requests.Response, content_length: int | None, chunk_size: int
    ) -> Iterator[bytes]:
        received = 0
        try:
            for chunk in response.iter_content(chunk_size=chunk_size):
                received += len(chunk)
                yield chunk
        except requests.RequestException as error:
            raise _connection_error(request, error, received=received) from None
        if content_length is not None and received != content_length:
            raise CloudflareWorkflowsConnectionError(
                f"Step output stream ended after {received} of {content_length} bytes",
                method=request.method,
                path=request.path,
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
        request = protocol.change_instance_status_request(
            settings.resolve_account_id(account_id),
            workflow_name,
            instance_id,
            action,
            rollback=rollback,
            restart_from=restart_from,
        )
        return await self._acall(request)

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


def _connection_error(
    request: ApiRequest, error: BaseException, *, received: int | None = None
) -> CloudflareWorkflowsConnectionError:
    """Wrap a transport error (its text holds at most the URL, which never carries a credential)."""
    timed_out = isinstance(error, requests.Timeout | httpx.TimeoutException)
    what = "timed out" if timed_out else "failed before a complete response"
    if received is not None:
        what = f"was cut off after {received} bytes of the body"
    return CloudflareWorkflowsConnectionError(
        f"Request {what}: {type(error).__name__}: {str(error)[:300]}",
        method=request.method,
        path=request.path,
    )
