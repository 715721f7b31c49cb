"""The wire under :class:`~airflow_provider_cfworkflows.hooks.workflows.CloudflareWorkflowsHook`.

The connection's settings, the retry policy, the rate limiter, the sync (``requests``) and async
(``httpx``) send paths, the bounded reads of JSON answers, pagination, and the mapping of transport
failures to typed errors. The hook's API verbs build requests with :mod:`.protocol` and send them here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

import httpx
import requests
import tenacity
import urllib3.exceptions
from airflow.sdk import BaseHook
from airflow.sdk.log import amask_secret, mask_secret

from airflow_provider_cfworkflows import deadlines, protocol, ratelimit
from airflow_provider_cfworkflows.connection import (
    DEFAULT_CONN_ID,
    ConnectionSettings,
    insecure_http_warning,
    settings_from_connection,
)
from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowsConfigurationError,
    CloudflareWorkflowsConnectionError,
    CloudflareWorkflowsError,
    CloudflareWorkflowsNotFoundError,
    CloudflareWorkflowsRateLimitError,
    is_transient_error,
)

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from airflow_provider_cfworkflows.protocol import ApiRequest, Envelope


# Largest piece of a JSON answer read at once: each read returns what has arrived, so the attempt's
# clock and the size cap are checked between reads.
JSON_READ_SIZE = 64 * 1024
# Page size of the page-numbered listings (workflows, versions): the API's maximum.
LISTING_PAGE_SIZE = 100
_Position = TypeVar("_Position", int, str)


class CloudflareWorkflowsTransport(BaseHook):
    """
    Sends :class:`~airflow_provider_cfworkflows.protocol.ApiRequest` objects with the credentials of an
    Airflow connection, and returns their parsed envelopes (the base of the hook).

    Idempotent calls (GETs, a create with an explicit ``instance_id``, pause/resume/terminate) are
    retried on 408, 429 (after the rate limiter's pause), 5xx, ``success: false``, malformed responses,
    timeouts and dropped connections, with exponential backoff and jitter; each retry is logged with its
    reason. Calls that must not run twice (an event, a restart, a create without an id) are retried only
    when the request provably never arrived (a failure to connect, a 429). Retries never start past the
    deadline of the wait they serve (:mod:`airflow_provider_cfworkflows.deadlines`). Errors are typed
    (see :mod:`airflow_provider_cfworkflows.exceptions`) and never contain a credential.

    :param cloudflare_conn_id: connection of type ``cloudflare_workflows``.
    :param timeout: seconds one attempt of a call may take (overrides the connection's extra).
    :param max_retries: retries of a call (overrides the connection's extra).
    """

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
        ticket = limiter.wait_sync(_limiter_deadline(limiter))
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
        limiter.observe_response(response.status_code, response.headers, ticket)
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
        return item_names(listing.result)

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
        ticket = await limiter.wait_async(_limiter_deadline(limiter))
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
        limiter.observe_response(response.status_code, response.headers, ticket)
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
        return item_names(listing.result)

    async def _acall(self, request: ApiRequest) -> Any:
        """Async :meth:`_call`."""
        return (await self._asend(request)).result

    def _account(self, account_id: str | None) -> str:
        return self.settings.resolve_account_id(account_id)


def _limiter_deadline(limiter: ratelimit.RateLimiter) -> float | None:
    """The wait's deadline on the limiter's clock (a monotonic scale), or None."""
    left = deadlines.seconds_left()
    return None if left is None else limiter.clock.now() + left


def _note_attempt(error: CloudflareWorkflowsError, uncertain: bool) -> bool:
    """Mark ``error`` when an earlier attempt may have taken effect; whether any attempt so far may have."""
    error.follows_uncertain_attempt = uncertain
    return uncertain or error.may_have_taken_effect


def item_names(items: Any, *, key: str = "name") -> list[str]:
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
