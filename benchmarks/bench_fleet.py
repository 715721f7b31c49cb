"""Benchmark: 1,000 deferred step waits over 100 instances in ONE event loop, inside Cloudflare's budget.

Starts the emulator (loopback only, its own process, so its CPU is not counted) enforcing Cloudflare's
budget per credential, defines one Workflow per instance whose steps finish at staggered times, creates
the instances (with another credential, so setup does not spend the measured budget), then runs
``--waits`` real :class:`CloudflareWorkflowStepTrigger` objects per instance in one asyncio loop, as a
triggerer does, until every one has yielded its event. Prints, from this one run:

- requests per nominal minute (goal <= 240 = 1,200 / 5 min), and the most sent in any window;
- 429 answers (goal 0);
- requests against the baseline of one request per trigger per interval over the run (as issue 9
  measured the old triggers: 200 triggers x 51 s / 5 s = 2,037; goal >= 10x fewer), and against the
  stricter baseline of one request per trigger per interval over each trigger's own lifetime (at most
  ``--waits`` x, see below);
- detection latency in intervals, from the step's end in the emulator to the trigger's event (goal <= 2
  while the budget pays for a look per instance and interval; beyond, the looks go round in turn);
- CPU of the loop's thread (the threads draining the emulator's output are left out; the process's is
  printed too): in cores, per request and per started watcher (flat from 100 to 10,000 instances);
- the longest a 0.1 s sleep took, measured as Airflow's triggerer watchdog does (it warns past 0.2 s),
  with and without the garbage collector's pauses in it, the full collections (count, longest), and
  the longest step of the loop in CPU time without the collector's (what code alone blocks the loop
  for: unlike the watchdog it does not count the time a loaded machine makes the process wait);
- the turn order: looks per instance (fewest, most) and looks made while another instance still
  waited for as many ("ahead of turn": 0 for strict turns, a few at a round's edge).

The triggers start as Airflow's triggerer starts them (one task each, yielding to the loop between
two), all at once. ``--instances`` takes several numbers (one run each, the first is the baseline of the
summary table). ``--duration S`` measures a steady state instead: steps that do not finish, stopped
after ``--warmup W`` + S seconds (no latency); the steady_* numbers cover the S seconds after the
warm-up.

Time is compressed ``--scale`` times: a nominal ``--interval`` of 60 s is polled every 6 s, and the
nominal 300 s window is a 30 s window of the emulator. Compressing time does not change how many
requests fall into one window, so the quota stays 1,200 per (compressed) window, and a nominal minute
is 6 real seconds.

Layouts (``--layout``): ``spread`` — each instance runs its steps one after another, so its waits end
one by one over its life; ``clustered`` — a long first step, then the awaited steps in a quick burst,
so its waits end together. Instances end at staggered times over the run in both. The ratio to the
baseline cannot exceed the waits per instance (one look per instance and interval answers all of
them), and reaches it only when those waits last equally long (``clustered``).

``--one-workflow``: every instance is of ONE Workflow, and each has one instance wait
(:class:`CloudflareWorkflowInstanceTrigger`): the fan-out that the triggerer lists page by page instead
of looking at each instance (``triggers/listers.py``). Each instance waits for an event ``go`` that this
script sends (with the other credential, outside the measured budget) at staggered times from
``--first-end`` to ``--last-end``; it completes at once. Besides the measures above it prints the requests
per interval (list pages and ``GET``s apart, the most and the median), the baseline of one ``GET`` per
instance per interval, and the detection latency from each instance's end to its event.
``--no-listing`` runs the same without listers (the baseline measured; at 10,000 instances a round of
looks takes 42 nominal minutes).

    .venv/bin/python benchmarks/bench_fleet.py [--layout both] [--instances 100 ...] [--json out.json]
    .venv/bin/python benchmarks/bench_fleet.py --one-workflow --instances 10000 --last-end 6060 --timeout 9000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import types
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.airflow_settings import airflow_environment  # noqa: E402


def _iso_to_epoch(value: str) -> float:
    # Imported here: importing the provider imports Airflow, which must come after AIRFLOW_HOME is set.
    from airflow_provider_cfworkflows.instance_changes import parse_time

    moment = parse_time(value)
    assert moment is not None, value
    return moment.timestamp()


def _workflows(
    layout: str, instances: int, waits: int, first_end: float, last_end: float
) -> list[dict[str, Any]]:
    """One workflow per instance; instance i's last awaited step ends at ``first_end..last_end`` s."""
    definitions = []
    for index in range(instances):
        end = first_end + (last_end - first_end) * index / max(instances - 1, 1)
        if layout == "spread":
            steps = [{"name": f"s{k}", "duration": round(end / waits, 3)} for k in range(waits)]
        else:
            burst = 0.05
            steps = [{"name": "work", "duration": round(end - burst * waits, 3)}]
            steps += [{"name": f"s{k}", "duration": burst} for k in range(waits)]
        definitions.append(
            {
                "name": f"fleet-{layout}-{index:03d}",
                "class_name": "Fleet",
                "script_name": "fleet",
                "steps": steps,
            }
        )
    return definitions


# Workflow definitions per layout: instances share them (their ends are quantized to this many levels),
# so that setting up 10,000 instances does not take 10,000 definitions.
MAX_DEFINITIONS = 200
# Airflow's triggerer watchdog sleeps this long and warns when the sleep took longer than 0.2 s
# (``[triggerer] blocked_main_thread_warning_threshold``, airflow/jobs/triggerer_job_runner.py).
WATCHDOG_SLEEP_SECONDS = 0.1


class GarbageCollections:
    """The pauses of Python's garbage collector (``gc.callbacks``), to tell them from other stalls."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, float, int]] = []  # start, end (time.monotonic()), generation
        self.cpu = 0.0  # CPU seconds the collector used in this thread
        self._started = 0.0
        self._started_cpu = 0.0

    def __enter__(self) -> GarbageCollections:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started, self._started_cpu = time.monotonic(), time.thread_time()
        else:
            self.pauses.append((self._started, time.monotonic(), info["generation"]))
            self.cpu += time.thread_time() - self._started_cpu

    def within(self, start: float, end: float) -> float:
        """Seconds the collector ran between ``start`` and ``end``."""
        return sum(max(0.0, min(b, end) - max(a, start)) for a, b, _generation in self.pauses)


class LoopSteps:
    """
    The CPU time of each step of the event loop (each callback: a task running until its next await),
    without the collector's: the longest is what code alone blocks the loop for, whatever the load of
    the machine (a wall-clock watchdog also counts the time the process waits for a core).
    """

    def __init__(self, collections: GarbageCollections) -> None:
        self.longest = 0.0
        self.what = ""  # the longest step's callback
        self._collections = collections
        self._original = asyncio.events.Handle._run

    def __enter__(self) -> LoopSteps:
        original, collections = self._original, self._collections

        def timed(handle: asyncio.Handle) -> None:
            cpu, gc_cpu = time.thread_time(), collections.cpu
            original(handle)
            spent = time.thread_time() - cpu - (collections.cpu - gc_cpu)
            if spent > self.longest:
                self.longest, self.what = spent, repr(handle)[:200]

        asyncio.events.Handle._run = timed  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.events.Handle._run = self._original  # type: ignore[method-assign]


async def _watchdog(gaps: list[tuple[float, float]], stop: asyncio.Event) -> None:
    """Airflow's ``block_watchdog``: the longest a 0.1 s sleep took is the loop's longest stall (+0.1 s)."""
    while not stop.is_set():
        before = time.monotonic()
        await asyncio.sleep(WATCHDOG_SLEEP_SECONDS)
        gaps.append((before, time.monotonic()))


def _kind(thing: object) -> str:
    """A tracked object's type, with what it runs or holds where the type alone says little."""
    kind = type(thing).__name__
    if isinstance(thing, types.CoroutineType | types.MethodType | types.BuiltinMethodType):
        return f"{kind} {thing.__qualname__}"
    if isinstance(thing, asyncio.TimerHandle):
        return f"{kind} {getattr(thing._callback, '__qualname__', 'cancelled')}"
    if type(thing) is tuple:
        return f"{kind} ({', '.join(type(item).__name__ for item in thing[:4])})"
    return kind


async def _heap_census(after: float, census: dict[str, Any]) -> None:
    """
    ``after`` seconds from now, what the collector tracks (frozen objects aside): how many objects, per
    watcher alive then, and the most common kinds (see :func:`_kind`). Counting walks the heap: it stalls
    the loop too.
    """
    from airflow_provider_cfworkflows.triggers import watchers

    await asyncio.sleep(after)
    alive = len(watchers.watchers())
    tracked = Counter(_kind(thing) for thing in gc.get_objects())
    total = sum(tracked.values())
    census.update(
        after_seconds=after,
        watchers=alive,
        tracked_objects=total,
        frozen_objects=gc.get_freeze_count(),
        tracked_per_watcher=round(total / max(alive, 1), 1),
        most_common={name: count for name, count in tracked.most_common(25)},
    )


async def _run_triggers(
    triggers: list[Any],
    duration: float | None,
    warmup: float,
    steady: dict[str, float],
    census: dict[str, Any] | None = None,
    census_after: float = 0.0,
) -> tuple[list[tuple[float, dict[str, Any]]], list[tuple[float, float]], float]:
    """
    Start the triggers as Airflow's triggerer does (one task each, yielding to the loop between two:
    ``TriggerRunner.create_triggers``), with its watchdog; until every trigger has its event, or for
    ``duration`` seconds after a ``warmup`` (then cancel them; ``steady`` gets the times and the loop's
    CPU seconds of the part after the warm-up). Returns the events, the watchdog's sleeps (start, end)
    and the CPU seconds of the loop's thread (without the threads that drain the emulator's output).
    With ``census``, :func:`_heap_census` fills it ``census_after`` seconds after the triggers started.
    """
    loop_cpu = time.thread_time()

    async def first_event(trigger: Any) -> tuple[float, dict[str, Any]]:
        async for event in trigger.run():
            return time.time(), event.payload
        raise AssertionError("a trigger ended without an event")

    from airflow_provider_cfworkflows.triggers import watchers

    gaps: list[tuple[float, float]] = []
    stop = asyncio.Event()
    watchdog = asyncio.create_task(_watchdog(gaps, stop))
    tasks = []
    for trigger in triggers:
        tasks.append(asyncio.create_task(first_event(trigger)))
        await asyncio.sleep(0)
    if census is not None:
        census_task = asyncio.create_task(_heap_census(census_after, census))
    if duration is None:
        results = await asyncio.gather(*tasks)
    else:
        await asyncio.sleep(warmup)
        steady.update(started=time.time(), cpu=time.thread_time())
        await asyncio.sleep(duration)
        steady.update(ended=time.time(), cpu=time.thread_time() - steady["cpu"])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        results = [task.result() for task in tasks if not task.cancelled()]
    if census is not None:
        census_task.cancel()  # a run shorter than census_after has no census
    assert watchers.watchers() == {}, "a watcher outlived its triggers"
    deadline = time.monotonic() + 10
    while watchers.shared_hooks() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # the last watcher closes the shared hook as it ends
    assert watchers.shared_hooks() == {}, "a hook stayed open"
    stop.set()
    await watchdog
    return results, gaps, time.thread_time() - loop_cpu


def _turn_order(sent: list[dict[str, Any]], watched: list[str]) -> dict[str, Any]:
    """
    How fairly the looks went round: the fewest and most looks an instance got, and how often an
    instance was looked at while another still had fewer looks than it had already had ("ahead"; 0 for
    strict turns, up to the looks in flight at a round's edge).
    """
    known = set(watched)
    looks = sorted(
        (entry["time"], instance_id)
        for entry in sent
        if (instance_id := entry["raw_path"].rsplit("/", 1)[-1]) in known
    )
    remaining = Counter(instance_id for _time, instance_id in looks)
    counts = dict.fromkeys(watched, 0)
    at_count = Counter({0: len(watched)})  # how many instances still watched have each count
    lowest, highest, ahead, most_ahead = 0, 0, 0, 0
    for _time, instance_id in looks:
        count = counts[instance_id]
        if count > lowest:
            ahead += 1
            most_ahead = max(most_ahead, count - lowest)
        counts[instance_id] = count + 1
        remaining[instance_id] -= 1
        at_count[count] -= 1
        if remaining[instance_id]:  # after its last look an instance is no longer waiting for a turn
            at_count[count + 1] += 1
        highest = max(highest, count + 1)
        while lowest < highest and at_count[lowest] == 0:
            lowest += 1
    return {
        "looks_per_instance_min": min(counts.values(), default=0),
        "looks_per_instance_max": max(counts.values(), default=0),
        "looks_ahead_of_turn": ahead,
        "most_looks_ahead": most_ahead,
    }


def _setup(
    emulator: Any, key_client: httpx.Client, args: argparse.Namespace, layout: str, instances: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """The workflow of each instance (shared definitions) and the created instance ids."""
    if args.duration is None:
        levels = min(instances, MAX_DEFINITIONS)
        definitions = _workflows(
            layout, levels, args.waits, args.first_end / args.scale, args.last_end / args.scale
        )
        chosen = [definitions[index * levels // instances] for index in range(instances)]
    else:  # steady state: nothing finishes during the run
        steps = [{"name": f"s{k}", "duration": 100 * args.duration} for k in range(args.waits)]
        steady = {"name": "fleet-steady", "class_name": "Fleet", "script_name": "fleet", "steps": steps}
        definitions = [steady]
        chosen = definitions * instances
    emulator.reset()
    emulator.disable_rate_limit()  # setting up is not part of the measurement (nor of its budget)
    for definition in definitions:
        emulator.put_workflow(definition)
    run = uuid.uuid4().hex[:6]
    instance_ids = [f"{definition['name']}-{index:05d}-{run}" for index, definition in enumerate(chosen)]

    def create(pair: tuple[dict[str, Any], str]) -> None:
        definition, instance_id = pair
        key_client.post(
            f"/{definition['name']}/instances", json={"instance_id": instance_id}
        ).raise_for_status()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(create, zip(chosen, instance_ids, strict=True)))
    return chosen, instance_ids


ONE_WORKFLOW = "fleet-one"


def _setup_one_workflow(emulator: Any, key_client: httpx.Client, instances: int) -> list[str]:
    """One Workflow whose instances wait for the event ``go``, then end; the created instance ids."""
    emulator.reset()
    emulator.disable_rate_limit()  # setting up is not part of the measurement (nor of its budget)
    gate = {"name": "go", "type": "waitForEvent", "event_type": "go", "timeout": 10**7}
    emulator.put_workflow(
        {"name": ONE_WORKFLOW, "class_name": "Fleet", "script_name": "fleet", "steps": [gate]}
    )
    run = uuid.uuid4().hex[:6]
    instance_ids = [f"one-{index:05d}-{run}" for index in range(instances)]
    batches = [instance_ids[start : start + 100] for start in range(0, instances, 100)]

    def create(batch: list[str]) -> None:
        body = [{"instance_id": instance_id} for instance_id in batch]
        key_client.post(f"/{ONE_WORKFLOW}/instances/batch", json=body).raise_for_status()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(create, batches))
    return instance_ids


class EventSender(threading.Thread):
    """Sends ``go`` to each instance at its time (``time.time()`` seconds), with the key credential."""

    def __init__(self, key_client: httpx.Client, schedule: list[tuple[float, str]]) -> None:
        super().__init__(daemon=True)
        self.key_client = key_client
        self.schedule = schedule
        self.stop = threading.Event()
        self.failures: list[str] = []

    def run(self) -> None:
        for at, instance_id in self.schedule:
            if self.stop.wait(max(0.0, at - time.time())):
                return
            answer = self.key_client.post(f"/{ONE_WORKFLOW}/instances/{instance_id}/events/go", json={})
            if answer.status_code != 200:
                self.failures.append(f"{instance_id}: HTTP {answer.status_code}")


def _per_interval(times: list[float], started: float, ended: float, interval: float) -> dict[str, float]:
    """The most and the median requests in one interval, over the whole intervals of the run."""
    buckets = Counter(int((moment - started) // interval) for moment in times)
    counts = [buckets.get(index, 0) for index in range(int((ended - started) // interval))]
    return {"max": max(counts, default=0), "median": statistics.median(counts) if counts else 0}


def run_one_workflow(
    emulator: Any, key_client: httpx.Client, args: argparse.Namespace, instances: int
) -> dict[str, Any]:
    """``--one-workflow``: instance waits on one Workflow, completed by events on a schedule."""
    from airflow_provider_cfworkflows.triggers import listers
    from airflow_provider_cfworkflows.triggers.workflows import CloudflareWorkflowInstanceTrigger

    interval = args.interval / args.scale
    window = args.window / args.scale
    instance_ids = _setup_one_workflow(emulator, key_client, instances)
    listing_from = listers.LISTING_MIN_WATCHERS
    if args.no_listing:
        listers.LISTING_MIN_WATCHERS = instances + 1
    emulator.set_rate_limit(quota=args.quota, window=round(window))
    started = time.time()
    first, last = started + args.first_end / args.scale, started + args.last_end / args.scale
    spacing = (last - first) / max(instances - 1, 1)
    sender = EventSender(key_client, [(first + spacing * n, i) for n, i in enumerate(instance_ids)])
    triggers = [
        CloudflareWorkflowInstanceTrigger(
            workflow_name=ONE_WORKFLOW,
            instance_id=instance_id,
            success_states=["complete"],
            failure_states=["errored", "terminated"],
            end_time=started + args.timeout / args.scale,
            poll_interval=interval,
        )
        for instance_id in instance_ids
    ]
    cpu_before, wall_before = time.process_time(), time.monotonic()
    sender.start()
    try:
        with GarbageCollections() as collections, LoopSteps(collections) as steps:
            results, gaps, loop_cpu = asyncio.run(_run_triggers(triggers, None, 0.0, {}))
    finally:
        sender.stop.set()
        sender.join()
        listers.LISTING_MIN_WATCHERS = listing_from
    cpu, wall = time.process_time() - cpu_before, time.monotonic() - wall_before
    ended = time.time()
    emulator.disable_rate_limit()  # the reads below are not part of the measurement
    sent = [
        entry
        for entry in emulator.requests_log(since=started)
        if entry["credential"] == emulator.token_label and entry["time"] <= ended
    ]
    times = sorted(entry["time"] for entry in sent)
    pages = sorted(entry["time"] for entry in sent if entry["endpoint"] == "list_instances")
    gets = sorted(entry["time"] for entry in sent if entry["endpoint"] == "get_instance")
    most_in_window, begin = 0, 0
    for index, moment in enumerate(times):
        while times[begin] <= moment - window:
            begin += 1
        most_in_window = max(most_in_window, index - begin + 1)

    def end_of(instance_id: str) -> float | None:
        details = key_client.get(f"/{ONE_WORKFLOW}/instances/{instance_id}?simple=true").json()["result"]
        return None if details.get("end") is None else _iso_to_epoch(details["end"])

    with ThreadPoolExecutor(4) as pool:
        ends = dict(zip(instance_ids, pool.map(end_of, instance_ids), strict=True))
    # An event for an instance that had not ended (a timeout, an error) is reported, not measured.
    early = [payload for _at, payload in results if ends[payload["instance_id"]] is None]
    latencies = [
        (at - end) / interval for at, payload in results if (end := ends[payload["instance_id"]]) is not None
    ]
    nominal_minutes = (ended - started) * args.scale / 60
    baseline = instances * (ended - started) / interval
    full = [end - start for start, end, generation in collections.pauses if generation == 2]
    return {
        "layout": "one-workflow, no listing" if args.no_listing else "one-workflow",
        "triggers": len(triggers),
        "instances": instances,
        "events": len(results),
        "event_statuses": sorted({payload["status"] for _at, payload in results}),
        "events_before_the_end": len(early),
        "events_before_the_end_sample": early[:3],
        "event_send_failures": sender.failures[:5],
        "wall_seconds": round(ended - started, 1),
        "nominal_minutes": round(nominal_minutes, 2),
        "requests": len(sent),
        "list_pages": len(pages),
        "gets": len(gets),
        "requests_per_nominal_minute": round(len(sent) / nominal_minutes, 1),
        "requests_per_interval": _per_interval(times, started, ended, interval),
        "list_pages_per_interval": _per_interval(pages, started, ended, interval),
        "gets_per_interval": _per_interval(gets, started, ended, interval),
        "most_requests_in_one_window": most_in_window,
        "quota_per_window": args.quota,
        "responses_429": sum(1 for entry in sent if entry["status"] == 429),
        "baseline_requests": round(baseline),
        "baseline_ratio": round(baseline / max(len(sent), 1), 2),
        "latency_intervals_median": round(statistics.median(latencies), 2) if latencies else None,
        "latency_intervals_max": round(max(latencies), 2) if latencies else None,
        "process_cpu_seconds": round(cpu, 2),
        "cpu_seconds": round(loop_cpu, 2),
        "cpu_cores": round(loop_cpu / wall, 3),
        "cpu_ms_per_request": round(1000 * loop_cpu / max(len(sent), 1), 2),
        "cpu_ms_per_watcher": round(1000 * loop_cpu / instances, 2),
        "longest_watchdog_sleep_seconds": round(max((b - a for a, b in gaps), default=0.0), 3),
        "longest_watchdog_sleep_without_gc_seconds": round(
            max((b - a - collections.within(a, b) for a, b in gaps), default=0.0), 3
        ),
        "longest_loop_step_cpu_seconds": round(steps.longest, 3),
        "longest_loop_step": steps.what,
        "full_gc_pauses": len(full),
        "longest_full_gc_pause_seconds": round(max(full, default=0.0), 3),
    }


def _one_workflow_summary(results: list[dict[str, Any]]) -> str:
    lines = [
        "| run | instances | requests (pages + GETs) | 429 | most in one window | requests per interval, max "
        "(median) | pages / GETs per interval, max | baseline / requests | latency median / max "
        "(intervals) | cores | ms/request | longest loop step, CPU s |",
        "|" + "---|" * 12,
    ]
    for r in results:
        per = r["requests_per_interval"]
        lines.append(
            f"| {r['layout']} | {r['instances']} | {r['requests']} ({r['list_pages']} + {r['gets']}) "
            f"| {r['responses_429']} | {r['most_requests_in_one_window']} | {per['max']} ({per['median']}) "
            f"| {r['list_pages_per_interval']['max']} / {r['gets_per_interval']['max']} "
            f"| {r['baseline_ratio']} | {r['latency_intervals_median']} / {r['latency_intervals_max']} "
            f"| {r['cpu_cores']} | {r['cpu_ms_per_request']} | {r['longest_loop_step_cpu_seconds']} |"
        )
    return "\n".join(lines)


def run_layout(
    emulator: Any, key_client: httpx.Client, args: argparse.Namespace, layout: str, instances: int
) -> dict[str, Any]:
    from airflow_provider_cfworkflows.triggers.workflows import CloudflareWorkflowStepTrigger

    interval = args.interval / args.scale
    window = args.window / args.scale
    chosen, instance_ids = _setup(emulator, key_client, args, layout, instances)
    # The measured token starts with a fresh window and full budget.
    emulator.set_rate_limit(quota=args.quota, window=round(window))
    started = time.time()
    triggers = [
        CloudflareWorkflowStepTrigger(
            workflow_name=definition["name"],
            instance_id=instance_id,
            step_name=f"s{k}",
            success_states=["complete"],
            failure_states=["errored"],
            end_time=started + args.timeout / args.scale,
            poll_interval=interval,
        )
        for definition, instance_id in zip(chosen, instance_ids, strict=True)
        for k in range(args.waits)
    ]
    cpu_before, wall_before = time.process_time(), time.monotonic()
    steady: dict[str, float] = {}
    if args.gc_freeze:
        gc.freeze()  # what a deployment may do once the triggerer has started (see docs/benchmarks.md)
    census: dict[str, Any] | None = {} if args.heap_census is not None else None
    with GarbageCollections() as collections, LoopSteps(collections) as steps:
        results, gaps, loop_cpu = asyncio.run(
            _run_triggers(triggers, args.duration, args.warmup, steady, census, args.heap_census or 0.0)
        )
    if args.gc_freeze:
        gc.unfreeze()
    longest_gap = max((end - start for start, end in gaps), default=0.0)
    longest_without_gc = max(
        (end - start - collections.within(start, end) for start, end in gaps), default=0.0
    )
    full = [end - start for start, end, generation in collections.pauses if generation == 2]
    cpu, wall = time.process_time() - cpu_before, time.monotonic() - wall_before
    ended = time.time()
    emulator.disable_rate_limit()  # the reads below are not part of the measurement

    statuses = sorted({payload["status"] for _at, payload in results})
    sent = [
        entry
        for entry in emulator.requests_log(since=started)
        if entry["credential"] == emulator.token_label and entry["time"] <= ended
    ]
    times = sorted(entry["time"] for entry in sent)
    limited = sum(1 for entry in sent if entry["status"] == 429)
    by_endpoint: dict[str, int] = {}
    for entry in sent:
        by_endpoint[entry["endpoint"]] = by_endpoint.get(entry["endpoint"], 0) + 1
    most_in_window, first = 0, 0
    for last, moment in enumerate(times):
        while times[first] <= moment - window:
            first += 1
        most_in_window = max(most_in_window, last - first + 1)
    nominal_minutes = (ended - started) * args.scale / 60
    result: dict[str, Any] = {
        "layout": layout if args.duration is None else "steady",
        "triggers": len(triggers),
        "instances": len(instance_ids),
        "events": len(results),
        "event_statuses": statuses,
        "wall_seconds": round(ended - started, 1),
        "nominal_minutes": round(nominal_minutes, 2),
        "requests": len(sent),
        "requests_by_endpoint": by_endpoint,
        "requests_per_nominal_minute": round(len(sent) / nominal_minutes, 1),
        "most_requests_in_one_window": most_in_window,
        "quota_per_window": args.quota,
        "responses_429": limited,
        **_turn_order(sent, instance_ids),
        "process_cpu_seconds": round(cpu, 2),
        "cpu_seconds": round(loop_cpu, 2),
        "cpu_cores": round(loop_cpu / wall, 3),
        "cpu_ms_per_request": round(1000 * loop_cpu / max(len(sent), 1), 2),
        "cpu_ms_per_watcher": round(1000 * loop_cpu / len(instance_ids), 2),
        "longest_watchdog_sleep_seconds": round(longest_gap, 3),
        "longest_watchdog_sleep_without_gc_seconds": round(longest_without_gc, 3),
        "longest_loop_step_cpu_seconds": round(steps.longest, 3),
        "longest_loop_step": steps.what,
        "full_gc_pauses": len(full),
        "longest_full_gc_pause_seconds": round(max(full, default=0.0), 3),
    }
    if census:
        result["heap_census"] = census
    if steady:
        in_steady = sum(1 for moment in times if steady["started"] <= moment <= steady["ended"])
        result.update(
            steady_seconds=round(steady["ended"] - steady["started"], 1),
            steady_requests=in_steady,
            steady_cpu_cores=round(steady["cpu"] / (steady["ended"] - steady["started"]), 3),
            steady_cpu_ms_per_request=round(1000 * steady["cpu"] / max(in_steady, 1), 2),
        )
    if args.duration is None:
        run_baseline = len(triggers) * (ended - started) / interval
        baseline = sum(1 + int((at - started) // interval) for at, _payload in results)
        ends: dict[tuple[str, str], float] = {}
        for definition, instance_id in zip(chosen, instance_ids, strict=True):
            details = key_client.get(f"/{definition['name']}/instances/{instance_id}").json()["result"]
            for entry in details["steps"]:
                if entry.get("type") == "step" and entry.get("end"):
                    ends[(instance_id, entry["name"])] = _iso_to_epoch(entry["end"])
        latencies = [
            (at - ends[(payload["instance_id"], payload["step_name"])]) / interval for at, payload in results
        ]
        result.update(
            run_baseline_requests=round(run_baseline),
            run_baseline_ratio=round(run_baseline / max(len(sent), 1), 2),
            lifetime_baseline_requests=baseline,
            lifetime_baseline_ratio=round(baseline / max(len(sent), 1), 2),
            latency_intervals_median=round(statistics.median(latencies), 2),
            latency_intervals_max=round(max(latencies), 2),
        )
    return result


def _summary(results: list[dict[str, Any]]) -> str:
    """A table of the runs, with CPU per request and per watcher against the first run (the baseline)."""
    base = results[0]

    def ratio(result: dict[str, Any], key: str) -> str:
        return f"{result[key] / max(base[key], 1e-9):.2f}" if key in result and key in base else "-"

    lines = [
        "| layout | instances | requests | 429 | CPU s | cores | ms/request | x base | ms/watcher | x base "
        "| steady ms/request | x base | steady cores | longest watchdog sleep s (without GC) "
        "| longest loop step, CPU s | full GCs (longest s) | looks/instance min-max | ahead of turn "
        "| max latency (intervals) |",
        "|" + "---|" * 19,
    ]
    for result in results:
        lines.append(
            f"| {result['layout']} | {result['instances']} | {result['requests']} "
            f"| {result['responses_429']} | {result['cpu_seconds']} | {result['cpu_cores']} "
            f"| {result['cpu_ms_per_request']} | {ratio(result, 'cpu_ms_per_request')} "
            f"| {result['cpu_ms_per_watcher']} | {ratio(result, 'cpu_ms_per_watcher')} "
            f"| {result.get('steady_cpu_ms_per_request', '-')} "
            f"| {ratio(result, 'steady_cpu_ms_per_request')} "
            f"| {result.get('steady_cpu_cores', '-')} | {result['longest_watchdog_sleep_seconds']} "
            f"({result['longest_watchdog_sleep_without_gc_seconds']}) "
            f"| {result['longest_loop_step_cpu_seconds']} "
            f"| {result['full_gc_pauses']} ({result['longest_full_gc_pause_seconds']}) "
            f"| {result['looks_per_instance_min']}-{result['looks_per_instance_max']} "
            f"| {result['looks_ahead_of_turn']} (max {result['most_looks_ahead']}) "
            f"| {result.get('latency_intervals_max', '-')} |"
        )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    home = Path(tempfile.mkdtemp(prefix="bench-fleet-airflow-"))
    os.environ.update(airflow_environment(home))
    from airflow_provider_cfworkflows import ratelimit
    from airflow_provider_cfworkflows.emulator.server import run_emulator_process

    window = args.window / args.scale
    results = []
    with run_emulator_process(None, extra_args=["--rate-limit", f"{args.quota}/{round(window)}"]) as emulator:
        os.environ["AIRFLOW_CONN_CLOUDFLARE_DEFAULT"] = json.dumps(
            {
                "conn_type": "cloudflare_workflows",
                "login": emulator.account_id,
                "password": emulator.api_token,
                "host": emulator.api_base,
            }
        )
        key_headers = {"X-Auth-Email": emulator.email, "X-Auth-Key": emulator.api_key}
        with httpx.Client(base_url=emulator.workflows_url, headers=key_headers, timeout=30) as key_client:
            layouts = ["spread", "clustered"] if args.layout == "both" else [args.layout]
            if args.duration is not None:
                layouts = ["steady"]
            for instances in args.instances:
                for layout in layouts if not args.one_workflow else ["one-workflow"]:
                    ratelimit.reset_limiters()  # each run starts, like the emulator's window, afresh
                    if args.one_workflow:
                        result = run_one_workflow(emulator, key_client, args, instances)
                    else:
                        result = run_layout(emulator, key_client, args, layout, instances)
                    print(json.dumps(result, indent=2), flush=True)
                    results.append(result)
    print(_one_workflow_summary(results) if args.one_workflow else _summary(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layout", choices=["spread", "clustered", "both"], default="both")
    parser.add_argument(
        "--instances", type=int, nargs="+", default=[100], help="instances per run (one run per number)"
    )
    parser.add_argument("--waits", type=int, default=10, help="step waits per instance")
    parser.add_argument("--scale", type=float, default=10.0, help="nominal seconds per real second")
    parser.add_argument("--interval", type=float, default=60.0, help="nominal poke_interval (s)")
    parser.add_argument("--quota", type=int, default=1200, help="requests per window")
    parser.add_argument("--window", type=float, default=300.0, help="nominal window (s)")
    parser.add_argument("--first-end", type=float, default=60.0, help="nominal end of the first instance (s)")
    parser.add_argument("--last-end", type=float, default=370.0, help="nominal end of the last instance (s)")
    parser.add_argument("--timeout", type=float, default=1200.0, help="nominal trigger timeout (s)")
    parser.add_argument(
        "--duration",
        type=float,
        help="steady state: real seconds to run with steps that do not finish, then stop (no latency)",
    )
    parser.add_argument(
        "--warmup", type=float, default=0.0, help="with --duration: seconds to run before measuring"
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() before the triggers start (the collector then skips the start-up heap)",
    )
    parser.add_argument(
        "--heap-census",
        type=float,
        metavar="SECONDS",
        help="that many real seconds after the triggers start, count what the garbage collector tracks "
        "(per watcher alive, by type); the count itself stalls the loop, so measure stalls without it",
    )
    parser.add_argument(
        "--one-workflow",
        action="store_true",
        help="instance waits on instances of ONE workflow, ended by events on a schedule (listers)",
    )
    parser.add_argument(
        "--no-listing", action="store_true", help="with --one-workflow: without listers (the baseline)"
    )
    parser.add_argument("--json", help="also write the results here")
    main(parser.parse_args())
