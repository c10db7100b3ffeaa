"""Peak memory and CPU of every compose service, measured on its real command, to size the limits
in docker-compose.yml (docs/deploy.md, "Limits").

Setup: ``rollguard stack up`` (tests/support/live_stack.py) runs each compose service's command as a
local process on loopback ports: MLflow server, Airflow api-server / scheduler (LocalExecutor) /
dag-processor / triggerer, two API replicas, guard, UI, Prometheus, Alertmanager, with its own
databases on the machine's PostgreSQL (dropped afterwards) and the small training budgets of the
live tests. A sampler thread reads every ``SAMPLE_SECONDS`` the resident set (VmRSS) and CPU ticks
of each service's processes from /proc: the service, its descendants and its process group, so the
scheduler's row holds the LocalExecutor's workers and the training tasks they run (each task in a
process group of its own, as Airflow's supervisor puts it, but in the scheduler's container). PostgreSQL's row is the
proportional set size (Pss, so shared buffers are not counted once per backend) of the backends
connected to the stack's databases, found through ``pg_stat_activity``. Two more rows split the
scheduler: ``(main)`` is the scheduler process alone, ``(one slot)`` the largest subtree under it
at any sample, i.e. one LocalExecutor worker with the task it runs; the scheduler's limit must hold
main + [core] parallelism x one slot. MLflow is split the same way (``mlflow server`` and one
uvicorn worker), as the stack runs one worker and docker-compose.yml two. CPU counts live processes only (a child that lives less than
a sample is missed), on a machine shared with other jobs: peaks are lower bounds.

Phases, in one run:
  idle       ``IDLE_SECONDS`` after the stack is ready and the DAGs are parsed
  train      the first delivery lands (``data replay``), the landing watch runs and its asset event
             starts ``rollguard_retrain``: ingest, tune, train, gate (the scheduler's spike)
  api load   ``LOAD_REQUESTS`` single-row and ``BATCH_REQUESTS`` 500-row ``POST /v1/predict`` to
             the first API replica from ``LOAD_THREADS`` threads, and ``UI_REQUESTS`` UI pages
The one-shot jobs (``rollguard db upgrade``, ``airflow db migrate``) are run alone first, on SQLite
in a temporary folder; their peak is the kernel's maxrss of the process (``os.wait4``).

Baseline: the first API replica's idle RSS, same run. Each row gives the peak RSS, its ratio to
that baseline, peak CPU (cores, over ``CPU_WINDOW`` seconds), the limits this measurement implies
(memory = peak x MEMORY_HEADROOM rounded up to 64 MiB; cpus = peak cores x CPU_HEADROOM rounded
up to 0.5, at least 0.5, at most the machine's cores) and the limit docker-compose.yml sets now.

Rerun: uv run python benchmarks/bench_service_memory.py
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLE_SECONDS = 0.5
CPU_WINDOW = 2.0
IDLE_SECONDS = 20.0
LOAD_REQUESTS = 3000
BATCH_REQUESTS = 150
LOAD_THREADS = 8
UI_REQUESTS = 50
MEMORY_HEADROOM = 1.5
CPU_HEADROOM = 1.25
MIB = 2**20
#: Services whose group is also reported as (main) and (one slot): the scheduler (LocalExecutor
#: workers) and MLflow (uvicorn workers: the stack runs one, docker-compose.yml two).
SPLIT = ("airflow-scheduler", "mlflow")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every live (non-zombie) process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields and fields[0] != "Z":
            table[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return table


def _members(leader: int, table: dict[int, tuple[int, int]]) -> list[int]:
    """``leader``, its descendants and its process group. Descendants matter: Airflow's task
    supervisor puts each task process in a process group of its own (``setpgid``), but in a
    container it stays in the scheduler's (or worker's) cgroup and counts against its limit."""
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _) in table.items():
        children[ppid].append(pid)
    found, todo = set(), [leader] if leader in table else []
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children[pid])
    found |= {pid for pid, (_, pgid) in table.items() if pgid == leader}
    return sorted(found)


def _stat(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _ticks(pid: int) -> int:
    """utime + stime of ``pid`` (clock ticks). Children's ticks are not added when they are
    reaped (cutime would arrive as one burst): a process that lives less than a sample is missed."""
    fields = _stat(pid)
    return int(fields[11]) + int(fields[12]) if fields else 0


def _slots(pgid: int, members: list[int]) -> tuple[int, int]:
    """(RSS of the group leader, largest RSS of one subtree under it), bytes: for the scheduler,
    the scheduler itself and one LocalExecutor worker with the task it runs."""
    parent = {}
    for pid in members:
        fields = _stat(pid)
        if fields:
            parent[pid] = int(fields[1])
    subtree: dict[int, int] = defaultdict(int)
    for pid in members:
        top = pid
        while parent.get(top) not in (pgid, None):
            top = parent[top]
        if top != pgid and parent.get(top) == pgid:
            subtree[top] += _status_kib(pid, "VmRSS:") * 1024
    return _status_kib(pgid, "VmRSS:") * 1024, max(subtree.values(), default=0)


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class Sampler(threading.Thread):
    """Samples each service group's RSS (bytes) and CPU ticks, tagged with the current phase."""

    def __init__(self, groups: dict[str, int], pg_prefix: str) -> None:
        super().__init__(daemon=True)
        self.groups = groups
        self.pg_prefix = pg_prefix
        self.phase = "idle"
        self.samples: list[tuple[float, str, dict[str, int], dict[str, int]]] = []
        self._halt = threading.Event()

    def _postgres(self, conn: psycopg.Connection) -> tuple[int, int]:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname LIKE %s", (f"{self.pg_prefix}\\_%",)
        ).fetchall()
        pids = [r[0] for r in rows]
        return sum(_pss_kib(p) for p in pids) * 1024, sum(_ticks(p) for p in pids)

    def run(self) -> None:
        with psycopg.connect(**PG, autocommit=True) as conn:  # type: ignore[arg-type]
            while not self._halt.is_set():
                rss: dict[str, int] = {}
                ticks: dict[str, int] = {}
                table = _process_table()
                for name, pgid in self.groups.items():
                    members = _members(pgid, table)
                    rss[name] = sum(_status_kib(p, "VmRSS:") for p in members) * 1024
                    ticks[name] = sum(_ticks(p) for p in members)
                    if name in SPLIT:
                        rss[f"{name} (main)"], rss[f"{name} (one slot)"] = _slots(pgid, members)
                        ticks[f"{name} (main)"] = ticks[f"{name} (one slot)"] = 0
                rss["postgres"], ticks["postgres"] = self._postgres(conn)
                self.samples.append((time.monotonic(), self.phase, rss, ticks))
                self._halt.wait(SAMPLE_SECONDS)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


def summarise(samples: list[tuple[float, str, dict[str, int], dict[str, int]]]) -> dict[str, Any]:
    """Per service: peak RSS and its phase, idle RSS, peak cores over CPU_WINDOW, mean cores."""
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    step = max(1, round(CPU_WINDOW / SAMPLE_SECONDS))
    names = samples[0][2].keys()
    for name in names:
        peak = max(samples, key=lambda s: s[2][name])
        idle = [s[2][name] for s in samples if s[1] == "idle"]
        cores = []
        for a, b in zip(samples, samples[step:], strict=False):
            dt = b[0] - a[0]
            cores.append(max(0, b[3][name] - a[3][name]) / CLK_TCK / dt)
        span = samples[-1][0] - samples[0][0]
        busy = sum(
            max(0, b[3][name] - a[3][name]) for a, b in zip(samples, samples[1:], strict=False)
        )
        out[name] = {
            "peak": peak[2][name],
            "phase": peak[1],
            "idle": max(idle) if idle else 0,
            "cores": max(cores) if cores else 0.0,
            "mean_cores": busy / CLK_TCK / span if span else 0.0,
        }
    return out


def one_shot_peak(argv: list[str], env: dict[str, str]) -> int:
    """Max RSS (bytes) of a command run to completion (it and its waited-for children).

    Raises:
        SystemExit: the command failed.
    """
    proc = subprocess.Popen(
        argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.read()[-2000:]!r}")  # type: ignore[union-attr]
    return usage.ru_maxrss * 1024  # kilobytes on Linux


def one_shots() -> dict[str, int]:
    """Peak RSS of the compose file's one-shot jobs' commands, on SQLite in a temporary folder."""
    from tests.support.servers import venv_bin

    with tempfile.TemporaryDirectory(prefix="rollguard-bench-jobs-") as tmp:
        home = Path(tmp) / "home"
        env = {"ROLLGUARD_HOME": str(home), "ROLLGUARD_ENV": "test"}
        airflow = {
            **env,
            "AIRFLOW_HOME": str(Path(tmp) / "airflow"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp}/airflow.db",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        }
        return {
            "rollguard-migrate": one_shot_peak([venv_bin("rollguard"), "db", "upgrade"], env),
            "airflow-init": one_shot_peak([venv_bin("airflow"), "db", "migrate"], airflow),
        }


def api_load(url: str, ui: str) -> None:
    """The API load phase: single-row and batch predictions, then UI pages."""
    from tests.support.api_models import example_frame

    one = json.dumps({"rows": example_frame(1).to_dict("records")}).encode()
    batch = json.dumps({"rows": example_frame(500).to_dict("records")}).encode()
    headers = {"content-type": "application/json"}
    with httpx.Client(timeout=60) as client:

        def post(i: int) -> int:
            body = batch if i % (LOAD_REQUESTS // BATCH_REQUESTS) == 0 else one
            return client.post(f"{url}/v1/predict", content=body, headers=headers).status_code

        with ThreadPoolExecutor(LOAD_THREADS) as pool:
            codes = list(pool.map(post, range(LOAD_REQUESTS)))
        bad = [c for c in codes if c != 200]
        if bad:
            raise SystemExit(f"{len(bad)} predictions failed (first status {bad[0]})")
        for _ in range(UI_REQUESTS):
            client.get(f"{ui}/")


def _round_up(value: float, step: float) -> float:
    return math.ceil(value / step) * step


def implied_limits(peak: int, cores: float) -> tuple[int, float]:
    """(memory MiB, cpus) that ``peak`` bytes and ``cores`` imply with the stated headroom."""
    memory = int(_round_up(peak * MEMORY_HEADROOM / MIB, 64))
    cpus = min(float(os.cpu_count() or 1), max(0.5, _round_up(cores * CPU_HEADROOM, 0.5)))
    return memory, cpus


def compose_limits() -> dict[str, tuple[str, str]]:
    """(memory, cpus) each service of docker-compose.yml is limited to now ('-' when none)."""
    from tests.support.compose import load_compose

    out = {}
    for name, svc in load_compose()["services"].items():
        limits = ((svc.get("deploy") or {}).get("resources") or {}).get("limits") or {}
        out[name] = (str(limits.get("memory", "-")), str(limits.get("cpus", "-")))
    return out


PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}


def main() -> None:
    from rollguard import stack_runner
    from tests.support import live_stack

    reason = live_stack.unavailable()
    if reason:
        raise SystemExit(f"cannot run: {reason}")
    PG.update(live_stack.PG)
    started = time.monotonic()
    print("one-shot jobs ...", file=sys.stderr)
    jobs = one_shots()
    print("rollguard stack up ...", file=sys.stderr)
    stack = live_stack.start_live_stack()
    try:
        groups = {
            row.name: row.pid for row in stack_runner.status(stack.settings) if row.pid is not None
        }
        stack.wait_for_dags("rollguard_landing_watch", "rollguard_retrain")
        sampler = Sampler(groups, stack.prefix)
        sampler.start()
        time.sleep(IDLE_SECONDS)
        sampler.phase = "train"
        print("training (landing watch -> rollguard_retrain) ...", file=sys.stderr)
        live_stack.bootstrap_champion(stack)
        url = stack.api_urls[0]
        live_stack.wait_until(
            lambda: httpx.get(f"{url}/v1/model", timeout=5).status_code == 200,
            300, "the API serving the champion",
        )  # fmt: skip
        sampler.phase = "api load"
        print("api load ...", file=sys.stderr)
        api_load(url, stack.url("ui"))
        time.sleep(2 * CPU_WINDOW)
        sampler.stop()
    finally:
        stop_live_stack = live_stack.stop_live_stack
        stop_live_stack(stack)
    report(summarise(sampler.samples), jobs, time.monotonic() - started)


def report(rows: dict[str, Any], jobs: dict[str, int], seconds: float) -> None:
    baseline = rows["api"]["idle"]
    compose = compose_limits()
    head = (
        f"{'service':<22} {'peak MiB':>8} {'x api idle':>10} {'at':>8} {'idle MiB':>8} "
        f"{'peak cores':>10} {'mean cores':>10} {'implied':>14} {'compose now':>14}"
    )
    print(f"\nbaseline: api idle RSS {baseline / MIB:.0f} MiB (same run)")
    print(head)
    for name, r in rows.items():
        memory, cpus = implied_limits(r["peak"], r["cores"])
        now = compose.get(name.rsplit("-", 1)[0] if name == "api-2" else name, ("-", "-"))
        print(
            f"{name:<22} {r['peak'] / MIB:>8.0f} {r['peak'] / baseline:>10.2f} {r['phase']:>8} "
            f"{r['idle'] / MIB:>8.0f} {r['cores']:>10.2f} {r['mean_cores']:>10.2f} "
            f"{f'{memory}M/{cpus:g}':>14} {'/'.join(now):>14}"
        )
    for name, peak in jobs.items():
        memory, _ = implied_limits(peak, 0)
        now = compose.get(name, ("-", "-"))
        print(
            f"{name:<22} {peak / MIB:>8.0f} {peak / baseline:>10.2f} {'one-shot':>8} "
            f"{'':>8} {'':>10} {'':>10} {f'{memory}M':>14} {'/'.join(now):>14}"
        )
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"\nlargest child process of this run (maxrss): {children / 1024:.0f} MiB")
    print(
        f"memory headroom x{MEMORY_HEADROOM}, cpu headroom x{CPU_HEADROOM}; run took {seconds:.0f} s"
    )
    print("rerun: uv run python benchmarks/bench_service_memory.py")


if __name__ == "__main__":
    main()
