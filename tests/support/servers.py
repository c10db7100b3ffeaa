"""Real servers for tests: start on a free loopback port, wait until ready, stop with a timeout,
and show the server's log when something goes wrong."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A subprocess serving HTTP on loopback, with its output captured to a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int,
        ready_path: str,
        log_dir: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.ready_path = ready_path
        self.log_path = log_dir / f"{name}-{port}.log"
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> ServerProcess:
        """Start the process and wait until ``ready_path`` answers 2xx.

        Raises:
            RuntimeError: with the tail of the log when the process exits or is not ready in time.
        """
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(self.url + self.ready_path, timeout=2.0).is_success:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate the process group; kill it if it does not stop within ``timeout`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        import signal

        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=timeout)
        except ProcessLookupError:
            pass

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def venv_bin(name: str) -> str:
    """Path of a console script installed beside the running interpreter."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(name)
    return found


def start_mlflow_server(root: Path, log_dir: Path) -> ServerProcess:
    """An MLflow tracking server with a SQLite backend and served artifacts under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        venv_bin("mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    return ServerProcess(
        "mlflow",
        argv,
        port=port,
        ready_path="/health",
        log_dir=log_dir,
        env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    ).start(timeout=120)


#: The repository root: an MLflow server started here imports Rollguard's ``rollguard-auth`` app
#: from this checkout (PYTHONPATH), whichever checkout the virtualenv was installed from.
REPO_ROOT = Path(__file__).resolve().parents[2]


def start_mlflow_auth_server(
    root: Path, log_dir: Path, *, admin_password: str, workers: int = 2
) -> ServerProcess:
    """:func:`start_mlflow_server` with authentication: ``mlflow server --app-name rollguard-auth``
    (MLflow's basic-auth plus Rollguard's ``champion`` rule), the auth store in
    ``root/basic_auth.db``, ``default_permission = NO_PERMISSIONS``, an admin ``admin`` with
    ``admin_password`` and 2 workers that both initialise the fresh user store (the stack's
    configuration, docker-compose.yml and deploy/mlflow/basic_auth.ini)."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{root / 'basic_auth.db'}\n"
        "admin_username = admin\n"
        f"admin_password = {admin_password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 60\n"
    )
    port = free_port()
    argv = [
        venv_bin("mlflow"),
        "server",
        "--app-name",
        "rollguard-auth",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    return ServerProcess(
        "mlflow-auth",
        argv,
        port=port,
        ready_path="/health",
        log_dir=log_dir,
        env={
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only-csrf-key",
            "PYTHONPATH": pythonpath,
            # The client side of the test process must not leak into the server.
            "MLFLOW_TRACKING_USERNAME": "",
            "MLFLOW_TRACKING_PASSWORD": "",
        },
    ).start(timeout=120)


def start_s3_server(log_dir: Path) -> ServerProcess:
    """An S3-compatible object store on loopback: moto's ``moto_server`` (the ``moto[server]``
    package), a process of its own speaking the S3 REST API; any access key is accepted."""
    port = free_port()
    return ServerProcess(
        "s3",
        [venv_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        port=port,
        ready_path="/",
        log_dir=log_dir,
    ).start(timeout=60)
