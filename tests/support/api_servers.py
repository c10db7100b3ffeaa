"""Servers for the API integration tests: the model server itself, a TCP proxy that can cut the
registry off, and a private PostgreSQL instance that a test can stop and start."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.servers import ServerProcess, free_port

#: Server binaries of the private clusters: ``ROLLGUARD_TEST_PG_BIN`` (``.ci/run`` points it at the
#: stack's PostgreSQL version, tests/support/embedded_postgres.py), else Debian's server.
PG_BIN = Path(os.environ.get("ROLLGUARD_TEST_PG_BIN") or "/usr/lib/postgresql/15/bin")


def start_api(
    home: Path,
    tracking_uri: str,
    model_name: str,
    log_dir: Path,
    *,
    token: str,
    ready_path: str = "/readyz",
    **env: str,
) -> ServerProcess:
    """The model server (``python -m api``, i.e. ``rollguard serve api``) on a free port."""
    port = free_port()
    return ServerProcess(
        "api",
        [sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(port)],
        port=port,
        ready_path=ready_path,
        log_dir=log_dir,
        env={
            "ROLLGUARD_HOME": str(home),
            "ROLLGUARD_ENV": "test",
            "MLFLOW_TRACKING_URI": tracking_uri,
            "ROLLGUARD_MODEL_NAME": model_name,
            "ROLLGUARD_ADMIN_TOKEN": token,
            "ROLLGUARD_API_POLL_SECONDS": "0.5",
            **env,
        },
        cwd=Path(__file__).resolve().parents[2],
    ).start(timeout=120)


class SwitchableProxy:
    """A TCP forwarder on a free loopback port to ``target``; :meth:`down` refuses and cuts every
    connection (like a registry outage), :meth:`up` forwards again."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            if self._listener is not None:
                # shutdown() wakes the thread blocked in accept(); close() alone would not
                with contextlib.suppress(OSError):
                    self._listener.shutdown(socket.SHUT_RDWR)
                self._listener.close()
                self._listener = None
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


class PrivatePostgres:
    """A PostgreSQL cluster of our own (the server in :data:`PG_BIN`) on a private loopback port
    (trust auth, run as the ``postgres`` system user because initdb refuses root)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.data = root / "data"
        self.log = root / "postgres.log"

    @staticmethod
    def unavailable() -> str | None:
        """Why a private server cannot run here, or None."""
        if not (PG_BIN / "initdb").exists():
            return f"PostgreSQL server binaries not found under {PG_BIN}"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root and there is no 'postgres' user to run initdb as"
        return None

    def _run(self, *argv: str) -> None:
        cmd = list(argv)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> PrivatePostgres:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            os.chmod(self.root, 0o700)
            for parent in self.root.parents:  # postgres must be able to reach its folder
                if parent == Path("/"):
                    break
                os.chmod(parent, os.stat(parent).st_mode | 0o005)
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust")
        return self

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=on"
        self._run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"
        )

    def running(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False


def wait_for(predicate, timeout: float = 60.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until true; fail (not hang) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - keep polling while a server starts
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:.0f}s")
        time.sleep(0.1)
