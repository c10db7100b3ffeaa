"""Every query of a rendered dashboard, for the tests that execute them and for the docs.

Reads the JSON that Grafana loads (not the builders), so what is tested is what ships.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana.dashboards_src.common import PROMETHEUS, STORE


@dataclass(frozen=True)
class Query:
    """One query: ``where`` says which dashboard and which panel / variable / annotation holds it;
    ``language`` is ``promql`` or ``sql``; ``instant`` is true for PromQL evaluated at one time
    (stat and table panels) rather than over the time range."""

    dashboard: str
    where: str
    language: str
    text: str
    instant: bool = False

    @property
    def id(self) -> str:
        """Readable test id: ``dashboard-uid / where``."""
        return f"{self.dashboard} / {self.where}"


def _language(datasource: dict[str, Any] | None) -> str:
    uid = (datasource or {}).get("uid")
    if uid == PROMETHEUS.uid:
        return "promql"
    if uid == STORE.uid:
        return "sql"
    raise ValueError(f"unknown datasource uid {uid!r} (expected {PROMETHEUS.uid} or {STORE.uid})")


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # collapsed rows hold their panels


def panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel of a dashboard except rows, in order."""
    return [p for p in _panels(doc.get("panels", [])) if p.get("type") != "row"]


def queries(doc: dict[str, Any]) -> list[Query]:
    """All queries of one dashboard JSON document: panel targets, query variables, annotations.

    Raises:
        ValueError: a query names a datasource uid other than the two provisioned ones.
    """
    uid = doc["uid"]
    out: list[Query] = []
    for panel in panels(doc):
        for target in panel.get("targets", []):
            lang = _language(target.get("datasource") or panel.get("datasource"))
            text = target["expr"] if lang == "promql" else target["rawSql"]
            where = f"panel {panel['title']!r} target {target['refId']}"
            out.append(Query(uid, where, lang, text, bool(target.get("instant"))))
    for var in doc.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            lang = _language(var.get("datasource"))
            query = var["query"]
            text = query if isinstance(query, str) else query.get("query", "")
            out.append(Query(uid, f"variable ${var['name']}", lang, text, True))
    for ann in doc.get("annotations", {}).get("list", []):
        if ann.get("builtIn"):
            continue
        lang = _language(ann.get("datasource"))
        target = ann.get("target", {})
        text = target.get("rawSql") if lang == "sql" else ann.get("expr") or target.get("expr")
        out.append(Query(uid, f"annotation {ann['name']!r}", lang, text))
    return out


def load(path: Path) -> dict[str, Any]:
    """A dashboard JSON file."""
    return json.loads(path.read_text(encoding="utf-8"))
