"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_cfworkflows import __version__

INTEGRATION = "Cloudflare Workflows"
_PACKAGE = "airflow_provider_cfworkflows"


def get_provider_info() -> dict[str, Any]:
    """Describe the provider: its hooks, operators, sensors, triggers, links and connection form."""
    return {
        "package-name": "airflow-provider-cfworkflows",
        "name": INTEGRATION,
        "description": "Start Cloudflare Workflows instances, wait for steps, read step output, send events, "
        "approve waiting Workflows in Airflow.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://developers.cloudflare.com/workflows/",
                "tags": ["service"],
            }
        ],
        **{
            kind: [{"integration-name": INTEGRATION, "python-modules": [f"{_PACKAGE}.{kind}.workflows"]}]
            for kind in ("hooks", "sensors", "triggers")
        },
        # operators.workflows re-exports every operator; the approval operator's own module is listed too
        # (it needs apache-airflow-providers-standard, see its docstring).
        "operators": [
            {
                "integration-name": INTEGRATION,
                "python-modules": [f"{_PACKAGE}.operators.workflows", f"{_PACKAGE}.operators.approvals"],
            }
        ],
        "extra-links": [f"{_PACKAGE}.links.workflows.CloudflareWorkflowInstanceLink"],
        # Assets of a Workflow's finished instances (assets.cloudflare_workflow_asset); no URI normalizer.
        "asset-uris": [{"schemes": ["cfworkflows"], "handler": None}],
        "connection-types": [
            {
                "hook-class-name": f"{_PACKAGE}.hooks.workflows.CloudflareWorkflowsHook",
                "connection-type": "cloudflare_workflows",
                "hook-name": "Cloudflare Workflows",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port"],
                    "relabeling": {"login": "Account ID", "password": "API Token", "host": "API base URL"},
                    "placeholders": {
                        "login": "32-character account id from the Cloudflare dashboard",
                        "password": "API token with Workers Scripts Write (or Read for sensors only)",
                        "host": "https://api.cloudflare.com/client/v4 (default)",
                    },
                },
                "conn-fields": {
                    "email": {
                        "label": "Email (legacy global API key auth)",
                        "description": "Only with a global API key instead of an API token.",
                        "schema": {"type": ["string", "null"], "format": "email"},
                    },
                    "api_key": {
                        "label": "Global API key (legacy)",
                        "description": "Used only when no API token is set; needs the email too.",
                        "schema": {"type": ["string", "null"], "format": "password"},
                    },
                    "timeout": {
                        "label": "Timeout (seconds)",
                        "description": "Seconds one attempt of a call may take: connecting, the headers "
                        "and the whole JSON answer. For byte-stream step outputs: the longest time without "
                        "receiving a byte. Default 60.",
                        "schema": {"type": ["number", "null"], "minimum": 1},
                    },
                    "max_retries": {
                        "label": "Max retries",
                        "description": "Retries of a call after a transient failure (408, 429, 5xx, a "
                        "timeout, a dropped connection); calls that must not run twice only when they never "
                        "arrived. Default 5.",
                        "schema": {"type": ["integer", "null"], "minimum": 0, "maximum": 20},
                    },
                    "allow_http": {
                        "label": "Allow plain http:// to a remote host",
                        "description": "Only for a private network (e.g. an emulator in another container): "
                        "credentials travel unencrypted and a warning is logged. Loopback needs no opt-in.",
                        "schema": {"type": ["boolean", "null"], "default": False},
                    },
                    "params_encoding": {
                        "label": "Instance params encoding",
                        "description": "'object' sends params as JSON (default, as wrangler does); 'string' "
                        "sends them JSON-encoded in a string, as the newest API spec types them.",
                        "schema": {"type": ["string", "null"], "enum": ["object", "string", None]},
                    },
                    "rate_limit": {
                        "label": "Rate limit (requests per 5 minutes)",
                        "description": "Requests per 5 minutes each process may spend per credential when "
                        "Cloudflare sends no rate-limit headers. Default 600, half of Cloudflare's 1,200.",
                        "schema": {"type": ["integer", "null"], "minimum": 1, "maximum": 1200},
                    },
                },
            }
        ],
    }
