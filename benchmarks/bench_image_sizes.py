"""Installed size of each service image's dependency group, against each image's size target.

For every ``build-<service>`` stage of the Dockerfile (and Dockerfile.airflow's pipeline group) this
creates a fresh virtual environment in a temporary folder and runs the same
``uv sync --locked --no-dev --no-default-groups --group ...`` the stage runs (bytecode compiled and
files copied as in the image), then, where the stage does, the same
``deploy/prune-site-packages.sh`` (numpy's, pandas' and scipy's bundled test suites), measures the
folder with ``du -sb`` and lists the largest distributions (the sizes of the files in each one's
RECORD). It then imports the service's entry module inside that environment, so a group that lacks
a package its service imports fails here, not in a container.

Targets (docs/deploy.md, "Installed size of each image's dependency group"; 10^6 bytes per MB):
API 500 MB, UI 300 MB. The table gives each image's size and its ratio to its target. With
``--before REV`` the same images are measured from the Dockerfile, pyproject.toml, uv.lock and
sources of git revision REV too (the baseline), and each row gets its ratio to that baseline. The
Airflow row is the pipeline group in a fresh environment; in the image it is installed over
apache/airflow's own environment, which already holds Airflow and part of the group.

Rerun: uv run python benchmarks/bench_image_sizes.py [--only api] [--top 8] [--before 2050c49]
Exit status: 1 when an entry module does not import or an image is over its target.
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
MB = 10**6
#: Size target of each image's environment, bytes (issue 21; docs/deploy.md).
TARGET_BYTES = {"api": 500 * MB, "ui": 300 * MB}
PRUNE_SCRIPT = "deploy/prune-site-packages.sh"

#: The module each service's command imports first (``rollguard serve X`` → this module).
ENTRY_MODULES = {
    "api": ["api.app"],
    "ui": ["ui.cli", "ui.server", "ui.app", "ui"],
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
    pruned: bool = False


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
        targets.append(Target(match.group(1), groups, "Dockerfile", PRUNE_SCRIPT in body))
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


def measure(target: Target, workdir: Path, top: int, root: Path = ROOT) -> dict:
    """Sync ``target``'s groups of the project at ``root`` into a fresh environment under
    ``workdir``, prune it as its stage does, size it and import its entry modules."""
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
    subprocess.run(argv, cwd=root, env=env, check=True)
    if target.pruned:
        subprocess.run(["sh", str(root / PRUNE_SCRIPT), str(venv)], check=True)
    seconds = time.perf_counter() - started
    size = int(
        subprocess.run(
            ["du", "-sb", str(venv)], capture_output=True, text=True, check=True
        ).stdout.split()[0]
    )
    modules = [m for m in ENTRY_MODULES.get(target.name, []) if _module_exists(m, root)]
    data = _probe(venv / "bin" / "python", modules, cwd=workdir)
    largest = sorted(data["sizes"].items(), key=lambda kv: kv[1], reverse=True)[:top]
    return {
        "name": target.name,
        "groups": target.groups,
        "pruned": target.pruned,
        "bytes": size,
        "target_bytes": TARGET_BYTES.get(target.name),
        "distributions": data["count"],
        "largest": largest,
        "import_errors": data["errors"],
        "imported": modules,
        "sync_seconds": seconds,
    }


def checkout(revision: str, dest: Path) -> Path:
    """The files of git ``revision`` of this repository, extracted into ``dest``.

    Raises:
        subprocess.CalledProcessError: no such revision.
    """
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def measure_all(root: Path, only: list[str] | None, workdir: Path, top: int) -> list[dict]:
    """:func:`measure` for every image of the project at ``root`` (``only``: these names)."""
    targets = [
        *dockerfile_targets(root / "Dockerfile"),
        airflow_target(root / "Dockerfile.airflow"),
    ]
    if only:
        targets = [t for t in targets if t.name in only]
    results = []
    for target in targets:
        results.append(measure(target, workdir, top, root))
        shutil.rmtree(workdir / target.name, ignore_errors=True)
    return results


def _module_exists(module: str, root: Path = ROOT) -> bool:
    """Whether the checkout at ``root`` has the module (third-party modules are taken to exist)."""
    first = module.split(".")[0]
    if not (root / first).is_dir():
        return True
    parts = module.split(".")
    return (root.joinpath(*parts).with_suffix(".py")).exists() or (
        root.joinpath(*parts) / "__init__.py"
    ).exists()


def print_table(results: list[dict], before: dict[str, dict], revision: str | None) -> None:
    """The table of sizes, targets and (with a baseline) before/after ratios, then the largest
    distributions of each image."""
    print(f"Installed size of each image's dependency group (Python {sys.version.split()[0]})")
    print("targets: " + ", ".join(f"{k} {v / MB:.0f} MB" for k, v in TARGET_BYTES.items()))
    if revision:
        print(f"baseline: the same images at git revision {revision}")
    header = f"{'image':<8} {'groups':<22} {'dists':>5} {'MB':>8} {'target':>7} {'x target':>8}"
    if revision:
        header += f" {'before MB':>9} {'x before':>8}"
    print(header + "  imports")
    for r in results:
        target = r["target_bytes"]
        within = "-" if target is None else f"{r['bytes'] / target:.2f}"
        line = (
            f"{r['name']:<8} {'+'.join(r['groups']) + (' (pruned)' if r['pruned'] else ''):<22} "
            f"{r['distributions']:>5} {r['bytes'] / MB:>8.1f} "
            f"{'-' if target is None else f'{target / MB:.0f}':>7} {within:>8}"
        )
        if revision:
            b = before.get(r["name"])
            line += (
                f" {b['bytes'] / MB:>9.1f} {r['bytes'] / b['bytes']:>8.2f}"
                if b
                else f" {'-':>9} {'-':>8}"
            )
        imports = "ok" if not r["import_errors"] else f"FAILED {r['import_errors']}"
        print(f"{line}  {imports}")
    for r in results:
        if r["largest"]:
            print(f"\nlargest distributions in {r['name']}:")
            for name, size in r["largest"]:
                print(f"  {name:<28} {size / MB:>8.1f} MB")
    print(
        "\nrerun: uv run python benchmarks/bench_image_sizes.py"
        + (f" --before {revision}" if revision else "")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="measure only this target (repeatable)")
    parser.add_argument("--top", type=int, default=6, help="largest distributions to list")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--before", metavar="REV", help="also measure the images of git revision REV (baseline)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rollguard-sizes-") as tmp:
        results = measure_all(ROOT, args.only, Path(tmp), args.top)
        before: dict[str, dict] = {}
        if args.before:
            old = checkout(args.before, Path(tmp) / "before-src")
            before = {r["name"]: r for r in measure_all(old, args.only, Path(tmp), args.top)}

    if args.json:
        print(json.dumps({"after": results, "before": list(before.values())}, indent=2))
    else:
        print_table(results, before, args.before)
    over = [r for r in results if r["target_bytes"] and r["bytes"] > r["target_bytes"]]
    return 1 if over or any(r["import_errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
