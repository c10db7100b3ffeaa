"""``s3://`` artifact roots end to end, against a real S3-compatible server on loopback (moto's
``moto_server`` process: MinIO cannot be installed here; docs/kubernetes.md, "Object store").

Two ways Rollguard stores artifacts in a bucket:
- the Kubernetes way: the MLflow container of deploy/kubernetes/mlflow.yaml (Rollguard's auth
  app, ``--artifacts-destination s3://bucket/prefix``) run as a local process, the bucket's keys
  in a shared-credentials *file* as the Secret mounts it; clients hold no bucket credentials;
- the embedded backend with ``ROLLGUARD_MLFLOW_ARTIFACT_ROOT=s3://bucket/prefix``: the process
  writes to the bucket itself (boto3).
In both, a registered model's files land in the bucket under the prefix, nothing lands on the
local disk, and the real model server (``rollguard serve api``) loads the version and scores.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from rollguard.mlflow_auth import USERS, provision_from_files
from rollguard.mlflow_client import apply_mlflow_credentials, ensure_experiment, mlflow_client
from rollguard.settings import Settings
from tests.support.api_models import example_frame, log_registered_version, train_booster
from tests.support.api_servers import start_api
from tests.support.servers import REPO_ROOT as ROOT
from tests.support.servers import ServerProcess, free_port, start_s3_server, venv_bin

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


def _cluster_mlflow(tmp_path: Path, s3: S3, destination: str) -> tuple[ServerProcess, str]:
    """The MLflow container of deploy/kubernetes/mlflow.yaml as a local process: its arguments
    with ``$(VAR)`` expanded from its ConfigMap as Kubernetes does (the destination set to
    ``destination``), its literal environment, the auth ini of its ConfigMap (user store moved to
    ``tmp_path``), the bucket's keys as a credentials file; a SQLite backend stands in for the
    Secret's PostgreSQL URL. Returns the server and the admin's password."""
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "mlflow.yaml").read_text()))
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    container = by_name[("Deployment", "mlflow")]["spec"]["template"]["spec"]["containers"][0]
    variables = {**by_name[("ConfigMap", "rollguard-artifacts")]["data"]}
    variables["ARTIFACTS_DESTINATION"] = destination
    variables["MLFLOW_S3_ENDPOINT_URL"] = s3.url
    ini = by_name[("ConfigMap", "mlflow-auth")]["data"]["basic_auth.ini"]
    config = tmp_path / "basic_auth.ini"
    config.write_text(
        ini.replace("sqlite:////var/lib/mlflow/basic_auth.db", f"sqlite:///{tmp_path / 'a.db'}")
    )
    admin = secrets.token_urlsafe(16)
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env.update(variables)
    env.update(
        {
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            "AWS_SHARED_CREDENTIALS_FILE": s3.env["AWS_SHARED_CREDENTIALS_FILE"],
            "AWS_ACCESS_KEY_ID": "",
            "AWS_SECRET_ACCESS_KEY": "",
            "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "MLFLOW_AUTH_ADMIN_PASSWORD": admin,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(16),
            "PYTHONPATH": str(ROOT),  # the rollguard-auth app of this checkout
            "MLFLOW_TRACKING_USERNAME": "",
            "MLFLOW_TRACKING_PASSWORD": "",
        }
    )
    port = free_port()
    argv = [venv_bin("mlflow")]
    for arg in container["args"]:
        arg = re.sub(r"\$\((\w+)\)", lambda m: variables[m.group(1)], arg)
        argv.append(arg.replace("--host=0.0.0.0", "--host=127.0.0.1").replace("=5000", f"={port}"))
    assert f"--artifacts-destination={destination}" in argv
    server = ServerProcess(
        "mlflow-k8s", argv, port=port, ready_path="/health", log_dir=tmp_path, env=env
    )
    return server.start(timeout=180), admin


def test_cluster_mlflow_keeps_artifacts_in_the_bucket(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cluster's MLflow command (deploy/kubernetes/mlflow.yaml) with its identities, as the
    mlflow-users Job provisions them: a version logged by `pipeline` lands in the bucket under
    the prefix (no client holds bucket credentials), `gate` makes it champion, and the API,
    authenticated as `reader`, loads it from there and scores."""
    for name in ("MLFLOW_S3_ENDPOINT_URL", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    prefix = "cluster/mlflow"
    tracking, admin = _cluster_mlflow(tmp_path, s3, f"s3://{s3.bucket}/{prefix}")
    try:
        passwords = tmp_path / "run-secrets"
        passwords.mkdir()
        (passwords / "mlflow_admin_password").write_text(admin)
        for user in USERS:
            (passwords / f"mlflow_{user}_password").write_text(secrets.token_urlsafe(16))
        provision_from_files(tracking.url, admin_username="admin", secrets_dir=passwords)

        def as_user(user: str) -> Settings:
            settings = Settings(
                home=tmp_path / "home",
                mlflow_tracking_uri=tracking.url,
                mlflow_username=user,
                mlflow_password_file=passwords / f"mlflow_{user}_password",
            )
            apply_mlflow_credentials(settings)
            return settings

        as_user("pipeline")
        name = f"s3-cluster-{uuid.uuid4().hex[:6]}"
        version = log_registered_version(train_booster(seed=3, rounds=10), name, tracking.url)
        gate = mlflow_client(as_user("gate"))
        gate.set_registered_model_alias(name, "champion", version)
        # Clients see the server's proxy or model URIs, never the bucket.
        assert not gate.get_model_version(name, version).source.startswith("s3://")
        keys = s3.keys(prefix + "/")
        assert any(k.endswith("/MLmodel") for k in keys), keys
        assert any(k.endswith(".ubj") for k in keys), keys
        assert _local_artifacts(tmp_path) == []
        api = start_api(
            tmp_path / "home",
            tracking.url,
            name,
            tmp_path / "logs",
            token="t" * 24,
            ROLLGUARD_MLFLOW_USERNAME="reader",
            ROLLGUARD_MLFLOW_PASSWORD_FILE=str(passwords / "mlflow_reader_password"),
            MLFLOW_TRACKING_USERNAME="",
            MLFLOW_TRACKING_PASSWORD="",
        )
        try:
            _serves(api, version)
        except BaseException:
            print(api.log_tail())
            raise
        finally:
            api.stop()
    except BaseException:
        print(tracking.log_tail())
        raise
    finally:
        tracking.stop()


def test_embedded_backend_with_an_s3_artifact_root(
    embedded_environment: None, s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
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
