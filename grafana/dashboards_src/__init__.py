"""Rollguard's Grafana dashboards as code (grafana-foundation-sdk builders), rendered to the
committed JSON under ``grafana/dashboards/`` by ``make dashboards`` (``python -m
grafana.dashboards_src``). A test renders them again and fails on any difference.

Dashboards: ``service`` (on-call; one for the whole stack, it reads only the model server's
metrics), and per use case ``quality`` (ML engineers) and ``business`` (business leads), generated
from the use case's declarations (titles, units, metric names by task type, the feature list,
the subject and the money unit). Layout::

    grafana/dashboards/rollguard-service.json
    grafana/dashboards/<use case>/rollguard-model-quality.json   (uid rollguard-model-quality-<use case>)
    grafana/dashboards/<use case>/rollguard-business.json        (uid rollguard-business-<use case>)

``make dashboards`` renders every use case registered under ``rollguard.usecases`` (the built-in
ones and any installed team package), so the stack's Grafana shows each; see docs/grafana.md for
each panel and the question it answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from grafana.dashboards_src import business, quality, service
from rollguard.usecase import UseCase, available_usecases, load_usecase

#: Output file name -> builder of the dashboard shared by every use case.
SHARED: dict[str, Callable[[], Any]] = {"rollguard-service.json": service.build}
#: Output file name (in the use case's folder) -> builder taking the use case. Order is the
#: order of docs/grafana.md.
PER_USECASE: dict[str, Callable[[UseCase], Any]] = {
    "rollguard-model-quality.json": quality.build,
    "rollguard-business.json": business.build,
}

#: Where the committed JSON lives (mounted into Grafana by docker-compose.yml).
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "dashboards"


def render(build: Callable[[], Any]) -> str:
    """The dashboard JSON text of one builder: keys sorted, 2-space indent, newline at the end,
    so regenerating gives byte-identical files."""
    doc = json.loads(JSONEncoder().encode(build().build()))
    _number_panels(doc.get("panels", []), iter(range(1, 10_000)))
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_usecase(build: Callable[[UseCase], Any], usecase: UseCase) -> str:
    """:func:`render` of a per-use-case builder for ``usecase``."""
    return render(lambda: build(usecase))


def registered_usecases() -> list[UseCase]:
    """Every registered use case, loaded and checked, by name.

    Raises:
        rollguard.usecase.UseCaseError: a registered use case is broken.
    """
    return [load_usecase(name) for name in sorted(available_usecases())]


def write_all(out: Path = DEFAULT_OUT, usecases: Iterable[UseCase] | None = None) -> list[Path]:
    """Render the shared dashboards into ``out`` and each use case's into ``out/<name>/``
    (default: every registered use case); the written paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, shared in SHARED.items():
        path = out / name
        path.write_text(render(shared), encoding="utf-8")
        paths.append(path)
    for usecase in registered_usecases() if usecases is None else usecases:
        folder = out / usecase.name
        folder.mkdir(exist_ok=True)
        for name, build in PER_USECASE.items():
            path = folder / name
            path.write_text(render_usecase(build, usecase), encoding="utf-8")
            paths.append(path)
    return paths


def _number_panels(panels: list[dict[str, Any]], ids: Any) -> None:
    """Give every panel and row a unique ``id`` in layout order (the builders leave rows at 0 and
    panels without one; Grafana keys panel links and state on it)."""
    for panel in panels:
        panel["id"] = next(ids)
        _number_panels(panel.get("panels", []), ids)
