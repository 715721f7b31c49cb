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
- detection latency in intervals, from the step's end in the emulator to the trigger's event (goal <= 2);
- CPU used by the loop's process (process CPU time / wall time; goal <= 0.1 core).

Time is compressed ``--scale`` times: a nominal ``--interval`` of 60 s is polled every 6 s, and the
nominal 300 s window is a 30 s window of the emulator. Compressing time does not change how many
requests fall into one window, so the quota stays 1,200 per (compressed) window, and a nominal minute
is 6 real seconds.

Layouts (``--layout``): ``spread`` — each instance runs its steps one after another, so its waits end
one by one over its life; ``clustered`` — a long first step, then the awaited steps in a quick burst,
so its waits end together. Instances end at staggered times over the run in both. The ratio to the
baseline cannot exceed the waits per instance (one look per instance and interval answers all of
them), and reaches it only when those waits last equally long (``clustered``).

    .venv/bin/python benchmarks/bench_fleet.py [--layout both] [--instances 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def _configure_airflow(home: Path) -> None:
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        }
    )


def _iso_to_epoch(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


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


async def _run_triggers(triggers: list[Any]) -> list[tuple[float, dict[str, Any]]]:
    async def first_event(trigger: Any) -> tuple[float, dict[str, Any]]:
        async for event in trigger.run():
            return time.time(), event.payload
        raise AssertionError("a trigger ended without an event")

    from airflow_provider_cfworkflows.triggers import watchers

    results = await asyncio.gather(*(first_event(trigger) for trigger in triggers))
    assert watchers.watchers() == {}, "a watcher outlived its triggers"
    deadline = time.monotonic() + 10
    while watchers.shared_hooks() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # the last watcher closes the shared hook as it ends
    assert watchers.shared_hooks() == {}, "a hook stayed open"
    return results


def run_layout(
    emulator: Any, key_client: httpx.Client, args: argparse.Namespace, layout: str
) -> dict[str, Any]:
    from airflow_provider_cfworkflows.triggers.workflows import CloudflareWorkflowStepTrigger

    interval = args.interval / args.scale
    window = args.window / args.scale
    definitions = _workflows(
        layout, args.instances, args.waits, args.first_end / args.scale, args.last_end / args.scale
    )
    emulator.reset()
    emulator.set_rate_limit(quota=args.quota, window=round(window))
    instance_ids = []
    for definition in definitions:
        emulator.put_workflow(definition)
    run = uuid.uuid4().hex[:6]
    for definition in definitions:
        instance_id = f"{definition['name']}-{run}"
        key_client.post(
            f"/{definition['name']}/instances", json={"instance_id": instance_id}
        ).raise_for_status()
        instance_ids.append(instance_id)
    emulator.reset_rate_limit()  # the measured token starts with a fresh window and full budget
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
        for definition, instance_id in zip(definitions, instance_ids, strict=True)
        for k in range(args.waits)
    ]
    cpu_before, wall_before = time.process_time(), time.monotonic()
    results = asyncio.run(_run_triggers(triggers))
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
    most_in_window = max(
        (sum(1 for t in times[i:] if t < start + window) for i, start in enumerate(times)), default=0
    )
    run_baseline = len(triggers) * (ended - started) / interval
    baseline = sum(1 + int((at - started) // interval) for at, _payload in results)

    ends: dict[tuple[str, str], float] = {}
    for definition, instance_id in zip(definitions, instance_ids, strict=True):
        details = key_client.get(f"/{definition['name']}/instances/{instance_id}").json()["result"]
        for entry in details["steps"]:
            if entry.get("type") == "step" and entry.get("end"):
                ends[(instance_id, entry["name"])] = _iso_to_epoch(entry["end"])
    latencies = [
        (at - ends[(payload["instance_id"], payload["step_name"])]) / interval for at, payload in results
    ]
    nominal_minutes = (ended - started) * args.scale / 60
    return {
        "layout": layout,
        "triggers": len(triggers),
        "instances": len(instance_ids),
        "event_statuses": statuses,
        "wall_seconds": round(ended - started, 1),
        "nominal_minutes": round(nominal_minutes, 2),
        "requests": len(sent),
        "requests_by_endpoint": by_endpoint,
        "requests_per_nominal_minute": round(len(sent) / nominal_minutes, 1),
        "most_requests_in_one_window": most_in_window,
        "quota_per_window": args.quota,
        "responses_429": limited,
        "run_baseline_requests": round(run_baseline),
        "run_baseline_ratio": round(run_baseline / max(len(sent), 1), 2),
        "lifetime_baseline_requests": baseline,
        "lifetime_baseline_ratio": round(baseline / max(len(sent), 1), 2),
        "latency_intervals_median": round(statistics.median(latencies), 2),
        "latency_intervals_max": round(max(latencies), 2),
        "cpu_seconds": round(cpu, 2),
        "cpu_cores": round(cpu / wall, 3),
    }


def main(args: argparse.Namespace) -> None:
    home = Path(tempfile.mkdtemp(prefix="bench-fleet-airflow-"))
    _configure_airflow(home)
    from airflow_provider_cfworkflows.emulator.server import run_emulator_process

    window = args.window / args.scale
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
            results = [run_layout(emulator, key_client, args, layout) for layout in layouts]
    for result in results:
        print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layout", choices=["spread", "clustered", "both"], default="both")
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--waits", type=int, default=10, help="step waits per instance")
    parser.add_argument("--scale", type=float, default=10.0, help="nominal seconds per real second")
    parser.add_argument("--interval", type=float, default=60.0, help="nominal poke_interval (s)")
    parser.add_argument("--quota", type=int, default=1200, help="requests per window")
    parser.add_argument("--window", type=float, default=300.0, help="nominal window (s)")
    parser.add_argument("--first-end", type=float, default=60.0, help="nominal end of the first instance (s)")
    parser.add_argument("--last-end", type=float, default=370.0, help="nominal end of the last instance (s)")
    parser.add_argument("--timeout", type=float, default=1200.0, help="nominal trigger timeout (s)")
    parser.add_argument("--json", help="also write the results here")
    main(parser.parse_args())
