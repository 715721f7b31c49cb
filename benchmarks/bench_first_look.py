"""Benchmark: 200 deferrable step sensors on 20 instances start together under Cloudflare's real budget.

Each deferrable sensor looks once in ``execute()`` before it defers (a step already finished needs no
trigger). Started together in one process, those first looks used to be a request each: 200 requests,
which the rate limiter spreads over about 50 s under 1,200 requests per 5 minutes, so that a step
finishing meanwhile was noticed up to 7 poll intervals late. Now the first looks at one instance made
at the same time share one request (``single_flight.py``).

Starts the emulator (loopback only, its own process) enforcing 1,200 requests per 300 s with the
``Ratelimit`` headers, defines ``--instances`` workflows whose ``--waits`` steps run one after another
(``--step-seconds`` each), creates one instance of each (with another credential: setup does not spend
the measured budget), waits ``--head-start`` seconds (so some steps are already finished), then runs,
per variant, ``--waits`` x ``--instances`` real :class:`CloudflareWorkflowStepSensor` objects
(``deferrable=True``, ``poke_interval`` ``--interval``): each ``execute()`` in its own thread, all
released together. A sensor that defers hands its trigger to one event loop (a triggerer) in this
process. Detection is when ``execute()`` returned (done at the first look) or the trigger's event came.

Variants, each with its own instances, a fresh window and fresh limiters, in the same run:

- ``a request per first look`` (baseline): the sharing switched off, as before;
- ``shared first looks``: the provider as it is.

Prints per variant: requests made by the first looks, requests in all, 429 answers, sensors done
without deferring, and the detection latency in poll intervals from each step's end (goal: at most 2).

    .venv/bin/python benchmarks/bench_first_look.py [--instances 20] [--waits 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

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


class Triggerer:
    """One event loop in a thread that runs the triggers handed to it (as Airflow's triggerer would)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, trigger: Any) -> dict[str, Any]:
        async def first_event() -> dict[str, Any]:
            async for event in trigger.run():
                return dict(event.payload)
            raise AssertionError("a trigger ended without an event")

        return asyncio.run_coroutine_threadsafe(first_event(), self.loop).result(timeout=3600)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def run_variant(
    emulator: Any, key_client: httpx.Client, args: argparse.Namespace, shared: bool
) -> dict[str, Any]:
    from airflow.sdk.exceptions import TaskDeferred

    from airflow_provider_cfworkflows import looks, ratelimit
    from airflow_provider_cfworkflows.sensors.workflows import CloudflareWorkflowStepSensor

    emulator.disable_rate_limit()
    run = uuid.uuid4().hex[:6]
    targets = []
    for index in range(args.instances):
        name = f"first-look-{run}-{index:02d}"
        steps = [{"name": f"s{k}", "duration": args.step_seconds} for k in range(args.waits)]
        emulator.put_workflow({"name": name, "class_name": "First", "script_name": "first", "steps": steps})
        instance_id = f"{name}-i"
        key_client.post(f"/{name}/instances", json={"instance_id": instance_id}).raise_for_status()
        targets.append((name, instance_id))
    time.sleep(args.head_start)
    emulator.set_rate_limit(quota=1200, window=300)  # the real budget, a fresh window
    ratelimit.reset_limiters()

    triggerer = Triggerer()
    start = threading.Barrier(args.instances * args.waits)
    outcomes: list[tuple[str, str, float, bool]] = []  # instance, step, detected at, deferred
    looked: list[float] = []  # when each sensor's first look ended (it returned or deferred)

    def sensor_task(workflow: str, instance_id: str, step: str) -> None:
        sensor = CloudflareWorkflowStepSensor(
            task_id=f"wait_{instance_id}_{step}".replace("-", "_"),
            workflow_name=workflow,
            instance_id=instance_id,
            step_name=step,
            deferrable=True,
            poke_interval=args.interval,
            timeout=args.timeout,
        )
        start.wait()
        try:
            result = sensor.execute({"ti": mock.MagicMock(), "task_reschedule_count": 0})
        except TaskDeferred as deferred:
            looked.append(time.time())
            event = triggerer.run(deferred.trigger)
            assert event["status"] == "success", event
            outcomes.append((instance_id, event["step_name"], time.time(), True))
            return
        looked.append(time.time())
        outcomes.append((instance_id, result["step_name"], looked[-1], False))

    threads = [
        threading.Thread(target=sensor_task, args=(workflow, instance_id, f"s{k}"))
        for workflow, instance_id in targets
        for k in range(args.waits)
    ]
    first_looks = []  # one per request the sensors' looks on the worker made
    shared_run = looks._instance_looks.run

    def look(key: Any, call: Any) -> Any:
        def counted() -> Any:
            first_looks.append(key)
            return call()

        return shared_run(key, counted) if shared else counted()

    started = time.time()
    with mock.patch.object(looks._instance_looks, "run", look):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=3600)
    ended = time.time()
    triggerer.stop()
    emulator.disable_rate_limit()

    sent = [
        entry
        for entry in emulator.requests_log(since=started)
        if entry["credential"] == emulator.token_label and entry["time"] <= ended
    ]
    ends: dict[tuple[str, str], float] = {}
    for workflow, instance_id in targets:
        details = key_client.get(f"/{workflow}/instances/{instance_id}").json()["result"]
        for entry in details["steps"]:
            if entry.get("type") == "step" and entry.get("end"):
                ends[(instance_id, entry["name"])] = _iso_to_epoch(entry["end"])
    # From the step's end, or from the sensors' start for a step already finished then.
    latencies = [
        (at - max(ends[(instance_id, step)], started)) / args.interval
        for instance_id, step, at, _deferred in outcomes
    ]
    return {
        "variant": "shared first looks" if shared else "a request per first look (baseline)",
        "sensors": len(threads),
        "instances": args.instances,
        "events": len(outcomes),
        "done_without_deferring": sum(1 for *_rest, deferred in outcomes if not deferred),
        "requests": len(sent),
        "first_look_requests": len(first_looks),
        "responses_429": sum(1 for entry in sent if entry["status"] == 429),
        "wall_seconds": round(ended - started, 1),
        "first_looks_done_seconds": round(max(looked) - started, 1),
        "latency_intervals_median": round(statistics.median(latencies), 2),
        "latency_intervals_max": round(max(latencies), 2),
    }


def main(args: argparse.Namespace) -> None:
    home = Path(tempfile.mkdtemp(prefix="bench-first-look-airflow-"))
    os.environ.update(airflow_environment(home))
    from airflow_provider_cfworkflows.emulator.server import run_emulator_process

    with run_emulator_process(None) as emulator:
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
            results = [run_variant(emulator, key_client, args, shared) for shared in (False, True)]
    for result in results:
        print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--waits", type=int, default=10, help="sensors per instance (steps s0..)")
    parser.add_argument("--interval", type=float, default=5.0, help="poke_interval (s)")
    parser.add_argument("--step-seconds", type=float, default=4.0, help="each step's duration (s)")
    parser.add_argument("--head-start", type=float, default=6.0, help="seconds the instances run first")
    parser.add_argument("--timeout", type=float, default=600.0, help="the sensors' timeout (s)")
    parser.add_argument("--json", help="also write the results here")
    main(parser.parse_args())
