"""At most one registered version per training key, whatever the concurrency (issue 17).

Real ``rollguard train --tune`` processes (the installed CLI, one ``ROLLGUARD_HOME``) run at once
after the same week, with the monitoring store on SQLite (a file lock beside it) and on
PostgreSQL (an advisory lock): exactly one version carries the training key and every process
reports it. A lock whose holder was killed with SIGKILL does not block the next training.

Kept small for CI: an eighth of the CDNOW customers, 14 weeks, one fit cutoff, a one-trial Optuna
budget, 20 boosting rounds, one XGBoost thread per process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipeline import feed
from pipeline.ingest import ingest_landing
from pipeline.tracking import EXPERIMENT_NAME, TRAINING_KEY_TAG
from rollguard import db
from rollguard.settings import Settings
from rollguard.store import open_store
from usecases.cdnow.source import locate_master_file

REPO = Path(__file__).resolve().parents[2]
ROLLGUARD = Path(sys.executable).with_name("rollguard")  # the installed CLI of this environment
WEEKS = 14  # the fewest that give one fit, one validation and one matured evaluation cutoff
#: Variables a CLI process must not inherit from pytest (MLflow exports MLFLOW_TRACKING_URI).
INHERITED_PREFIXES = ("AIRFLOW", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "ROLLGUARD_")
SMALL = {
    "ROLLGUARD_ENV": "test",
    "ROLLGUARD_TRAINING_CUTOFFS": "1",
    "ROLLGUARD_TUNING_TRIALS": "1",
    "ROLLGUARD_NUM_BOOST_ROUND": "20",
    "ROLLGUARD_EARLY_STOPPING_ROUNDS": "5",
    "ROLLGUARD_SHAP_SAMPLE_ROWS": "200",
    "ROLLGUARD_NTHREAD": "1",
    "ROLLGUARD_TRAINING_LOCK_TIMEOUT_SECONDS": "240",  # a stale lock fails the test, never hangs it
}


@dataclass(frozen=True)
class Store:
    """An ingested home and its store (``url`` None: the embedded SQLite file under home)."""

    backend: str
    home: Path
    url: str | None

    @property
    def store_url(self) -> str:
        return self.url or f"sqlite:///{self.home / 'monitoring.db'}"


@pytest.fixture(scope="module")
def small_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CDNOW-shaped log of every eighth customer (an eighth of the rows, same weeks)."""
    lines = locate_master_file().read_text(encoding="ascii").splitlines()
    kept = [lines[0]] + [line for line in lines[1:] if int(line.split()[0]) % 8 == 0]
    path = tmp_path_factory.mktemp("cdnow") / "cdnow_eighth.txt"
    path.write_text("\n".join(kept) + "\n", encoding="ascii")
    return path


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, small_log: Path
) -> Iterator[Store]:
    """A home with WEEKS weeks ingested into a store of the given backend (PostgreSQL: a database
    of its own on the session's server, dropped afterwards)."""
    home = tmp_path_factory.mktemp(f"home-{request.param}")
    url, admin = None, None
    if request.param == "postgresql":
        base = request.getfixturevalue("postgres_url")
        name = f"rg_lock_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False)
        db.upgrade(url)
    settings = Settings(  # type: ignore[call-arg]
        home=home, env="test", _env_file=None, database_url=url, dataset_path=small_log
    )
    engine = open_store(settings)
    feed.replay(settings, weeks=WEEKS)
    assert len(ingest_landing(settings, engine=engine).accepted) == WEEKS
    engine.dispose()
    yield Store(request.param, home, url)
    if admin is not None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def cli_env(store: Store, work: Path, model_name: str) -> dict[str, str]:
    """The environment of one scenario's processes: the store's home, a registry and an Optuna
    storage of the scenario's own (fresh files), the small budget."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(INHERITED_PREFIXES)}
    env = {
        **base,
        **SMALL,
        "ROLLGUARD_HOME": str(store.home),
        "ROLLGUARD_MODEL_NAME": model_name,
        "ROLLGUARD_MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "ROLLGUARD_OPTUNA_STORAGE_URL": f"sqlite:///{work / 'optuna.db'}",
        "PYTHONPATH": str(REPO),
    }
    if store.url:
        env["ROLLGUARD_DATABASE_URL"] = store.url
    return env


def mlflow(env: dict[str, str]):  # type: ignore[no-untyped-def]
    """A client on the scenario's registry. Its first use creates the schema, as on a home that
    has trained before (the issue's processes ran after a new week, not on a fresh registry)."""
    from mlflow import MlflowClient

    uri = env["ROLLGUARD_MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.search_experiments()
    return client


def start_train(env: dict[str, str], work: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(ROLLGUARD), "train", "--tune", "--json"],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 600) -> dict:
    """The JSON document the process printed; fails the test with its output otherwise."""
    out, err = proc.communicate(timeout=timeout)
    lines = [line for line in out.splitlines()]
    try:
        start = lines.index("{")
        doc = json.loads("\n".join(lines[start:]))
    except ValueError:
        doc = None
    if proc.returncode != 0 or not isinstance(doc, dict) or "error" in doc:
        pytest.fail(
            f"rollguard train exit {proc.returncode}\nstdout:\n{out[-3000:]}\nstderr:\n{err[-4000:]}"
        )
    return doc


def versions_with_key(client, model_name: str, key: str) -> list[str]:  # type: ignore[no-untyped-def]
    found = client.search_model_versions(f"name = '{model_name}'")
    return sorted(str(v.version) for v in found if v.tags.get(TRAINING_KEY_TAG) == key)


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 4])
def test_concurrent_trainings_register_one_version(store: Store, n: int, tmp_path: Path) -> None:
    model_name = f"race-{store.backend}-{n}"
    env = cli_env(store, tmp_path, model_name)
    client = mlflow(env)
    procs = [start_train(env, tmp_path) for _ in range(n)]
    outcomes = [finish(p) for p in procs]

    keys = {o["training_key"] for o in outcomes}
    assert len(keys) == 1, f"the processes computed different training keys: {keys}"
    (key,) = keys
    tagged = versions_with_key(client, model_name, key)
    reported = sorted(o["version"] for o in outcomes)
    assert len(tagged) == 1, f"{len(tagged)} versions carry the key: {tagged}; reported {reported}"
    assert reported == tagged * n
    assert sorted(o["created"] for o in outcomes) == [False] * (n - 1) + [True]
    # The losers trained nothing: one run in all, the winner's.
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [outcomes[0]["run_id"]]
    assert {o["run_id"] for o in outcomes} == {outcomes[0]["run_id"]}


def lock_holder_pids(store: Store) -> set[int]:
    """Pids of the processes holding a Rollguard lock on the store right now (what the lock
    helper records: the JSON in a SQLite store's lock files, the holder's PostgreSQL
    application_name ``rollguard-lock pid=<pid> ...``)."""
    if store.url is None:
        pids = set()
        for path in (store.home / "monitoring.db.locks").glob("*.lock"):
            try:
                pids.add(int(json.loads(path.read_text())["pid"]))
            except (OSError, ValueError, KeyError):
                continue  # being created or released
        return pids
    engine = sa.create_engine(store.url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            names = conn.execute(
                sa.text(
                    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a "
                    "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                )
            ).scalars()
            return {int(n.split("pid=")[1].split()[0]) for n in names if n and "pid=" in n}
    finally:
        engine.dispose()


@pytest.mark.slow
def test_a_killed_lock_holder_does_not_block_the_next_training(
    store: Store, tmp_path: Path
) -> None:
    model_name = f"crash-{store.backend}"
    env = cli_env(store, tmp_path, model_name)
    client = mlflow(env)
    victim = start_train(env, tmp_path)
    deadline = time.monotonic() + 300
    while victim.pid not in lock_holder_pids(store):
        if victim.poll() is not None:
            out, err = victim.communicate()
            pytest.fail(
                f"the training finished without holding a lock:\n{out[-2000:]}\n{err[-2000:]}"
            )
        assert time.monotonic() < deadline, "the training never took its lock"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)  # holds the lock: dies without releasing it
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL

    started = time.monotonic()
    after = finish(start_train(env, tmp_path))
    seconds = time.monotonic() - started
    assert after["created"] is True  # the victim died before registering
    assert versions_with_key(client, model_name, after["training_key"]) == [after["version"]]
    assert seconds < float(SMALL["ROLLGUARD_TRAINING_LOCK_TIMEOUT_SECONDS"])
    assert store.home.joinpath("monitoring.db.locks").exists() == (store.url is None)
