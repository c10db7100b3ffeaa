"""``s3://`` artifact roots end to end, against a real S3-compatible server on loopback (moto's
``moto_server`` process: MinIO cannot be installed here; docs/kubernetes.md, "Object store").

Two ways Rollguard stores artifacts in a bucket:
- the Kubernetes way: an MLflow tracking server with ``--artifacts-destination s3://bucket/prefix``
  (deploy/kubernetes/mlflow.yaml), the bucket's keys in a shared-credentials *file* as the Secret
  mounts it; clients hold no bucket credentials;
- the embedded backend with ``ROLLGUARD_MLFLOW_ARTIFACT_ROOT=s3://bucket/prefix``: the process
  writes to the bucket itself (boto3).
In both, a registered model's files land in the bucket under the prefix, nothing lands on the
local disk, and the real model server (``rollguard serve api``) loads the version and scores.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from rollguard.mlflow_client import ensure_experiment, mlflow_client
from rollguard.settings import Settings
from tests.support.api_models import example_frame, log_registered_version, train_booster
from tests.support.api_servers import start_api
from tests.support.servers import ServerProcess, start_mlflow_server, start_s3_server

boto3 = pytest.importorskip("boto3", reason="boto3 is in the dev and tracking groups (uv.lock)")

PROBE = example_frame(3).to_dict("records")


@dataclass(frozen=True)
class S3:
    """The object store: its URL, one bucket, and the environment a process needs to use it
    (endpoint and a shared-credentials file, as deploy/kubernetes/mlflow.yaml mounts it)."""

    url: str
    bucket: str
    env: dict[str, str]

    def keys(self, prefix: str) -> list[str]:
        client = boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id="rollguard-test",
            aws_secret_access_key="rollguard-test-secret",
            region_name="us-east-1",
        )
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    root = tmp_path_factory.mktemp("s3")
    server = start_s3_server(root / "logs")
    credentials = root / "credentials"
    credentials.write_text(
        "[default]\naws_access_key_id = rollguard-test\n"
        "aws_secret_access_key = rollguard-test-secret\n"
    )
    env = {
        "MLFLOW_S3_ENDPOINT_URL": server.url,
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        "AWS_DEFAULT_REGION": "us-east-1",
        # Only the file may supply the keys, as in the cluster.
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
    }
    store = S3(url=server.url, bucket=f"rollguard-{uuid.uuid4().hex[:8]}", env=env)
    try:
        boto3.client(
            "s3",
            endpoint_url=server.url,
            aws_access_key_id="rollguard-test",
            aws_secret_access_key="rollguard-test-secret",
            region_name="us-east-1",
        ).create_bucket(Bucket=store.bucket)
        yield store
    except BaseException:
        print(server.log_tail())
        raise
    finally:
        server.stop()


def _serves(api: ServerProcess, version: str) -> None:
    ready = httpx.get(api.url + "/readyz", timeout=10).json()
    assert ready["ready"] and ready["model_version"] == version, ready
    pred = httpx.post(api.url + "/v1/predict", json={"rows": PROBE}, timeout=30)
    assert pred.status_code == 200, pred.text
    body = pred.json()
    assert body["model_version"] == version and len(body["scores"]) == len(PROBE)


def _local_artifacts(folder: Path) -> list[Path]:
    """Files MLflow would have written locally had it ignored the bucket."""
    return [p for p in folder.rglob("*") if p.is_file() and p.name in {"MLmodel", "model.ubj"}]


def test_tracking_server_keeps_artifacts_in_the_bucket(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cluster's MLflow command: a version logged through the server lands in the bucket
    under the prefix (the client sends no bucket credentials), and the API loads it from there."""
    for name in ("MLFLOW_S3_ENDPOINT_URL", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    prefix = "server/mlflow"
    tracking = start_mlflow_server(
        tmp_path / "mlflow",
        tmp_path / "logs",
        artifacts_destination=f"s3://{s3.bucket}/{prefix}",
        env=s3.env,
    )
    try:
        name = f"s3-server-{uuid.uuid4().hex[:6]}"
        version = log_registered_version(train_booster(seed=3, rounds=10), name, tracking.url)
        client = mlflow_client(Settings(home=tmp_path / "home", mlflow_tracking_uri=tracking.url))
        source = client.get_model_version(name, version).source
        client.set_registered_model_alias(name, "champion", version)
        keys = s3.keys(prefix + "/")
        assert any(k.endswith("/MLmodel") for k in keys), keys
        assert any(k.endswith(".ubj") for k in keys), keys
        assert _local_artifacts(tmp_path) == []
        api = start_api(tmp_path / "home", tracking.url, name, tmp_path / "logs", token="t" * 24)
        try:
            _serves(api, version)
        finally:
            api.stop()
        assert not source.startswith("s3://"), source  # clients see the server's proxy URIs
    except BaseException:
        print(tracking.log_tail())
        raise
    finally:
        tracking.stop()


def test_embedded_backend_with_an_s3_artifact_root(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ROLLGUARD_MLFLOW_ARTIFACT_ROOT=s3://bucket/prefix with the SQLite backend: the experiment
    is created in the bucket (the URI is kept, not folded into a path), the version's files are
    written there by this process, and the API, given the same store settings, serves it."""
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    home = tmp_path / "home"
    root = f"s3://{s3.bucket}/embedded"
    settings = Settings(home=home, env="test", artifact_root=root)
    assert settings.mlflow_artifact_root == root
    client = mlflow_client(settings)
    experiment = ensure_experiment(
        client, "rollguard-api-tests", artifact_root=settings.mlflow_artifact_root
    )
    assert client.get_experiment(experiment).artifact_location == root
    name = f"s3-embedded-{uuid.uuid4().hex[:6]}"
    version = log_registered_version(train_booster(seed=4, rounds=10), name, settings.tracking_uri)
    client.set_registered_model_alias(name, "champion", version)
    keys = s3.keys("embedded/")
    assert any(k.endswith("/MLmodel") for k in keys), keys
    assert _local_artifacts(tmp_path) == [] and not (home / "mlartifacts").exists()
    api = start_api(
        home,
        settings.tracking_uri,
        name,
        tmp_path / "logs",
        token="t" * 24,
        ROLLGUARD_MLFLOW_ARTIFACT_ROOT=root,
        **s3.env,
    )
    try:
        _serves(api, version)
    except BaseException:
        print(api.log_tail())
        raise
    finally:
        api.stop()
