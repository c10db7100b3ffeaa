"""Wall time of ``rollguard backup`` and ``rollguard restore`` on a replayed home, against a plain
``tar`` of the same home in the same run (docs/operations.md, "Backup and restore").

The home: ``--home DIR`` (e.g. the ``./.rollguard`` that ``rollguard demo`` leaves, the default
16-week replay), or, without it, the short replay of tests/integration/test_backup_restore.py
(22 CDNOW weeks, a quick training, the first champion, one scored week) built here first.

Rows (median of --repeat runs, seconds; the home is not written while it is measured):
  tar czf (baseline)   ``tar -czf`` of the home (gzip level 6, the same as the backup), one process
  rollguard backup     the command as an operator runs it (process start-up included): SQLite
                       snapshots with the online backup API, checksums, manifest, gzip level 6
  tar xzf (baseline)   ``tar -xzf`` of the baseline archive into an empty folder
  rollguard restore    the command into an empty folder: checksums verified, schema revision
                       checked, the home moved into place and its stored paths rewritten
``ratio`` is each command against its tar baseline; ``work`` is the seconds the command itself
reports (``--json``: the backup or restore without the process start-up, which imports the whole
CLI). Also printed: the home's size (MB, files under it) and both archives' sizes.

Rerun: uv run python benchmarks/bench_backup.py [--home DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CLI = str(Path(sys.executable).parent / "rollguard")


def _env(home: Path) -> dict[str, str]:
    from tests.integration.test_backup_restore import environment

    env = environment(home)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _build_home(home: Path) -> None:
    from tests.integration.test_backup_restore import REPLAY

    for args in REPLAY:
        subprocess.run(
            [CLI, *args], env=_env(home), cwd=home.parent, check=True, capture_output=True
        )


def _timed(
    run: Callable[[], float | None], reset: Callable[[], None], repeat: int
) -> tuple[float, float | None]:
    """Median wall seconds of ``run`` and median of the seconds it reports (None: none)."""
    times, reported = [], []
    for _ in range(repeat):
        reset()
        started = time.perf_counter()
        own = run()
        times.append(time.perf_counter() - started)
        if own is not None:
            reported.append(own)
    return statistics.median(times), statistics.median(reported) if reported else None


def _size_mb(path: Path) -> tuple[float, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6, len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--home", type=Path, help="An existing home (default: build the test's replay)."
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rollguard-bench-backup-") as tmp:
        work = Path(tmp)
        if args.home is None:
            home, which = work / "home", "the test's short replay (22 weeks, 1 champion)"
            _build_home(home)
        else:
            home, which = args.home.absolute(), f"--home {args.home}"
        env = _env(home)
        tar_archive, archive = work / "plain.tar.gz", work / "backup.tar.gz"
        out_tar, out_restore = work / "untar", work / "restored"

        def run(*argv: str) -> float | None:
            proc = subprocess.run(list(argv), env=env, cwd=work, check=True, capture_output=True)
            return float(json.loads(proc.stdout)["seconds"]) if "--json" in argv else None

        def clear(*paths: Path) -> Callable[[], None]:
            def reset() -> None:
                for p in paths:
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(
                        missing_ok=True
                    )

            return reset

        tar_c = _timed(
            lambda: run("tar", "-czf", str(tar_archive), "-C", str(home.parent), home.name),
            clear(tar_archive),
            args.repeat,
        )
        backup = _timed(
            lambda: run(CLI, "backup", "--output", str(archive), "--json"),
            clear(archive),
            args.repeat,
        )

        def untar() -> float | None:
            out_tar.mkdir()
            return run("tar", "-xzf", str(tar_archive), "-C", str(out_tar))

        tar_x = _timed(untar, clear(out_tar), args.repeat)
        restore = _timed(
            lambda: run(CLI, "restore", str(archive), "--home", str(out_restore), "--json"),
            clear(out_restore),
            args.repeat,
        )
        rows = [
            ("tar czf (baseline)", tar_c, tar_c),
            ("rollguard backup", backup, tar_c),
            ("tar xzf (baseline)", tar_x, tar_x),
            ("rollguard restore", restore, tar_x),
        ]
        mb, n = _size_mb(home)
        print(f"home: {which}: {mb:.1f} MB in {n} files")
        print(
            f"archives: plain tar {tar_archive.stat().st_size / 1e6:.1f} MB, "
            f"backup {archive.stat().st_size / 1e6:.1f} MB"
        )
        print(
            f"{'step':<22}{'seconds':>9}{'ratio':>8}{'work s':>9}{'ratio':>8}   (median of {args.repeat})"
        )
        for name, (wall, work_s), (base, _) in rows:
            own = work_s if work_s is not None else wall
            print(f"{name:<22}{wall:>9.2f}{wall / base:>8.2f}{own:>9.2f}{own / base:>8.2f}")
        print(
            "rerun: uv run python benchmarks/bench_backup.py"
            + (f" --home {args.home}" if args.home else "")
            + f" --repeat {args.repeat}"
        )


if __name__ == "__main__":
    main()
