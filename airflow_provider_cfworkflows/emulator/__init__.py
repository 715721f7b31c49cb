"""A local emulator of the Cloudflare Workflows REST API (FastAPI + uvicorn).

Run ``python -m airflow_provider_cfworkflows.emulator [--scenario FILE] [--port 8787]`` and point a
``cloudflare_workflows`` connection at ``http://127.0.0.1:8787/client/v4``; tests use
:func:`~airflow_provider_cfworkflows.emulator.server.run_emulator_process`.

Modules: ``scenario`` (the scenario file schema, API options, the rate limit), ``engine`` (the
deterministic simulation), ``clock``, ``streams`` (deterministic stream bytes), ``faults``, ``errors``
(error codes), ``auth`` (credentials and their labels), ``ratelimit`` (Cloudflare's request quota),
``shapes`` (result JSON), ``responses`` (how answers go on the wire), ``api`` (the emulated
endpoints), ``control`` (the ``/__emulator/`` test API), ``app`` (HTTP layer), ``server`` (run helpers).
"""
