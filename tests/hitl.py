"""A person answering Human-in-the-loop questions while ``dag.test()`` runs a DAG.

``dag.test()`` never answers a task waiting in ``awaiting_input``: it waits (checking once a second)
until something records a response in its metadata DB. :class:`Person` does, from another thread, with
the same code the REST API runs (``PATCH .../hitlDetails`` is ``update_hitl_detail``, called here with
a session on the same DB), or lets the response timeout pass as the scheduler's sweep does
(``SchedulerJobRunner.check_awaiting_input_timeouts``, which ``dag.test()`` does not run either).

A question nobody expected, or a deadline that passes, fails the waiting task instances, so the run
ends instead of waiting forever; leaving the ``with`` block then fails the test, saying why.

The person answers a try only once ``dag.test()`` has taken it back: after the task parks itself in
``awaiting_input``, ``dag.test()`` writes that state once more (``ti.set_state(taskrun_result.ti.state)``
in ``_run_task``, airflow/sdk/definitions/dag.py of Airflow 3.3.2), so an answer in between would be
overwritten and the run would wait forever. A real deployment has no such write; there the scheduler's
race is the one docs/approvals.md describes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from unittest import mock

ANSWER_DEADLINE = 180.0  # seconds for the whole conversation; generous, for a busy machine
LOOK_INTERVAL = 0.2  # seconds between two looks at the metadata DB (never a stand-in for a condition)
log = logging.getLogger(__name__)


@dataclass
class Answer:
    """
    What the person chooses for the next question (of ``task_id``, when given).

    :param before: called just before answering (e.g. to end the instance while the person decides).
    """

    chosen_options: list[str]
    params_input: dict[str, Any] = field(default_factory=dict)
    user: str = "alice"
    task_id: str | None = None
    before: Callable[[], None] | None = None


@dataclass
class NoAnswer:
    """Nobody answers the next question: once its response timeout passed, the scheduler's sweep runs."""

    task_id: str | None = None


@dataclass
class Question:
    """A question as the person saw it (the ``hitl_detail`` row), and the try that asked it."""

    task_id: str
    try_number: int
    subject: str
    body: str | None
    options: list[str]
    params: dict[str, Any]
    defaults: list[str] | None


class Person(threading.Thread):
    """
    Answers the questions of the runs of ``dag_id`` with ``answers``; use as a context manager around
    ``dag.test()``.

    :param answers: one :class:`Answer` or :class:`NoAnswer` per expected question, in order (for each
        task, when they name one).
    """

    def __init__(self, dag_id: str, answers: list[Answer | NoAnswer], deadline: float = ANSWER_DEADLINE):
        super().__init__(name=f"person-answering-{dag_id}", daemon=True)
        self.dag_id = dag_id
        self.answers = list(answers)
        self.deadline = deadline
        self.questions: list[Question] = []
        self.errors: list[str] = []
        self._finished = threading.Event()
        self._seen: set[Any] = set()
        self._taken_back: set[tuple[Any, int]] = set()  # (ti.id, try_number) that _run_task returned
        self._lock = threading.Lock()
        self._run_task_patch: Any = None

    def __enter__(self) -> Person:
        # Import and configure Airflow's models here, not in the thread: a first import of them racing
        # the one dag.test() makes deadlocks (the import lock against SQLAlchemy's mapper lock).
        from airflow.models import import_all_models
        from airflow.sdk.definitions import dag as dag_module
        from sqlalchemy.orm import configure_mappers

        import_all_models()
        configure_mappers()
        self._run_task_patch = mock.patch.object(
            dag_module, "_run_task", self._run_task_then_note(dag_module._run_task)
        )
        self._run_task_patch.start()
        self.start()
        return self

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
        self._finished.set()
        self.join(timeout=60)
        self._run_task_patch.stop()
        if kind is None:
            assert not self.is_alive(), "the answering thread did not stop"
            assert not self.errors, "; ".join(self.errors)
            assert not self.answers, f"questions expected but never asked: {self.answers}"

    def _run_task_then_note(self, run_task: Callable[..., Any]) -> Callable[..., Any]:
        """``dag.test()``'s ``_run_task``, noting each try it has taken back (its state written)."""

        def run_task_then_note(*, ti: Any, **kwargs: Any) -> Any:
            try:
                return run_task(ti=ti, **kwargs)
            finally:
                with self._lock:
                    self._taken_back.add((ti.id, ti.try_number))

        return run_task_then_note

    def run(self) -> None:
        deadline = time.monotonic() + self.deadline
        while not self._finished.is_set():
            try:
                self._look()
            except Exception as error:  # the test must hear of it, and the run must end
                log.exception("answering failed")
                self.errors.append(f"answering failed: {error!r}")
                self._fail_waiting_tasks()
                return
            if time.monotonic() > deadline:
                self.errors.append(f"the conversation took longer than {self.deadline:.0f} s")
                self._fail_waiting_tasks()
                return
            self._finished.wait(LOOK_INTERVAL)

    def _waiting(self, session: Any) -> list[Any]:
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.state import TaskInstanceState
        from sqlalchemy import select
        from sqlalchemy.orm import joinedload

        query = (
            select(TaskInstance)
            .where(TaskInstance.dag_id == self.dag_id, TaskInstance.state == TaskInstanceState.AWAITING_INPUT)
            .options(joinedload(TaskInstance.hitl_detail))
        )
        return list(session.scalars(query).unique())

    def _look(self) -> None:
        from airflow.utils.session import create_session

        with create_session() as session:
            for ti in self._waiting(session):
                if ti.id in self._seen or ti.hitl_detail is None:
                    continue
                with self._lock:
                    if (ti.id, ti.try_number) not in self._taken_back:
                        continue
                answer = next((a for a in self.answers if a.task_id in (None, ti.task_id)), None)
                if answer is None:
                    self._seen.add(ti.id)
                    self.errors.append(
                        f"{ti.task_id} (try {ti.try_number}) asked, but no question was expected"
                    )
                    self._fail(ti, session)
                    continue
                if isinstance(answer, NoAnswer) and not _timed_out(ti):
                    continue
                self._seen.add(ti.id)
                self.answers.remove(answer)
                self.questions.append(_question(ti))
                if isinstance(answer, NoAnswer):
                    self._sweep(session)
                else:
                    self._respond(ti, answer, session)

    def _respond(self, ti: Any, answer: Answer, session: Any) -> None:
        """Record the answer exactly as ``PATCH .../hitlDetails`` does (the REST API's own handler)."""
        from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
        from airflow.api_fastapi.core_api.datamodels.hitl import UpdateHITLDetailPayload
        from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail

        if answer.before is not None:
            answer.before()
        update_hitl_detail(
            dag_id=ti.dag_id,
            dag_run_id=ti.run_id,
            task_id=ti.task_id,
            update_hitl_detail_payload=UpdateHITLDetailPayload(
                chosen_options=answer.chosen_options, params_input=answer.params_input
            ),
            user=SimpleAuthManagerUser(username=answer.user, role="admin"),
            session=session,
            map_index=ti.map_index,
        )

    def _sweep(self, session: Any) -> None:
        """What the scheduler does for tasks whose response timeout passed (its own method)."""
        from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

        SchedulerJobRunner.check_awaiting_input_timeouts(SimpleNamespace(log=log), session=session)  # type: ignore[arg-type]

    def _fail(self, ti: Any, session: Any) -> None:
        from airflow.utils.state import TaskInstanceState

        ti.set_state(TaskInstanceState.FAILED, session=session)

    def _fail_waiting_tasks(self) -> None:
        from airflow.utils.session import create_session

        with create_session() as session:
            for ti in self._waiting(session):
                self._fail(ti, session)


def _timed_out(ti: Any) -> bool:
    from airflow._shared.timezones import timezone

    return ti.trigger_timeout is not None and ti.trigger_timeout < timezone.utcnow()


def _question(ti: Any) -> Question:
    detail = ti.hitl_detail
    return Question(
        task_id=ti.task_id,
        try_number=ti.try_number,
        subject=detail.subject,
        body=detail.body,
        options=list(detail.options),
        params=dict(detail.params or {}),
        defaults=list(detail.defaults) if detail.defaults is not None else None,
    )
