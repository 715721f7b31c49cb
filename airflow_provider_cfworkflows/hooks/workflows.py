"""Hook for the Cloudflare Workflows REST API: one method per API verb, sync and async.

.. seealso:: https://developers.cloudflare.com/api/resources/workflows/
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any

import requests

from airflow_provider_cfworkflows import protocol
from airflow_provider_cfworkflows.body_reader import ResponseBodyReader
from airflow_provider_cfworkflows.connection import (
    CONN_TYPE,
    DEFAULT_CONN_ID,
)
from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowsConfigurationError,
    CloudflareWorkflowsConflictError,
    CloudflareWorkflowsError,
    CloudflareWorkflowsNotFoundError,
    CloudflareWorkflowStepNotFoundError,
    CloudflareWorkflowsUnknownWorkflowError,
)
from airflow_provider_cfworkflows.instance_details import (
    explain_missing_step,
    status_of,
    step_name_candidates,
)
from airflow_provider_cfworkflows.models import (
    StepOutput,
    StepOutputStream,
)
from airflow_provider_cfworkflows.statuses import StepType
from airflow_provider_cfworkflows.transport import LISTING_PAGE_SIZE, CloudflareWorkflowsTransport, item_names
from airflow_provider_cfworkflows.validation import (
    MAX_BATCH_SIZE,
    validate_instance_id,
    validate_status_action,
)

DEFAULT_CHUNK_SIZE = 1024 * 1024


class CloudflareWorkflowsHook(CloudflareWorkflowsTransport):
    """
    Calls the Cloudflare Workflows REST API with the credentials of an Airflow connection.

    Each method builds its request (:mod:`airflow_provider_cfworkflows.protocol`) and sends it through
    :class:`~airflow_provider_cfworkflows.transport.CloudflareWorkflowsTransport`, which retries what is
    safe to retry, paces calls by the API budget and raises typed errors that never hold a credential.

    :param cloudflare_conn_id: connection of type ``cloudflare_workflows``: login = Account ID,
        password = API Token, host = API base URL (optional), extras ``email`` + ``api_key`` (legacy
        global API key), ``timeout``, ``max_retries``, ``allow_http``, ``params_encoding``,
        ``rate_limit``.
    :param timeout: seconds one attempt of a call may take, from connecting to the last byte of its JSON
        answer (for byte-stream outputs: seconds without any byte arriving); overrides the connection's
        extra.
    :param max_retries: retries of a call; overrides the connection's extra.
    """

    conn_name_attr = "cloudflare_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "Cloudflare Workflows"

    # --- connection test ------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """
        List one workflow: proves the base URL, the credentials and the account id in one cheap GET.

        The result is also logged: ``airflow connections test`` prints only "Connection success!".
        """
        try:
            account_id = self._account(None)
            self._call(protocol.list_workflows_request(account_id, per_page=1))
        except CloudflareWorkflowsError as error:
            return False, str(error)
        message = f"Connected to Cloudflare Workflows at {self.settings.base_url} for account {account_id}."
        self.log.info("%s", message)
        return True, message

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

    def get_version_graph(
        self, workflow_name: str, version_id: str, *, account_id: str | None = None
    ) -> dict[str, Any]:
        """
        The graph of a Workflow version: the steps its code declares (``step_do``, ``step_sleep``,
        ``step_wait_for_event`` with its event type, ...), as Cloudflare parsed it. The ``graph`` field
        is None when Cloudflare has none for the version. An instance's version is its ``versionId``.
        """
        return self._call(
            protocol.get_version_graph_request(self._account(account_id), workflow_name, version_id)
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
        cursor = None  # the first page
        while True:
            request = protocol.list_instances_request(
                account,
                workflow_name,
                cursor=cursor,
                direction=direction,
                status=status,
                date_start=date_start,
                date_end=date_end,
                per_page=per_page,
            )
            envelope = self._send(request)
            yield from envelope.result or []
            cursor = protocol.next_cursor(envelope.result_info)
            if cursor is None:
                return

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
            outcome["deleted"] += item_names(result.get("deleted"), key="id")
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
        (:func:`~airflow_provider_cfworkflows.instance_details.step_name_candidates`). When none
        exists, one GET of the instance makes the 404 say why (not started yet, or never will run) and
        list the steps it has.

        A byte-stream output is read whole into ``output`` as ``bytes``; for large outputs use
        :meth:`stream_step_output` (which takes the exact logged name).

        :param step_name: the step's name, as written or as logged.
        :param step_type: ``"step"`` or ``"waitForEvent"``.
        :param attempt: a specific attempt (>= 1) of a ``step``; None for the latest.
        """
        candidates = step_name_candidates(step_name)
        try:
            with self.find_step_output(
                workflow_name, instance_id, candidates, step_type, attempt, account_id=account_id
            ) as (_, stream):
                if not stream.step.is_stream:
                    return stream.step
                return replace(stream.step, output=b"".join(stream.chunks))
        except CloudflareWorkflowStepNotFoundError as not_found:
            details = self.get_instance(workflow_name, instance_id, account_id=account_id)
            _, message = explain_missing_step(
                details,
                step_label=step_name,
                tried=candidates,
                step_type=step_type,
                instance_label=f"instance {instance_id!r} of workflow {workflow_name!r}",
                attempt=attempt,
            )
            raise not_found.restated(message) from None

    @contextmanager
    def find_step_output(
        self,
        workflow_name: str,
        instance_id: str,
        step_names: Sequence[str],
        step_type: str = StepType.STEP,
        attempt: int | None = None,
        *,
        account_id: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> Iterator[tuple[str, StepOutputStream]]:
        """
        :meth:`stream_step_output` for the first of ``step_names`` that exists: ``(that name, stream)``.

        Raises :class:`~airflow_provider_cfworkflows.exceptions.CloudflareWorkflowStepNotFoundError`
        when each name gets a 404 (an unknown workflow raises at once).

        :param step_names: exact logged names, most likely first
            (:func:`~airflow_provider_cfworkflows.instance_details.step_name_candidates`).
        """
        not_found: CloudflareWorkflowsNotFoundError | None = None
        with ExitStack() as stack:
            for name in step_names:
                try:
                    stream = stack.enter_context(
                        self.stream_step_output(
                            workflow_name,
                            instance_id,
                            name,
                            step_type,
                            attempt,
                            account_id=account_id,
                            chunk_size=chunk_size,
                        )
                    )
                except CloudflareWorkflowsUnknownWorkflowError:
                    raise  # the transport already named the workflows the account has
                except CloudflareWorkflowsNotFoundError as error:
                    not_found = error
                    continue
                yield name, stream
                return
        raise _step_not_found(step_names, not_found)

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
        answer = self._send(request, accept_stream=True)
        if not isinstance(answer, requests.Response):
            yield StepOutputStream(step=protocol.parse_step_output(answer.result), content_length=None)
            return
        try:
            content_length = protocol.parse_content_length(answer.headers)
            yield StepOutputStream(
                step=protocol.stream_step_status(),
                content_length=content_length,
                chunks=ResponseBodyReader(
                    response=answer,
                    request=request,
                    content_length=content_length,
                    chunk_size=chunk_size,
                    stall_timeout=self.settings.timeout if stall_timeout is None else stall_timeout,
                ),
            )
        finally:
            answer.close()

    # --- async twins (used by triggers) ---------------------------------------------------------

    async def alist_instances(
        self,
        workflow_name: str,
        *,
        status: str | None = None,
        date_start: datetime | str | None = None,
        date_end: datetime | str | None = None,
        direction: str | None = None,
        per_page: int = 50,
        account_id: str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Async :meth:`list_instances`: every item, following the pagination cursor to the end."""
        async for page in self.alist_instance_pages(
            workflow_name,
            status=status,
            date_start=date_start,
            date_end=date_end,
            direction=direction,
            per_page=per_page,
            account_id=account_id,
        ):
            for item in page:
                yield item

    async def alist_instance_pages(
        self,
        workflow_name: str,
        *,
        status: str | None = None,
        date_start: datetime | str | None = None,
        date_end: datetime | str | None = None,
        direction: str | None = None,
        per_page: int = 50,
        account_id: str | None = None,
    ) -> AsyncGenerator[list[dict[str, Any]]]:
        """
        :meth:`alist_instances` page by page: each page is one request, sent when the caller asks for
        it (so a caller can take a turn per page; ``aclose()`` it when stopping early). Same parameters.
        """
        account = (await self.aget_settings()).resolve_account_id(account_id)
        cursor = None  # the first page
        while True:
            request = protocol.list_instances_request(
                account,
                workflow_name,
                cursor=cursor,
                direction=direction,
                status=status,
                date_start=date_start,
                date_end=date_end,
                per_page=per_page,
            )
            envelope = await self._asend(request)
            yield list(envelope.result or [])
            cursor = protocol.next_cursor(envelope.result_info)
            if cursor is None:
                return

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

    async def afind_step_status(
        self,
        workflow_name: str,
        instance_id: str,
        step_names: Sequence[str],
        step_type: str = StepType.STEP,
        *,
        account_id: str | None = None,
    ) -> tuple[str, StepOutput]:
        """Async :meth:`find_step_output` for status checks (the first name that exists, its status)."""
        not_found: CloudflareWorkflowsNotFoundError | None = None
        for name in step_names:
            try:
                return name, await self.aget_step_output(
                    workflow_name, instance_id, name, step_type, account_id=account_id
                )
            except CloudflareWorkflowsUnknownWorkflowError:
                raise  # the transport already named the workflows the account has
            except CloudflareWorkflowsNotFoundError as error:
                not_found = error
        raise _step_not_found(step_names, not_found)


def _step_not_found(
    step_names: Sequence[str], not_found: CloudflareWorkflowsNotFoundError | None
) -> CloudflareWorkflowStepNotFoundError:
    tried = " or ".join(repr(name) for name in step_names) or "no name"
    message = f"No step is logged as {tried}: it has not started yet, or has another name"
    if not_found is None:
        return CloudflareWorkflowStepNotFoundError(message)
    return not_found.restated(message, CloudflareWorkflowStepNotFoundError)
