"""Every public operator and sensor takes ``cloudflare_conn_id`` and ``account_id`` (and every operator with
side effects ``durable``) the Airflow way: from ``default_args`` (the DAG's or the task's), ``.partial()``
and ``.expand()``."""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

import pytest
from airflow.sdk import DAG, BaseOperator

from airflow_provider_cfworkflows.base import CloudflareWorkflowsMixin
from airflow_provider_cfworkflows.get_provider_info import get_provider_info
from airflow_provider_cfworkflows.side_effects import RemembersSideEffects

ACCOUNT = "0123456789abcdef0123456789abcdef"
OTHER_ACCOUNT = "fedcba9876543210fedcba9876543210"
# A value for each required argument of the public classes; a new required argument must be added here.
REQUIRED_VALUES: dict[str, Any] = {
    "workflow_name": "wf",
    "instance_id": "i-1",
    "step_name": "load",
    "event_type": "approval",
    "action": "pause",
    "instances": [{"params": {}}],
    "instance_ids": ["i-1"],
}


def public_classes() -> list[type[BaseOperator]]:
    """The operator and sensor classes of the modules the provider registers (``__all__``), once each."""
    info = get_provider_info()
    classes: dict[str, type[BaseOperator]] = {}
    for kind in ("operators", "sensors"):
        for entry in info[kind]:
            for module_name in entry["python-modules"]:
                module = importlib.import_module(module_name)
                for name in module.__all__:
                    value = getattr(module, name)
                    if inspect.isclass(value) and issubclass(value, BaseOperator):
                        classes[value.__qualname__] = value
    return list(classes.values())


CLASSES = public_classes()


def required_arguments(cls: type[BaseOperator]) -> dict[str, Any]:
    """The class's required keyword arguments (besides ``task_id``), each with a sample value."""
    names = [
        name
        for name, parameter in inspect.signature(cls.__init__).parameters.items()
        if parameter.kind is parameter.KEYWORD_ONLY and parameter.default is parameter.empty
    ]
    unknown = [name for name in names if name not in REQUIRED_VALUES]
    assert not unknown, f"add a sample value for {cls.__name__}'s required arguments {unknown}"
    return {name: REQUIRED_VALUES[name] for name in names}


def test_every_public_operator_and_sensor_is_covered():
    assert {cls.__name__ for cls in CLASSES} == {
        "CloudflareWorkflowApprovalOperator",
        "CloudflareWorkflowChangeInstanceStatusOperator",
        "CloudflareWorkflowCreateInstanceOperator",
        "CloudflareWorkflowCreateInstancesOperator",
        "CloudflareWorkflowDeleteInstancesOperator",
        "CloudflareWorkflowSendEventOperator",
        "CloudflareWorkflowStepOutputOperator",
        "CloudflareWorkflowInstanceSensor",
        "CloudflareWorkflowStepSensor",
    }
    assert all(issubclass(cls, CloudflareWorkflowsMixin) for cls in CLASSES)


# The approval operator is a HITLOperator (it cannot also be a CloudflareWorkflowsDurableOperator): it
# remembers its side effects through the RemembersSideEffects mixin and names `durable` itself.
DURABLE = [cls for cls in CLASSES if issubclass(cls, RemembersSideEffects)]


def test_the_operators_with_side_effects_are_durable():
    assert {cls.__name__ for cls in DURABLE} == {
        "CloudflareWorkflowApprovalOperator",
        "CloudflareWorkflowChangeInstanceStatusOperator",
        "CloudflareWorkflowCreateInstanceOperator",
        "CloudflareWorkflowDeleteInstancesOperator",
        "CloudflareWorkflowSendEventOperator",
    }


@pytest.mark.parametrize("cls", DURABLE, ids=lambda cls: cls.__name__)
def test_durable_from_default_args_and_partial(cls):
    required = required_arguments(cls)
    with DAG(dag_id=f"durable_{cls.__name__}", schedule=None, default_args={"durable": False}):
        assert cls(task_id="from_default_args", **required).durable is False
        assert cls(task_id="explicit", durable=True, **required).durable is True
    with DAG(dag_id=f"durable_mapped_{cls.__name__}", schedule=None):
        mapped = cls.partial(task_id="mapped", durable=False, **required).expand(
            cloudflare_conn_id=["cf_media", "cf_other"]
        )
    assert mapped.unmap({"cloudflare_conn_id": "cf_media"}).durable is False


def connection_of(task: Any) -> tuple[str, str | None]:
    return task.cloudflare_conn_id, task.account_id


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_defaults_without_any_source(cls):
    assert connection_of(cls(task_id="t", **required_arguments(cls))) == ("cloudflare_default", None)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_task_and_dag_default_args(cls):
    defaults = {"cloudflare_conn_id": "cf_media", "account_id": ACCOUNT}
    task = cls(task_id="task_level", default_args=defaults, **required_arguments(cls))
    assert connection_of(task) == ("cf_media", ACCOUNT)

    with DAG(dag_id=f"dag_level_{cls.__name__}", schedule=None, default_args=defaults):
        task = cls(task_id="dag_level", **required_arguments(cls))
        explicit = cls(task_id="explicit", cloudflare_conn_id="cf_other", **required_arguments(cls))
    assert connection_of(task) == ("cf_media", ACCOUNT)
    assert connection_of(explicit) == ("cf_other", ACCOUNT)  # an argument beats default_args


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_partial_and_expand(cls):
    required = required_arguments(cls)
    with DAG(dag_id=f"mapped_{cls.__name__}", schedule=None, default_args={"account_id": OTHER_ACCOUNT}):
        conn_partial = cls.partial(task_id="conn_partial", cloudflare_conn_id="cf_media", **required).expand(
            account_id=[ACCOUNT, OTHER_ACCOUNT]
        )
        account_partial = cls.partial(task_id="account_partial", account_id=ACCOUNT, **required).expand(
            cloudflare_conn_id=["cf_media", "cf_other"]
        )
        # The account from the DAG's default_args, the default connection; a required argument mapped.
        name, value = next(iter(required.items()))
        from_defaults = cls.partial(
            task_id="from_defaults", **{k: v for k, v in required.items() if k != name}
        ).expand(**{name: [value]})

    assert connection_of(conn_partial.unmap({"account_id": ACCOUNT})) == ("cf_media", ACCOUNT)
    assert connection_of(conn_partial.unmap({"account_id": OTHER_ACCOUNT})) == ("cf_media", OTHER_ACCOUNT)
    assert connection_of(account_partial.unmap({"cloudflare_conn_id": "cf_other"})) == ("cf_other", ACCOUNT)
    assert connection_of(from_defaults.unmap({name: value})) == ("cloudflare_default", OTHER_ACCOUNT)


# --- in a real DAG run ----------------------------------------------------------------------------


@pytest.mark.integration
def test_a_dag_run_uses_only_the_connection_of_its_default_args(run_dag, fresh_emulator, monkeypatch, capsys):
    from airflow_provider_cfworkflows.emulator.auth import key_label
    from tests.helpers import LEGACY_API_KEY, LEGACY_EMAIL, connection_json

    # cf_media (legacy key auth, no login) is the only connection: a task on cloudflare_default would
    # fail to find it, and the account comes from default_args too.
    monkeypatch.delenv("AIRFLOW_CONN_CLOUDFLARE_DEFAULT", raising=False)
    monkeypatch.setenv(
        "AIRFLOW_CONN_CF_MEDIA",
        connection_json(
            fresh_emulator.api_base,
            login=None,
            password=None,
            extra={"email": LEGACY_EMAIL, "api_key": LEGACY_API_KEY, "max_retries": 3},
        ),
    )
    name = "defaults-wf"
    fresh_emulator.put_workflow(
        {
            "name": name,
            "steps": [
                {"name": "go", "type": "waitForEvent", "event_type": "go"},
                {"name": "publish", "duration": 0.2},
                {
                    "name": "notify",
                    "duration": 0.2,
                    "fail_attempts": 1,
                    "error": {"name": "SmtpError", "message": "mail relay refused"},
                    "retries": {"limit": 0, "delay": 0},
                },
            ],
        }
    )

    result = run_dag("connection_from_default_args", {"workflow_name": name, "event_type": "go"})

    assert result.task_states() == {
        "create": "success",
        "ready": "success",
        "send": "success",
        "steps[0]": "success",
        "steps[1]": "failed",
    }
    instance_id = result.xcom("create")
    log = fresh_emulator.requests_log()
    assert {entry["credential"] for entry in log} == {key_label(LEGACY_EMAIL, LEGACY_API_KEY)}
    assert [entry["method"] for entry in log if entry["method"] != "GET"] == ["POST", "POST"]
    assert any(entry["raw_path"].endswith(f"/instances/{instance_id}/events/go") for entry in log)
    # The failed mapped sensor's error line names the step, the instance and the workflow.
    failure = (
        f"Step 'notify-1' of instance {instance_id!r} of workflow {name!r} is errored: SmtpError: mail "
        "relay refused."
    )
    assert re.search(r"\[error\s*\] " + re.escape(failure), capsys.readouterr().out)
