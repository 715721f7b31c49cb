"""Scenario files: the bundled demo, YAML and JSON loading, and error messages that name the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_cfworkflows.emulator.scenario import (
    BUNDLED_DEMO,
    DEFAULT_ACCOUNT_ID,
    ScenarioError,
    load_scenario,
    parse_scenario,
)
from airflow_provider_cfworkflows.emulator.shapes import PREVIEW_LIMIT, json_stringify


def test_bundled_demo_has_what_the_examples_need():
    scenario = load_scenario(None)
    assert load_scenario(BUNDLED_DEMO) == scenario
    workflows = {w.name: w for w in scenario.workflows}
    assert {"demo-pipeline", "demo-flaky", "demo-sensitive"} <= set(workflows)
    prepare, approval, report = workflows["demo-pipeline"].steps
    assert (prepare.name, prepare.kind) == ("prepare", "do")
    assert len(json_stringify(prepare.output)) > PREVIEW_LIMIT
    assert (approval.kind, approval.event_type, approval.timeout) == ("waitForEvent", "approval", 300)
    assert report.name == "build report"
    assert report.stream is not None
    assert report.stream.size == 5 * 1024 * 1024
    assert workflows["demo-pipeline"].output is not None
    flaky = workflows["demo-flaky"].steps[0]
    assert (flaky.fail_attempts, flaky.retries.delay) == (2, 1)
    assert flaky.fail_attempts <= flaky.retries.limit
    assert any(step.sensitive for step in workflows["demo-sensitive"].steps)


def test_defaults():
    scenario = parse_scenario({"workflows": [{"name": "w", "steps": [{"name": "s"}]}]})
    assert (
        scenario.account_id,
        scenario.api_token,
        scenario.email,
        scenario.api_key,
        scenario.time_scale,
    ) == (
        DEFAULT_ACCOUNT_ID,
        "emulator-token",
        "dev@example.com",
        "emulator-global-key",
        1.0,
    )
    step = scenario.workflows[0].steps[0]
    assert (step.kind, step.duration, step.output, step.retries.limit, step.retries.backoff) == (
        "do",
        0,
        None,
        5,
        "exponential",
    )


def test_json_and_yaml_files(tmp_path):
    document = {"time_scale": 5, "workflows": [{"name": "w", "output": {"x": 1}}]}
    as_json = tmp_path / "s.json"
    as_json.write_text(json.dumps(document))
    as_yaml = tmp_path / "s.yml"
    as_yaml.write_text("time_scale: 5\nworkflows:\n  - name: w\n    output: {x: 1}\n")
    assert load_scenario(as_json) == load_scenario(as_yaml)
    assert load_scenario(as_json).time_scale == 5
    broken = tmp_path / "broken.json"
    broken.write_text("{nope")
    with pytest.raises(ScenarioError, match=r"broken\.json: not valid JSON"):
        load_scenario(broken)


def wf(**step: Any) -> dict[str, Any]:
    return {"workflows": [{"name": "w", "steps": [{"name": "s", **step}]}]}


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        (wf(type="loop"), "workflows[0].steps[0].type must be one of"),
        (wf(duration=-1), "workflows[0].steps[0].duration must be a number >= 0"),
        (wf(durration=1), "workflows[0].steps[0] has unknown field(s) ['durration']"),
        (wf(type="waitForEvent"), "workflows[0].steps[0].event_type must be a non-empty string"),
        (wf(type="waitForEvent", event_type="a.b"), "workflows[0].steps[0].event_type must match"),
        (
            wf(type="waitForEvent", event_type="e", timeout=0),
            "workflows[0].steps[0].timeout must be a number",
        ),
        (wf(type="sleep", output=1), "workflows[0].steps[0].output applies only to do steps, not 'sleep'"),
        (wf(event_type="x"), "workflows[0].steps[0].event_type applies only to waitForEvent steps"),
        (wf(output=1, stream={"size": 1}), "both 'output' and 'stream'"),
        (wf(stream={"size": -1}), "workflows[0].steps[0].stream.size must be a whole number >= 0"),
        (wf(stream={"size": 1, "sed": 2}), "workflows[0].steps[0].stream has unknown field(s) ['sed']"),
        (wf(retries={"backoff": "random"}), "workflows[0].steps[0].retries.backoff must be one of"),
        (wf(retries={"limit": 1.5}), "workflows[0].steps[0].retries.limit must be a whole number"),
        (wf(fail_attempts=True), "workflows[0].steps[0].fail_attempts must be a whole number"),
        (wf(fail_runs=-1), "workflows[0].steps[0].fail_runs must be a whole number >= 0"),
        (wf(error={"name": "E", "msg": "x"}), "workflows[0].steps[0].error has unknown field(s) ['msg']"),
        (wf(sensitive="yes"), "workflows[0].steps[0].sensitive must be true or false"),
        (wf(output={"blob": "x" * (8 * 1024 * 1024)}), "workflows[0].steps[0].output is 8388619 bytes"),
        (wf(output={"when": object()}), "workflows[0].steps[0].output must be plain JSON"),
        ({"workflows": [{"name": "w", "steps": [{"name": "a\nb"}]}]}, "must not contain control characters"),
        ({"workflows": [{"name": "w", "steps": [{"name": "x" * 257}]}]}, "at most 256 characters"),
        ({"workflows": [{"name": "w" * 65}]}, "workflows[0].name must be at most 64 characters"),
        ({"workflows": [{"steps": []}]}, "workflows[0].name must be a non-empty string"),
        ({"workflows": [{"name": "w", "queue_delay": "soon"}]}, "workflows[0].queue_delay must be a number"),
        ({"workflows": [{"name": "w", "steps": {}}]}, "workflows[0].steps must be a list"),
        ({"workflows": [{"name": "w"}, {"name": "w"}]}, "workflows[].name must be unique; repeated: ['w']"),
        ({"account_id": "nope"}, "scenario.account_id must be 32 lowercase hex characters"),
        ({"time_scale": -1}, "scenario.time_scale must be a number"),
        ({"api_token": ""}, "scenario.api_token must be a non-empty string"),
        ({"workflow": []}, "scenario has unknown field(s) ['workflow']"),
        ([], "scenario must be a mapping"),
    ],
)
def test_bad_scenarios_name_the_field(document, fragment):
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(document)
    assert fragment in str(caught.value)


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("workflows:\n  - name: w\n    steps: [{name: s, type: loop}]\n")
    with pytest.raises(ScenarioError, match=r"bad\.yaml: workflows\[0\]\.steps\[0\]\.type must be one of"):
        load_scenario(bad)


def test_the_documented_scenario_format_loads_and_shows_every_field():
    import dataclasses
    import re
    from pathlib import Path

    import yaml

    from airflow_provider_cfworkflows.emulator.scenario import _STEP_FIELDS, ApiOptions, RateLimitSpec

    docs = (Path(__file__).parents[2] / "docs" / "emulator.md").read_text()
    (block,) = re.findall(r"^```yaml\n(.*?)^```", docs, re.S | re.M)
    data = yaml.safe_load(block)

    scenario = parse_scenario(data)

    assert [step.name for step in scenario.workflows[0].steps][-1] == "approval"
    assert set(data) == {
        "account_id",
        "api_token",
        "email",
        "api_key",
        "time_scale",
        "api",
        "rate_limit",
        "workflows",
    }
    assert set(data["api"]) == {field.name for field in dataclasses.fields(ApiOptions)}
    assert set(data["rate_limit"]) == {field.name for field in dataclasses.fields(RateLimitSpec)}
    (workflow,) = data["workflows"]
    assert set(workflow) == {"name", "class_name", "script_name", "queue_delay", "output", "steps"}
    shown = {key for step in workflow["steps"] for key in step}
    assert shown == {"name", "type"}.union(*_STEP_FIELDS.values())
