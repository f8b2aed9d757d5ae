"""Prefect settings enrich applies before Prefect is imported (only where the user has not set them).

Measured on a 2-core machine (shared/reference/prefect.md): the ephemeral server needs a longer start-up
timeout on a fresh home, logs telemetry failures offline, and with thousands of task runs its event
services both cost CPU and spill tracebacks at exit. With a real server (PREFECT_API_URL) we leave the
server-side services alone.
"""
from __future__ import annotations

import os
from pathlib import Path


def configure_prefect_env(env: dict[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    home = Path(env.get("ENRICH_HOME") or Path.home() / ".enrich").expanduser()
    defaults = {
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "5",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": env.get("ENRICH_LOG_LEVEL", "WARNING"),
    }
    if not env.get("PREFECT_API_URL"):
        defaults.update(
            {
                "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED": "false",
                "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "false",
                "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
            }
        )
    for key, value in defaults.items():
        env.setdefault(key, value)
    # Prefect creates its home without parents and then fails to open its database ("unable to open
    # database file") after spinning until the start-up timeout: create it here.
    # Private (0700): it holds the run parameters, logs and state of every flow run.
    from enrich.private_fs import own_state_dir, private_dirs

    prefect_home = Path(env["PREFECT_HOME"]).expanduser()
    if prefect_home == home / "prefect":
        private_dirs(home)
        own_state_dir(prefect_home)
    else:  # a home the user chose: created private, an existing one left as it is
        private_dirs(prefect_home)
