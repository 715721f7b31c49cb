"""The provider is registered with Airflow and its declared classes exist."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

from airflow_provider_cfworkflows import __version__
from airflow_provider_cfworkflows.connection import CLOUDFLARE_RATE_LIMIT, MAX_MAX_RETRIES
from airflow_provider_cfworkflows.get_provider_info import get_provider_info


def test_declared_modules_and_classes_import():
    info = get_provider_info()
    assert info["package-name"] == "airflow-provider-cfworkflows"
    for kind in ("hooks", "operators", "sensors", "triggers"):
        for entry in info[kind]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
    for dotted in [*info["extra-links"], info["connection-types"][0]["hook-class-name"]]:
        module, _, name = dotted.rpartition(".")
        assert hasattr(importlib.import_module(module), name), dotted
    assert info["connection-types"][0]["connection-type"] == "cloudflare_workflows"
    assert info["connection-types"][0]["conn-fields"]["api_key"]["schema"]["format"] == "password"


def test_connection_form_offers_every_extra_the_connection_reads():
    fields = get_provider_info()["connection-types"][0]["conn-fields"]
    assert set(fields) == {
        "email",
        "api_key",
        "timeout",
        "max_retries",
        "allow_http",
        "params_encoding",
        "rate_limit",
    }
    assert fields["allow_http"]["schema"]["type"] == ["boolean", "null"]
    assert set(fields["params_encoding"]["schema"]["enum"]) == {"object", "string", None}
    assert fields["rate_limit"]["schema"]["maximum"] == CLOUDFLARE_RATE_LIMIT
    assert fields["max_retries"]["schema"]["maximum"] == MAX_MAX_RETRIES


def test_the_connection_guide_describes_each_extra_as_the_form_does():
    from pathlib import Path

    guide = (Path(__file__).parents[1] / "docs" / "connection.md").read_text()
    rows = {
        line.split("|")[1].strip(): " ".join(line.split("|")[2].split())
        for line in guide.splitlines()
        if line.startswith("| Extra `")
    }
    fields = get_provider_info()["connection-types"][0]["conn-fields"]
    assert set(rows) == {f"Extra `{name}`" for name in fields}
    for name, field in fields.items():
        assert rows[f"Extra `{name}`"].startswith(field["description"]), name


@pytest.mark.integration
def test_airflow_providers_list_shows_the_provider():
    listing = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "list", "--output", "plain"],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(line for line in listing.stdout.splitlines() if "airflow-provider-cfworkflows" in line)
    assert __version__ in line


PUBLIC_CLASSES = {
    "hooks": ["CloudflareWorkflowsHook"],
    "operators": [
        "CloudflareWorkflowApprovalOperator",
        "CloudflareWorkflowChangeInstanceStatusOperator",
        "CloudflareWorkflowCreateInstanceOperator",
        "CloudflareWorkflowCreateInstancesOperator",
        "CloudflareWorkflowDeleteInstancesOperator",
        "CloudflareWorkflowSendEventOperator",
        "CloudflareWorkflowStepOutputOperator",
    ],
    "sensors": ["CloudflareWorkflowInstanceSensor", "CloudflareWorkflowStepSensor"],
    "triggers": ["CloudflareWorkflowInstanceTrigger", "CloudflareWorkflowStepTrigger"],
}


@pytest.mark.parametrize("kind", sorted(PUBLIC_CLASSES))
def test_public_classes_stay_importable_from_their_workflows_module(kind):
    module = importlib.import_module(f"airflow_provider_cfworkflows.{kind}.workflows")
    for name in PUBLIC_CLASSES[kind]:
        assert isinstance(getattr(module, name, None), type), f"{kind}.workflows.{name}"


# Run in a fresh interpreter in which Airflow's standard provider cannot be imported (a worker with the
# Task SDK alone): every other operator works; the approval operator says what to install.
WITHOUT_STANDARD_PROVIDER = """
import sys
from importlib.abc import MetaPathFinder


class NoStandardProvider(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "airflow.providers.standard" or name.startswith("airflow.providers.standard."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None


import airflow.sdk  # Airflow itself reads the providers' metadata first; then the provider is gone

sys.meta_path.insert(0, NoStandardProvider())
for name in [name for name in sys.modules if name.startswith("airflow.providers.standard")]:
    del sys.modules[name]
from airflow_provider_cfworkflows.operators import workflows

assert workflows.CloudflareWorkflowSendEventOperator.__name__ == "CloudflareWorkflowSendEventOperator"
try:
    workflows.CloudflareWorkflowApprovalOperator
except ImportError as error:
    print(error)
else:
    raise SystemExit("the approval operator imported without the standard provider")
"""


def test_the_operators_import_without_airflows_standard_provider():
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_STANDARD_PROVIDER],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "install apache-airflow-providers-standard" in done.stdout
