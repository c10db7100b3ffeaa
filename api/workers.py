"""One model-server process per replica, however the server is launched.

:func:`refuse_multiple_workers` runs when the app is built (``create_app``, also as uvicorn's
``--factory``). It finds the worker count the process was started with: ``WEB_CONCURRENCY`` and
``PROMETHEUS_MULTIPROC_DIR`` (see :func:`api.metrics.check_single_process`), the ``workers`` of the
uvicorn ``Config`` a ``uvicorn --workers N`` supervisor hands to each worker process it spawns
(``multiprocessing`` keeps it in the worker's process object), and ``-w/--workers`` of a gunicorn
parent. Several workers are refused with one line on stderr and exit code 2; a uvicorn supervisor
is asked to stop first (SIGTERM), or it would start the refused worker again and again.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from api.metrics import MultipleWorkersError, check_single_process


def uvicorn_workers() -> int | None:
    """``workers`` of the uvicorn ``Config`` this process was spawned with by a uvicorn
    supervisor (``--workers`` or ``--reload``), or None when it was not."""
    kwargs = getattr(multiprocessing.current_process(), "_kwargs", None) or {}
    config: Any = kwargs.get("config")
    if config is None or not type(config).__module__.startswith("uvicorn"):
        return None
    return int(getattr(config, "workers", 1) or 1)


def gunicorn_workers(parent_cmdline: list[str]) -> int | None:
    """``-w/--workers`` of a gunicorn parent command line (1 when gunicorn gives none), or None
    when the parent is not gunicorn."""
    if not any("gunicorn" in Path(arg).name for arg in parent_cmdline[:2]):
        return None
    text = " ".join(parent_cmdline)
    found = re.search(r"(?:-w|--workers)[ =](\d+)", text)
    return int(found.group(1)) if found else 1


def _parent_cmdline() -> list[str]:
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")


def check_one_worker() -> None:
    """Raise when this process is one of several server workers.

    Raises:
        MultipleWorkersError: see the module docstring for what is checked.
    """
    check_single_process()
    for found in (uvicorn_workers(), gunicorn_workers(_parent_cmdline())):
        if found is not None and found > 1:
            raise MultipleWorkersError(
                f"the Rollguard API runs one process per replica, not {found} workers; "
                "start more replicas instead (each with its own ROLLGUARD_API_REPLICA_ID)"
            )


def refuse_start(problem: str) -> NoReturn:
    """Refuse to start: print ``error: <problem>`` (one line) on stderr, stop a uvicorn
    supervisor parent (or it would start the refused worker again and again), exit with code 2.

    For start-up only (nothing to flush or close yet), wherever the server is built: the
    ``rollguard serve api`` command, uvicorn's ``--factory`` call, or the lifespan start-up.
    """
    sys.stderr.write(f"error: {' '.join(problem.split())}\n")
    sys.stderr.flush()
    if uvicorn_workers() is not None:
        os.kill(os.getppid(), signal.SIGTERM)
    os._exit(2)


def refuse_multiple_workers() -> None:
    """:func:`check_one_worker`; on refusal :func:`refuse_start` (one line, exit code 2)."""
    try:
        check_one_worker()
    except MultipleWorkersError as exc:
        refuse_start(str(exc))
