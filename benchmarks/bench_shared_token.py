"""Benchmark: two processes share one API token while the emulator advertises a quota smaller than the
provider's default; neither may get a 429, and both must finish.

Starts the emulator (loopback only) enforcing ``--quota`` requests per ``--window`` s for each credential,
with the ``Ratelimit`` / ``Ratelimit-Policy`` headers on every answer. Creates ``--instances`` instances
(with another credential) whose awaited steps end at staggered times, then runs two child processes
at once with the same token:

- ``loop``: a triggerer-style event loop with ``--waits`` :class:`CloudflareWorkflowStepTrigger` objects
  per instance (their looks shared per instance);
- ``pokes``: a worker-style process where one thread per instance runs a
  :class:`CloudflareWorkflowStepSensor` in poke mode (``poke()`` then sleep ``--interval``).

``--loops`` and ``--poke-processes`` set how many of each run (default one of each). Together they
ask for far more than the quota (``--interval`` is short), so they finish only if all slow down as the
remaining budget the headers report falls. Prints, from this run: 429 answers (goal 0), the most
requests the token sent in one window against the quota, per full window (counted from the first
request) the requests and those in its first half (goal: about half: no window drained early), each
process's time to finish and outcome.

    .venv/bin/python benchmarks/bench_shared_token.py [--quota 120] [--window 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.airflow_settings import airflow_environment  # noqa: E402

# --- children --------------------------------------------------------------------------------------


def child_loop(args: argparse.Namespace, targets: list[tuple[str, str]]) -> dict[str, Any]:
    """A triggerer-style loop: every wait as a trigger, in one event loop."""
    from airflow_provider_cfworkflows.triggers.workflows import CloudflareWorkflowStepTrigger

    started = time.time()
    triggers = [
        CloudflareWorkflowStepTrigger(
            workflow_name=workflow,
            instance_id=instance_id,
            step_name=f"s{k}",
            success_states=["complete"],
            failure_states=["errored"],
            end_time=started + args.timeout,
            poll_interval=args.interval,
        )
        for workflow, instance_id in targets
        for k in range(args.waits)
    ]

    async def first_event(trigger: Any) -> str:
        async for event in trigger.run():
            return str(event.payload["status"])
        return "no event"

    async def run_all() -> list[str]:
        return await asyncio.gather(*(first_event(trigger) for trigger in triggers))

    statuses = asyncio.run(run_all())
    return {
        "role": "loop",
        "waits": len(triggers),
        "outcomes": _count(statuses),
        "seconds": time.time() - started,
    }


def child_pokes(args: argparse.Namespace, targets: list[tuple[str, str]]) -> dict[str, Any]:
    """A worker-style process: one thread per instance pokes a step sensor until done."""
    from airflow.sdk.exceptions import AirflowException

    from airflow_provider_cfworkflows.sensors.workflows import CloudflareWorkflowStepSensor

    started = time.time()
    outcomes: list[str] = []
    lock = threading.Lock()

    def wait(workflow: str, instance_id: str) -> None:
        sensor = CloudflareWorkflowStepSensor(
            task_id=f"wait_{uuid.uuid4().hex[:6]}",
            workflow_name=workflow,
            instance_id=instance_id,
            step_name=f"s{args.waits - 1}",  # its last awaited step
            poke_interval=args.interval,
        )
        outcome = "timeout"
        try:
            while time.time() < started + args.timeout:
                if sensor.poke({}):  # type: ignore[arg-type]
                    outcome = "success"
                    break
                time.sleep(args.interval)
        except AirflowException as error:
            outcome = f"failed: {error}"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=wait, args=target) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "role": "pokes",
        "waits": len(targets),
        "outcomes": _count(outcomes),
        "seconds": time.time() - started,
    }


def _count(values: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


# --- parent ----------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> None:
    from airflow_provider_cfworkflows.emulator.server import run_emulator_process

    home = Path(tempfile.mkdtemp(prefix="bench-shared-token-"))
    with run_emulator_process(None, extra_args=["--rate-limit", f"{args.quota}/{args.window}"]) as emulator:
        key_headers = {"X-Auth-Email": emulator.email, "X-Auth-Key": emulator.api_key}
        targets = []
        with httpx.Client(base_url=emulator.workflows_url, headers=key_headers, timeout=30) as client:
            for index in range(args.instances):
                end = args.first_end + (args.last_end - args.first_end) * index / max(args.instances - 1, 1)
                name = f"shared-{index:03d}"
                steps = [{"name": f"s{k}", "duration": round(end / args.waits, 3)} for k in range(args.waits)]
                emulator.put_workflow(
                    {"name": name, "class_name": "Shared", "script_name": "shared", "steps": steps}
                )
                instance_id = f"{name}-{uuid.uuid4().hex[:6]}"
                client.post(f"/{name}/instances", json={"instance_id": instance_id}).raise_for_status()
                targets.append((name, instance_id))
        emulator.reset_rate_limit()
        env = {
            **os.environ,
            **airflow_environment(home),
            "PYTHONPATH": str(REPO_ROOT),
            "AIRFLOW_CONN_CLOUDFLARE_DEFAULT": json.dumps(
                {
                    "conn_type": "cloudflare_workflows",
                    "login": emulator.account_id,
                    "password": emulator.api_token,
                    "host": emulator.api_base,
                }
            ),
        }
        common = [json.dumps(targets), *sys.argv[1:]]
        started = time.time()
        children = [
            subprocess.Popen(
                [sys.executable, __file__, "--role", role, "--targets", *common],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            for role in ["loop"] * args.loops + ["pokes"] * args.poke_processes
        ]
        reports = []
        for child in children:
            out, _ = child.communicate(timeout=args.timeout + 120)
            reports.append(
                json.loads(out.strip().splitlines()[-1]) if out.strip() else {"exit": child.returncode}
            )
        ended = time.time()
        sent = [
            entry
            for entry in emulator.requests_log(since=started)
            if entry["credential"] == emulator.token_label and entry["time"] <= ended
        ]
        times = sorted(entry["time"] for entry in sent)
        most = max(
            (sum(1 for t in times[i:] if t < start + args.window) for i, start in enumerate(times)), default=0
        )
        # Windows of the emulator as the first request opened them: how much went in each first half.
        windows = []
        if times:
            for index in range(int((times[-1] - times[0]) // args.window)):  # full windows only
                start = times[0] + index * args.window
                in_window = [t for t in times if start <= t < start + args.window]
                first_half = sum(1 for t in in_window if t < start + args.window / 2)
                windows.append({"requests": len(in_window), "first_half": first_half})
        result = {
            "quota": args.quota,
            "window_seconds": args.window,
            "processes_on_the_token": args.loops + args.poke_processes,
            "demand_per_window_without_pacing": round(
                (args.instances * args.loops + args.instances * args.poke_processes)
                * args.window
                / args.interval
            ),
            "requests": len(sent),
            "responses_429": sum(1 for entry in sent if entry["status"] == 429),
            "most_requests_in_one_window": most,
            "windows": windows,
            "most_in_a_first_half": max((w["first_half"] for w in windows), default=0),
            "seconds": round(ended - started, 1),
            "processes": reports,
        }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--waits", type=int, default=5, help="step waits per instance in the loop")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between looks (both processes)")
    parser.add_argument("--quota", type=int, default=120, help="advertised and enforced requests per window")
    parser.add_argument("--window", type=int, default=20, help="window (whole seconds)")
    parser.add_argument(
        "--first-end", type=float, default=10.0, help="s until the first instance's last step ends"
    )
    parser.add_argument(
        "--last-end", type=float, default=40.0, help="s until the last instance's last step ends"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="s each wait may take")
    parser.add_argument("--loops", type=int, default=1, help="triggerer-style processes")
    parser.add_argument("--poke-processes", type=int, default=1, help="worker-style processes (0 or more)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--role", choices=["loop", "pokes"], help=argparse.SUPPRESS)
    parser.add_argument("--targets", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.role:
        chosen = [(workflow, instance_id) for workflow, instance_id in json.loads(parsed.targets)]
        report = (child_loop if parsed.role == "loop" else child_pokes)(parsed, chosen)
        print(json.dumps(report))
    else:
        main(parsed)
