"""The one way every part opens MLflow: tracking and registry on the same URI from the settings.

An ``MlflowClient`` built with only a tracking URI takes its registry URI from the process default
(``sqlite:///mlflow.db`` in the current directory with MLflow 3), which silently splits the
registry from the runs; this function never does that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rollguard.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient


def mlflow_client(settings: Settings) -> MlflowClient:
    """An ``MlflowClient`` on ``settings.tracking_uri`` for both tracking and the registry.

    With the embedded default the SQLite file's folder (``ROLLGUARD_HOME``) is created first.
    """
    from mlflow import MlflowClient

    if settings.mlflow_tracking_uri is None:
        settings.home.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
