"""The instance-wait rule: how the instance sensor and the create-and-wait operator wait for an instance.

Both go through :class:`InstanceWait`, so they cannot drift apart: a transient API error means "look
again later", each change is logged once, a failure state logs the remote error and failed steps and
fails without retry, a timeout raises ``AirflowSensorTimeout`` (fails without retry) in the worker and
after a deferral alike, and a deferral gets the same grace period.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk.exceptions import AirflowTaskTerminated

from airflow_provider_cfworkflows.deadlines import calls_end_by
from airflow_provider_cfworkflows.models import instance_output
from airflow_provider_cfworkflows.triggers.workflows import (
    CloudflareWorkflowInstanceTrigger,
    InstanceWaitEvent,
    describe_awaited_instance,
)
from airflow_provider_cfworkflows.waiting import Check, Verdict
from airflow_provider_cfworkflows.waits import (
    Lookout,
    ProgressLog,
    defer_wait,
    fail_instance,
    get_instance_details,
    run_instance_check,
)

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator

    from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook


class InstanceWait:
    """
    One wait for one instance to reach a success or failure state.

    :param hook: the task's hook.
    :param log: the task's logger.
    :param workflow_name: the Workflow.
    :param instance_id: the instance.
    :param account_id: the account (None: the connection's login).
    :param cloudflare_conn_id: the connection the trigger uses when the task defers.
    :param success_states: instance statuses that end the wait successfully.
    :param failure_states: instance statuses that fail it.
    :param deadline: when the wait times out (``time.time()`` seconds): every look's API calls end by
        then (:func:`~airflow_provider_cfworkflows.deadlines.calls_end_by`). None: :meth:`wait` sets it.
    :param answered: whether the API already answered in this task: True (default) for the
        create-and-wait operator, whose create call got an answer; the instance sensor passes False
        for its first look. Until the API has answered, a look that gets no response at all fails the
        task at once (see :class:`~airflow_provider_cfworkflows.waits.Lookout`).
    """

    def __init__(
        self,
        *,
        hook: CloudflareWorkflowsHook,
        log: logging.Logger | Any,
        workflow_name: str,
        instance_id: str,
        account_id: str | None,
        cloudflare_conn_id: str,
        success_states: tuple[str, ...],
        failure_states: tuple[str, ...],
        deadline: float | None = None,
        answered: bool = True,
    ) -> None:
        self.hook = hook
        self.log = log
        self.workflow_name = workflow_name
        self.instance_id = instance_id
        self.account_id = account_id
        self.cloudflare_conn_id = cloudflare_conn_id
        self.success_states = success_states
        self.failure_states = failure_states
        self.deadline = deadline
        self._progress = ProgressLog(log)
        self._lookout = Lookout(log, hook, awaited=self.describe_awaited(), answered=answered)

    def poke(self) -> Check | None:
        """
        Look once: the successful check when the instance is done (its ``output`` decoded by
        :func:`~airflow_provider_cfworkflows.models.instance_output`), None when not yet (or when
        Cloudflare did not answer usably). A failure state raises after logging why; so does the
        deadline passing (``AirflowSensorTimeout``).
        """
        with calls_end_by(self.deadline):
            check = self._lookout.look(self._check)
            if check is None:
                return None
            if check.verdict is Verdict.PENDING:
                self._progress.report(check)
                return None
            if check.verdict is Verdict.FAILURE:
                self.raise_failure(check.message)
        self.log.info("%s", check.message)
        return replace(check, output=instance_output(check.output))

    def read_output(self) -> Any:
        """The instance's output, decoded as :meth:`poke` decodes it (one GET; after a deferral)."""
        details = get_instance_details(
            self.hook, self.workflow_name, self.instance_id, simple=True, account_id=self.account_id
        )
        return instance_output(details.get("output"))

    def _check(self) -> Check:
        return run_instance_check(
            self.hook,
            workflow_name=self.workflow_name,
            instance_id=self.instance_id,
            success_states=self.success_states,
            failure_states=self.failure_states,
            account_id=self.account_id,
        )

    def wait(self, *, timeout: float, poll_interval: float, stop: threading.Event | None = None) -> Check:
        """
        Poke every ``poll_interval`` seconds until done; ``AirflowSensorTimeout`` after ``timeout``.

        :param stop: set by ``on_kill``: the wait ends at once with ``AirflowTaskTerminated`` (Airflow
            calls ``on_kill`` from its SIGTERM handler and lets the task run on until it ends).
        """
        ends = time.monotonic() + timeout
        deadline = time.time() + timeout
        self.deadline = deadline if self.deadline is None else min(self.deadline, deadline)
        stop = stop or threading.Event()
        while True:
            check = self.poke()
            if check is not None:
                return check
            remaining = ends - time.monotonic()
            if remaining <= 0:
                self.raise_timeout()
            if stop.wait(min(poll_interval, remaining)):
                raise AirflowTaskTerminated(
                    f"Stopped waiting for {self.describe_awaited()}: the task is being killed."
                )

    def raise_timeout(self) -> NoReturn:
        """Fail the task without retry, saying what was last seen (the trigger's timeout says the same)."""
        raise self._lookout.timeout_error()

    def raise_failure(self, message: str) -> NoReturn:
        """Log the instance's failure readably (its error and failed steps), then fail without retry."""
        fail_instance(self.hook, self.log, self.workflow_name, self.instance_id, self.account_id, message)

    def describe_awaited(self) -> str:
        """``instance 'i' of workflow 'wf'``."""
        return describe_awaited_instance(self.workflow_name, self.instance_id)

    def defer(
        self, task: BaseOperator, *, end_time: float, poll_interval: float, terminate_on_kill: bool = False
    ) -> NoReturn:
        """
        Defer ``task`` to the instance trigger until ``end_time``; it resumes in ``execute_complete``.

        :param terminate_on_kill: the trigger terminates the instance if a user kills the deferred task.
        """
        trigger = CloudflareWorkflowInstanceTrigger(
            workflow_name=self.workflow_name,
            instance_id=self.instance_id,
            success_states=list(self.success_states),
            failure_states=list(self.failure_states),
            end_time=end_time,
            poll_interval=poll_interval,
            account_id=self.account_id,
            cloudflare_conn_id=self.cloudflare_conn_id,
            terminate_on_kill=terminate_on_kill,
        )
        defer_wait(task, trigger, end_time=end_time)

    def resume(self, event: InstanceWaitEvent) -> InstanceWaitEvent:
        """
        Act on the trigger's event (validated with ``InstanceWaitEvent.from_trigger``, which raises for a
        timeout or error event) once the task resumes: a success is returned, a failure fails the task as
        a poke would.
        """
        self.log.info("Resumed after deferral; the trigger reported %s.", event.status)
        if not event.is_success:
            self.raise_failure(event.message)
        self.log.info("%s", event.message)
        return event
