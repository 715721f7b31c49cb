"""The wire under :class:`~airflow_provider_cfworkflows.hooks.workflows.CloudflareWorkflowsHook`.

The connection's settings, the retry policy, the rate limiter, the sync (``requests``) and async
(``httpx``) send paths, the bounded reads of JSON answers, numbered pages, and the mapping of transport
failures to typed errors. The hook's API verbs build requests with :mod:`.protocol` and send them here.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Iterator, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, overload
from urllib.parse import urlsplit

import httpx
import requests
import tenacity
import urllib3.exceptions
from airflow.sdk import BaseHook
from airflow.sdk.log import amask_secret, mask_secret

from airflow_provider_cfworkflows import deadlines, protocol, ratelimit, response_deadline
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
from airflow_provider_cfworkflows.models import end_sentence

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from airflow_provider_cfworkflows.protocol import ApiRequest, Envelope


# Largest piece of a JSON answer read at once: each read returns what has arrived, so the attempt's
# clock and the size cap are checked between reads.
JSON_READ_SIZE = 64 * 1024
# Page size of the page-numbered listings (workflows, versions): the API's maximum.
LISTING_PAGE_SIZE = 100


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

    Until the API has answered this hook once, a failure to connect that repetition cannot fix (see
    :func:`nothing_answers`: the connection refused, a host name that does not exist, a plain-HTTP server
    at an ``https://`` URL) is not retried, and a call that reached nothing fails with
    :func:`unreachable_message`: the host and port, the operating system's error in full and what to
    check. Once the API has answered, the same errors are retried like any other transient fault.

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
        # Whether any HTTP response (of any status) came back to this hook: see nothing_answers.
        self._answered = False

    # --- connection and transports --------------------------------------------------------------

    def _settings_from(self, conn: Connection, extras: Mapping[str, Any]) -> ConnectionSettings:
        """The connection's validated settings; logs, once per hook, that ``allow_http`` sends unencrypted."""
        settings = settings_from_connection(
            login=conn.login,
            password=conn.password,
            host=conn.host,
            port=conn.port,
            extras=extras,
            timeout=self._timeout_override,
            max_retries=self._max_retries_override,
        )
        warning = insecure_http_warning(settings)
        if warning is not None:
            self.log.warning(warning)
        return settings

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
        """A ``requests`` session reusing connections, reading status lines and headers by a deadline."""
        session = requests.Session()
        session.headers.update(self.settings.headers())
        for prefix in ("https://", "http://"):
            session.mount(prefix, response_deadline.DeadlineAdapter())
        return session

    def _retrying(self, request: ApiRequest, max_retries: int) -> dict[str, Any]:
        """Tenacity arguments shared by the sync and async transports."""

        def retryable(error: BaseException) -> bool:
            if not is_transient_error(error) or (not self._answered and nothing_answers(error)):
                return False
            # A call that must not run twice is repeated only when it provably never arrived.
            return request.idempotent or not (
                isinstance(error, CloudflareWorkflowsError) and error.may_have_taken_effect
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
            # Each socket read waits at most socket_timeout; the status line and headers, however slowly
            # they come, must also all be there by the attempt's end.
            with response_deadline.headers_by(clock.ends_at):
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
            if isinstance(error, requests.ReadTimeout) and clock.seconds_left() <= 0:
                raise clock.timeout_error(request) from None
            if isinstance(error, requests.RequestException | ValueError):
                raise _transport_error(request, error, self.settings.base_url) from None
            raise
        self._answered = True
        limiter.observe_response(response.status_code, response.headers, ticket)
        return response

    def _read_body(
        self, request: ApiRequest, response: requests.Response, clock: protocol.AttemptClock
    ) -> bytes:
        """The whole JSON body, within the attempt's time and the size cap (an endless body fails)."""
        body = bytearray()
        try:
            declared = protocol.parse_content_length(response.headers)
            protocol.check_json_body_size(request, declared, http_status=response.status_code)
            while True:
                clock.check(request, len(body), http_status=response.status_code)
                _set_read_timeout(response, clock.socket_timeout())
                # read1 returns what has arrived (one socket read): a slow drip cannot hold the call
                # past its clock, as read(n) would until n bytes came.
                chunk = response.raw.read1(JSON_READ_SIZE, decode_content=True)
                if not chunk:
                    return bytes(body)
                body += chunk
                protocol.check_json_body_size(request, len(body), http_status=response.status_code)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
            raise _transport_error(
                request, error, self.settings.base_url, http_status=response.status_code
            ) from None
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
        except CloudflareWorkflowsConnectionError as error:
            self._raise_unreachable(error, self.settings.base_url)
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

    def _numbered_pages(self, request_for_page: Callable[[int], ApiRequest]) -> Iterator[dict[str, Any]]:
        """
        Every item of a page-numbered listing, page after page (pages of ``LISTING_PAGE_SIZE`` from 1;
        ``total_pages``, or a short page, ends it).

        :param request_for_page: the request for a page number.
        """
        page = 1
        while True:
            envelope = self._send(request_for_page(page))
            items = list(envelope.result or [])
            yield from items
            if not protocol.has_next_page(envelope.result_info, page, len(items), LISTING_PAGE_SIZE):
                return
            page += 1

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
            raise _transport_error(request, error, settings.base_url) from None
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
                raise clock.timeout_error(request) from None
            if isinstance(error, httpx.HTTPError | ValueError):
                raise _transport_error(request, error, settings.base_url) from None
            raise
        self._answered = True
        limiter.observe_response(response.status_code, response.headers, ticket)
        return response

    async def _aread_body(
        self, request: ApiRequest, response: httpx.Response, clock: protocol.AttemptClock, base_url: str
    ) -> bytes:
        """Async :meth:`_read_body`."""
        body = bytearray()
        try:
            declared = protocol.parse_content_length(response.headers)
            protocol.check_json_body_size(request, declared, http_status=response.status_code)
            async with asyncio.timeout(clock.seconds_left()):
                async for chunk in response.aiter_bytes():
                    body += chunk
                    protocol.check_json_body_size(request, len(body), http_status=response.status_code)
        except TimeoutError:
            raise clock.timeout_error(request, len(body), http_status=response.status_code) from None
        except httpx.HTTPError as error:
            raise _transport_error(request, error, base_url, http_status=response.status_code) from None
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
        body = await self._aread_body(request, response, clock, settings.base_url)
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
        except CloudflareWorkflowsConnectionError as error:
            self._raise_unreachable(error, settings.base_url)
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

    def _raise_unreachable(self, error: CloudflareWorkflowsConnectionError, base_url: str) -> None:
        """
        A call that reached nothing (a failure to resolve, connect or shake hands: an operating-system
        error, not the wait's deadline) before the API ever answered this hook fails saying so.
        """
        if self._answered or error.request_sent or root_os_error(error) is None:
            return
        raise CloudflareWorkflowsConnectionError(
            unreachable_message(base_url, error),
            request_sent=False,
            method=error.method,
            path=error.path,
        ) from None


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
    """
    Whether a transport error proves the request never left: resolving or connecting failed, or the
    TLS handshake met a server that speaks plain HTTP.
    """
    if isinstance(
        error, requests.ConnectTimeout | httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout
    ):
        return True
    if isinstance(error, requests.ConnectionError) and error.args:
        # requests wraps connect failures as MaxRetryError(reason=NewConnectionError / NameResolutionError /
        # ConnectTimeoutError); both subclass urllib3's ConnectTimeoutError.
        reason = getattr(error.args[0], "reason", None)
        if isinstance(reason, urllib3.exceptions.ConnectTimeoutError):
            return True
    return _speaks_plain_http(root_os_error(error))


# OpenSSL's reasons for a first "TLS record" that is not one: the server answered in plain HTTP.
_PLAIN_HTTP_TLS_REASONS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL"})
# getaddrinfo's answers for a name that does not exist (not EAI_AGAIN, a resolver that did not answer).
_NO_SUCH_NAME = frozenset(
    code for code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)) if code is not None
)


def _speaks_plain_http(root: OSError | None) -> bool:
    return isinstance(root, ssl.SSLError) and root.reason in _PLAIN_HTTP_TLS_REASONS


def root_os_error(error: BaseException) -> OSError | None:
    """
    The operating system's error at the root of a transport error's chain (through ``args``, urllib3's
    ``reason``, ``__cause__`` and ``__context__``), or None: e.g. ``ConnectionRefusedError``.
    """
    root: tuple[int, OSError] | None = None
    seen: set[int] = set()
    pending: list[tuple[BaseException | None, int]] = [(error, 0)]
    while pending:
        current, depth = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and not _is_wrapper(current) and (root is None or depth > root[0]):
            root = (depth, current)
        reason = getattr(current, "reason", None)  # urllib3's MaxRetryError keeps its cause here
        linked = [*current.args, reason, current.__context__, current.__cause__]
        pending.extend((item, depth + 1) for item in linked if isinstance(item, BaseException))
    return root[1] if root else None


def _is_wrapper(error: OSError) -> bool:
    """requests' and urllib3's errors subclass OSError but only wrap the real one (with its long repr)."""
    return type(error).__module__.split(".")[0] in ("requests", "urllib3", "httpx", "httpcore")


def transport_cause(error: BaseException) -> str:
    """
    Why a request got no complete response, in full: the operating system's error at the root of the
    chain (``ConnectionRefusedError: [Errno 111] Connection refused``, ``gaierror: [Errno -2] Name or
    service not known``, ``TimeoutError: timed out``), else the error's own text.
    """
    root = root_os_error(error)
    if root is not None:
        return f"{type(root).__name__}: {root}"
    if isinstance(error, CloudflareWorkflowsError):
        return error.message
    return f"{type(error).__name__}: {error}"


def nothing_answers(error: BaseException) -> bool:
    """
    Whether a request failed in a way that trying again cannot fix while nothing at the address has
    answered yet: the connection was refused (nothing listens on that port), the host name does not
    exist, or the server speaks plain HTTP to an ``https://`` URL. A resolver that did not answer
    (``EAI_AGAIN``), a connect timeout or an unreachable network may pass, and are retried.
    """
    if not isinstance(error, CloudflareWorkflowsConnectionError) or error.request_sent:
        return False
    root = root_os_error(error)
    if isinstance(root, socket.gaierror):
        return root.errno in _NO_SUCH_NAME
    return isinstance(root, ConnectionRefusedError) or _speaks_plain_http(root)


def unreachable_message(base_url: str, error: BaseException) -> str:
    """
    What a call that got no HTTP answer at all says: where it went (host:port and the base URL), the
    cause in full, and what to check.
    """
    host = urlsplit(base_url).netloc
    cause = transport_cause(error)
    message = f"Could not reach the Cloudflare Workflows API at {host} ({base_url}): {end_sentence(cause)}"
    if _speaks_plain_http(root_os_error(error)):
        return (
            f"{message} The server there answers plain HTTP, not HTTPS: a connection host without a scheme "
            f"means https://. Write the scheme in the host (http://{host} for the local emulator; in a URI: "
            f"cloudflare-workflows://http://<account id>:<token>@{host})."
        )
    return (
        f"{message} Check the connection's host and port, and that the API (or the local emulator) is "
        "running and reachable from this machine."
    )


def _is_header_error(error: BaseException) -> bool:
    """A header value HTTP cannot carry (its text would show the value, e.g. a token with a newline)."""
    if isinstance(error, requests.exceptions.InvalidHeader | httpx.LocalProtocolError):
        return True
    return isinstance(error, ValueError) and not isinstance(error, requests.RequestException)


def _transport_error(
    request: ApiRequest, error: BaseException, base_url: str, *, http_status: int | None = None
) -> CloudflareWorkflowsError:
    """
    Wrap a transport error: the host it went to and the cause in full (:func:`transport_cause`), which
    never carries a credential, except for header errors: those are described without their text.

    :param http_status: the status of a response whose body failed (its server did answer).
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
        f"Request to {urlsplit(base_url).netloc} {what}: {transport_cause(error)}",
        request_sent=not never_sent,
        http_status=http_status,
        method=request.method,
        path=request.path,
    )
