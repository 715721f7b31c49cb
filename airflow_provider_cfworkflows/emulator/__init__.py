"""A local emulator of the Cloudflare Workflows REST API (FastAPI + uvicorn).

Run ``python -m airflow_provider_cfworkflows.emulator --scenario FILE --port 8787`` and point a
``cloudflare_workflows`` connection at ``http://127.0.0.1:8787/client/v4``. See ``scenario`` for the
scenario file format and ``app`` for the ``/__emulator/`` control API used by tests.
"""
