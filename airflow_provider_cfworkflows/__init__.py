"""Apache Airflow provider for Cloudflare Workflows."""

from __future__ import annotations

__version__ = "0.1.0"
