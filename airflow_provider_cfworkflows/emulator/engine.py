"""Deterministic simulation of Workflow instances.

No threads: an instance is its definition plus what happened to it (creation, events, status
actions, each with an emulated timestamp). Its state at any moment is computed from those by
:func:`simulate`, so it is the same whoever asks and however often.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .scenario import StepSpec, WorkflowSpec

# Instance statuses (REST enum).
QUEUED, RUNNING, PAUSED, ERRORED = "queued", "running", "paused", "errored"
TERMINATED, COMPLETE, WAITING = "terminated", "complete", "waiting"
TERMINAL = frozenset({COMPLETE, ERRORED, TERMINATED})
# Kinds of step entries in the details response and the /step "type" parameter.
STEP_ENTRY_TYPE = {"do": "step", "sleep": "sleep", "waitForEvent": "waitForEvent"}


@dataclass(frozen=True)
class Event:
    """An event sent to an instance."""

    event_type: str
    payload: Any
    at: float


@dataclass(frozen=True)
class Action:
    """A status change asked through the API (pause, resume, terminate, restart)."""

    action: str
    at: float
    restart_from: Mapping[str, Any] | None = None


@dataclass
class Instance:
    """What the emulator remembers of an instance; everything else is derived."""

    id: str
    workflow: WorkflowSpec
    created_at: float
    params: Any = None
    trigger_source: str = "api"
    version_id: str = ""
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
    error: Mapping[str, str] | None = None
    attempts: list[Attempt] = field(default_factory=list)
    retrying: bool = False
    # When a sleep wakes up or a waitForEvent times out; production reports it as "end" before then.
    planned_end: float | None = None

    @property
    def entry_type(self) -> str:
        """``step``, ``sleep`` or ``waitForEvent``."""
        return STEP_ENTRY_TYPE[self.spec.kind]


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


class _Timeline:
    """Emulated time that stands still while the instance is paused."""

    def __init__(self, pauses: list[tuple[float, float]]) -> None:
        self.pauses = pauses

    def after(self, start: float, duration: float) -> float:
        """The moment ``duration`` seconds of running time after ``start``."""
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


def counted_names(workflow: WorkflowSpec) -> list[str]:
    """The logged name of each step, ``<name>-<n>``, counted per name and kind."""
    counters: dict[tuple[str, str], int] = {}
    names = []
    for step in workflow.steps:
        key = (step.kind, step.name)
        counters[key] = counters.get(key, 0) + 1
        names.append(f"{step.name}-{counters[key]}")
    return names


def _segment(instance: Instance, now: float) -> tuple[float, int, list[Action]]:
    """Start of the current run (after the last restart), the step index it starts from, its actions."""
    start, first_step = instance.created_at, 0
    actions: list[Action] = []
    names = counted_names(instance.workflow)
    for action in instance.actions:
        if action.at > now:
            break
        if action.action == "restart":
            start, first_step, actions = action.at, 0, []
            wanted = action.restart_from
            if wanted:
                target = f"{wanted.get('name')}-{int(wanted.get('count', 1))}"
                first_step = next((i for i, name in enumerate(names) if name == target), 0)
        else:
            actions.append(action)
    return start, first_step, actions


def _pauses(actions: list[Action]) -> list[tuple[float, float]]:
    pauses, paused_since = [], None
    for action in actions:
        if action.action == "pause" and paused_since is None:
            paused_since = action.at
        elif action.action == "resume" and paused_since is not None:
            pauses.append((paused_since, action.at))
            paused_since = None
    if paused_since is not None:
        pauses.append((paused_since, math.inf))
    return pauses


def simulate(instance: Instance, now: float) -> Snapshot:
    """The instance's state at emulated time ``now``."""
    start, first_step, actions = _segment(instance, now)
    terminate_at = next((a.at for a in actions if a.action == "terminate"), math.inf)
    timeline = _Timeline(_pauses(actions))
    horizon = min(now, terminate_at)
    workflow = instance.workflow
    run_start = timeline.after(start, workflow.queue_delay)
    snapshot = Snapshot(status=QUEUED, queued=instance.created_at, start=None, end=None, steps=[])
    if run_start > horizon:
        return _finish(snapshot, now, terminate_at, timeline)
    snapshot.start = run_start
    events = [event for event in instance.events if event.at >= start]
    consumed: set[int] = set()
    moment = run_start
    for index, (spec, name) in enumerate(zip(workflow.steps, counted_names(workflow), strict=True)):
        if index < first_step:  # restarted from a later step: earlier ones replay instantly
            snapshot.steps.append(
                StepRun(
                    spec, name, moment, moment, True, spec.output, attempts=[Attempt(moment, moment, True)]
                )
            )
            continue
        step = StepRun(spec, name, moment)
        snapshot.steps.append(step)
        if spec.kind == "do":
            done = _run_do(step, moment, horizon, timeline)
        elif spec.kind == "sleep":
            done = _run_sleep(step, moment, horizon, timeline)
        else:
            done = _run_wait(step, moment, horizon, timeline, events, consumed)
        if not done:
            snapshot.status = WAITING if (step.retrying or spec.kind != "do") else RUNNING
            return _finish(snapshot, now, terminate_at, timeline)
        assert step.end is not None
        moment = step.end
        if step.success is False:
            snapshot.status, snapshot.end, snapshot.error = ERRORED, moment, step.error
            return snapshot
    snapshot.status, snapshot.end, snapshot.output = COMPLETE, moment, workflow.output
    return snapshot


def _finish(snapshot: Snapshot, now: float, terminate_at: float, timeline: _Timeline) -> Snapshot:
    """An unfinished instance: terminated, paused, or still going."""
    if terminate_at <= now:
        snapshot.status, snapshot.end = TERMINATED, terminate_at
    elif timeline.paused_at(now):
        snapshot.status = PAUSED
    return snapshot


def _run_do(step: StepRun, moment: float, horizon: float, timeline: _Timeline) -> bool:
    spec = step.spec
    attempt_number = 0
    while True:
        attempt_number += 1
        attempt = Attempt(start=moment)
        step.attempts.append(attempt)
        end = timeline.after(moment, spec.duration)
        if end > horizon:
            return False
        failed = attempt_number <= spec.fail_attempts
        attempt.end, attempt.success = end, not failed
        if not failed:
            step.end, step.success, step.output = end, True, spec.output
            return True
        attempt.error = dict(spec.error)
        step.error = attempt.error
        if attempt_number > spec.retries.limit:
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
    step: StepRun, moment: float, horizon: float, timeline: _Timeline, events: list[Event], consumed: set[int]
) -> bool:
    deadline = step.planned_end = timeline.after(moment, step.spec.timeout)
    for position, event in enumerate(events):
        if position in consumed or event.event_type != step.spec.event_type:
            continue
        received = max(moment, event.at)  # an early event is buffered until the step asks for it
        if received <= min(horizon, deadline):
            consumed.add(position)
            step.end, step.success, step.output = received, True, event.payload
            return True
    if deadline <= horizon:
        step.end, step.success = deadline, False
        step.error = {
            "name": "WorkflowTimeoutError",
            "message": f"waitForEvent '{step.logged_name}' timed out",
        }
        return True
    return False


def new_instance_id() -> str:
    """What Cloudflare generates when no id is given: a UUID."""
    return str(uuid.uuid4())
