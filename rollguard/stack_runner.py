"""Run the stack planned by :mod:`rollguard.stack` as local processes.

``up``: create the stack's PostgreSQL databases (when a server is configured), write the secrets
and the generated Prometheus/Alertmanager files, run the one-shot jobs (store migration, Airflow
metadata migration), then start every service in its own process group with its output in
``<home>/logs/<service>.log`` and its PID in ``<home>/stack/run/<service>.pid``, and wait until each
answers its readiness check (``stack_ready_timeout_seconds``). ``down``: SIGTERM to each process
group in reverse start order, SIGKILL after ``stack_stop_timeout_seconds``. ``status``: each
service's state (``running``, ``stopped``, ``exited``, ``absent``), readiness, PID and URL.

PID files record the process's start time (``/proc/<pid>/stat``), so a PID reused by an
unrelated process is never signalled (Linux).
"""

from __future__ import annotations

import json
import os
import secrets as secrets_module
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import create_engine, text
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from rollguard.errors import RollguardError
from rollguard.settings import Settings
from rollguard.stack import (
    ALERTMANAGER_CONFIG,
    PROMETHEUS_CONFIG,
    Job,
    Readiness,
    Service,
    StackPaths,
    StackPlan,
    StackSecrets,
    alertmanager_config,
    api_targets,
    plan_stack,
    prometheus_config,
)

#: Started first, waited for before the rest: every other service talks to one of them.
FIRST_WAVE = frozenset({"mlflow", "airflow-api-server"})
#: Popen objects of the processes this interpreter started (polled, so no zombie lingers).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class StackError(RollguardError):
    """A stack service or job could not start, or is not ready in time."""

    kind = "configuration"


@dataclass(frozen=True)
class ServiceStatus:
    """One service as ``stack status`` shows it. ``state``: ``running`` (its process group is
    alive), ``stopped`` (no PID file), ``exited`` (PID file, process gone) or ``absent`` (cannot
    run here, ``reason`` says why); ``ready``: its readiness check passed (None when not running)."""

    name: str
    state: str
    ready: bool | None
    pid: int | None
    url: str | None
    log: str
    reason: str | None = None


# --- secrets and files -----------------------------------------------------------------------------
def _write_private(path: Path, content: str) -> None:
    """Write ``content`` to ``path`` with mode 600 (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(content)
    os.replace(tmp, path)


def load_or_create_secrets(paths: StackPaths) -> StackSecrets:
    """The stack's secrets from ``paths.secrets``, generated (random, mode 600) on first use."""
    if paths.secrets.exists():
        return StackSecrets(**json.loads(paths.secrets.read_text()))
    from cryptography.fernet import Fernet  # Airflow's own dependency

    made = StackSecrets(
        fernet_key=Fernet.generate_key().decode(),
        jwt_secret=secrets_module.token_urlsafe(32),
        api_secret_key=secrets_module.token_urlsafe(32),
        airflow_admin_password=secrets_module.token_urlsafe(16),
        guard_token=secrets_module.token_urlsafe(32),
        admin_token=secrets_module.token_urlsafe(32),
    )
    _write_private(paths.secrets, json.dumps(asdict(made), indent=2))
    return made


def write_configs(plan: StackPlan, settings: Settings, secrets: StackSecrets) -> None:
    """Write the guard token, Airflow's password file, Prometheus's config and API targets
    (file-based discovery) and Alertmanager's config under ``plan.paths``."""
    paths = plan.paths
    for folder in (paths.logs, paths.run, paths.airflow_home, paths.prometheus, paths.alertmanager):
        folder.mkdir(parents=True, exist_ok=True)
    _write_private(paths.guard_token, secrets.guard_token)
    _write_private(paths.airflow_passwords, json.dumps({"admin": secrets.airflow_admin_password}))
    shipped = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    doc = prometheus_config(shipped, settings, paths)
    (paths.prometheus / "prometheus.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    write_api_targets(paths, api_targets(settings))
    am = alertmanager_config(
        yaml.safe_load(ALERTMANAGER_CONFIG.read_text()),
        f"http://127.0.0.1:{settings.guard_port}",
        paths.guard_token,
    )
    (paths.alertmanager / "alertmanager.yml").write_text(yaml.safe_dump(am, sort_keys=False))


def write_api_targets(paths: StackPaths, groups: list[dict[str, Any]]) -> None:
    """Replace the file Prometheus discovers API replicas from (atomically: Prometheus never
    reads a half-written file)."""
    paths.api_targets.parent.mkdir(parents=True, exist_ok=True)
    tmp = paths.api_targets.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups, indent=2))
    os.replace(tmp, paths.api_targets)


def create_databases(admin_url: str, names: Iterable[str]) -> list[str]:
    """Create the databases of ``names`` that do not exist on the server at ``admin_url``; the
    names created (existing ones are left alone).

    Raises:
        sqlalchemy.exc.OperationalError: the server is not reachable.
    """
    from sqlalchemy.engine import make_url

    url = make_url(admin_url).set(drivername="postgresql+psycopg")
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    created = []
    try:
        with engine.connect() as conn:
            for name in names:
                found = conn.execute(
                    text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
                ).first()
                if found is None:
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
                    created.append(name)
    finally:
        engine.dispose()
    return created


# --- processes -------------------------------------------------------------------------------------
def _pid_file(paths: StackPaths, name: str) -> Path:
    return paths.run / f"{name}.pid"


def _log_file(paths: StackPaths, name: str) -> Path:
    return paths.logs / f"{name}.log"


def _start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot, ``/proc/<pid>/stat`` field 22), or
    None when it is gone or a zombie. Unlike the command line, which Airflow rewrites
    (setproctitle), this identifies a process for as long as it lives."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":
        return None
    return int(fields[19])


def recorded_pid(paths: StackPaths, name: str) -> int | None:
    """PID of service ``name`` when its PID file names a live process, the one that was started
    (same start time), else None."""
    child = _CHILDREN.get(_read_pid(paths, name) or -1)
    if child is not None:
        child.poll()  # reap it if it has exited
    record = _read_record(paths, name)
    if record is None:
        return None
    ticks = _start_ticks(int(record["pid"]))
    if ticks is None or ticks != record.get("start_ticks"):
        return None
    return int(record["pid"])


def _read_record(paths: StackPaths, name: str) -> dict[str, Any] | None:
    try:
        return json.loads(_pid_file(paths, name).read_text())
    except (OSError, ValueError):
        return None


def _read_pid(paths: StackPaths, name: str) -> int | None:
    record = _read_record(paths, name)
    return int(record["pid"]) if record else None


def start_service(service: Service, paths: StackPaths) -> int:
    """Start ``service`` in a new session (its own process group), output appended to its log;
    its PID (also the group id), written to its PID file.

    Raises:
        StackError: its port is taken by another process, or the executable cannot be started.
    """
    if service.port is not None and _listening(service.port):
        raise StackError(
            f"{service.name}: port {service.port} is already in use by another process"
        )
    log_path = _log_file(paths, service.name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"\n--- {datetime.now(UTC).isoformat()} start {service.name}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(  # noqa: S603 - argv built by rollguard.stack (absolute executable)
                service.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **service.env},
                cwd=paths.home,
                start_new_session=True,
            )
        except OSError as exc:
            raise StackError(f"{service.name}: cannot start {service.argv[0]}: {exc}") from exc
    _CHILDREN[proc.pid] = proc
    record = {
        "pid": proc.pid,
        "argv": list(service.argv),
        "started": time.time(),
        "start_ticks": _start_ticks(proc.pid),
    }
    _pid_file(paths, service.name).write_text(json.dumps(record))
    return proc.pid


def _listening(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_port_free(port: int, timeout: float) -> None:
    """Wait up to ``timeout`` seconds until nothing listens on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while _listening(port) and time.monotonic() < deadline:
        time.sleep(0.1)


def probe(ready: Readiness, timeout: float = 2.0) -> bool:
    """True when ``ready`` passes now (see :class:`rollguard.stack.Readiness`)."""
    try:
        resp = httpx.get(ready.url, timeout=timeout)
    except httpx.HTTPError:
        return False
    if ready.any_status:
        return True
    if not resp.is_success:
        return False
    if ready.field is None:
        return True
    path, expected = ready.field
    value: Any = resp.json()
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value == expected


def log_tail(paths: StackPaths, name: str, lines: int = 20) -> str:
    """The last ``lines`` lines of a service's or job's log."""
    try:
        text_ = _log_file(paths, name).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text_.splitlines()[-lines:])


def wait_ready(services: list[Service], paths: StackPaths, timeout: float) -> None:
    """Wait until every service passes its readiness check.

    Raises:
        StackError: a service exited, or is not ready after ``timeout`` seconds (its log named).
    """
    pending = [s for s in services if s.ready is not None]

    def still_waiting() -> list[Service]:
        for svc in pending:
            if recorded_pid(paths, svc.name) is None:
                raise StackError(
                    f"{svc.name} exited during start-up; see {_log_file(paths, svc.name)}"
                )
        pending[:] = [s for s in pending if not probe(s.ready)]  # type: ignore[arg-type]
        return pending

    try:
        Retrying(
            stop=stop_after_delay(timeout),
            wait=wait_fixed(0.5),
            retry=retry_if_result(bool),
        )(still_waiting)
    except RetryError:
        names = ", ".join(s.name for s in pending)
        raise StackError(
            f"not ready after {timeout:.0f}s: {names}; see {paths.logs}/<service>.log"
        ) from None


def run_job(job: Job, paths: StackPaths, timeout: float) -> None:
    """Run a one-shot job to completion, its output in ``<logs>/<job>.log``.

    Raises:
        StackError: it exits non-zero or runs longer than ``timeout`` seconds.
    """
    log_path = _log_file(paths, job.name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        try:
            proc = subprocess.run(  # noqa: S603 - argv built by rollguard.stack (absolute executable)
                job.argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **job.env},
                cwd=paths.home, timeout=timeout, check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StackError(f"{job.name} failed: {exc}; see {log_path}") from exc
    if proc.returncode != 0:
        last = (log_tail(paths, job.name, 1) or "").strip()
        raise StackError(f"{job.name} exited with {proc.returncode}: {last} (see {log_path})")


def stop_group(pid: int, timeout: float) -> bool:
    """SIGTERM the process group ``pid``; SIGKILL it when it is still there after ``timeout``
    seconds. True when it had to be killed."""

    def alive() -> bool:
        child = _CHILDREN.get(pid)
        if child is not None and child.poll() is not None:
            _CHILDREN.pop(pid, None)
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return _group_members(pid) != []

    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            return False
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 10
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    return True


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def group_rss_bytes(pgid: int) -> int:
    """Resident memory of every process in group ``pgid`` (the service and its children), bytes."""
    total = 0
    for pid in _group_members(pgid):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            continue
    return total


# --- the commands ----------------------------------------------------------------------------------
def load_plan(settings: Settings) -> tuple[StackPlan, StackSecrets]:
    """The plan for ``settings`` with this home's secrets (created on first use)."""
    paths = StackPaths(settings.home)
    secrets = load_or_create_secrets(paths)
    return plan_stack(settings, secrets), secrets


def up(settings: Settings, progress: Callable[[str], None] = lambda _: None) -> list[ServiceStatus]:
    """Start the stack (services already running are left alone) and wait until it is ready.

    Returns:
        Every service's status, in start order.

    Raises:
        StackError: a job failed, or a service exited or was not ready in time.
        sqlalchemy.exc.OperationalError: ``stack_postgres_url`` is not reachable.
    """
    settings.ensure_dirs()
    plan, secrets = load_plan(settings)
    if plan.databases:
        created = create_databases(settings.stack_postgres_url or "", plan.databases)
        if created:
            progress(f"created databases {', '.join(created)}")
    write_configs(plan, settings, secrets)
    for job in plan.jobs:
        progress(f"running {job.name}")
        run_job(job, plan.paths, settings.stack_ready_timeout_seconds)
    runnable = [s for s in plan.services if s.absent is None]
    for wave in (
        [s for s in runnable if s.name in FIRST_WAVE],
        [s for s in runnable if s.name not in FIRST_WAVE],
    ):
        started = []
        for svc in wave:
            if recorded_pid(plan.paths, svc.name) is None:
                start_service(svc, plan.paths)
                started.append(svc)
                progress(f"started {svc.name}")
        wait_ready(started, plan.paths, settings.stack_ready_timeout_seconds)
    return status(settings, plan)


def status(settings: Settings, plan: StackPlan | None = None) -> list[ServiceStatus]:
    """Every planned service's state, readiness, PID, URL and log (see :class:`ServiceStatus`)."""
    if plan is None:
        plan, _ = load_plan(settings)
    out = []
    for svc in plan.services:
        log = str(_log_file(plan.paths, svc.name))
        if svc.absent is not None:
            out.append(ServiceStatus(svc.name, "absent", None, None, svc.url, log, svc.absent))
            continue
        pid = recorded_pid(plan.paths, svc.name)
        if pid is None:
            state = "exited" if _pid_file(plan.paths, svc.name).exists() else "stopped"
            out.append(ServiceStatus(svc.name, state, None, None, svc.url, log))
            continue
        ready = probe(svc.ready, timeout=1.0) if svc.ready is not None else None
        out.append(ServiceStatus(svc.name, "running", ready, pid, svc.url, log))
    return out


def down(settings: Settings) -> list[dict[str, Any]]:
    """Stop every service that has a PID file, in reverse start order (then any other PID file,
    e.g. a replica no longer planned): SIGTERM to its process group, SIGKILL after
    ``stack_stop_timeout_seconds``. PID files are removed.

    Returns:
        ``[{"name", "pid", "killed"}]`` for each service that was running.
    """
    paths = StackPaths(settings.home)
    plan, _ = load_plan(settings)
    names = [s.name for s in reversed(plan.services)]
    if paths.run.is_dir():
        names += sorted(p.stem for p in paths.run.glob("*.pid") if p.stem not in names)
    stopped = []
    for name in names:
        pid = recorded_pid(paths, name)
        if pid is not None:
            killed = stop_group(pid, settings.stack_stop_timeout_seconds)
            stopped.append({"name": name, "pid": pid, "killed": killed})
        _pid_file(paths, name).unlink(missing_ok=True)
    return stopped


def client_env(settings: Settings) -> dict[str, str]:
    """Variables a command outside the stack needs to use it: the MLflow server and the stores."""
    plan, _ = load_plan(settings)
    return {
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{settings.stack_mlflow_port}",
        "ROLLGUARD_DATABASE_URL": plan.urls["store"],
        "ROLLGUARD_OPTUNA_STORAGE_URL": plan.urls["optuna"],
    }


def stop_service(settings: Settings, name: str, *, sig: int = signal.SIGTERM) -> int | None:
    """Stop one service: ``sig`` SIGKILL kills its process group at once (a crash), anything
    else stops it like ``down``. Its PID, or None when it was not running."""
    paths = StackPaths(settings.home)
    pid = recorded_pid(paths, name)
    if pid is None:
        return None
    if sig == signal.SIGKILL:
        os.killpg(pid, signal.SIGKILL)
        child = _CHILDREN.pop(pid, None)
        if child is not None:
            child.wait(timeout=settings.stack_stop_timeout_seconds)
        # A process in an uninterruptible wait (an fsync, say) dies only when the call returns.
        deadline = time.monotonic() + settings.stack_stop_timeout_seconds
        while _group_members(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    else:
        stop_group(pid, settings.stack_stop_timeout_seconds)
    return pid


def start_one(settings: Settings, name: str) -> int:
    """(Re)start one planned service and wait until it is ready; its PID.

    Raises:
        KeyError: no such service. StackError: as :func:`up`.
    """
    plan, _ = load_plan(settings)
    svc = plan.service(name)
    pid = recorded_pid(plan.paths, name)
    if pid is None:
        if svc.port is not None:  # a process just killed may hold its port a moment longer
            _wait_port_free(svc.port, settings.stack_stop_timeout_seconds)
        pid = start_service(svc, plan.paths)
    wait_ready([svc], plan.paths, settings.stack_ready_timeout_seconds)
    return pid
