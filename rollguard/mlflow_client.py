"""The one way every part opens MLflow: tracking and registry on the same URI from the settings,
and the one way an experiment is found or created (:func:`ensure_experiment`).

An ``MlflowClient`` built with only a tracking URI takes its registry URI from the process default
(``sqlite:///mlflow.db`` in the current directory with MLflow 3), which silently splits the
registry from the runs; this function never does that. Likewise an experiment created without an
artifact location on a local backend (SQLite, PostgreSQL) keeps its artifacts in ``./mlruns`` of
whatever directory the command ran in; :func:`ensure_experiment` never does that either.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from rollguard.errors import ConfigurationError
from rollguard.home import ensure_home_location
from rollguard.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

#: Tracking URIs of a tracking server, which owns its artifact store (``--artifacts-destination``
#: or ``--default-artifact-root``): a folder of the client's machine means nothing to it.
_SERVER_SCHEMES = ("http://", "https://", "databricks")
#: ``scheme:`` of a URI (``s3://``, ``gs://``, ``file:``, ``mlflow-artifacts:``); a one-letter scheme
#: would be a Windows drive, not a URI.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


class MlflowCredentialsError(ConfigurationError):
    """The configured MLflow identity cannot be used (no password file, unreadable, empty)."""


class ArtifactStoreError(ConfigurationError):
    """The artifact root cannot be written from this process (its store's client is missing)."""


def check_artifact_client(location: str | None) -> None:
    """Refuse an ``s3://`` artifact location when boto3, which MLflow writes S3 with, is not
    installed here; any other location passes (pure apart from the import).

    Raises:
        ArtifactStoreError: ``location`` is ``s3://...`` and ``import boto3`` fails.
    """
    if location is None or not location.lower().startswith("s3://"):
        return
    try:
        import boto3  # noqa: F401  (only whether it imports)
    except ImportError as exc:
        raise ArtifactStoreError(
            f"the MLflow artifact root {location} is an S3 bucket, but boto3 is not installed "
            "in this environment; install the tracking group (`uv sync --group tracking`) or "
            "let a tracking server write artifacts (--artifacts-destination, docs/kubernetes.md)"
        ) from exc


def mlflow_credentials(settings: Settings) -> tuple[str, str] | None:
    """``(username, password)`` of ``settings.mlflow_username`` with the password read from
    ``settings.mlflow_password_file`` (whitespace stripped), or None when no username is set.

    Raises:
        MlflowCredentialsError: a username without a password file, or a file that is missing,
            unreadable or empty.
    """
    username = (settings.mlflow_username or "").strip()
    if not username:
        return None
    path = settings.mlflow_password_file
    if path is None:
        raise MlflowCredentialsError(
            f"ROLLGUARD_MLFLOW_USERNAME is {username!r} but ROLLGUARD_MLFLOW_PASSWORD_FILE is not "
            "set; name the file holding its MLflow password"
        )
    try:
        password = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise MlflowCredentialsError(
            f"ROLLGUARD_MLFLOW_PASSWORD_FILE {path} cannot be read ({exc.strerror or exc})"
        ) from exc
    if not password:
        raise MlflowCredentialsError(
            f"ROLLGUARD_MLFLOW_PASSWORD_FILE {path} is empty; write MLflow user {username!r}'s "
            "password into it (`make env` generates one)"
        )
    return username, password


def apply_mlflow_credentials(settings: Settings) -> str | None:
    """Make this process authenticate to MLflow as ``settings.mlflow_username``: MLflow's clients
    (``MlflowClient``, the fluent API, artifact downloads) read ``MLFLOW_TRACKING_USERNAME`` and
    ``MLFLOW_TRACKING_PASSWORD`` from the environment on every request, so both are set here.
    Returns the username, or None when no identity is configured (the environment is then left
    as it is, so variables set by hand keep working).

    Process-wide by design: one process, one identity (the DAG's gate and guard tasks run in
    their own task processes, see :meth:`rollguard.settings.Settings.as_mlflow_user`).

    Raises:
        MlflowCredentialsError: see :func:`mlflow_credentials`.
    """
    credentials = mlflow_credentials(settings)
    if credentials is None:
        return None
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = credentials
    return credentials[0]


def mlflow_client(settings: Settings) -> MlflowClient:
    """An ``MlflowClient`` on ``settings.tracking_uri`` for both tracking and the registry,
    authenticating as ``settings.mlflow_username`` when set (:func:`apply_mlflow_credentials`).

    With the embedded default the SQLite file's folder (``ROLLGUARD_HOME``) is created first.

    Raises:
        MlflowCredentialsError: the configured identity's password file is missing or empty.
    """
    from mlflow import MlflowClient

    apply_mlflow_credentials(settings)
    if settings.mlflow_tracking_uri is None:
        settings.home.mkdir(parents=True, exist_ok=True)
    ensure_home_location(settings)  # a moved home's file:// URIs first (docs/operations.md)
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def _is_uri(root: str | Path) -> bool:
    return isinstance(root, str) and _URI.match(root) is not None


def artifact_location(artifact_root: str | Path, tracking_uri: str) -> str | None:
    """The ``artifact_location`` an experiment is created with (pure; nothing is created).

    - a URI root (``s3://bucket/prefix``, ``file:///...``, ``mlflow-artifacts:/...``), given as a
      string, is used as it is, with any tracking URI (never passed through ``Path``, which would
      fold ``s3://`` into ``s3:/``);
    - a local folder (a ``Path`` or a plain path string) becomes its absolute ``file:`` URI, except
      with a tracking server (``http(s)://``, ``databricks``): None, the server chooses (its
      ``--artifacts-destination``; clients then see ``mlflow-artifacts:/`` URIs).
    """
    if _is_uri(artifact_root):
        return str(artifact_root)
    if tracking_uri.startswith(_SERVER_SCHEMES):
        return None
    return Path(artifact_root).expanduser().resolve().as_uri()


def ensure_experiment(
    client: MlflowClient,
    name: str,
    *,
    artifact_root: str | Path,
    tracking_uri: str | None = None,
) -> str:
    """Id of the experiment ``name``, created when missing with its artifacts under
    ``artifact_root`` (see :func:`artifact_location`). Every experiment Rollguard creates or sets
    goes through here, so no artifact lands relative to the working directory.

    Args:
        client: the MLflow client (:func:`mlflow_client`).
        name: experiment name (``rollguard-training``, ``settings.monitor_experiment``).
        artifact_root: ``settings.mlflow_artifact_root`` (``<home>/mlartifacts``), or a URI string.
        tracking_uri: the client's tracking URI (default ``client.tracking_uri``).

    Raises:
        ArtifactStoreError: an ``s3://`` root without boto3 (:func:`check_artifact_client`).

    An existing experiment is returned as it is: MLflow cannot move an experiment's artifact
    location. One created elsewhere (e.g. by a Rollguard older than this function, in ``./mlruns``)
    is named in a warning, with what to do.
    """
    from mlflow.exceptions import MlflowException

    uri = tracking_uri or client.tracking_uri
    location = artifact_location(artifact_root, uri)
    check_artifact_client(location)
    existing = client.get_experiment_by_name(name)
    if existing is None:
        if location is not None and not _is_uri(artifact_root):
            Path(artifact_root).expanduser().mkdir(parents=True, exist_ok=True)
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:  # another worker created it meanwhile
            existing = client.get_experiment_by_name(name)
            if existing is None:
                raise
    found = existing.artifact_location or ""
    if location is not None and not (
        found == location or found.startswith(location.rstrip("/") + "/")
    ):
        log.warning(
            "MLflow experiment %r keeps its artifacts at %s, outside the artifact root %s "
            "(created elsewhere or by an older Rollguard); rename or delete it to have a new one "
            "created under the root",
            name,
            found,
            location,
        )
    return str(existing.experiment_id)
