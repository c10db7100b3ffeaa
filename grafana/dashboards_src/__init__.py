"""Rollguard's Grafana dashboards as code (grafana-foundation-sdk builders), rendered to the
committed JSON under ``grafana/dashboards/`` by ``make dashboards`` (``python -m
grafana.dashboards_src``). A test renders them again and fails on any difference.

Dashboards: ``service`` (on-call), ``quality`` (ML engineers), ``business`` (business leads); see
docs/grafana.md for each panel and the question it answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from grafana.dashboards_src import business, quality, service

#: Output file name -> builder. Order is the order of docs/grafana.md.
DASHBOARDS: dict[str, Callable[[], Any]] = {
    "rollguard-service.json": service.build,
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


def write_all(out: Path = DEFAULT_OUT) -> list[Path]:
    """Render every dashboard into ``out`` (created if missing); the written paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, build in DASHBOARDS.items():
        path = out / name
        path.write_text(render(build), encoding="utf-8")
        paths.append(path)
    return paths


def _number_panels(panels: list[dict[str, Any]], ids: Any) -> None:
    """Give every panel and row a unique ``id`` in layout order (the builders leave rows at 0 and
    panels without one; Grafana keys panel links and state on it)."""
    for panel in panels:
        panel["id"] = next(ids)
        _number_panels(panel.get("panels", []), ids)
