"""Installed size of each service image's dependency group, against the API's 500 MB goal.

For every ``build-<service>`` stage of the Dockerfile (and Dockerfile.airflow's pipeline group) this
creates a fresh virtual environment in a temporary folder and runs the same
``uv sync --locked --no-dev --no-default-groups --group ...`` the stage runs (bytecode compiled and
files copied as in the image), then measures the folder with ``du -sb`` and lists the largest
distributions (the sizes of the files in each one's RECORD). It then imports the service's entry
module inside that environment, so a group that lacks a package its service imports fails here,
not in a container.

Baseline: the goal for the API image's environment, 500 MB (10^6 bytes per MB). The table gives
each service's size and its ratio to that goal. The Airflow row is the pipeline group in a fresh
environment; in the image it is installed over apache/airflow's own environment, which already
holds Airflow and part of the group.

Rerun: uv run python benchmarks/bench_image_sizes.py [--only api] [--top 8] [--what-if-cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_BYTES = 500 * 10**6
MB = 10**6

#: The module each service's command imports first (``rollguard serve X`` → this module).
ENTRY_MODULES = {
    "api": ["api.app"],
    "ui": ["ui.server", "ui.app", "ui"],
    "guard": ["registry_guard.service", "monitoring.exporter", "registry_guard.registry"],
    "mlflow": ["mlflow.server"],
    "airflow": ["pipeline.steps", "registry_guard.registry"],
}

_STAGE = re.compile(r"^FROM\s+\S+\s+AS\s+build-([a-z0-9-]+)\s*$", re.IGNORECASE | re.MULTILINE)
_SYNC = re.compile(r"uv sync ([^\n]*)")


@dataclass(frozen=True)
class Target:
    """One image: its name and the ``uv sync`` flags of its build stage."""

    name: str
    groups: tuple[str, ...]
    source: str


def dockerfile_targets(dockerfile: Path = ROOT / "Dockerfile") -> list[Target]:
    """The ``build-<name>`` stages of the Dockerfile and the ``--group`` flags of their ``uv sync``.

    Raises:
        ValueError: a build stage without exactly one ``uv sync`` line.
    """
    text = _without_comments(dockerfile.read_text())
    matches = list(_STAGE.finditer(text))
    targets = []
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end() : end]
        body = re.split(r"^FROM\s", body, flags=re.MULTILINE)[0].replace("\\\n", " ")
        syncs = _SYNC.findall(body)
        if len(syncs) != 1:
            raise ValueError(f"stage build-{match.group(1)} has {len(syncs)} `uv sync` lines")
        groups = tuple(re.findall(r"--group\s+(\S+)", syncs[0]))
        targets.append(Target(match.group(1), groups, "Dockerfile"))
    return targets


def _without_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def airflow_target(dockerfile: Path = ROOT / "Dockerfile.airflow") -> Target:
    """The group that Dockerfile.airflow exports from the lock and installs over Airflow."""
    text = _without_comments(dockerfile.read_text()).replace("\\\n", " ")
    export = re.search(r"uv export ([^\n]*)", text)
    if export is None:
        raise ValueError("Dockerfile.airflow has no `uv export` line")
    return Target(
        "airflow", tuple(re.findall(r"--group\s+(\S+)", export.group(1))), "Dockerfile.airflow"
    )


def uv_binary() -> str:
    """uv on PATH, else the project's private copy in .tools/."""
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    if not Path(found).exists():
        raise SystemExit("uv not found (run `make setup`)")
    return found


_PROBE = (
    "import importlib, importlib.metadata as md, json, os, sys\n"
    "sizes = {}\n"
    "for d in md.distributions():\n"
    "    total = 0\n"
    "    for f in d.files or []:\n"
    "        p = f.locate()\n"
    "        if os.path.isfile(p): total += os.path.getsize(p)\n"
    "    sizes[d.metadata['Name']] = sizes.get(d.metadata['Name'], 0) + total\n"
    "errors = {}\n"
    "for m in sys.argv[1:]:\n"
    "    try: importlib.import_module(m)\n"
    "    except Exception as exc: errors[m] = f'{type(exc).__name__}: {exc}'\n"
    "print(json.dumps({'sizes': sizes, 'errors': errors, 'count': len(sizes)}))\n"
)


def _probe(python: Path, modules: list[str], cwd: Path, env: dict | None = None) -> dict:
    """Sizes of every installed distribution (bytes, from RECORD) and import errors of
    ``modules``, as seen by ``python``."""
    out = subprocess.run(
        [str(python), "-c", _PROBE, *modules],
        capture_output=True, text=True, check=True, cwd=cwd, env=env,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(target: Target, workdir: Path, top: int) -> dict:
    """Sync ``target``'s groups into a fresh environment under ``workdir``; size it and import."""
    venv = workdir / target.name
    env = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(venv),
        "UV_COMPILE_BYTECODE": "1",
        "UV_LINK_MODE": "copy",
    }
    env.pop("VIRTUAL_ENV", None)
    argv = [uv_binary(), "sync", "--locked", "--no-dev", "--no-default-groups", "--no-editable"]
    for group in target.groups:
        argv += ["--group", group]
    argv += ["--python", sys.executable, "--quiet"]
    started = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, env=env, check=True)
    seconds = time.perf_counter() - started
    size = int(
        subprocess.run(
            ["du", "-sb", str(venv)], capture_output=True, text=True, check=True
        ).stdout.split()[0]
    )
    modules = [m for m in ENTRY_MODULES.get(target.name, []) if _module_exists(m)]
    data = _probe(venv / "bin" / "python", modules, cwd=workdir)
    largest = sorted(data["sizes"].items(), key=lambda kv: kv[1], reverse=True)[:top]
    return {
        "name": target.name,
        "groups": target.groups,
        "bytes": size,
        "distributions": data["count"],
        "largest": largest,
        "import_errors": data["errors"],
        "imported": modules,
        "sync_seconds": seconds,
    }


def measure_cpu_only_api(workdir: Path, top: int) -> dict:
    """What-if: the api group from the same lock without xgboost's GPU parts.

    On Linux, xgboost's wheel bundles CUDA kernels and depends on nvidia-nccl-cu12 (multi-GPU
    collectives). Here the exported requirements drop nvidia-nccl-cu12 and take ``xgboost-cpu`` (the
    CPU-only build XGBoost publishes on PyPI, same import name) at the locked xgboost version.
    """
    uv = uv_binary()
    exported = subprocess.run(
        [uv, "export", "--locked", "--no-dev", "--no-default-groups", "--group", "api",
         "--no-emit-project", "--no-hashes", "--format", "requirements-txt"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    lines = []
    for line in exported.splitlines():
        name = re.split(r"[=<>;\s\[]", line.strip(), maxsplit=1)[0].lower()
        if name == "nvidia-nccl-cu12" or line.strip().startswith("#") or not line.strip():
            continue
        if name == "xgboost":
            line = "xgboost-cpu" + line.strip()[len("xgboost") :]
        lines.append(line.strip())
    requirements = workdir / "api-cpu.txt"
    requirements.write_text("\n".join(lines) + "\n")
    venv = workdir / "api-cpu-only"
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    env = {**os.environ, "UV_COMPILE_BYTECODE": "1", "UV_LINK_MODE": "copy"}
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
         "-r", str(requirements)],
        env=env, check=True,
    )  # fmt: skip
    size = int(
        subprocess.run(
            ["du", "-sb", str(venv)], capture_output=True, text=True, check=True
        ).stdout.split()[0]
    )
    data = _probe(
        venv / "bin" / "python", ["api.app"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    largest = sorted(data["sizes"].items(), key=lambda kv: kv[1], reverse=True)[:top]
    return {
        "name": "api-cpu-only (what-if)",
        "groups": ("api",),
        "bytes": size,
        "distributions": data["count"],
        "largest": largest,
        "import_errors": data["errors"],
        "imported": ["api.app"],
        "sync_seconds": 0.0,
    }


def _module_exists(module: str) -> bool:
    """Whether this checkout has the module (third-party modules are taken to exist)."""
    first = module.split(".")[0]
    if not (ROOT / first).is_dir():
        return True
    parts = module.split(".")
    return (ROOT.joinpath(*parts).with_suffix(".py")).exists() or (
        ROOT.joinpath(*parts) / "__init__.py"
    ).exists()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="measure only this target (repeatable)")
    parser.add_argument("--top", type=int, default=6, help="largest distributions to list")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--what-if-cpu",
        action="store_true",
        help="also measure the api group without nvidia-nccl-cu12 and with xgboost-cpu",
    )
    args = parser.parse_args()

    targets = [*dockerfile_targets(), airflow_target()]
    if args.only:
        targets = [t for t in targets if t.name in args.only]
    results = []
    with tempfile.TemporaryDirectory(prefix="rollguard-sizes-") as tmp:
        for target in targets:
            results.append(measure(target, Path(tmp), args.top))
            shutil.rmtree(Path(tmp) / target.name, ignore_errors=True)
        if args.what_if_cpu:
            results.append(measure_cpu_only_api(Path(tmp), args.top))

    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"Installed size of each image's dependency group (Python {sys.version.split()[0]})")
        print(f"baseline: the API goal, {GOAL_BYTES / MB:.0f} MB")
        print(f"{'image':<24} {'groups':<16} {'dists':>5} {'MB':>8} {'x goal':>7}  imports")
        for r in results:
            imports = "ok" if not r["import_errors"] else f"FAILED {r['import_errors']}"
            print(
                f"{r['name']:<24} {'+'.join(r['groups']) or '(core)':<16} {r['distributions']:>5} "
                f"{r['bytes'] / MB:>8.1f} {r['bytes'] / GOAL_BYTES:>7.2f}  {imports}"
            )
        for r in results:
            if not r["largest"]:
                continue
            print(f"\nlargest distributions in {r['name']}:")
            for name, size in r["largest"]:
                print(f"  {name:<28} {size / MB:>8.1f} MB")
        print("\nrerun: uv run python benchmarks/bench_image_sizes.py")
    return 1 if any(r["import_errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
