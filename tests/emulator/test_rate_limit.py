"""Cloudflare's rate limit in the emulator: quota per credential, headers, 429 + 971, lockout, counters."""

from __future__ import annotations

import re

import httpx
import pytest

from airflow_provider_cfworkflows.emulator.ratelimit import RateLimiter
from airflow_provider_cfworkflows.emulator.scenario import RateLimitSpec
from airflow_provider_cfworkflows.emulator.server import EmulatorError, run_emulator_process
from tests.emulator._helpers import error, result
from tests.fakes import FakeClock

RATELIMIT = re.compile(r'"default";r=(\d+);t=(\d+)')


def budget(response: httpx.Response) -> tuple[int, int]:
    """``(remaining, seconds until reset)`` from the ``Ratelimit`` header."""
    match = RATELIMIT.fullmatch(response.headers["ratelimit"])
    assert match, response.headers["ratelimit"]
    return int(match[1]), int(match[2])


def test_fixed_window_with_lockout_then_a_fresh_window():
    clock = FakeClock()
    limiter = RateLimiter(RateLimitSpec(quota=3, window=60), clock.now)
    verdicts = [limiter.admit("token:a") for _ in range(3)]
    assert [(v.allowed, v.remaining, v.reset_in) for v in verdicts if v] == [
        (True, 2, 60),
        (True, 1, 60),
        (True, 0, 60),
    ]
    clock.time += 20.5
    locked = limiter.admit("token:a")
    assert locked is not None
    assert (locked.allowed, locked.remaining, locked.reset_in) == (False, 0, 40)
    assert locked.headers() == {
        "Ratelimit": '"default";r=0;t=40',
        "Ratelimit-Policy": '"default";q=3;w=60',
        "Retry-After": "40",
    }
    other = limiter.admit("token:b")  # each credential has its own quota
    assert other is not None
    assert other.allowed
    clock.time += 39  # still inside the window: every request is refused
    assert limiter.admit("token:a").allowed is False  # type: ignore[union-attr]
    clock.time += 1  # the window is over
    fresh = limiter.admit("token:a")
    assert fresh is not None
    assert (fresh.allowed, fresh.remaining, fresh.reset_in) == (True, 2, 60)
    assert limiter.status()["credentials"]["token:a"] == {
        "requests": 6,
        "limited": 2,
        "remaining": 2,
        "reset_in": 60,
    }


def test_disabled_limiter_counts_but_never_refuses():
    limiter = RateLimiter(None)
    assert [limiter.admit("token:a") for _ in range(5)] == [None] * 5
    assert limiter.status() == {
        "enabled": False,
        "quota": None,
        "window": None,
        "headers": None,
        "credentials": {"token:a": {"requests": 5, "limited": 0}},
    }


def test_no_headers_when_off_or_asked(emu, client):
    response = client.get("/demo-flaky")
    assert "ratelimit" not in response.headers
    assert "ratelimit-policy" not in response.headers
    emu.set_rate_limit(quota=2, window=300, headers=False)
    assert "ratelimit" not in client.get("/demo-flaky").headers
    client.get("/demo-flaky")
    limited = client.get("/demo-flaky")
    assert error(limited, 429)[0] == 971
    assert "ratelimit" not in limited.headers
    assert 299 <= int(limited.headers["retry-after"]) <= 300


def test_quota_lockout_and_headers_on_every_answer(emu, client):
    emu.set_rate_limit(quota=4, window=300)
    answers = [
        client.get("/demo-flaky"),  # 200
        client.get("/no-such-workflow"),  # 404: counted too
        httpx.get(f"{emu.workflows_url}/demo-flaky", headers={"Authorization": "Bearer wrong-1234"}),
        client.post("/demo-flaky/instances", json={"instance_id": "r1"}),
        client.get("/demo-flaky/instances/r1"),
    ]
    assert [a.status_code for a in answers] == [200, 404, 403, 200, 200]
    assert [budget(a)[0] for a in answers] == [3, 2, 3, 1, 0]  # the wrong token has its own quota
    for answer in answers:
        assert answer.headers["ratelimit-policy"] == '"default";q=4;w=300'
        assert 299 <= budget(answer)[1] <= 300
        assert "retry-after" not in answer.headers
    # Over the quota: 429, 971, Retry-After; the request does not take effect; locked out after.
    limited = client.post("/demo-flaky/instances", json={"instance_id": "r2"})
    assert error(limited, 429) == (971, "Please wait and consider throttling your request speed")
    assert budget(limited)[0] == 0
    assert 299 <= int(limited.headers["retry-after"]) <= 300
    for _ in range(3):
        assert client.get("/demo-flaky").status_code == 429
    legacy = {"X-Auth-Email": emu.email, "X-Auth-Key": emu.api_key}
    assert result(httpx.get(f"{emu.workflows_url}/demo-flaky", headers=legacy))  # another credential
    status = emu.rate_limit_status()
    assert status["enabled"] is True
    assert (status["quota"], status["window"], status["headers"]) == (4, 300, True)
    assert status["credentials"][emu.token_label]["requests"] == 8
    assert status["credentials"][emu.token_label]["limited"] == 4
    assert status["credentials"][emu.token_label]["remaining"] == 0
    assert status["credentials"][emu.key_label]["requests"] == 1
    assert emu.request_stats()["rate_limited"] == 4
    # The control API never counts, and a reset of the counters ends the lockout.
    emu.reset_rate_limit()
    assert budget(client.get("/demo-flaky/instances/r2"))[0] == 3
    assert client.get("/demo-flaky/instances/r2").status_code == 404  # the refused create never happened


def test_consume_like_the_dashboard(emu, client):
    emu.set_rate_limit(quota=10, window=60)
    assert emu.consume_rate_limit(7)["remaining"] == 3
    assert budget(client.get("/demo-flaky"))[0] == 2
    assert emu.consume_rate_limit(100)["remaining"] == 0
    assert client.get("/demo-flaky").status_code == 429
    with pytest.raises(EmulatorError, match="400"):
        emu.consume_rate_limit(0)


def test_reset_restores_the_scenario_limit(emu, client):
    emu.set_rate_limit(quota=1, window=60)
    client.get("/demo-flaky")
    assert client.get("/demo-flaky").status_code == 429
    emu.reset()
    assert emu.rate_limit_status()["enabled"] is False
    assert "ratelimit" not in client.get("/demo-flaky").headers
    emu.set_rate_limit(quota=5, window=60)
    emu.disable_rate_limit()
    assert emu.rate_limit_status()["credentials"] == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"quota": 0}, "quota must be a whole number >= 1"),
        ({"window": 1.5}, "window must be a whole number >= 1"),
        ({"headers": "no"}, "headers must be true or false"),
        ({"burst": 1}, "unknown field(s) ['burst']"),
    ],
)
def test_bad_rate_limits_are_refused(emu, body, message):
    response = httpx.put(f"{emu.url}/__emulator/rate-limit", json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_cli_flags_set_the_limit_and_the_options():
    flags = [
        "--rate-limit",
        "3/60",
        "--no-rate-limit-headers",
        "--already-exists-status",
        "400",
        "--params-encoding",
        "string",
        "--output-encoding",
        "string",
        "--chunked-streams",
        "--gzip",
        "--pause-delay",
        "5",
        "--rollback-duration",
        "7",
    ]
    with run_emulator_process(None, time_scale=0, extra_args=flags) as emulator:
        assert emulator.options() == {
            "already_exists_status": 400,
            "params_encoding": "string",
            "output_encoding": "string",
            "stream_content_length": False,
            "gzip": True,
            "pause_delay": 5.0,
            "rollback_duration": 7.0,
            "list_date_field": "created_on",
            "list_lag": 0.0,
            "list_omit_every": 0,
        }
        status = emulator.rate_limit_status()
        assert (status["quota"], status["window"], status["headers"]) == (3, 60, False)
        emulator.set_options(gzip=False)
        emulator.reset()  # back to what the flags set
        assert emulator.options()["gzip"] is True
        with emulator.api_client() as client:
            assert [client.get("/demo-flaky").status_code for _ in range(4)] == [200, 200, 200, 429]
        emulator.set_rate_limit()  # defaults: Cloudflare's 1,200 per 300 s
        with emulator.api_client() as client:
            assert client.get("/demo-flaky").headers["ratelimit-policy"] == '"default";q=1200;w=300'
