"""Benchmark: the hook's per-call overhead (rate limiter on) against a bare ``requests.Session`` GET.

Starts the emulator (loopback only), creates one instance, then alternates, ``--rounds`` times and in a
shuffled order each round, ``--calls`` sequential calls of:

- ``requests.Session().get(url).json()`` with the same auth headers (the baseline);
- ``CloudflareWorkflowsHook.get_instance()`` of the same URL, with the credential's rate limiter as it
  runs against a loopback host (headers and 429s obeyed, no client-side fallback bucket);
- the same with the fallback bucket active at a budget it never reaches (``rate_limit`` 10^9 per
  300 s), so its arithmetic is measured too;
- the same hook with the limiter replaced by a no-op (the hook as it was before the limiter), so the
  limiter's own share of the overhead is visible.

Prints the median time per call of each and, as the result, the median over rounds of each round's
ratio to the baseline (pairs measured seconds apart, so a shared machine's load drift cancels out;
goal: ≤ 1.1). Checks that the limiter never made a call wait. Stops the emulator at the end.

    .venv/bin/python benchmarks/bench_hook_overhead.py [--rounds 60] [--calls 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WORKFLOW = "bench-overhead"
INSTANCE = "overhead-1"
BUCKET_RATE_LIMIT = 10**9
SEED = 9


class CountingClock:
    """The system clock, counting the waits the limiter asks for."""

    def __init__(self) -> None:
        from airflow_provider_cfworkflows.ratelimit import SystemClock

        self._system = SystemClock()
        self.now = self._system.now
        self.waits = 0

    def sleep(self, seconds: float) -> None:
        self.waits += 1
        self._system.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        self.waits += 1
        await self._system.asleep(seconds)


class NoLimiter:
    """Stands in for the hook's rate limiter: the hook without it."""

    def wait_sync(self, deadline: float | None = None) -> int:
        return 0

    def observe_response(self, status_code: int, headers: Any, ticket: int | None = None) -> None:
        pass

    def release(self) -> None:
        pass


def per_call_seconds(call: Callable[[], Any], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls


def main(args: argparse.Namespace) -> None:
    import requests

    from airflow_provider_cfworkflows import ratelimit
    from airflow_provider_cfworkflows.emulator.server import run_emulator_process

    clock = CountingClock()
    ratelimit.default_clock = clock
    with run_emulator_process(None) as emulator:
        emulator.put_workflow(
            {"name": WORKFLOW, "steps": [{"name": "work", "duration": 1, "output": {"ok": True}}]}
        )
        os.environ["AIRFLOW_CONN_CLOUDFLARE_DEFAULT"] = json.dumps(
            {
                "conn_type": "cloudflare_workflows",
                "login": emulator.account_id,
                "password": emulator.api_token,
                "host": emulator.api_base,
            }
        )
        from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook

        hook = CloudflareWorkflowsHook()
        hook.create_instance(WORKFLOW, instance_id=INSTANCE)
        emulator.advance(5)
        limiter = ratelimit.limiter_for_settings(hook.settings)  # the one the hook uses
        url = f"{emulator.api_base}/accounts/{emulator.account_id}/workflows/{WORKFLOW}/instances/{INSTANCE}"
        session = requests.Session()
        session.headers.update(hook.settings.headers())
        assert session.get(url, timeout=30).json()["result"] == hook.get_instance(WORKFLOW, INSTANCE)

        plain_hook = CloudflareWorkflowsHook()
        plain_hook._rate_limiter = NoLimiter()  # type: ignore[assignment]

        def get_instance() -> Any:
            return hook.get_instance(WORKFLOW, INSTANCE)

        # name: (the limiter's fallback rate_limit while measuring, the call)
        variants: dict[str, tuple[int | None, Callable[[], Any]]] = {
            "bare": (None, lambda: session.get(url, timeout=30).json()),
            "hook": (None, get_instance),
            "hook_bucket": (BUCKET_RATE_LIMIT, get_instance),
            "hook_no_limiter": (None, lambda: plain_hook.get_instance(WORKFLOW, INSTANCE)),
        }
        for rate_limit, call in variants.values():  # warm-up: connections, imports, caches
            limiter.rate_limit = rate_limit
            per_call_seconds(call, 10)
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        order = random.Random(SEED)
        for _ in range(args.rounds):
            names = list(variants)
            order.shuffle(names)  # a fresh order each round: no variant always follows another
            for name in names:
                rate_limit, call = variants[name]
                limiter.rate_limit = rate_limit
                seconds[name].append(per_call_seconds(call, args.calls))
        in_flight = limiter.in_flight
    medians = {name: statistics.median(values) for name, values in seconds.items()}

    def ratio(name: str) -> float:
        return statistics.median(
            ours / bare for ours, bare in zip(seconds[name], seconds["bare"], strict=True)
        )

    results = {
        "rounds": args.rounds,
        "calls_per_round": args.calls,
        "median_ms_per_call": {name: median * 1000 for name, median in medians.items()},
        "ratio_hook_to_bare": ratio("hook"),
        "ratio_hook_bucket_to_bare": ratio("hook_bucket"),
        "ratio_hook_no_limiter_to_bare": ratio("hook_no_limiter"),
        "limiter_waits": clock.waits,
        "python": sys.version.split()[0],
        "nproc": os.cpu_count(),
    }
    print(f"{args.rounds} rounds x {args.calls} sequential calls each, interleaved; medians per call")
    labels = {
        "bare": "requests.Session GET + .json()",
        "hook": "hook.get_instance (limiter)",
        "hook_bucket": "hook.get_instance (limiter+bucket)",
        "hook_no_limiter": "hook.get_instance (no limiter)",
    }
    for name, label in labels.items():
        print(f"{label:<36} {medians[name] * 1000:7.3f} ms")
    print("median of the per-round ratios:")
    print(f"{'ratio hook / bare':<36} {results['ratio_hook_to_bare']:7.3f}  (goal <= 1.1)")
    print(f"{'ratio hook+bucket / bare':<36} {results['ratio_hook_bucket_to_bare']:7.3f}  (goal <= 1.1)")
    print(f"{'ratio hook without limiter / bare':<36} {results['ratio_hook_no_limiter_to_bare']:7.3f}")
    print(f"{'limiter waits':<36} {clock.waits:7d}  (slots left in flight: {in_flight})")
    if clock.waits or in_flight:
        sys.exit("the limiter waited or leaked a slot: the overhead numbers are not comparable")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=60, help="interleaved rounds (default 60)")
    parser.add_argument("--calls", type=int, default=20, help="sequential calls per variant and round")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parsed = parser.parse_args()
    home = tempfile.mkdtemp(prefix="cfwf-bench-home-")
    os.environ.setdefault("AIRFLOW_HOME", home)
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    main(parsed)
