"""Airflow for the embedded default: a home and SQLite metadata under ``ROLLGUARD_HOME/airflow``.

Airflow reads its configuration when it is first imported, so :func:`configure_airflow` must run
before anything imports ``airflow``. In the stack, Airflow is configured by its own environment
(``AIRFLOW__...`` variables in docker-compose) and nothing here is used.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rollguard.errors import RollguardError
from rollguard.settings import Settings

DAGS_FOLDER = Path(__file__).parent / "dags"


def airflow_environment(settings: Settings) -> dict[str, str]:
    """``AIRFLOW__*`` variables of the embedded Airflow (SQLite metadata, no examples, our DAGs)."""
    home = settings.home / "airflow"
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
        # The DAG's tasks read ROLLGUARD_* from the environment like every other part.
        "ROLLGUARD_HOME": str(settings.home),
    }


def configure_airflow(settings: Settings) -> None:
    """Point this process's Airflow at the embedded home and migrate its metadata database.

    Raises:
        RollguardError: when ``airflow`` was imported before (its configuration is fixed then),
            or the metadata migration fails (with Airflow's output).
    """
    env = airflow_environment(settings)
    if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME") != env["AIRFLOW_HOME"]:
        raise RollguardError("airflow was imported before its configuration was set")
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.update(env)
    marker = Path(env["AIRFLOW_HOME"]) / ".migrated"
    version = _airflow_version()
    if marker.exists() and marker.read_text() == version:
        return
    proc = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RollguardError(
            f"airflow db migrate failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    marker.write_text(version)


def _airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow-core")
