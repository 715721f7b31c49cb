"""Operators that start Workflow instances or change their status."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from airflow.sdk import conf

from airflow_provider_cfworkflows.base import CloudflareWorkflowsBaseOperator, annotate_outlet_events
from airflow_provider_cfworkflows.checks import instance_not_found_error
from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowsConfigurationError,
    CloudflareWorkflowsConflictError,
    CloudflareWorkflowsError,
    CloudflareWorkflowsNotFoundError,
)
from airflow_provider_cfworkflows.instance_details import restart_point, status_of
from airflow_provider_cfworkflows.instance_ids import derive_instance_id, first_try_of_series
from airflow_provider_cfworkflows.lineage import LineageRun, inject_parent_info
from airflow_provider_cfworkflows.looks import get_instance_details
from airflow_provider_cfworkflows.side_effects import (
    CloudflareWorkflowsDurableOperator,
    Creation,
    Deletion,
    SideEffects,
)
from airflow_provider_cfworkflows.statuses import (
    DEFAULT_INSTANCE_FAILURE_STATES,
    DEFAULT_INSTANCE_SUCCESS_STATES,
    InstanceStatus,
    StatusAction,
)
from airflow_provider_cfworkflows.task_waits import InstanceWait
from airflow_provider_cfworkflows.triggers.workflows import InstanceWaitEvent
from airflow_provider_cfworkflows.validation import (
    MAX_BATCH_SIZE,
    encode_json,
    validate_instance_id,
    validate_instance_retention,
    validate_location_hint,
    validate_new_instance_id,
    validate_positive_seconds,
    validate_status_action,
    validate_workflow_name,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

DEFAULT_WAIT_TIMEOUT_SECONDS = 7 * 24 * 3600.0
# "workflows.api.error.instance.not_found" (seen in production); the batch delete reports it per id.
INSTANCE_NOT_FOUND_ERROR_CODES = frozenset({10400})
BATCH_ITEM_KEYS = ("instance_id", "params", "instance_retention", "location_hint")
_ITEM_KEYS_TEXT = ", ".join(repr(key) for key in BATCH_ITEM_KEYS)


@dataclass(frozen=True)
class _OwnInstance:
    """An instance this task created, so ``on_kill`` may terminate it."""

    workflow_name: str
    instance_id: str
    account_id: str


def _derived_id(context: Context, retries: int, *, item: int | None = None) -> str:
    """The id derived from the task instance and its current series of tries (a clear starts a new one)."""
    ti = context["ti"]
    series = first_try_of_series(ti.try_number, ti.max_tries, retries)
    map_index = ti.map_index if ti.map_index is not None else -1
    return derive_instance_id(ti.dag_id, ti.run_id, ti.task_id, map_index, item=item, first_try_number=series)


class CloudflareWorkflowCreateInstanceOperator(CloudflareWorkflowsDurableOperator):
    """
    Start a Workflow instance; idempotent across task retries; optionally wait for it to finish.

    Without ``instance_id`` the id is derived from the dag id, run id, task id and map index, so a
    retried task finds the instance its earlier try created instead of starting a duplicate. An
    "already exists" answer for that id is success (after one GET confirms the instance). Clearing the
    task once it has finished runs it again: it starts a new instance (the id also holds the first try
    of the task's current series of tries, which a clear advances and a retry keeps).

    With ``wait_for_completion`` the task waits exactly as ``CloudflareWorkflowInstanceSensor`` does
    (the same code): a transient API error means "look again later", each change of status is logged
    once, ``errored`` or ``terminated`` fails the task without retry after logging the remote error and
    the failed steps, and a timeout fails it without retry (``AirflowSensorTimeout``), in the worker and
    after a deferral alike.

    A retry of the task reconnects (in the spirit of Airflow's ``ResumableJobMixin``, sync and
    deferrable alike): it finds the instance its earlier try started (with the task state store, without
    creating it again), returns at once if it is complete, waits again if it is still active, and fails
    with the instance's error if it failed, unless ``retry_from_failure`` restarts it from the failed
    step. See :mod:`airflow_provider_cfworkflows.side_effects`.

    :param workflow_name: the Workflow to run.
    :param instance_id: explicit id (1-100 of ``[a-zA-Z0-9_-]``); derived when None.
    :param instance_params: JSON-serializable value given to the Workflow as ``event.payload``.
    :param instance_retention: ``{"success_retention": ..., "error_retention": ...}``.
    :param location_hint: where to run the instance, one of ``validation.LOCATION_HINTS`` (e.g.
        ``"weur"``); None lets Cloudflare choose.
    :param wait_for_completion: wait until the instance is ``complete``; fail with the remote error when
        it ends ``errored`` or ``terminated``.
    :param deferrable: wait in the triggerer instead of a worker slot (after one look); defaults to
        ``[operators] default_deferrable``.
    :param poll_interval: seconds between status checks while waiting (a finite number > 0).
    :param timeout: seconds to wait at most (a finite number > 0; default 7 days). A timeout fails the
        task without retry.
    :param terminate_on_kill: when the task is killed while waiting (marked failed or cleared, or its
        ``execution_timeout`` passed), terminate the instance, if this task created it: in this try, or
        (for a derived id, or as the task state store recorded) in an earlier try. An explicit
        ``instance_id`` that already existed is never terminated. Default True.
    :param retry_from_failure: with ``wait_for_completion``: when the instance errors, fail the task so
        that Airflow retries it (if it has retries left), and on that retry restart the instance from its
        failed step (``PATCH .../status {"status": "restart", "from": {...}}``) and wait again, instead
        of failing without retry. Never on a first try or after a clear. An instance that errored
        outside a step is restarted from the start. Default False.
    :param durable: remember the create (and a restart) in the task state store across retries
        (default True); see :mod:`airflow_provider_cfworkflows.side_effects`.
    :param openlineage_inject_parent_info: put this task's OpenLineage parent and root run ids in
        ``instance_params["openlineage"]`` (``parentRunId``, ``parentJobName``, ``parentJobNamespace``,
        ``rootParentRunId``, ``rootParentJobName``, ``rootParentJobNamespace``), so the Workflow can emit
        lineage events linked to this task. Needs the ``openlineage`` extra with a transport configured,
        and ``instance_params`` that are an object (or None); otherwise nothing is injected (logged).
        Default False.
    :param account_id: defaults to the connection's login.
    :param cloudflare_conn_id: connection of type ``cloudflare_workflows``.
    """

    template_fields: Sequence[str] = (
        "workflow_name",
        "instance_id",
        "instance_params",
        "account_id",
        "cloudflare_conn_id",
    )
    template_fields_renderers = {"instance_params": "json"}

    def __init__(
        self,
        *,
        workflow_name: str,
        instance_id: str | None = None,
        instance_params: Any = None,
        instance_retention: Mapping[str, Any] | None = None,
        location_hint: str | None = None,
        wait_for_completion: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 10.0,
        timeout: float = DEFAULT_WAIT_TIMEOUT_SECONDS,
        terminate_on_kill: bool = True,
        retry_from_failure: bool = False,
        openlineage_inject_parent_info: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if retry_from_failure and not wait_for_completion:
            raise CloudflareWorkflowsConfigurationError(
                "retry_from_failure=True needs wait_for_completion=True: only a task that waits for its "
                "instance sees it fail, so only then can its retry restart the instance from the failed "
                "step."
            )
        self.workflow_name = workflow_name
        self.instance_id = instance_id
        self.instance_params = instance_params
        self.openlineage_inject_parent_info = openlineage_inject_parent_info
        self.instance_retention = instance_retention
        self.location_hint = location_hint
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = validate_positive_seconds(poll_interval, "poll_interval")
        self.timeout = validate_positive_seconds(timeout, "timeout")
        self.terminate_on_kill = terminate_on_kill
        self.retry_from_failure = retry_from_failure
        # Set only while this task waits for an instance it owns (see terminate_on_kill); on_kill reads it.
        self._waiting_for_own: _OwnInstance | None = None
        self._stop_waiting: threading.Event | None = None

    def execute(self, context: Context) -> str:
        workflow_name = validate_workflow_name(self.workflow_name)
        instance_id, derived = self._instance_id(context)
        params = self.instance_params
        if self.openlineage_inject_parent_info:
            params = inject_parent_info(params, context["ti"])
        encode_json(params, "instance_params")
        validate_instance_retention(self.instance_retention)
        if self.location_hint is not None:
            validate_location_hint(self.location_hint)
        account_id = self.persist_instance_link(context, workflow_name, instance_id)
        effects = self.side_effects(context)
        created = self._create(effects, workflow_name, instance_id, account_id, params)
        annotate_outlet_events(
            context,
            self,
            {"workflow_name": workflow_name, "instance_id": instance_id, "account_id": account_id},
        )
        if self.wait_for_completion:
            # A derived id is this task's own even when an earlier try created it.
            owned = _OwnInstance(workflow_name, instance_id, account_id) if created or derived else None
            if self.retry_from_failure and effects.is_retry:
                self._restart_from_failure(effects, workflow_name, instance_id, account_id)
            self._wait(workflow_name, instance_id, account_id, owned, self._retry_on(effects))
        return instance_id

    def _instance_id(self, context: Context) -> tuple[str, bool]:
        """The explicit id (checked), or the id derived from the task instance; and whether derived."""
        if self.instance_id:
            return validate_new_instance_id(self.instance_id), False
        return _derived_id(context, self.retries or 0), True

    def _create(
        self, effects: SideEffects, workflow_name: str, instance_id: str, account_id: str, params: Any
    ) -> bool:
        """
        Start the instance, unless an earlier try of the task did (the task state store says so): True
        when this task created it, False when it already existed.
        """
        done = effects.perform(
            Creation(workflow_name, instance_id, account_id),
            lambda: {"created": self._start(workflow_name, instance_id, account_id, params)},
        )
        return bool((done.result or {}).get("created"))

    def _start(self, workflow_name: str, instance_id: str, account_id: str, params: Any) -> bool:
        """Start the instance: True when this call created it, False when it already existed."""
        try:
            created = self.hook.create_instance(
                workflow_name,
                instance_id=instance_id,
                params=params,
                instance_retention=self.instance_retention,
                location_hint=self.location_hint,
                account_id=account_id,
            )
        except CloudflareWorkflowsError as error:
            if not error.is_already_exists:
                raise
            existing = self.hook.get_instance(workflow_name, instance_id, simple=True, account_id=account_id)
            self.log.info(
                "Instance %r already exists (an earlier try of this task, or another task, created it); "
                "status %s.",
                instance_id,
                existing.get("status"),
            )
            self._remember_version(existing.get("versionId"))
            return False
        self._remember_version(created.get("version_id"))
        self.log.info(
            "Started instance %r of workflow %r (status %s).",
            instance_id,
            workflow_name,
            created.get("status"),
        )
        return True

    def _retry_on(self, effects: SideEffects) -> tuple[str, ...]:
        """Failure statuses that fail the task with retry: ``errored`` with ``retry_from_failure`` and
        retries left (the retry restarts the instance from its failed step)."""
        return (InstanceStatus.ERRORED.value,) if self.retry_from_failure and effects.retries_left else ()

    def _restart_from_failure(
        self, effects: SideEffects, workflow_name: str, instance_id: str, account_id: str
    ) -> None:
        """A retry of a task whose instance errored: restart the instance from its failed step."""
        details = get_instance_details(
            self.hook, workflow_name, instance_id, simple=False, account_id=account_id
        )
        status = status_of(details)
        if status != InstanceStatus.ERRORED:
            self.log.info(
                "Try %d: instance %r is %s, not errored: nothing to restart (retry_from_failure).",
                effects.try_number,
                instance_id,
                status,
            )
            return
        point = restart_point(details)
        # One restart per failure: the key names the failed run (a restart queues the instance again).
        failure = hashlib.sha256(f"{details.get('queued')}|{details.get('end')}".encode()).hexdigest()[:16]
        done = effects.change_status(
            workflow_name,
            instance_id,
            StatusAction.RESTART.value,
            restart_from=point,
            account_id=account_id,
            occasion=f"failure-{failure}",
            details=details,
        )
        if not done.now:
            return
        if point is None:
            self.log.warning(
                "Restarted instance %r from the start (retry_from_failure): its step log names no failed "
                "step, so it errored outside a step.",
                instance_id,
            )
        else:
            self.log.info(
                "Restarted instance %r from step %r (run %d, type %s), where it failed (retry_from_failure); "
                "waiting for it again.",
                instance_id,
                point["name"],
                point["count"],
                point["type"],
            )

    def _remember_version(self, version_id: Any) -> None:
        """Keep the Workflow version for the lineage facet (so it needs no GET)."""
        if self.cloudflare_lineage_run is not None and isinstance(version_id, str):
            self.cloudflare_lineage_run = replace(self.cloudflare_lineage_run, version_id=version_id)

    def _instance_wait(
        self,
        workflow_name: str,
        instance_id: str,
        account_id: str,
        *,
        deadline: float | None = None,
        terminate_on_kill: bool = False,
        retry_on: tuple[str, ...] = (),
    ) -> InstanceWait:
        return InstanceWait(
            hook=self.hook,
            log=self.log,
            workflow_name=workflow_name,
            instance_id=instance_id,
            account_id=account_id,
            cloudflare_conn_id=self.cloudflare_conn_id,
            success_states=DEFAULT_INSTANCE_SUCCESS_STATES,
            failure_states=DEFAULT_INSTANCE_FAILURE_STATES,
            deadline=deadline,
            terminate_on_kill=terminate_on_kill,
            retry_on=retry_on,
        )

    def _wait(
        self,
        workflow_name: str,
        instance_id: str,
        account_id: str,
        owned: _OwnInstance | None,
        retry_on: tuple[str, ...],
    ) -> None:
        if self.deferrable:
            end_time = time.time() + self.timeout
            wait = self._instance_wait(
                workflow_name,
                instance_id,
                account_id,
                deadline=end_time,
                terminate_on_kill=owned is not None and self.terminate_on_kill,
                retry_on=retry_on,
            )
            if wait.poke() is None:  # one look first: a finished instance needs no trigger
                wait.defer(self, end_time=end_time, poll_interval=self.poll_interval)
            return
        wait = self._instance_wait(workflow_name, instance_id, account_id, retry_on=retry_on)
        self._stop_waiting = threading.Event()
        self._waiting_for_own = owned
        try:
            wait.wait(timeout=self.timeout, poll_interval=self.poll_interval, stop=self._stop_waiting)
        finally:
            self._waiting_for_own = None

    def execute_complete(self, context: Context, event: Any = None) -> str:
        """Resume after the trigger: validate its event; fail as the wait would, or return the id."""
        instance_id = InstanceWaitEvent.from_trigger(event).instance_id  # validated: a derived id is in it
        workflow_name, account_id = validate_workflow_name(self.workflow_name), self.resolve_account_id()
        self.cloudflare_lineage_run = LineageRun(account_id, workflow_name, instance_id)
        wait = self._instance_wait(
            workflow_name, instance_id, account_id, retry_on=self._retry_on(self.side_effects(context))
        )
        return wait.resume(event).instance_id

    def on_kill(self) -> None:
        """Terminate the instance this task created, if it is killed while waiting for it."""
        owned, stop = self._waiting_for_own, self._stop_waiting
        if stop is not None:
            stop.set()
        if owned is None or not self.terminate_on_kill:
            return
        self.log.warning(
            "The task is being killed while waiting: terminating instance %r of workflow %r, which it "
            "created (terminate_on_kill=True).",
            owned.instance_id,
            owned.workflow_name,
        )
        result = self.hook.change_instance_status(
            owned.workflow_name, owned.instance_id, StatusAction.TERMINATE.value, account_id=owned.account_id
        )
        self.log.info("Instance %r: status now %s.", owned.instance_id, result.get("status"))


class CloudflareWorkflowCreateInstancesOperator(CloudflareWorkflowsBaseOperator):
    """
    Start many instances of a Workflow, 100 per API call, idempotent across task retries.

    :param workflow_name: the Workflow.
    :param instances: one item per instance: ``{"instance_id"?: ..., "params"?: ...,
        "instance_retention"?: ..., "location_hint"?: ...}``. Items without an id get one derived from
        the task and the item's position, so a retried task finds them instead of starting duplicates
        (and a cleared task starts new ones, as :class:`CloudflareWorkflowCreateInstanceOperator`).
    """

    template_fields: Sequence[str] = ("workflow_name", "instances", "account_id", "cloudflare_conn_id")
    template_fields_renderers = {"instances": "json"}
    operator_extra_links = ()  # many instances: no single dashboard page

    def __init__(self, *, workflow_name: str, instances: Sequence[Mapping[str, Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.workflow_name = workflow_name
        self.instances = instances

    def _items(self, context: Context) -> list[dict[str, Any]]:
        if isinstance(self.instances, str | bytes) or not isinstance(self.instances, Sequence):
            raise CloudflareWorkflowsConfigurationError(
                "instances must be a list of dicts like {'params': {...}}, "
                f"got {type(self.instances).__name__}."
            )
        items = []
        for position, item in enumerate(self.instances):
            if not isinstance(item, Mapping):
                raise CloudflareWorkflowsConfigurationError(
                    f"instances[{position}] must be a dict with optional {_ITEM_KEYS_TEXT}, got {item!r}."
                )
            if unknown := set(item) - set(BATCH_ITEM_KEYS):
                raise CloudflareWorkflowsConfigurationError(
                    f"instances[{position}] has unknown keys {sorted(unknown)}; allowed: {_ITEM_KEYS_TEXT}."
                )
            instance_id = item.get("instance_id") or _derived_id(context, self.retries or 0, item=position)
            encode_json(item.get("params"), f"instances[{position}].params")
            validate_instance_retention(item.get("instance_retention"))
            if item.get("location_hint") is not None:
                validate_location_hint(item["location_hint"])
            items.append({**item, "instance_id": validate_new_instance_id(instance_id)})
        ids = [item["instance_id"] for item in items]
        if len(set(ids)) != len(ids):
            raise CloudflareWorkflowsConfigurationError(
                "instances contains the same instance_id more than once."
            )
        return items

    def execute(self, context: Context) -> list[str]:
        workflow_name = validate_workflow_name(self.workflow_name)
        items = self._items(context)
        account_id = self.resolve_account_id()
        for start in range(0, len(items), MAX_BATCH_SIZE):
            chunk = items[start : start + MAX_BATCH_SIZE]
            created = {
                item.get("id")
                for item in self.hook.create_instances_batch(workflow_name, chunk, account_id=account_id)
            }
            # Cloudflare skips ids that already exist; they were created by an earlier try of this task.
            skipped = [item["instance_id"] for item in chunk if item["instance_id"] not in created]
            for instance_id in skipped:
                self.hook.get_instance(workflow_name, instance_id, simple=True, account_id=account_id)
            self.log.info(
                "Batch %d: started %d instance(s), %d already existed.",
                start // MAX_BATCH_SIZE + 1,
                len(chunk) - len(skipped),
                len(skipped),
            )
        ids = [item["instance_id"] for item in items]
        annotate_outlet_events(context, self, {"workflow_name": workflow_name, "instance_ids": ids})
        return ids


class CloudflareWorkflowChangeInstanceStatusOperator(CloudflareWorkflowsDurableOperator):
    """
    Pause, resume, terminate or restart a Workflow instance.

    A ``terminate`` or ``pause`` whose answer was lost is retried; a 409 then is accepted when the
    instance already is where the action takes it. A ``restart`` is never repeated: when its outcome
    is unknown (no answer after it was sent, a 5xx), with Airflow's task state store (``durable``) the
    task's retry succeeds without restarting again if the instance shows it was queued again since;
    otherwise the task fails without retry
    (:class:`~airflow_provider_cfworkflows.exceptions.CloudflareWorkflowOutcomeUnknownError`) and says
    how to check the instance. A retry after a change that was answered does not make it again.

    :param workflow_name: the Workflow.
    :param instance_id: the instance.
    :param action: ``"pause"``, ``"resume"``, ``"terminate"`` or ``"restart"``.
    :param rollback: with ``terminate``: run the Workflow's rollback handlers first.
    :param restart_from: with ``restart``: ``{"name": <step name as written in code>, "count"?: n,
        "type"?: "do" | "sleep" | "waitForEvent"}`` to restart from that step instead of the start.
    :param durable: remember the change in the task state store across retries (default True); see
        :mod:`airflow_provider_cfworkflows.side_effects`.
    """

    template_fields: Sequence[str] = (
        "workflow_name",
        "instance_id",
        "action",
        "account_id",
        "cloudflare_conn_id",
    )

    def __init__(
        self,
        *,
        workflow_name: str,
        instance_id: str,
        action: str,
        rollback: bool | None = None,
        restart_from: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.workflow_name = workflow_name
        self.instance_id = instance_id
        self.action = action
        self.rollback = rollback
        self.restart_from = restart_from

    def execute(self, context: Context) -> dict[str, Any]:
        workflow_name = validate_workflow_name(self.workflow_name)
        instance_id = validate_instance_id(self.instance_id)
        action = validate_status_action(self.action)
        account_id = self.persist_instance_link(context, workflow_name, instance_id)
        try:
            done = self.side_effects(context).change_status(
                workflow_name,
                instance_id,
                action,
                rollback=self.rollback,
                restart_from=self.restart_from,
                account_id=account_id,
            )
        except CloudflareWorkflowsNotFoundError as error:
            raise instance_not_found_error(error, workflow_name, instance_id) from None
        except CloudflareWorkflowsConflictError as error:
            raise CloudflareWorkflowsError(
                f"Cannot {action} instance {instance_id!r} of {workflow_name!r} in its current state "
                f"({'not in a restartable state' if action is StatusAction.RESTART else 'state conflict'}); "
                f"Cloudflare said: {error}"
            ) from error
        result = done.result or {}
        if done.now:
            self.log.info(
                "Asked instance %r to %s; status now %s.", instance_id, action, result.get("status")
            )
        return {"workflow_name": workflow_name, "instance_id": instance_id, "action": str(action), **result}


class CloudflareWorkflowDeleteInstancesOperator(CloudflareWorkflowsDurableOperator):
    """
    Delete Workflow instances (any status), 100 per API call; returns the ids that are gone.

    An id that does not exist (any more) counts as deleted: a retry after a lost answer finds the
    instances already gone, and the end state is what was asked for. Any other per-id error fails the
    task after the whole list was tried, naming each id and Cloudflare's message.

    :param workflow_name: the Workflow.
    :param instance_ids: the ids to delete (a list; e.g. the XCom of a batch create). An empty list
        deletes nothing.
    :param durable: remember the delete in the task state store, so a retry after it does not call
        again (default True); see :mod:`airflow_provider_cfworkflows.side_effects`.
    """

    template_fields: Sequence[str] = ("workflow_name", "instance_ids", "account_id", "cloudflare_conn_id")
    operator_extra_links = ()  # many instances: no single dashboard page

    def __init__(self, *, workflow_name: str, instance_ids: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.workflow_name = workflow_name
        self.instance_ids = instance_ids

    def execute(self, context: Context) -> list[str]:
        workflow_name = validate_workflow_name(self.workflow_name)
        if isinstance(self.instance_ids, str | bytes) or not isinstance(self.instance_ids, Sequence):
            raise CloudflareWorkflowsConfigurationError(
                f"instance_ids must be a list of instance ids, got {type(self.instance_ids).__name__}."
            )
        ids = list(dict.fromkeys(validate_instance_id(instance_id) for instance_id in self.instance_ids))
        account_id = self.resolve_account_id()
        done = self.side_effects(context).perform(
            Deletion.of(workflow_name, ids, account_id), lambda: self._delete(workflow_name, ids, account_id)
        )
        return done.result if isinstance(done.result, list) else ids  # an earlier try deleted them all

    def _delete(self, workflow_name: str, ids: list[str], account_id: str) -> list[str]:
        outcome = self.hook.delete_instances(workflow_name, ids, account_id=account_id)
        gone = [error for error in outcome["errors"] if error.get("code") in INSTANCE_NOT_FOUND_ERROR_CODES]
        failed = [error for error in outcome["errors"] if error not in gone]
        self.log.info(
            "Deleted %d instance(s) of %r; %d did not exist (any more).",
            len(outcome["deleted"]),
            workflow_name,
            len(gone),
        )
        if failed:
            details = "; ".join(
                f"{error.get('id')!r}: {error.get('code')} {error.get('message')}" for error in failed
            )
            raise CloudflareWorkflowsError(
                f"{len(failed)} instance(s) of {workflow_name!r} could not be deleted: {details}"
            )
        return [*outcome["deleted"], *(str(error.get("id")) for error in gone)]
