"""The live contract check against the emulator in each of its modes, its command line, and its verdicts.

The same probes that ask Cloudflare run here against the emulator answering each way production might
(409 or 400 "already exists", params as an object or a string, output raw or JSON-encoded, streams with
or without Content-Length, with or without Ratelimit headers), so the check's code runs on every test
run and each mode must come out "handled: yes".
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_provider_cfworkflows import protocol
from airflow_provider_cfworkflows.connection import settings_from_connection
from airflow_provider_cfworkflows.emulator.scenario import BUNDLED_DEMO
from airflow_provider_cfworkflows.emulator.server import EmulatorProcess, run_emulator_process
from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsConnectionError
from airflow_provider_cfworkflows.protocol import ParamsEncoding
from tests.live.check import EXIT_HANDLED, EXIT_SKIPPED, main
from tests.live.probes import ContractProbe, Target, live_hook
from tests.live.verdicts import (
    PROBE_PARAMS,
    Answer,
    Assumption,
    CreateObservation,
    FilterObservation,
    Handled,
    ListingObservation,
    OpenListingObservation,
    OutputObservation,
    RateLimitObservation,
    Row,
    StreamObservation,
    first_page_order,
    judge_already_exists,
    judge_auth,
    judge_date_filter,
    judge_date_filter_field,
    judge_modified_on,
    judge_open_listing,
    judge_order,
    judge_output,
    judge_params,
    judge_rate_limit,
    judge_status_filter,
    judge_step_not_found,
    judge_stream,
    render_table,
    summarize,
)

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]

# The demo Workflow finishes in 4 emulated seconds: 40 ms at this scale.
TIME_SCALE = 100.0
# Whether this provider version reads Ratelimit headers (the rate limiter module); without it the
# check must say "no" when the server sends them.
PROVIDER_READS_RATELIMIT = importlib.util.find_spec("airflow_provider_cfworkflows.ratelimit") is not None

MODES = [
    pytest.param(
        {"already_exists_status": 409, "params_encoding": "object", "output_encoding": "raw"},
        True,
        True,
        id="409-params_object-output_raw-content_length-ratelimit_headers",
    ),
    pytest.param(
        {"already_exists_status": 400, "params_encoding": "string", "output_encoding": "string"},
        False,
        False,
        id="400-params_string-output_string-chunked-no_ratelimit_headers",
    ),
    pytest.param(
        {"already_exists_status": 409, "params_encoding": "lenient", "output_encoding": "string"},
        False,
        True,
        id="409-params_lenient-output_string-chunked-ratelimit_headers",
    ),
]


@pytest.fixture(scope="module")
def contract_emulator() -> Iterator[EmulatorProcess]:
    """An emulator of its own, fast enough for the demo Workflow to finish while the check waits."""
    with run_emulator_process(None, time_scale=TIME_SCALE) as emulator:
        yield emulator


def emulator_target(emulator: EmulatorProcess) -> Target:
    return Target(
        account_id=emulator.account_id,
        api_token=emulator.api_token,
        base_url=emulator.api_base,
        finish_timeout=30.0,
        poll_interval=0.05,
    )


def set_mode(emulator: EmulatorProcess, options: dict[str, Any], content_length: bool, headers: bool) -> None:
    emulator.reset()
    # The instances the check sends no event to wait for "approval" 300 emulated seconds: 3 s at this
    # scale, which a loaded machine may spend before the check lists them as waiting. 100 times longer.
    demo = next(
        w for w in yaml.safe_load(BUNDLED_DEMO.read_text())["workflows"] if w["name"] == "demo-pipeline"
    )
    for step in demo["steps"]:
        if step.get("type") == "waitForEvent":
            step["timeout"] *= 100
    emulator.put_workflow(demo)
    emulator.set_options(**options, stream_content_length=content_length)
    if headers:
        emulator.set_rate_limit(quota=1200, window=300)


def instances_left(emulator: EmulatorProcess) -> list[str]:
    with emulator.api_client() as client:
        answer = client.get("/demo-pipeline/instances", params={"per_page": 100})
    answer.raise_for_status()
    return [item["id"] for item in answer.json()["result"]]


def run_probe(target: Target) -> list[Row]:
    with live_hook(target) as hook:
        return ContractProbe(target, hook, lambda _line: None).run()


@pytest.mark.parametrize(("options", "content_length", "headers"), MODES)
def test_every_assumption_is_exercised_and_handled_in_each_mode(
    contract_emulator: EmulatorProcess, options: dict[str, Any], content_length: bool, headers: bool
) -> None:
    set_mode(contract_emulator, options, content_length, headers)
    rows = {row.assumption: row for row in run_probe(emulator_target(contract_emulator))}

    assert set(rows) == set(Assumption)
    not_handled = {
        assumption.name: f"{row.handled}: {row.answer} ({row.reason})"
        for assumption, row in rows.items()
        if row.handled is not Handled.YES and assumption is not Assumption.RATE_LIMIT_HEADERS
    }
    assert not_handled == {}
    # What the emulator answered in this mode is what the table reports.
    assert rows[Assumption.ALREADY_EXISTS].answer.startswith(
        f"HTTP {options['already_exists_status']}, 10405"
    )
    params = options["params_encoding"]
    assert ("refused" in rows[Assumption.PARAMS_STRING].answer) == (params == "object")
    assert ("refused" in rows[Assumption.PARAMS_OBJECT].answer) == (params == "string")
    expected_form = "a raw JSON value" if options["output_encoding"] == "raw" else "a JSON-encoded string"
    assert rows[Assumption.OUTPUT].answer.startswith(expected_form)
    stream = rows[Assumption.STREAM_LENGTH].answer
    assert stream.startswith("Content-Length 5242880" if content_length else "no Content-Length (chunked)")
    assert stream.endswith("5242880 bytes received")
    assert rows[Assumption.AUTH_MISSING].answer.startswith("HTTP 400, 9106")
    assert rows[Assumption.AUTH_MALFORMED].answer.startswith("HTTP 400, 6003")
    assert rows[Assumption.AUTH_WRONG_TOKEN].answer.startswith("HTTP 403, 10000")
    assert rows[Assumption.STEP_NOT_FOUND].answer.startswith("HTTP 404")
    assert rows[Assumption.FIRST_PAGE_ORDER].answer.startswith("oldest first (ascending)")
    assert rows[Assumption.DATE_FILTER_FIELD].answer.startswith("created_on")
    assert rows[Assumption.STATUS_FILTER].answer.startswith("status=complete: ours listed, nothing else")
    assert rows[Assumption.OPEN_LISTED].reason.startswith("triggers/listers.py")  # none missing
    assert rows[Assumption.MODIFIED_ON].answer.startswith("modified_on at or after the last change")
    rate_limit = rows[Assumption.RATE_LIMIT_HEADERS]
    if headers:
        assert rate_limit.answer.startswith('Ratelimit: "default";r=')
        assert rate_limit.handled is (Handled.YES if PROVIDER_READS_RATELIMIT else Handled.NO)
    else:
        assert (rate_limit.answer, rate_limit.handled) == ("absent", Handled.YES)
    assert instances_left(contract_emulator) == []


def test_command_line_prints_the_table_and_passes_against_the_emulator(
    contract_emulator: EmulatorProcess,
) -> None:
    set_mode(contract_emulator, {"already_exists_status": 400}, True, False)
    environ = {
        "CLOUDFLARE_API_TOKEN": contract_emulator.api_token,
        "CLOUDFLARE_ACCOUNT_ID": contract_emulator.account_id,
        "CLOUDFLARE_API_BASE_URL": contract_emulator.api_base,
    }
    out = io.StringIO()

    code = main(["--poll-interval", "0.05", "--finish-timeout", "30"], environ=environ, out=out)

    text = out.getvalue()
    assert code == EXIT_HANDLED, text
    assert "| assumption | what the server answered | handled by the provider |" in text
    assert text.count("| yes: ") == len(Assumption)
    assert f"{len(Assumption)} handled, 0 not handled, 0 not exercised" in text
    assert "Every instance the check created was deleted." in text
    assert contract_emulator.api_token not in text
    assert instances_left(contract_emulator) == []


def test_instances_are_deleted_when_a_probe_fails_midway(contract_emulator: EmulatorProcess) -> None:
    contract_emulator.reset()
    target = emulator_target(contract_emulator)

    def fail_while_waiting(line: str) -> None:
        if line.startswith("Waiting"):  # every instance exists by then
            raise RuntimeError("interrupted")

    with live_hook(target) as hook:
        probe = ContractProbe(target, hook, fail_while_waiting)
        with pytest.raises(RuntimeError, match="interrupted"):
            probe.run()

    assert len(probe.created) == 3
    assert probe.leftovers == []
    assert instances_left(contract_emulator) == []
    deletes = [entry for entry in contract_emulator.requests_log() if entry["endpoint"] == "delete_instance"]
    assert sorted(entry["status"] for entry in deletes) == [200, 200, 200]


def test_a_missing_workflow_aborts_without_leaving_instances(contract_emulator: EmulatorProcess) -> None:
    contract_emulator.reset()
    environ = {
        "CLOUDFLARE_API_TOKEN": contract_emulator.api_token,
        "CLOUDFLARE_ACCOUNT_ID": contract_emulator.account_id,
        "CLOUDFLARE_API_BASE_URL": contract_emulator.api_base,
        "CLOUDFLARE_WORKFLOW_NAME": "not-deployed",
    }
    out = io.StringIO()

    assert main([], environ=environ, out=out) == 2
    assert "ABORTED: GET workflow 'not-deployed' failed (HTTP 404" in out.getvalue()
    assert contract_emulator.request_stats()["creates"] == 0  # nothing was started, so nothing is left
    assert instances_left(contract_emulator) == []


@pytest.mark.parametrize(
    "environ",
    [{}, {"CLOUDFLARE_API_TOKEN": "set"}, {"CLOUDFLARE_ACCOUNT_ID": "0" * 32, "CLOUDFLARE_API_TOKEN": " "}],
)
def test_without_credentials_it_is_skipped_never_passed(environ: dict[str, str]) -> None:
    out = io.StringIO()

    assert main([], environ=environ, out=out) == EXIT_SKIPPED
    assert out.getvalue().startswith("SKIPPED:")
    assert "RESULT" not in out.getvalue()


def test_the_script_reports_skipped_with_its_own_exit_code() -> None:
    environ = {key: value for key, value in os.environ.items() if not key.startswith("CLOUDFLARE_")}

    finished = subprocess.run(
        ["bash", "scripts/live-check.sh"],
        cwd=REPO_ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert finished.returncode == EXIT_SKIPPED, finished.stderr[-2000:]
    assert finished.stdout.startswith("SKIPPED:")


# --- verdicts on answers the emulator never gives ---------------------------------------------

CREATE = protocol.create_instance_request("0" * 32, "wf", instance_id="x", params=PROBE_PARAMS)
GET = protocol.get_workflow_request("0" * 32, "wf")


def error_answer(request: protocol.ApiRequest, status: int, *errors: dict[str, Any]) -> Answer:
    body = json.dumps({"success": False, "errors": list(errors), "messages": [], "result": None}).encode()
    return Answer(status, protocol.error_for_response(request, status, {}, body))


@pytest.mark.parametrize(
    ("answer", "handled"),
    [
        (error_answer(CREATE, 400, {"code": 10405, "message": "x"}), Handled.YES),
        (
            error_answer(CREATE, 422, {"code": 1, "message": "(instance.already_exists) Instance exists"}),
            Handled.YES,
        ),
        (
            error_answer(CREATE, 409, {"code": 10409, "message": "Instance not in a restartable state."}),
            Handled.NO,
        ),
        (error_answer(CREATE, 500, {"code": 10405, "message": "already exists"}), Handled.NO),
        (Answer(200, None, {"id": "x"}), Handled.YES),
    ],
)
def test_already_exists_verdict_follows_is_already_exists(answer: Answer, handled: Handled) -> None:
    assert judge_already_exists(answer).handled is handled


def test_params_verdicts() -> None:
    accepted = CreateObservation(Answer(200, None, {}), received=PROBE_PARAMS)
    as_text = CreateObservation(Answer(200, None, {}), received=json.dumps(PROBE_PARAMS))
    refused = CreateObservation(error_answer(CREATE, 400, {"code": 10021, "message": "body.params: bad"}))
    refused_elsewhere = CreateObservation(error_answer(CREATE, 400, {"code": 10021, "message": "bad body"}))
    string, obj = ParamsEncoding.STRING, ParamsEncoding.OBJECT

    assert judge_params(obj, accepted, refused).handled is Handled.YES
    assert judge_params(string, refused, accepted).handled is Handled.YES  # the error names the setting
    assert judge_params(string, refused, refused).handled is Handled.NO
    assert judge_params(string, refused_elsewhere, accepted).handled is Handled.NO
    row = judge_params(string, as_text, accepted)
    assert (row.handled, row.answer) == (
        Handled.NO,
        "HTTP 200: accepted; the Workflow receives a JSON string, not the object",
    )
    unreadable = CreateObservation(Answer(200, None, {}), read_error="gone")
    assert judge_params(obj, unreadable, None).handled is Handled.NO


@pytest.mark.parametrize(
    ("observation", "handled", "answer_start"),
    [
        (OutputObservation("complete", {"report": "r"}, 1.0), Handled.YES, "a raw JSON value (dict)"),
        (OutputObservation("complete", 5, 1.0), Handled.YES, "a raw JSON value (int)"),
        (OutputObservation("complete", '{"report": "r"}', 1.0), Handled.YES, "a JSON-encoded string"),
        (OutputObservation("complete", "report r", 1.0), Handled.NO, "a string that is not JSON"),
        (OutputObservation("complete", {"big": "x" * 70_000}, 1.0), Handled.NO, "a raw JSON value"),
        (
            OutputObservation("waiting", None, 180.0),
            Handled.NOT_EXERCISED,
            "not asked: the instance was waiting",
        ),
    ],
)
def test_output_verdicts(observation: OutputObservation, handled: Handled, answer_start: str) -> None:
    row = judge_output(observation)
    assert (row.handled, row.answer[: len(answer_start)]) == (handled, answer_start)


@pytest.mark.parametrize(
    ("answer", "handled"),
    [
        (error_answer(GET, 400, {"code": 9106, "message": "Missing X-Auth-Key"}), Handled.YES),
        (error_answer(GET, 400, {"code": 6003, "message": "Invalid request headers"}), Handled.YES),
        (error_answer(GET, 403, {"code": 9109, "message": "Invalid access token"}), Handled.YES),
        (error_answer(GET, 401, {"code": 1, "message": "nope"}), Handled.YES),
        (error_answer(GET, 400, {"code": 1234, "message": "Bad header"}), Handled.NO),
        (Answer(200, None, {}), Handled.NO),
    ],
)
def test_auth_verdicts(answer: Answer, handled: Handled) -> None:
    assert judge_auth(Assumption.AUTH_MISSING, answer).handled is handled


def test_step_not_found_verdicts() -> None:
    step = protocol.step_output_request("0" * 32, "wf", "i", "s-1")
    assert (
        judge_step_not_found(error_answer(step, 404, {"code": 10404, "message": "x"})).handled is Handled.YES
    )
    assert (
        judge_step_not_found(error_answer(step, 400, {"code": 10021, "message": "x"})).handled is Handled.NO
    )


def test_date_filter_and_order_verdicts() -> None:
    ours = ("a", "b")
    first_page = (("a", "2026-01-01T00:00:00.000Z"), ("b", "2026-01-01T00:00:01.000Z"))
    good = ListingObservation("2026-01-01T00:00:00Z", ours, ("a", "b"), excluded=(), first_page=first_page)
    assert (judge_date_filter(good).handled, judge_order(good).handled) == (Handled.YES, Handled.YES)

    leaked = ListingObservation("t", ours, ("a", "b"), excluded=("b",))
    assert judge_date_filter(leaked).handled is Handled.NO
    repeated = ListingObservation("t", ours, ("a", "a", "b"), excluded=())
    assert judge_order(repeated).handled is Handled.NO
    refused = ListingObservation(
        "t", ours, paged_error=error_answer(GET, 400, {"code": 10021, "message": "no offsets"})
    )
    assert judge_date_filter(refused).handled is Handled.NO
    assert judge_order(refused).handled is Handled.NOT_EXERCISED

    assert first_page_order(first_page) == "ascending"
    assert first_page_order(tuple(reversed(first_page))) == "descending"
    assert first_page_order(first_page[:1]) == "undetermined"
    assert first_page_order((*first_page, ("c", "2026-01-01T00:00:00.500Z"))) == "undetermined"


def test_stream_verdicts() -> None:
    cut = CloudflareWorkflowsConnectionError("cut off")
    assert judge_stream(StreamObservation(None, 10)).handled is Handled.YES
    assert judge_stream(StreamObservation(10, 10)).handled is Handled.YES
    assert judge_stream(StreamObservation(10, 9)).handled is Handled.NO
    assert judge_stream(StreamObservation(10, 4, cut)).handled is Handled.NO


def test_rate_limit_verdicts() -> None:
    settings = settings_from_connection(login="0" * 32, password="t", host=None, port=None, extras={})
    assert judge_rate_limit(RateLimitObservation(None, None), settings).handled is Handled.YES
    present = RateLimitObservation('"default";r=1199;t=300', '"default";q=1200;w=300')
    expected = Handled.YES if PROVIDER_READS_RATELIMIT else Handled.NO
    assert judge_rate_limit(present, settings).handled is expected


def test_table_and_summary() -> None:
    rows = [
        Row(Assumption.OUTPUT, "a | b", Handled.YES, "why"),
        Row(Assumption.STREAM_LENGTH, "not asked", Handled.NOT_EXERCISED, "none"),
        Row(Assumption.DATE_FILTER, "refused", Handled.NO, "because"),
    ]
    table = render_table(rows).splitlines()

    assert table[2] == f"| {Assumption.OUTPUT.value} | a \\| b | yes: why |"
    assert len(table) == 5
    assert summarize(rows) == "1 handled, 1 not handled, 1 not exercised (of 3 assumptions)"


def test_filter_verdicts_for_the_finished_instances_trigger() -> None:
    created = FilterObservation(
        in_complete=True, complete_statuses=("complete",), listed_after_creation=False
    )
    later = dataclasses.replace(created, listed_after_creation=True)
    assert judge_date_filter_field(created).handled is Handled.YES
    assert judge_date_filter_field(later).answer.startswith("a later time than created_on")
    assert judge_date_filter_field(later).handled is Handled.YES  # the tracker falls back, at a cost
    assert judge_date_filter_field(dataclasses.replace(created, listed_after_creation=None)).handled is (
        Handled.NOT_EXERCISED
    )
    assert judge_status_filter(created).handled is Handled.YES
    ignored = dataclasses.replace(created, complete_statuses=("complete", "running"))
    assert judge_status_filter(ignored).reason.endswith("(costlier)")
    assert judge_status_filter(dataclasses.replace(created, in_complete=False)).handled is Handled.NO
    assert judge_status_filter(FilterObservation(error="HTTP 400")).handled is Handled.NO


def test_verdicts_for_the_listers_of_many_instances() -> None:
    item = {"id": "a", "status": "waiting", "modified_on": "2026-11-02T10:00:05Z"}
    seen = OpenListingObservation(
        expected_ids=("a", "b"),
        listed={"a": item, "b": {**item, "id": "b"}},
        last_changes={"a": "2026-11-02T10:00:05Z", "b": "2026-11-02T10:00:04Z"},
        listed_at="2026-11-02T10:00:30Z",
    )
    assert judge_open_listing(seen).answer == "2 of our 2 waiting instances listed (status waiting)"
    assert judge_modified_on(seen).answer.startswith("modified_on at or after the last change for all 2")
    missed = dataclasses.replace(seen, listed={"a": item})
    assert judge_open_listing(missed).answer.startswith("1 of our 2")
    assert judge_open_listing(missed).reason.endswith("(costlier)")
    behind = dataclasses.replace(seen, last_changes={"a": "2026-11-02T10:00:09Z", "b": None})
    assert (
        judge_modified_on(behind).answer
        == "1 of 1 listed as modified before the last change their details showed"
    )
    unreadable = dataclasses.replace(seen, listed={"a": {**item, "modified_on": None}})
    assert judge_modified_on(unreadable).answer == "no readable modified_on"
    assert {
        judge(row).handled
        for row in (seen, missed, behind, unreadable)
        for judge in (judge_open_listing, judge_modified_on)
    } == {Handled.YES}
    assert judge_modified_on(dataclasses.replace(seen, listed={})).handled is Handled.NOT_EXERCISED
    assert judge_open_listing(OpenListingObservation(error="HTTP 500")).handled is Handled.NO
