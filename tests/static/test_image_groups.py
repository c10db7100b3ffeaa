"""Each service image installs only its dependency group: check, from the lock alone, that the group
holds every third-party package the service's code imports when it starts.

From each service's entry modules the module-level imports are followed through the project's own
packages (imports inside functions are lazy and left out, like the code paths a service never
takes); every third-party top-level module found must belong to a distribution in the closure of
the image's groups in uv.lock (markers ignored, extras followed). The benchmark
(benchmarks/bench_image_sizes.py) checks the same thing dynamically by importing the entry modules in
a real environment of each group.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from importlib.util import resolve_name
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_image_sizes  # noqa: E402

PROJECT_PACKAGES = {
    "rollguard",
    "usecases",
    "domain",
    "pipeline",
    "registry_guard",
    "api",
    "ui",
    "monitoring",
}

#: The modules each image's command imports first; those not in this checkout yet are skipped.
ENTRIES = {
    "api": ["api.app", "api.cli", "rollguard.cli"],
    # the UI image runs `rollguard-ui` (ui.cli:main; Dockerfile), not the whole `rollguard` CLI
    "ui": ["ui.cli", "ui.__main__", "ui.server", "ui.app"],
    "guard": ["registry_guard.service", "monitoring.exporter", "api.cli", "rollguard.cli"],
    "airflow": ["pipeline.steps", "pipeline.dags.rollguard_retrain", "registry_guard.registry"],
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def group_closure(groups: tuple[str, ...], lock_path: Path = ROOT / "uv.lock") -> set[str]:
    """Normalised names of every distribution the project's core dependencies plus ``groups``
    pull in, according to uv.lock (all markers taken as true; extras followed)."""
    lock = tomllib.loads(lock_path.read_text())
    packages: dict[str, list[dict]] = {}
    for pkg in lock["package"]:
        packages.setdefault(_norm(pkg["name"]), []).append(pkg)
    (root,) = packages["rollguard"]
    wanted = [(d["name"], tuple(d.get("extra", []))) for d in root.get("dependencies", [])]
    for group in groups:
        wanted += [(d["name"], tuple(d.get("extra", []))) for d in root["dev-dependencies"][group]]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    names: set[str] = set()
    while wanted:
        name, extras = wanted.pop()
        key = (_norm(name), extras)
        if key in seen:
            continue
        seen.add(key)
        names.add(_norm(name))
        for pkg in packages.get(_norm(name), []):
            deps = list(pkg.get("dependencies", []))
            for extra in extras:
                deps += pkg.get("optional-dependencies", {}).get(extra, [])
            wanted += [(d["name"], tuple(d.get("extra", []))) for d in deps]
    return names


def _module_file(module: str) -> Path | None:
    path = ROOT.joinpath(*module.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def module_level_imports(entries: list[str]) -> dict[str, str]:
    """Third-party top-level module → the project module that imports it at module level,
    following module-level imports through the project's packages."""
    found: dict[str, str] = {}
    todo = list(entries)
    done: set[str] = set()
    while todo:
        module = todo.pop()
        if module in done:
            continue
        done.add(module)
        path = _module_file(module)
        if path is None:
            continue
        # a package's __init__ runs before any of its modules
        parent = module.rsplit(".", 1)[0] if "." in module else None
        if parent:
            todo.append(parent)
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only; TYPE_CHECKING blocks are skipped below
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level > 0:
                package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                prefix = resolve_name("." * node.level + (node.module or ""), package)
                names = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
            for name in names:
                top = name.split(".")[0]
                if top in PROJECT_PACKAGES:
                    todo.append(name)
                elif top not in sys.stdlib_module_names and top != "__future__":
                    found.setdefault(top, module)
    return found


def _targets() -> dict[str, tuple[str, ...]]:
    targets = {t.name: t.groups for t in bench_image_sizes.dockerfile_targets()}
    targets["airflow"] = bench_image_sizes.airflow_target().groups
    return targets


@pytest.mark.parametrize("image", sorted(ENTRIES))
def test_image_group_holds_every_package_its_service_imports(image: str) -> None:
    entries = [m for m in ENTRIES[image] if _module_file(m) is not None]
    assert entries, f"no entry module of {image} in this checkout"
    closure = group_closure(_targets()[image])
    dists = packages_distributions()
    missing = {}
    for top, importer in sorted(module_level_imports(entries).items()):
        candidates = {_norm(d) for d in dists.get(top, [top])}
        if not candidates & closure:
            missing[top] = importer
    assert missing == {}, f"{image}: imported but not in its groups {_targets()[image]}: {missing}"


def test_closure_follows_the_lock() -> None:
    """The closure is what uv would install: the api group has the web stack and no Airflow; the
    pipeline group has Airflow."""
    api = group_closure(("api",))
    assert {"fastapi", "uvicorn", "xgboost-cpu", "mlflow-skinny", "pydantic", "numpy"} <= api
    assert "apache-airflow" not in api and "scikit-learn" not in api and "gradio" not in api
    assert {"sqlalchemy", "psycopg", "alembic", "fastparquet"} <= api, "the store group is included"
    assert "apache-airflow-core" in group_closure(("pipeline",))
    assert "uvloop" in api, "uvicorn[standard]'s extra is followed"


def test_xgboost_is_the_pinned_cpu_only_build_everywhere() -> None:
    """No group installs the `xgboost` wheel (CUDA kernels) or NCCL: every reference to them in
    the lock carries the override's never-true marker; the api and pipeline groups pin the same
    single xgboost-cpu exactly (api/xgb_dense.py calls its C API)."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    for pkg in lock["package"]:
        deps = list(pkg.get("dependencies", []))
        deps += [d for extra in pkg.get("optional-dependencies", {}).values() for d in extra]
        deps += [d for group in pkg.get("dev-dependencies", {}).values() for d in group]
        for dep in deps:
            if dep["name"] == "xgboost" or dep["name"].startswith("nvidia-nccl"):
                assert "sys_platform == 'never'" in dep.get("marker", ""), (pkg["name"], dep)
    installed = [p["version"] for p in lock["package"] if p["name"] == "xgboost-cpu"]
    assert len(installed) == 1, f"one xgboost-cpu version for every group: {installed}"
    (root,) = [p for p in lock["package"] if p["name"] == "rollguard"]
    requires = root["metadata"]["requires-dev"]
    specs = {
        (group, d["specifier"])
        for group in ("api", "pipeline")
        for d in requires[group]
        if d["name"] == "xgboost-cpu"
    }
    assert specs == {(g, f"=={installed[0]}") for g in ("api", "pipeline")}


def test_ui_image_carries_no_model_library_store_or_parquet() -> None:
    ui = group_closure(_targets()["ui"])
    assert {"gradio", "httpx", "pandas"} <= ui
    heavy = {"xgboost", "xgboost-cpu", "mlflow", "mlflow-skinny", "scikit-learn", "scipy"}
    heavy |= {"pyarrow", "sqlalchemy", "psycopg", "alembic", "fastparquet"}
    assert ui & heavy == set()
