"""``rollguard backup`` / ``rollguard restore`` and a relocatable home (issue 21; docs/operations.md).

One short real CDNOW replay (22 weeks, a quick training, the gate's first champion, one scored
week) in the embedded default (SQLite MLflow backend, SQLite store, artifacts under the home),
made once by the real ``rollguard`` commands. Then, in file order:

- the model server (real uvicorn) answers a fixed request and takes a load of predictions while
  ``rollguard backup`` runs: afterwards the live store holds every acknowledged row;
- a copy of the home (``cp -r``) with the original moved out of reach serves the same champion,
  the same scores and the same history;
- restore refuses a non-empty home, a mismatched schema revision and an altered file (one line,
  exit 2 each);
- the archive restored elsewhere, the original deleted: same champion, scores and history, the
  archived store passes SQLite's integrity check, and the next week's run adds its rows once;
- PostgreSQL (marked ``postgres``): the same live backup with the store on a database of our own,
  restored into a second empty database.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rollguard import db
from tests.support.api_models import example_frame
from tests.support.api_servers import start_api, wait_for
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.slow

#: One training run in seconds (as tests/integration/test_home_containment.py).
FAST = {
    "ROLLGUARD_TRAINING_CUTOFFS": "2",
    "ROLLGUARD_TUNING_TRIALS": "2",
    "ROLLGUARD_NUM_BOOST_ROUND": "30",
    "ROLLGUARD_EARLY_STOPPING_ROUNDS": "5",
    "ROLLGUARD_SHAP_SAMPLE_ROWS": "300",
    "ROLLGUARD_MONITOR_SAMPLE_ROWS": "3000",
}
REPLAY = (
    ("data", "replay", "--until", "1997-05-31"),
    ("data", "ingest"),
    ("train",),
    ("gate",),
    ("score",),
)
TOKEN = "backup-test-admin-token"
CLI = str(Path(sys.executable).parent / "rollguard")


def environment(home: Path, **extra: str) -> dict[str, str]:
    """The embedded default under ``home``: nothing inherited from the caller's ROLLGUARD_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROLLGUARD_", "MLFLOW_"))}
    return env | {"ROLLGUARD_HOME": str(home), "ROLLGUARD_ENV": "test", **FAST, **extra}


def rollguard(
    home: Path, *args: str, check: bool = True, **extra: str
) -> subprocess.CompletedProcess[str]:
    """``rollguard ARGS`` as a real process from a scratch working directory."""
    proc = subprocess.run(
        [CLI, *args],
        env=environment(home, **extra),
        cwd=home.parent,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check:
        assert proc.returncode == 0, f"rollguard {' '.join(args)}: {proc.stderr[-3000:]}"
    return proc


def api(home: Path, log_dir: Path, **extra: str) -> ServerProcess:
    return start_api(
        home,
        f"sqlite:///{home / 'mlflow.db'}",
        "cdnow-repurchase",
        log_dir,
        token=TOKEN,
        **{k: v for k, v in environment(home, **extra).items() if k.startswith("ROLLGUARD_")},
    )


#: Prediction-log rows one call of :func:`answers` writes (5 predicted rows, 1 known customer).
ANSWER_ROWS = 6


def answers(url: str) -> dict[str, Any]:
    """The champion's version and scores for a fixed request, and one known customer's score."""
    rows = example_frame(5).to_dict("records")
    pred = httpx.post(url + "/v1/predict", json={"rows": rows}, timeout=30).json()
    entity = httpx.get(url + "/v1/customers/1/prediction", timeout=30).json()
    return {
        "version": pred["model_version"],
        "scores": pred["scores"],
        "entity": {k: entity.get(k) for k in ("model_version", "score", "cutoff")},
    }


def history(home: Path) -> Any:
    return json.loads(rollguard(home, "history", "--json").stdout)


def logged_rows(url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM prediction_log")).scalar_one())
    finally:
        engine.dispose()


class Load:
    """Requests of 3 rows in a loop on a thread; counts the rows the server acknowledged."""

    def __init__(self, url: str) -> None:
        self.url, self.rows, self.errors = url, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._body = {"rows": example_frame(3).to_dict("records")}

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                resp = client.post("/v1/predict", json=self._body)
                if resp.status_code == 200:
                    self.rows += len(resp.json()["scores"])
                else:
                    self.errors += 1

    def __enter__(self) -> Load:
        self._thread.start()
        wait_for(lambda: self.rows >= 150, timeout=120, what="load under way")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def backup_under_load(
    home: Path, url: str, archive: Path, store_url: str, *, logged_before: int = 0, **extra: str
) -> dict[str, Any]:
    """``rollguard backup`` while :class:`Load` writes; afterwards every acknowledged row is in
    the live store. Returns the rows before the backup, acknowledged, and the backup's answer."""
    with Load(url) as load:
        before = load.rows
        done = json.loads(
            rollguard(home, "backup", "--output", str(archive), "--json", **extra).stdout
        )
        wait_for(lambda: load.rows >= before + 150, timeout=120, what="load after the backup")
    assert load.errors == 0
    expected = logged_before + load.rows
    wait_for(lambda: logged_rows(store_url) >= expected, timeout=120, what="prediction log drained")
    assert logged_rows(store_url) == expected  # every acknowledged row, once
    return {"before": before, "acknowledged": load.rows, "backup": done}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The replayed home, the server's reference answers, history, and an archive taken under load."""
    root = tmp_path_factory.mktemp("backup-origin")
    home = root / "home"
    for args in REPLAY:
        rollguard(home, *args, "--json")
    server = api(home, root / "logs")
    try:
        reference = answers(server.url)
        live = backup_under_load(
            home,
            server.url,
            root / "backup.tar.gz",
            f"sqlite:///{home / 'monitoring.db'}",
            logged_before=ANSWER_ROWS,
        )
    finally:
        server.stop()
    return {
        "home": home,
        "archive": root / "backup.tar.gz",
        "reference": reference,
        "history": history(home),
        "live": live,
    }


def test_backup_under_live_load_loses_no_row(world: dict[str, Any]) -> None:
    live = world["live"]
    assert live["backup"]["schema_revision"] == "0008"
    assert live["backup"]["databases"] == {
        "monitoring": "sqlite",
        "optuna": "sqlite",
        "mlflow": "sqlite",
    }
    assert live["acknowledged"] > live["before"] >= 150
    assert world["reference"]["version"] == "1"
    assert world["history"]["history"], "the gate moved champion once"


def test_copied_home_serves_without_the_old_path(world: dict[str, Any], tmp_path: Path) -> None:
    original = world["home"]
    copy = tmp_path / "elsewhere" / "home-copy"
    copy.parent.mkdir()
    subprocess.run(["cp", "-r", str(original), str(copy)], check=True)
    hidden = original.with_name("home-hidden")
    original.rename(hidden)  # the old path is gone while the copy runs
    try:
        server = api(copy, tmp_path / "logs")
        try:
            assert answers(server.url) == world["reference"]
        finally:
            server.stop()
        assert history(copy) == world["history"]
        marker = json.loads((copy / "home.json").read_text())
        assert marker["path"] == str(copy)
        for name in ("mlflow.db", "monitoring.db", "optuna.db"):
            dump = "\n".join(sqlite3.connect(copy / name).iterdump())
            assert f"{original}/" not in dump, f"{name} still names the old home"
    finally:
        hidden.rename(original)


def _rewritten(archive: Path, target: Path, change: Any) -> Path:
    """A copy of ``archive`` with ``change(name, bytes) -> bytes`` applied to each member."""
    with tarfile.open(archive, "r:gz") as src, tarfile.open(target, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            data = change(member.name, data)
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    return target


def _refusal(home: Path, archive: Path, target: Path) -> str:
    proc = rollguard(home, "restore", str(archive), "--home", str(target), check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert not target.exists() or not any(target.iterdir()), "nothing restored after a refusal"
    return lines[0]


def test_restore_refuses_a_used_home_another_schema_and_an_altered_file(
    world: dict[str, Any], tmp_path: Path
) -> None:
    archive, home = world["archive"], world["home"]
    used = tmp_path / "used"
    used.mkdir()
    (used / "something").write_text("x")
    proc = rollguard(home, "restore", str(archive), "--home", str(used), check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert f"target home {used} is not empty" in proc.stderr

    def old_schema(name: str, data: bytes) -> bytes:
        if name != "manifest.json":
            return data
        manifest = json.loads(data)
        manifest["schema_revision"] = "0007"
        return json.dumps(manifest).encode()

    line = _refusal(home, _rewritten(archive, tmp_path / "old.tar.gz", old_schema), tmp_path / "a")
    assert "schema revision 0007, this Rollguard" in line and "needs 0008" in line

    def corrupt(name: str, data: bytes) -> bytes:
        return data[:-1] + bytes([data[-1] ^ 1]) if name == "home/optuna.db" else data

    line = _refusal(home, _rewritten(archive, tmp_path / "bad.tar.gz", corrupt), tmp_path / "b")
    assert "checksum mismatch for home/optuna.db" in line


@pytest.fixture(scope="module")
def restored(world: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The archive restored into a new folder elsewhere; the original home deleted."""
    target = tmp_path_factory.mktemp("backup-restored") / "home"
    done = json.loads(
        rollguard(target, "restore", str(world["archive"]), "--home", str(target), "--json").stdout
    )
    assert done["home"] == str(target) and done["schema_revision"] == "0008"
    assert done["rewritten_rows"]["mlflow"] > 0 and done["rewritten_rows"]["monitoring"] >= 22
    shutil.rmtree(world["home"])
    return target


def test_round_trip_serves_the_same_champion_and_continues_the_weeks(
    world: dict[str, Any], restored: Path, tmp_path: Path
) -> None:
    conn = sqlite3.connect(restored / "monitoring.db")
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    archived_rows = conn.execute("SELECT count(*) FROM prediction_log").fetchone()[0]
    conn.close()
    live = world["live"]
    # a snapshot taken mid-load: some of the rows, never more than were acknowledged
    assert ANSWER_ROWS < archived_rows <= ANSWER_ROWS + live["acknowledged"]

    server = api(restored, tmp_path / "logs")
    try:
        assert answers(server.url) == world["reference"]
    finally:
        server.stop()
    assert history(restored) == world["history"]

    # The next week, as the weekly run does it: deliver, ingest, score; then again (no-ops).
    ledger_before = _ledger(restored)
    rollguard(restored, "data", "replay", "--weeks", "1", "--json")
    ingested = json.loads(rollguard(restored, "data", "ingest", "--json").stdout)
    scored = json.loads(rollguard(restored, "score", "--json").stdout)
    assert scored["week"] == "1997-W24" and scored["created"] is True
    assert Path(scored["predictions"]).is_relative_to(restored)
    again = json.loads(rollguard(restored, "data", "ingest", "--json").stdout)
    ledger = _ledger(restored)
    assert len(ledger) == len(ledger_before) + 1, (ingested, again)
    assert len({r[0] for r in ledger}) == len(ledger), "a file entered the ledger twice"
    assert all(Path(r[1]).is_relative_to(restored) for r in ledger if r[1])


def _ledger(home: Path) -> list[tuple[str, str | None]]:
    conn = sqlite3.connect(home / "monitoring.db")
    try:
        return conn.execute("SELECT file_name, warehouse_path FROM ingestion_ledger").fetchall()
    finally:
        conn.close()


@pytest.fixture
def two_databases() -> Iterator[tuple[str, str]]:
    """Two fresh PostgreSQL databases of our own (dropped afterwards)."""
    from tests.conftest import PG_ADMIN_URL, _pg_reachable

    reason = _pg_reachable()
    if reason:
        pytest.skip(reason)
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(PG_ADMIN_URL)
    info = dict(
        host=admin.host, port=admin.port or 5432, user=admin.username, dbname=admin.database
    )
    names = [f"rollguard_backup_{uuid.uuid4().hex[:8]}_{k}" for k in ("live", "restored")]
    with psycopg.connect(**info, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield tuple(admin.set(database=n).render_as_string(hide_password=False) for n in names)  # type: ignore[misc]
    finally:
        with psycopg.connect(**info, autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_postgres_store_backup_under_load_and_restore(
    restored: Path, two_databases: tuple[str, str], tmp_path: Path
) -> None:
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("pg_dump/pg_restore (postgresql-client) are not on PATH")
    live_url, target_url = two_databases
    rollguard(restored, "db", "upgrade", "--json", ROLLGUARD_DATABASE_URL=live_url)
    server = api(restored, tmp_path / "logs", ROLLGUARD_DATABASE_URL=live_url)
    try:
        live = backup_under_load(
            restored, server.url, tmp_path / "pg.tar.gz", live_url, ROLLGUARD_DATABASE_URL=live_url
        )
    finally:
        server.stop()
    assert live["backup"]["databases"]["monitoring"] == "postgresql"

    home = tmp_path / "pg-home"
    done = json.loads(
        rollguard(
            home,
            "restore",
            str(tmp_path / "pg.tar.gz"),
            "--json",
            ROLLGUARD_DATABASE_URL=target_url,
        ).stdout
    )
    assert list(done["databases"]) == ["monitoring"] and done["schema_revision"] == "0008"
    assert 0 < logged_rows(target_url) <= live["acknowledged"]
    assert db.current_revision(target_url) == db.head_revision()
    # A second restore into the now non-empty database is refused in one line.
    proc = rollguard(
        home, "restore", str(tmp_path / "pg.tar.gz"), "--home", str(tmp_path / "other"),
        check=False, ROLLGUARD_DATABASE_URL=target_url,
    )  # fmt: skip
    assert proc.returncode == 2 and "is not empty" in proc.stderr and proc.stderr.count("\n") == 1
