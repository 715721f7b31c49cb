"""Side effects that remember themselves across the retries of a task, in Airflow's task state store.

A create, an event, a status change or a delete is a *side effect*: done twice, it may act twice. Before
one, the task records its **intent** in ``context["task_state_store"]`` (Airflow 3.3: a store of JSON
values per task instance that survives its retries, ``airflow.sdk.execution_time.context
.TaskStateStoreAccessor``); once Cloudflare answers, its **outcome**. A retry of the task then knows:

- **done** (the outcome is recorded): an earlier try did it; the retry does not do it again.
- **intent without outcome** (the answer was lost, or the worker died during the call): a *repeatable*
  effect (a create with an id, pause, resume, terminate, delete) is simply done again, as the hook would.
  A non-repeatable one asks the instance, comparing it with what it showed just before the call: an
  event arrived if a ``waitForEvent`` step for its type has received an event since; a restart happened
  if the instance was queued again (its ``queued`` time changed). Seen: the retry ends in success without
  doing it again. Not seen (e.g. an event still buffered before the instance reached its step): the task
  fails without retry, as it always did (:class:`~.exceptions.CloudflareWorkflowOutcomeUnknownError`).
- **nothing**: a first attempt.

So a lost answer to an event or a restart no longer ends the task at once: with the store it fails with
:class:`~.exceptions.CloudflareWorkflowOutcomePendingError`, which Airflow retries, and the retry decides
as above (with no retries left, it fails without retry as before).

**Retry versus clear.** Keys carry the first try of the task's current series of tries
(:func:`~.instance_ids.first_try_of_series`, the rule of the derived instance ids): a *retry* is the same
intent (it finds the record), a *clear* starts a new series and so a new intent (it acts again). Whether
a clear keeps the store is open upstream (apache/airflow#72100); the series in the key makes either
answer safe.

**What the store holds** (one key per effect, ``cfworkflows/s<series>/<kind>/<workflow>/<instance>[/
<detail>]``): the kind, workflow, instance id, event type or action, the try and the time it was
recorded, what the instance showed before the call (a count of received events, a ``queued`` time), the
outcome and a small result (a status, whether an instance was created). Never a payload, parameters or
a credential.

**Without the store** (Airflow before 3.3, ``execute()`` called outside Airflow's task runner, or
``durable=False``) nothing is remembered and every effect behaves as before; the task log says so once.

**Why not** ``airflow.sdk.bases.resumablejobmixin.ResumableJobMixin``: it keys the job id by operator
alone, so a cleared task would reconnect to the old job (a clear here means a new instance); it
resubmits a failed job, where a Workflow instance is restarted from its failed step under the same id;
it covers the synchronous path only, and a job id only, not events or status changes. The create-and-wait
operator makes the same three decisions (reconnect to an active instance, return a complete one, restart
or fail an errored one), before deferring too, and its ``durable`` flag has the mixin's name and meaning.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Generic, TypeVar

from airflow_provider_cfworkflows.base import CloudflareWorkflowsBaseOperator
from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowOutcomePendingError,
    CloudflareWorkflowOutcomeUnknownError,
    CloudflareWorkflowsError,
)
from airflow_provider_cfworkflows.instance_details import received_event_count
from airflow_provider_cfworkflows.instance_ids import first_try_of_series
from airflow_provider_cfworkflows.links.workflows import instance_dashboard_url
from airflow_provider_cfworkflows.looks import get_instance_details
from airflow_provider_cfworkflows.statuses import StatusAction
from airflow_provider_cfworkflows.validation import validate_status_action

STORE_KEY_PREFIX = "cfworkflows"
MAX_STORE_KEY_LENGTH = 512  # the key column of Airflow's task state store
MAX_CAUSE_LENGTH = 500  # characters of an error kept in a record
_T = TypeVar("_T")

__all__ = [
    "CloudflareWorkflowsDurableOperator",
    "Creation",
    "Deletion",
    "Effect",
    "EffectRecord",
    "Outcome",
    "Performed",
    "RemembersSideEffects",
    "Restart",
    "SentEvent",
    "SideEffects",
    "StatusChange",
    "Via",
]


class Outcome(StrEnum):
    """The outcome an :class:`EffectRecord` holds."""

    PENDING = "pending"  # recorded before the call; no answer (yet)
    DONE = "done"  # the call was answered: it took effect


class Via(StrEnum):
    """How a :class:`Performed` effect came about."""

    NOW = "now"  # this try did it
    EARLIER_TRY = "earlier_try"  # an earlier try did it and recorded so
    SEEN = "seen"  # an earlier try's answer was lost, and the instance shows that it took effect


@dataclass(frozen=True)
class EffectRecord:
    """
    What the task state store holds for one effect (plain JSON: no payload, no credential).

    :param kind: the effect's kind (``event``, ``restart``, ``status``, ``create``, ``delete``).
    :param workflow_name: the Workflow.
    :param instance_id: the instance ("" for an effect on several).
    :param detail: the event type, action or occasion that tells effects of one kind apart.
    :param try_number: the try that recorded it.
    :param recorded_at: when (ISO 8601, UTC), for people reading the store.
    :param outcome: :class:`Outcome`.
    :param before: what the instance showed just before the call (non-repeatable effects).
    :param result: a small result of the call (e.g. the status it reported).
    :param cause: why the outcome is unknown: the error of the call (its text never holds a credential).
    """

    kind: str
    workflow_name: str
    instance_id: str
    detail: str
    try_number: int
    recorded_at: str
    outcome: str
    before: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    cause: str | None = None

    @classmethod
    def from_store(cls, value: Any) -> EffectRecord | None:
        """The record stored as ``value``, or None when it is not one (e.g. written by another tool)."""
        names = {field.name for field in fields(cls)}
        if not isinstance(value, Mapping) or not names.issuperset(value) or "outcome" not in value:
            return None
        try:
            return cls(**value)
        except TypeError:
            return None


@dataclass(frozen=True)
class Performed(Generic[_T]):
    """
    An effect done (now or by an earlier try of the task).

    :param result: the call's answer when done now; else the result the store kept (or None).
    :param by_try: the try that did it.
    :param via: :class:`Via`: now, by an earlier try (recorded), or seen on the instance.
    """

    result: _T | dict[str, Any] | None
    by_try: int
    via: Via

    @property
    def now(self) -> bool:
        """Whether this try did it."""
        return self.via is Via.NOW


@dataclass(frozen=True)
class Effect:
    """
    One side effect as the memory keys and judges it: repeatable (done again after an unknown outcome,
    with the same end state) unless a subclass says otherwise and tells how the instance shows it.

    :param workflow_name: the Workflow.
    :param instance_id: the instance ("" for an effect on several).
    :param account_id: the account (for the dashboard link in messages).
    :param detail: what tells effects of one kind on one instance apart (an event type, an action).
    """

    workflow_name: str
    instance_id: str
    account_id: str | None = None
    detail: str = ""

    kind: ClassVar[str] = "effect"
    repeatable: ClassVar[bool] = True
    needs_steps: ClassVar[bool] = False  # whether marks() needs the step log

    def key(self, series: int) -> str:
        """The store key of this effect in a series of tries."""
        parts = [STORE_KEY_PREFIX, f"s{series}", self.kind, self.workflow_name, self.instance_id, self.detail]
        key = "/".join(part for part in parts if part)
        if len(key) > MAX_STORE_KEY_LENGTH:  # not with validated names; kept safe anyway
            key = f"{key[:400]}#{hashlib.sha256(key.encode()).hexdigest()[:32]}"
        return key

    def describe(self) -> str:
        """The effect in words, for the log."""
        what = f"{self.kind} {self.detail}" if self.detail else self.kind
        return f"{what} of instance {self.instance_id!r} of workflow {self.workflow_name!r}"

    def summary(self, result: Any) -> dict[str, Any]:
        """What the store keeps of the call's answer (small, never a payload)."""
        return {}

    def marks(self, details: Mapping[str, Any]) -> dict[str, Any] | None:
        """What the instance shows before the call, for :meth:`shows` (non-repeatable effects)."""
        return None

    def shows(self, before: Mapping[str, Any] | None, details: Mapping[str, Any]) -> bool:
        """Whether ``details`` show the effect took place since ``before`` was read."""
        return False

    # Words for the messages of a non-repeatable effect whose outcome is unknown.
    def may_have_happened(self) -> str:
        """``The event 'x' may have been delivered to instance 'i' of workflow 'wf'``."""
        return f"The {self.describe()} may have happened"

    def not_twice(self) -> str:
        """``so the event is never sent twice``."""
        return "so it does not happen twice"

    def how_to_check(self, dashboard_url: str) -> str:
        """How a person finds out whether it happened."""
        return f"Check the instance first: {dashboard_url}"

    def why_unseen(self) -> str:
        """What the instance did not show, in words."""
        return ""


@dataclass(frozen=True)
class SentEvent(Effect):
    """An event sent to an instance (``detail``: the event type). Not repeatable: a second event could
    pass a second ``waitForEvent`` gate."""

    kind: ClassVar[str] = "event"
    repeatable: ClassVar[bool] = False
    needs_steps: ClassVar[bool] = True

    def describe(self) -> str:
        return f"event {self.detail!r} to instance {self.instance_id!r} of workflow {self.workflow_name!r}"

    def marks(self, details: Mapping[str, Any]) -> dict[str, Any] | None:
        count = received_event_count(details, self.detail)
        return None if count is None else {"received": count}

    def shows(self, before: Mapping[str, Any] | None, details: Mapping[str, Any]) -> bool:
        count = received_event_count(details, self.detail)
        return before is not None and count is not None and count > int(before.get("received", count))

    def may_have_happened(self) -> str:
        return (
            f"The event {self.detail!r} may have been delivered to instance {self.instance_id!r} of "
            f"workflow {self.workflow_name!r}"
        )

    def not_twice(self) -> str:
        return "so the event is never sent twice"

    def how_to_check(self, dashboard_url: str) -> str:
        return (
            f"Before sending it again, check the instance: whether its waitForEvent step for "
            f"{self.detail!r} completed (hook.get_instance lists the steps and their output) or the "
            f"dashboard: {dashboard_url}. An event sent before the instance reached the step is buffered "
            "and shows only once the step runs."
        )

    def why_unseen(self) -> str:
        return f"no waitForEvent step for {self.detail!r} has received an event since it was sent"


@dataclass(frozen=True)
class Restart(Effect):
    """
    A restart of an instance (``detail``: the occasion, e.g. one failure restarted from; "" for the
    restart operator). Not repeatable: a second restart erases the progress the first one made.
    """

    kind: ClassVar[str] = "restart"
    repeatable: ClassVar[bool] = False

    def describe(self) -> str:
        return f"restart of instance {self.instance_id!r} of workflow {self.workflow_name!r}"

    def summary(self, result: Any) -> dict[str, Any]:
        return {"status": result.get("status")} if isinstance(result, Mapping) else {}

    # A restart queues the instance again: its `queued` time changes (inferred from the API reference,
    # which says a restart starts the instance anew; the emulator does the same). Only `queued`:
    # `start` also changes when a queued instance starts by itself.
    def marks(self, details: Mapping[str, Any]) -> dict[str, Any] | None:
        queued = details.get("queued")
        return {"queued": queued} if isinstance(queued, str) else None

    def shows(self, before: Mapping[str, Any] | None, details: Mapping[str, Any]) -> bool:
        queued = details.get("queued")
        return before is not None and isinstance(queued, str) and queued != before.get("queued")

    def not_twice(self) -> str:
        return "so the instance is not restarted twice"

    def how_to_check(self, dashboard_url: str) -> str:
        return (
            "Check the instance before restarting it again: its status and the start of its steps "
            f"(hook.get_instance) or the dashboard: {dashboard_url}"
        )

    def why_unseen(self) -> str:
        return "the instance was not queued again since"


@dataclass(frozen=True)
class StatusChange(Effect):
    """A pause, resume or terminate (``detail``: the action); repeatable (a 409 after it is accepted)."""

    kind: ClassVar[str] = "status"

    def summary(self, result: Any) -> dict[str, Any]:
        return {"status": result.get("status")} if isinstance(result, Mapping) else {}


@dataclass(frozen=True)
class Creation(Effect):
    """The create of an instance under a known id; repeatable ("already exists" is success)."""

    kind: ClassVar[str] = "create"

    def summary(self, result: Any) -> dict[str, Any]:
        return {"created": bool(result.get("created"))} if isinstance(result, Mapping) else {}


@dataclass(frozen=True)
class Deletion(Effect):
    """The delete of a list of instances (``detail``: a digest of the ids); repeatable (gone is gone)."""

    kind: ClassVar[str] = "delete"

    @classmethod
    def of(cls, workflow_name: str, instance_ids: list[str], account_id: str | None = None) -> Deletion:
        """The delete of ``instance_ids`` (their order does not matter)."""
        digest = hashlib.sha256("\x1f".join(sorted(instance_ids)).encode()).hexdigest()[:24]
        return cls(workflow_name, "", account_id, digest)

    def describe(self) -> str:
        return f"delete of instances of workflow {self.workflow_name!r} (ids digest {self.detail})"

    def summary(self, result: Any) -> dict[str, Any]:
        return {"deleted": len(result)} if isinstance(result, list) else {}


class SideEffects:
    """
    The side effects of one try of a task, each done at most once across the task's retries (see the
    module docstring). Build it with :meth:`for_task`; sending an event at most once is one line:
    ``SideEffects.for_task(self, context).send_event(...)``.

    :param hook: the task's hook.
    :param log: the task's logger.
    :param store: the task state store, or None (nothing is remembered).
    :param try_number: the task's current try.
    :param max_tries: the task instance's ``max_tries``.
    :param retries: the task's ``retries``.
    :param why_no_store: said once in the log when ``store`` is None.
    """

    def __init__(
        self,
        *,
        hook: Any,
        log: Any,
        store: Any,
        try_number: int,
        max_tries: int,
        retries: int,
        why_no_store: str = "",
    ) -> None:
        self.hook = hook
        self.log = log
        self.store = store
        self.try_number = try_number
        self.max_tries = max_tries
        self.series = first_try_of_series(try_number, max_tries, retries)
        self._why_no_store = why_no_store
        self._said_no_store = False

    @classmethod
    def for_task(cls, task: Any, context: Mapping[str, Any]) -> SideEffects:
        """
        The side effects of ``task`` (an operator with ``hook``, ``log`` and ``retries``; ``durable``,
        if it has one, False turns the memory off) in this try (``context``).
        """
        ti = context["ti"]
        durable = getattr(task, "durable", True)
        return cls(
            hook=task.hook,
            log=task.log,
            store=context.get("task_state_store") if durable else None,
            try_number=int(ti.try_number),
            max_tries=int(ti.max_tries),
            retries=int(task.retries or 0),
            why_no_store=(
                "no task state store in the task's context (Airflow before 3.3, or the task runs "
                "outside Airflow's task runner)"
                if durable
                else "durable=False"
            ),
        )

    # --- the task's tries ---------------------------------------------------------------------------

    @property
    def remembers(self) -> bool:
        """Whether effects are remembered across retries (the store is there)."""
        return self.store is not None

    @property
    def is_retry(self) -> bool:
        """Whether this try retries an earlier one of the same series (not a first try, not a clear)."""
        return self.try_number > self.series

    @property
    def retries_left(self) -> bool:
        """Whether Airflow retries the task if this try fails (with an error that allows it)."""
        return self.try_number <= self.max_tries

    # --- the store ------------------------------------------------------------------------------------

    def recall(self, effect: Effect) -> EffectRecord | None:
        """What the store holds for ``effect`` in this series of tries (None without a store)."""
        if self.store is None:
            return None
        return EffectRecord.from_store(self.store.get(effect.key(self.series)))

    def _write(self, effect: Effect, record: EffectRecord) -> None:
        if self.store is not None:
            self.store.set(effect.key(self.series), asdict(record))

    def _forget(self, effect: Effect) -> None:
        if self.store is not None:
            self.store.delete(effect.key(self.series))

    def _say_once_nothing_is_remembered(self) -> None:
        if self.store is None and not self._said_no_store:
            self._said_no_store = True
            self.log.info(
                "Side effects are not remembered across retries in this task (%s): a call whose outcome "
                "is unknown fails the task without retry.",
                self._why_no_store,
            )

    # --- doing it once --------------------------------------------------------------------------------

    def perform(
        self,
        effect: Effect,
        call: Callable[[], _T],
        *,
        details: Mapping[str, Any] | None = None,
    ) -> Performed[_T]:
        """
        Do ``effect`` with ``call`` unless an earlier try of the task did it (see the module docstring).

        :param details: the instance's details read just now, if the caller has them (spares the GET a
            non-repeatable effect makes before its call; with the step log when ``effect.needs_steps``).
        :raises CloudflareWorkflowOutcomePendingError: the call may have taken effect, no answer came,
            and a retry will find out (the store is there and the task has retries left).
        :raises CloudflareWorkflowOutcomeUnknownError: the call (or an earlier try's) may have taken
            effect and nothing can tell: the task fails without retry.
        """
        self._say_once_nothing_is_remembered()
        record = self.recall(effect)
        if record is not None and record.outcome == Outcome.DONE:
            self.log.info(
                "The %s was done by try %d of this task (task state store): not doing it again.",
                effect.describe(),
                record.try_number,
            )
            return Performed(record.result, record.try_number, Via.EARLIER_TRY)
        if record is not None and not effect.repeatable:
            return self._settle(effect, record)
        before = None
        if self.remembers and not effect.repeatable:
            before = effect.marks(details if details is not None else self._details(effect))
        pending = EffectRecord(
            kind=effect.kind,
            workflow_name=effect.workflow_name,
            instance_id=effect.instance_id,
            detail=effect.detail,
            try_number=self.try_number,
            recorded_at=datetime.now(UTC).isoformat(timespec="seconds"),
            outcome=Outcome.PENDING.value,
            before=before,
        )
        self._write(effect, pending)
        try:
            result = call()
        except CloudflareWorkflowsError as error:
            if not error.may_have_taken_effect:
                self._forget(effect)  # refused: a retry may do it
                raise
            if effect.repeatable:
                raise  # the record stays pending: a retry does it again, harmlessly
            self._write(effect, replace(pending, cause=str(error)[:MAX_CAUSE_LENGTH]))
            raise self._unknown(effect, error) from error
        self._write(effect, replace(pending, outcome=Outcome.DONE.value, result=effect.summary(result)))
        return Performed(result, self.try_number, Via.NOW)

    def _details(self, effect: Effect) -> Mapping[str, Any]:
        return get_instance_details(
            self.hook,
            effect.workflow_name,
            effect.instance_id,
            simple=not effect.needs_steps,
            account_id=effect.account_id,
        )

    def _dashboard_url(self, effect: Effect) -> str:
        account_id = effect.account_id or self.hook.settings.resolve_account_id(None)
        return instance_dashboard_url(account_id, effect.workflow_name, effect.instance_id)

    def _unknown(self, effect: Effect, error: CloudflareWorkflowsError) -> Exception:
        lost = (
            f"{effect.may_have_happened()}: the request was sent, but no usable answer came back ({error})."
        )
        check = effect.how_to_check(self._dashboard_url(effect))
        if self.remembers and self.retries_left:
            return CloudflareWorkflowOutcomePendingError(
                f"{lost} The task state store holds the intent: the task's retry looks at the instance "
                "and ends in success without doing it again if it took effect; if the instance cannot "
                f"tell, the retry fails without doing it again. {check}"
            )
        return CloudflareWorkflowOutcomeUnknownError(
            f"{lost} The task fails without retry {effect.not_twice()}. {check}"
        )

    def _settle(self, effect: Effect, record: EffectRecord) -> Performed[Any]:
        """An earlier try's intent without an outcome: seen on the instance, or fail without retry."""
        if effect.shows(record.before, self._details(effect)):
            self.log.info(
                "The answer to the %s in try %d was lost, but the instance shows it took effect: not "
                "doing it again.",
                effect.describe(),
                record.try_number,
            )
            self._write(effect, replace(record, outcome=Outcome.DONE.value))
            return Performed(None, record.try_number, Via.SEEN)
        raise CloudflareWorkflowOutcomeUnknownError(
            f"{effect.may_have_happened()}: try {record.try_number} of this task sent the request and got "
            f"no usable answer ({record.cause or 'the try ended during the call'}), and the instance "
            f"cannot tell ({effect.why_unseen()}). The task fails "
            f"without retry {effect.not_twice()}. {effect.how_to_check(self._dashboard_url(effect))}"
        )

    # --- the effects ----------------------------------------------------------------------------------

    def send_event(
        self,
        workflow_name: str,
        instance_id: str,
        event_type: str,
        payload: Any = None,
        *,
        account_id: str | None = None,
    ) -> Performed[Any]:
        """Send an event at most once across the task's retries (checked inputs; see :meth:`perform`)."""
        return self.perform(
            SentEvent(workflow_name, instance_id, account_id, event_type),
            lambda: self.hook.send_event(
                workflow_name, instance_id, event_type, payload, account_id=account_id
            ),
        )

    def change_status(
        self,
        workflow_name: str,
        instance_id: str,
        action: str,
        *,
        rollback: bool | None = None,
        restart_from: Mapping[str, Any] | None = None,
        account_id: str | None = None,
        occasion: str = "",
        details: Mapping[str, Any] | None = None,
    ) -> Performed[dict[str, Any]]:
        """
        Pause, resume, terminate or restart at most once across the task's retries.

        :param occasion: for a restart: what tells this restart from others of the same task in the
            same series (e.g. the failure it restarts from); "" for the task's one restart.
        :param details: the instance's details, if just read (see :meth:`perform`).
        """
        checked = validate_status_action(action)
        effect: Effect
        if checked is StatusAction.RESTART:
            effect = Restart(workflow_name, instance_id, account_id, occasion)
        else:
            effect = StatusChange(workflow_name, instance_id, account_id, checked.value)
        return self.perform(
            effect,
            lambda: self.hook.change_instance_status(
                workflow_name,
                instance_id,
                checked.value,
                rollback=rollback,
                restart_from=restart_from,
                account_id=account_id,
            ),
            details=details,
        )


class RemembersSideEffects:
    """Mixin: :meth:`side_effects`, remembered when the class's ``durable`` is True."""

    durable: bool = True

    def side_effects(self, context: Mapping[str, Any]) -> SideEffects:
        """This try's side effects."""
        return SideEffects.for_task(self, context)


class CloudflareWorkflowsDurableOperator(RemembersSideEffects, CloudflareWorkflowsBaseOperator):
    """
    Base of the operators with side effects (create, event, status change, delete).

    :param durable: remember side effects in the task state store, so that a retry of the task neither
        repeats nor gives up on what an earlier try did (see :mod:`~airflow_provider_cfworkflows
        .side_effects`). False: nothing is remembered, as before this existed.
    """

    # Named in this class's own __init__ so that default_args, .partial() and .expand() reach it (see
    # the note above CloudflareWorkflowsBaseOperator in base.py).
    def __init__(self, *, durable: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.durable = durable
