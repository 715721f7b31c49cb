"""Everything one emulator process knows: workflows, instances, options, faults, the rate limiter, the
request log, the clock."""

from __future__ import annotations

import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from . import engine
from .clock import Clock
from .faults import FaultBook
from .ratelimit import RateLimiter
from .scenario import ApiOptions, Scenario, WorkflowSpec

# The request log keeps at most this many entries (oldest dropped first) so long runs stay bounded.
MAX_REQUEST_LOG = 100_000


def stable_uuid(kind: str, name: str) -> str:
    """A UUID that is the same for the same workflow name in every run (workflow id, version id)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"cfworkflows-emulator:{kind}:{name}"))


@dataclass
class WorkflowRecord:
    """A workflow as the API shows it: its definition plus ids and timestamps."""

    spec: WorkflowSpec
    created_at: float
    modified_at: float
    triggered_at: float | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def id(self) -> str:
        return stable_uuid("workflow", self.spec.name)

    @property
    def version_id(self) -> str:
        """One stable version per workflow (replacing the definition keeps it)."""
        return stable_uuid("version", self.spec.name)


@dataclass
class EmulatorState:
    """
    The emulator's state. Request handlers run on one event loop; ``lock`` also guards the few
    operations that run in worker threads.
    """

    scenario: Scenario
    clock: Clock
    workflows: dict[str, WorkflowRecord] = field(default_factory=dict)
    instances: dict[str, dict[str, engine.Instance]] = field(default_factory=dict)
    options: ApiOptions = field(default_factory=ApiOptions)
    faults: FaultBook = field(default_factory=FaultBook)
    limiter: RateLimiter = field(default_factory=RateLimiter)
    request_log: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_REQUEST_LOG))
    lock: threading.RLock = field(default_factory=threading.RLock)
    _seq: int = 0

    @classmethod
    def from_scenario(cls, scenario: Scenario, clock: Clock | None = None) -> EmulatorState:
        state = cls(
            scenario=scenario,
            clock=clock or Clock(scenario.time_scale),
            options=scenario.api,
            limiter=RateLimiter(scenario.rate_limit),
        )
        for spec in scenario.workflows:
            state.put_workflow(spec)
        return state

    def put_workflow(self, spec: WorkflowSpec) -> WorkflowRecord:
        """Add a workflow or replace its definition (existing instances keep the one they started with)."""
        with self.lock:
            now = self.clock.now()
            record = self.workflows.get(spec.name)
            if record is None:
                record = self.workflows[spec.name] = WorkflowRecord(spec, created_at=now, modified_at=now)
            else:
                record.spec, record.modified_at = spec, now
            self.instances.setdefault(spec.name, {})
            return record

    def next_seq(self) -> int:
        """A number that orders instances by creation."""
        with self.lock:
            self._seq += 1
            return self._seq

    def reset(self) -> None:
        """
        Drop instances, faults and the request log, and go back to the scenario's options and rate limit
        (with fresh counters); workflows stay.
        """
        with self.lock:
            self.instances = {name: {} for name in self.workflows}
            for record in self.workflows.values():
                record.triggered_at = None
            self.faults.clear()
            self.request_log.clear()
            self.options = self.scenario.api
            self.limiter.configure(self.scenario.rate_limit)
