"""Benchmark: stream a 1 GiB step output to file:// with the operator, against ``curl -o`` as the baseline.

Starts the emulator (loopback only), defines a Workflow whose step returns a ``ReadableStream`` of
``--size-mib`` MiB, runs one instance, then alternates, ``--repeat`` times:

- ``curl -o <file>`` of the ``/step`` URL with the bearer header (the best a plain download does);
- ``curl | tee <file> | sha256sum``: the same work as the operator, which hashes what it writes;
- ``CloudflareWorkflowStepOutputOperator.execute()`` with ``output_path=file://...``, in a fresh child
  process that samples its own RSS, so the peak RSS growth is the transfer's alone.

The order of the three rotates from round to round, so that none always runs right after another's
writeback. Every file is checked against the emulator's SHA-256 of the stream. Prints the median
throughput of each, the ratios (ours / curl, ours / curl+sha256sum), the CPU seconds each downloader
used per GiB (robust when other processes compete for the cores) and the peak RSS growth of the
operator. Stops the emulator at the end.

    .venv/bin/python benchmarks/bench_stream_output.py [--size-mib 1024] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from airflow.sdk import Context

MIB = 1024 * 1024
WORKFLOW = "bench-stream"
STEP = "blob"
SEED = 42


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(8 * MIB):
            digest.update(block)
    return digest.hexdigest()


# --- child: the operator's write path, measured in its own process ----------------------------------


def child(args: argparse.Namespace) -> None:
    """Run the operator once and print one JSON line: seconds, bytes, RSS before and at peak."""
    import psutil

    from airflow_provider_cfworkflows.operators.workflows import CloudflareWorkflowStepOutputOperator

    class TaskInstance:
        dag_id, run_id, task_id, map_index = "bench", "bench-run", "fetch_output", None

        def __init__(self) -> None:
            self.pushed: dict[str, Any] = {}

        def xcom_push(self, key: str, value: Any) -> None:
            self.pushed[key] = value

    operator = CloudflareWorkflowStepOutputOperator(
        task_id="bench",
        workflow_name=WORKFLOW,
        instance_id=args.instance_id,
        step_name=STEP,
        output_path=f"file://{args.output}",
    )
    # A worker has Airflow loaded: resolve the connection and import the storage layer before measuring,
    # so the numbers are the transfer's, not one-off imports.
    operator.hook.settings  # noqa: B018
    from airflow.sdk import ObjectStoragePath
    from airflow.sdk.lineage import get_hook_lineage_collector

    ObjectStoragePath(f"file://{args.output}").fs  # noqa: B018
    get_hook_lineage_collector()
    ti = TaskInstance()
    process = psutil.Process()
    baseline = peak = process.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu_before = process.cpu_times()
    started = time.perf_counter()
    operator.execute(cast("Context", {"ti": ti}))
    seconds = time.perf_counter() - started
    cpu_after = process.cpu_times()
    done.set()
    sampler.join()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system),
                "bytes": ti.pushed["size_bytes"],
                "sha256": ti.pushed["sha256"],
                "rss_baseline": baseline,
                "rss_peak": peak,
            }
        )
    )


# --- parent -------------------------------------------------------------------------------------


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_curl(url: str, token: str, output: Path, *, hashed: bool) -> tuple[float, float, str | None]:
    """
    ``curl -o`` (or, hashed, ``curl | tee <file> | sha256sum``: the same work as the operator).

    Returns the seconds, the CPU seconds of the command's processes, and the SHA-256 when hashed.
    """
    curl = ["curl", "--silent", "--show-error", "--fail", "-H", f"Authorization: Bearer {token}", url]
    os.sync()
    cpu_before = _children_cpu_seconds()
    started = time.perf_counter()
    if not hashed:
        subprocess.run([*curl, "-o", str(output)], check=True)
        return time.perf_counter() - started, _children_cpu_seconds() - cpu_before, None
    command = f"set -o pipefail; {shlex.join(curl)} | tee {shlex.quote(str(output))} | sha256sum"
    done = subprocess.run(["bash", "-c", command], check=True, capture_output=True, text=True)
    return time.perf_counter() - started, _children_cpu_seconds() - cpu_before, done.stdout.split()[0]


def run_operator(env: dict[str, str], instance_id: str, output: Path) -> dict[str, Any]:
    os.sync()  # the child measures from its own start line; flush the previous round's dirty pages first
    command = [sys.executable, __file__, "--child", "--instance-id", instance_id, "--output", str(output)]
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def machine() -> dict[str, Any]:
    import psutil

    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "curl": subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split()[1],
    }


def main(args: argparse.Namespace) -> None:
    import httpx

    from airflow_provider_cfworkflows.emulator.server import run_emulator_process

    if shutil.which("curl") is None:
        sys.exit("curl is needed for the baseline")
    size = args.size_mib * MIB
    workdir = Path(tempfile.mkdtemp(prefix="cfwf-bench-", dir=args.workdir))
    airflow_home = workdir / "airflow-home"
    airflow_home.mkdir()
    results: dict[str, Any] = {"size_bytes": size, "repeat": args.repeat, "machine": machine()}
    try:
        with run_emulator_process(None) as emulator:
            emulator.put_workflow(
                {"name": WORKFLOW, "steps": [{"name": STEP, "stream": {"size": size, "seed": SEED}}]}
            )
            headers = {"Authorization": f"Bearer {emulator.api_token}"}
            workflow_url = f"{emulator.api_base}/accounts/{emulator.account_id}/workflows/{WORKFLOW}"
            instance_id = "bench-1"
            httpx.post(
                f"{workflow_url}/instances", json={"instance_id": instance_id}, headers=headers
            ).raise_for_status()
            emulator.advance(5)
            step_url = f"{workflow_url}/instances/{instance_id}/step?name={STEP}-1&type=step"
            expected = emulator.stream_digest(WORKFLOW, instance_id, f"{STEP}-1")
            env = {
                **os.environ,
                "AIRFLOW_HOME": str(airflow_home),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW_CONN_CLOUDFLARE_DEFAULT": json.dumps(
                    {
                        "conn_type": "cloudflare_workflows",
                        "login": emulator.account_id,
                        "password": emulator.api_token,
                        "host": emulator.api_base,
                    }
                ),
            }
            kinds = ("curl", "curl_sha256", "operator")
            seconds: dict[str, list[float]] = {kind: [] for kind in kinds}
            cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
            ours: list[dict[str, Any]] = []
            for round_number in range(1, args.repeat + 1):
                line = [f"round {round_number}:"]
                shift = (round_number - 1) % len(kinds)
                for kind in kinds[shift:] + kinds[:shift]:
                    output = workdir / f"{kind}.bin"
                    if kind == "operator":
                        run = run_operator(env, instance_id, output)
                        assert run["bytes"] == size, run
                        assert run["sha256"] == expected["sha256"], run
                        if round_number == 1:
                            assert _sha256(output) == expected["sha256"], (
                                "operator output differs from the stream"
                            )
                        ours.append(run)
                        elapsed, cpu_seconds = run["seconds"], run["cpu_seconds"]
                        growth = (run["rss_peak"] - run["rss_baseline"]) / MIB
                        note = f", peak RSS +{growth:.1f} MiB"
                    else:
                        elapsed, cpu_seconds, digest = run_curl(
                            step_url, emulator.api_token, output, hashed=kind == "curl_sha256"
                        )
                        assert output.stat().st_size == size
                        if digest is not None:
                            assert digest == expected["sha256"], "curl download differs from the stream"
                        note = ""
                    output.unlink()
                    seconds[kind].append(elapsed)
                    cpu[kind].append(cpu_seconds)
                    line.append(f"{kind} {size / MIB / elapsed:6.0f} MiB/s{note} |")
                print(" ".join(line).rstrip(" |"), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    medians = {kind: statistics.median(values) for kind, values in seconds.items()}
    gib = size / 2**30
    cpu_per_gib = {kind: statistics.median(values) / gib for kind, values in cpu.items()}
    growth = max(run["rss_peak"] - run["rss_baseline"] for run in ours)
    results.update(
        {
            "seconds": seconds,
            "cpu_seconds": cpu,
            **{f"{kind}_cpu_seconds_per_gib": value for kind, value in cpu_per_gib.items()},
            **{f"{kind}_mib_per_s": size / MIB / median for kind, median in medians.items()},
            "ratio_operator_to_curl": medians["curl"] / medians["operator"],
            "ratio_operator_to_curl_sha256": medians["curl_sha256"] / medians["operator"],
            "operator_peak_rss_growth_mib": growth / MIB,
            "sha256": expected["sha256"],
        }
    )
    print()
    print(f"stream size                     {args.size_mib} MiB, {args.repeat} rounds, medians")
    labels = {
        "curl": "curl -o (baseline)",
        "curl_sha256": "curl | tee | sha256sum",
        "operator": "operator -> file://",
    }
    for kind, label in labels.items():
        print(
            f"{label:<31} {size / MIB / medians[kind]:8.1f} MiB/s  ({medians[kind]:.2f} s, "
            f"CPU {cpu_per_gib[kind]:.2f} s/GiB)"
        )
    print(f"{'ratio ours / curl':<31} {results['ratio_operator_to_curl']:8.2f}")
    print(f"{'ratio ours / curl+sha256sum':<31} {results['ratio_operator_to_curl_sha256']:8.2f}")
    print(f"{'peak RSS growth (operator)':<31} {growth / MIB:8.1f} MiB (worst round)")
    print(f"{'sha256 (all match the stream)':<31} {expected['sha256']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024, help="stream size in MiB (default 1024)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds of curl, curl+sha256sum, operator (default 3)"
    )
    parser.add_argument("--workdir", default=None, help="where the output files go (default: system temp)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--instance-id", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    child(parsed) if parsed.child else main(parsed)
