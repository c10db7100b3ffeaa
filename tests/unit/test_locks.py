"""The store lock (``rollguard.locks.store_lock``) on both backends: a stable key, exclusion, a
bounded wait with an error naming the holder, and no stale lock after its holder is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from rollguard.commands import classify_error
from rollguard.errors import ConfigurationError
from rollguard.locks import LockTimeoutError, lock_id, store_lock

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'monitoring.db'}"
    return request.getfixturevalue("postgres_url")


def test_lock_id_is_a_stable_signed_64_bit_hash() -> None:
    key = lock_id(("training", "cdnow-repurchase", "ab" * 32))
    assert key == lock_id(["training", "cdnow-repurchase", "ab" * 32])
    assert key == -3577973868761274623  # SHA-256 of the compact JSON array, first 8 bytes
    assert -(2**63) <= key < 2**63
    assert lock_id(("a,b", "c")) != lock_id(("a", "b,c"))


def test_a_second_holder_waits_then_gives_up_naming_the_first(store_url: str) -> None:
    name = ("training", "model", uuid.uuid4().hex)
    with store_lock(store_url, name, timeout_seconds=5, description="training of key k"):
        errors: list[BaseException] = []

        def contend() -> None:
            try:
                with store_lock(
                    store_url, name, timeout_seconds=0.5, description="training of key k"
                ):
                    pass
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                errors.append(exc)

        thread = threading.Thread(target=contend)
        thread.start()
        thread.join(30)
        # Another name is another lock: not blocked.
        with store_lock(store_url, (*name, "other"), timeout_seconds=1, description="x"):
            pass
    (error,) = errors
    assert isinstance(error, LockTimeoutError)
    assert error.waited_seconds >= 0.5
    assert error.holder is not None and int(error.holder["pid"]) == os.getpid()
    message = str(error)
    assert message.startswith("another training of key k has held the lock for ")
    assert f"pid {os.getpid()}" in message and "gave up after waiting" in message
    assert classify_error(error) == ("lock_timeout", message)
    # Released: the next holder gets it at once.
    with store_lock(store_url, name, timeout_seconds=1, description="training of key k"):
        pass


def test_a_holder_killed_with_sigkill_leaves_no_stale_lock(store_url: str) -> None:
    name = ["training", "model", uuid.uuid4().hex]
    code = (
        "import sys, time\n"
        "from rollguard.locks import store_lock\n"
        f"with store_lock({store_url!r}, {name!r}, timeout_seconds=30, description='t'):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(300)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(LockTimeoutError),
            store_lock(store_url, name, timeout_seconds=0.3, description="t"),
        ):
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    finally:
        holder.kill()
        holder.wait(30)
    started = time.monotonic()
    with store_lock(store_url, name, timeout_seconds=10, description="t"):
        pass
    assert time.monotonic() - started < 5


def test_sqlite_lock_file_sits_beside_the_store_and_names_its_holder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store' / 'monitoring.db'}"
    name = ("training", "m", "k")
    with store_lock(url, name, timeout_seconds=1, description="t"):
        path = (
            tmp_path / "store" / "monitoring.db.locks" / f"{lock_id(name) & (2**64 - 1):016x}.lock"
        )
        assert path.exists() and f'"pid": {os.getpid()}' in path.read_text()
    assert path.read_text() == ""  # released: no holder named


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "mysql://u@h/db"])
def test_a_store_without_a_lock_backend_is_refused(url: str) -> None:
    with (
        pytest.raises(ConfigurationError, match="PostgreSQL or file-backed SQLite"),
        store_lock(url, ("training", "m", "k"), timeout_seconds=1, description="t"),
    ):
        pass
