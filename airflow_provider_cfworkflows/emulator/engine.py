"""Deterministic simulation of Workflow instances from the emulated clock.

No threads and no timers: an :class:`Instance` is its definition plus what was done to it (creation,
events sent, status changes), each with an emulated timestamp. :func:`simulate` replays that history
up to a moment and returns a :class:`Snapshot` of the instance at that moment, so the state is
computed lazily on each request, is the same however often it is asked for, and time can be sped up
or jumped without anything "missing a tick".

Rules (production behaviour where documented, else *inferred* and noted):

* ``queued`` for ``queue_delay`` seconds, then the steps run in order; ``complete`` after the last.
* ``do``: each attempt lasts ``duration``; the first ``fail_attempts`` attempts fail (all of them in
  the instance's first ``fail_runs`` runs: creation starts run 1, each restart the next). Between a
  failed attempt and the retry the instance is ``waiting`` (docs: "waiting" covers retry delays);
  during an attempt it is ``running``. Once ``retries.limit`` retries have failed, the step and the
  instance are ``errored`` with the step's error.
* ``sleep``: ``waiting`` for ``duration``.
* ``waitForEvent``: ``waiting`` until an event of its type is available (events sent earlier are
  buffered and consumed in order, one per step) or until ``timeout`` passes, which errors the step and
  the instance.
* ``pause`` freezes the instance (``paused``): running time stops, so the current attempt, sleep or
  timeout resumes where it stopped on ``resume``; an event sent while paused is received on resume.
  With a pause delay (option ``pause_delay``) the instance is first ``waitingForPause`` for that long,
  still running (docs: "finishing the current work before pausing"); a ``resume`` then cancels the
  pause, and an instance that finishes meanwhile is not paused.
* ``terminate``: ``terminated``; steps in flight stay unfinished. With ``rollback`` and a rollback
  duration (option ``rollback_duration``) it is ``rollingBack`` for that long first (inferred from the
  REST enum; the emulator runs no rollback handlers).
* A ``do`` step whose output is over 1 MiB as JSON fails at once, without retries, with
  ``WorkflowInternalError: Step <name>-<n> output is too large. Maximum allowed size is 1MiB.``, which
  errors the instance (WSDK ``context.ts``; production kills the run, per third-party reports).
* ``restart``: the instance starts again (``queued``, then running) from the first step, or from the
  ``from`` step, keeping the records of the steps before it and erasing everything later (including
  events sent before the restart).
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import errors
from .scenario import MAX_OUTPUT_BYTES, StepSpec, WorkflowSpec

# Instance statuses (the REST enum).
QUEUED, RUNNING, PAUSED, ERRORED = "queued", "running", "paused", "errored"
TERMINATED, COMPLETE, WAITING = "terminated", "complete", "waiting"
WAITING_FOR_PAUSE, ROLLING_BACK = "waitingForPause", "rollingBack"
ALL_STATUSES = (
    QUEUED,
    RUNNING,
    PAUSED,
    ERRORED,
    TERMINATED,
    COMPLETE,
    WAITING_FOR_PAUSE,
    WAITING,
    ROLLING_BACK,
)
TERMINAL = frozenset({COMPLETE, ERRORED, TERMINATED})
# Step entry "type" in the details response (and the /step "type" parameter) for each scenario kind.
STEP_ENTRY_TYPE = {"do": "step", "sleep": "sleep", "waitForEvent": "waitForEvent"}
# The error of a waitForEvent that timed out (inferred: production's exact name/message are not known).
EVENT_TIMEOUT_ERROR_NAME = "WorkflowTimeoutError"
EVENT_TIMEOUT_MESSAGE = "Execution timed out after waiting for event '{event_type}' in step '{step}'"

PAUSE, RESUME, TERMINATE, RESTART = "pause", "resume", "terminate", "restart"


@dataclass(frozen=True)
class Event:
    """An event sent to an instance."""

    event_type: str
    payload: Any
    at: float


@dataclass(frozen=True)
class Action:
    """
    A status change accepted through the API.

    :param kept_steps: for ``restart`` from a step: the records of the steps before it.
    :param rollback: for ``terminate``: whether a rollback was asked for.
    :param events_before: for ``restart``: how many events had been sent before it (they are erased,
        even those sent at the same emulated moment).
    :param delay: for ``pause``: seconds of ``waitingForPause`` first; for ``terminate`` with rollback:
        seconds of ``rollingBack`` before ``terminated``.
    """

    action: str
    at: float
    kept_steps: tuple[StepRun, ...] = ()
    rollback: bool = False
    events_before: int = 0
    delay: float = 0.0


@dataclass
class Instance:
    """What the emulator remembers of an instance; everything else is derived by :func:`simulate`."""

    id: str
    workflow: WorkflowSpec
    created_at: float
    seq: int = 0
    params: Any = None
    trigger_source: str = "api"
    version_id: str = ""
    workflow_id: str = ""
    cron: str | None = None
    scheduled_time: float | None = None
    instance_retention: Any = None
    location_hint: str | None = None
    events: list[Event] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)


@dataclass
class Attempt:
    """One attempt of a ``step.do``."""

    start: float
    end: float | None = None
    success: bool | None = None
    error: Mapping[str, str] | None = None


@dataclass
class StepRun:
    """A step as far as it got."""

    spec: StepSpec
    logged_name: str
    start: float
    end: float | None = None
    success: bool | None = None  # None: still running / waiting
    output: Any = None
    error: Mapping[str, str] | None = None  # the error of the last failed attempt (or the timeout)
    attempts: list[Attempt] = field(default_factory=list)
    retrying: bool = False  # between a failed attempt and the next one
    # When a sleep wakes up or a waitForEvent times out (inf while paused for good).
    planned_end: float | None = None

    @property
    def entry_type(self) -> str:
        """``step``, ``sleep`` or ``waitForEvent``."""
        return STEP_ENTRY_TYPE[self.spec.kind]

    @property
    def finished(self) -> bool:
        """Whether the step ended (successfully or not)."""
        return self.success is not None


@dataclass
class Snapshot:
    """An instance's state at one moment."""

    status: str
    queued: float
    start: float | None
    end: float | None
    steps: list[StepRun]
    output: Any = None
    error: Mapping[str, str] | None = None
    rollback: bool = False  # terminated with rollback requested
    modified: float = 0.0  # the last moment anything changed


class _Timeline:
    """Running time of one run: emulated time minus the paused intervals."""

    def __init__(self, pauses: list[tuple[float, float]], pending: list[tuple[float, float]]) -> None:
        self.pauses = pauses
        self.pending = pending  # waitingForPause intervals

    def after(self, start: float, duration: float) -> float:
        """The moment ``duration`` seconds of running time after ``start`` (inf if paused for good)."""
        moment, left = start, duration
        for pause_start, pause_end in self.pauses:
            if pause_end <= moment:
                continue
            if pause_start <= moment:
                moment = pause_end
                continue
            if moment + left <= pause_start:
                return moment + left
            left -= pause_start - moment
            moment = pause_end
        return moment + left

    def paused_at(self, moment: float) -> bool:
        return any(start <= moment < end for start, end in self.pauses)

    def pausing_at(self, moment: float) -> bool:
        return any(start <= moment < end for start, end in self.pending)


def counted_names(workflow: WorkflowSpec) -> list[str]:
    """The logged name of each step, ``<name>-<n>``, counted per base name and kind (sleeps: and duration)."""
    counters: dict[tuple[str, str, float], int] = {}
    names = []
    for step in workflow.steps:
        key = (step.kind, step.name, step.duration if step.kind == "sleep" else 0.0)
        counters[key] = counters.get(key, 0) + 1
        names.append(f"{step.name}-{counters[key]}")
    return names


def find_step_index(workflow: WorkflowSpec, name: str, count: int = 1, kind: str | None = None) -> int | None:
    """Index of the ``count``-th step (1-based) with base ``name`` (and ``kind``, if given), or None."""
    seen: dict[str, int] = {}
    for index, step in enumerate(workflow.steps):
        if step.name != name or (kind is not None and step.kind != kind):
            continue
        seen[step.kind] = seen.get(step.kind, 0) + 1
        if seen[step.kind] == count:
            return index
    return None


@dataclass
class _Segment:
    """The current run of an instance: since creation or the last restart."""

    start: float
    queued: float
    kept: tuple[StepRun, ...]
    actions: list[Action]
    first_event: int = 0
    run: int = 1  # 1 from creation, +1 per restart


def _segment(instance: Instance, now: float) -> _Segment:
    segment = _Segment(instance.created_at, instance.created_at, (), [])
    for action in instance.actions:
        if action.at > now:
            break
        if action.action == RESTART:
            segment = _Segment(
                action.at, action.at, action.kept_steps, [], action.events_before, segment.run + 1
            )
        else:
            segment.actions.append(action)
    return segment


def _timeline(actions: list[Action]) -> _Timeline:
    """The paused intervals (and the waitingForPause ones before them) of a run."""
    pauses: list[tuple[float, float]] = []
    pending: list[tuple[float, float]] = []
    asked_at: float | None = None  # when the current pause was asked for
    paused_since: float | None = None  # when it takes effect
    for action in actions:
        if action.action == PAUSE and paused_since is None:
            asked_at, paused_since = action.at, action.at + action.delay
        elif action.action == RESUME and paused_since is not None and asked_at is not None:
            # A resume while still waitingForPause cancels the pause.
            if action.at > paused_since:
                pauses.append((paused_since, action.at))
            pending.append((asked_at, min(paused_since, action.at)))
            asked_at = paused_since = None
    if paused_since is not None and asked_at is not None:
        pauses.append((paused_since, math.inf))
        pending.append((asked_at, paused_since))
    return _Timeline(pauses, [(start, end) for start, end in pending if end > start])


def simulate(instance: Instance, now: float) -> Snapshot:
    """The instance's state at emulated time ``now``."""
    segment = _segment(instance, now)
    terminate = next((a for a in segment.actions if a.action == TERMINATE), None)
    terminate_at = terminate.at if terminate is not None else math.inf
    timeline = _timeline(segment.actions)
    horizon = min(now, terminate_at)
    workflow = instance.workflow
    snapshot = Snapshot(
        status=QUEUED,
        queued=segment.queued,
        start=None,
        end=None,
        steps=[_copy_step(step) for step in segment.kept],
        modified=max([segment.start] + [a.at for a in segment.actions]),
    )
    run_start = timeline.after(segment.start, workflow.queue_delay)
    if run_start > horizon:
        return _unfinished(snapshot, now, terminate, timeline)
    snapshot.start = run_start
    events = [event for event in instance.events[segment.first_event :] if event.at >= segment.start]
    consumed: set[int] = set()
    moment = run_start
    names = counted_names(workflow)
    for index in range(len(segment.kept), len(workflow.steps)):
        spec = workflow.steps[index]
        step = StepRun(spec, names[index], moment)
        snapshot.steps.append(step)
        if spec.kind == "do":
            done = _run_do(step, moment, horizon, timeline, segment.run)
        elif spec.kind == "sleep":
            done = _run_sleep(step, moment, horizon, timeline)
        else:
            done = _run_wait(step, moment, horizon, timeline, events, consumed)
        snapshot.modified = max(snapshot.modified, _last_change(step))
        if not done:
            snapshot.status = RUNNING if spec.kind == "do" and not step.retrying else WAITING
            return _unfinished(snapshot, now, terminate, timeline)
        assert step.end is not None
        moment = step.end
        if step.success is False:
            snapshot.status, snapshot.end, snapshot.error = ERRORED, moment, step.error
            return snapshot
    snapshot.status, snapshot.end, snapshot.output = COMPLETE, moment, workflow.output
    snapshot.modified = max(snapshot.modified, moment)
    return snapshot


def _copy_step(step: StepRun) -> StepRun:
    """A copy of a kept step record (outputs are shared: nothing mutates them)."""
    return dataclasses.replace(step, attempts=[dataclasses.replace(a) for a in step.attempts])


def _last_change(step: StepRun) -> float:
    moments = [step.start, step.end or step.start]
    for attempt in step.attempts:
        moments += [attempt.start, attempt.end or attempt.start]
    return max(moments)


def _unfinished(snapshot: Snapshot, now: float, terminate: Action | None, timeline: _Timeline) -> Snapshot:
    """An instance that has not finished by itself: terminated, paused, or still going."""
    if terminate is not None and terminate.at <= now:
        done_at = terminate.at + (terminate.delay if terminate.rollback else 0.0)
        if now < done_at:
            snapshot.status = ROLLING_BACK
        else:
            snapshot.status, snapshot.end, snapshot.rollback = TERMINATED, done_at, terminate.rollback
            snapshot.modified = max(snapshot.modified, done_at)
    elif timeline.paused_at(now):
        snapshot.status = PAUSED
    elif timeline.pausing_at(now):
        snapshot.status = WAITING_FOR_PAUSE
    return snapshot


def _run_do(step: StepRun, moment: float, horizon: float, timeline: _Timeline, run: int) -> bool:
    spec = step.spec
    attempt_number = 0
    while True:
        attempt_number += 1
        attempt = Attempt(start=moment)
        step.attempts.append(attempt)
        end = timeline.after(moment, spec.duration)
        if end > horizon:
            return False
        failed = attempt_number <= spec.fail_attempts or run <= spec.fail_runs
        too_large = not failed and spec.output_bytes > MAX_OUTPUT_BYTES
        attempt.end, attempt.success = end, not (failed or too_large)
        if attempt.success:
            step.end, step.success, step.output = end, True, spec.output
            return True
        if too_large:
            message = errors.OUTPUT_TOO_LARGE_MESSAGE.format(step=step.logged_name)
            attempt.error = {"name": errors.OUTPUT_TOO_LARGE_NAME, "message": message}
        else:
            attempt.error = dict(spec.error)
        step.error = attempt.error
        if too_large or attempt_number > spec.retries.limit:
            step.end, step.success = end, False
            return True
        moment = timeline.after(end, spec.retries.delay_before(attempt_number))
        if moment > horizon:
            step.retrying = True
            return False


def _run_sleep(step: StepRun, moment: float, horizon: float, timeline: _Timeline) -> bool:
    end = step.planned_end = timeline.after(moment, step.spec.duration)
    if end > horizon:
        return False
    step.end, step.success = end, True
    return True


def _run_wait(
    step: StepRun,
    moment: float,
    horizon: float,
    timeline: _Timeline,
    events: list[Event],
    consumed: set[int],
) -> bool:
    deadline = step.planned_end = timeline.after(moment, step.spec.timeout)
    for position, event in enumerate(events):
        if position in consumed or event.event_type != step.spec.event_type:
            continue
        # An early event is buffered until the step asks for it; one sent while paused waits for resume.
        received = timeline.after(max(moment, event.at), 0)
        if received <= min(horizon, deadline):
            consumed.add(position)
            step.end, step.success, step.output = received, True, event.payload
            return True
        break  # the first unconsumed event of this type is the one the step gets
    if deadline <= horizon:
        step.end, step.success = deadline, False
        step.error = {
            "name": EVENT_TIMEOUT_ERROR_NAME,
            "message": EVENT_TIMEOUT_MESSAGE.format(event_type=step.spec.event_type, step=step.logged_name),
        }
        return True
    return False


def new_instance_id() -> str:
    """What Cloudflare generates when no id is given: a UUID."""
    return str(uuid.uuid4())
