"""The committed Grafana dashboards are exactly what the code generates, and they hold together:
fixed uids, only the provisioned datasources, every panel asks a question that docs/grafana.md
lists, every template variable a query uses exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from grafana.dashboards_src import DASHBOARDS, DEFAULT_OUT, render, write_all
from grafana.dashboards_src.common import BUSINESS_UID, QUALITY_UID, SERVICE_UID
from grafana.dashboards_src.inventory import load, panels, queries
from tests.support.grafana_queries import (
    PROM_INTERVALS,
    expand_promql,
    expand_sql,
    or_operands,
    with_bool,
)

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "grafana.md"


def test_committed_json_is_what_the_code_generates(tmp_path: Path) -> None:
    written = write_all(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in DEFAULT_OUT.glob("*.json"))
    for path in written:
        committed = DEFAULT_OUT / path.name
        assert path.read_text() == committed.read_text(), (
            f"{committed.relative_to(ROOT)} differs from the generator: run `make dashboards` "
            "and commit the result"
        )


def test_rendering_is_deterministic() -> None:
    for build in DASHBOARDS.values():
        assert render(build) == render(build)


def test_uids_and_provider_path() -> None:
    uids = {load(DEFAULT_OUT / name)["uid"] for name in DASHBOARDS}
    assert uids == {SERVICE_UID, QUALITY_UID, BUSINESS_UID}
    provider = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/rollguard.yml").read_text())
    (prov,) = provider["providers"]
    assert prov["type"] == "file" and prov["options"]["path"] == "/var/lib/grafana/dashboards"


@pytest.mark.parametrize("name", list(DASHBOARDS))
def test_every_panel_answers_a_question_listed_in_the_docs(name: str) -> None:
    doc = load(DEFAULT_OUT / name)
    text = DOCS.read_text()
    section = text.split(f"`{doc['uid']}`", 1)
    assert len(section) == 2, f"docs/grafana.md has no section naming `{doc['uid']}`"
    for panel in panels(doc):
        assert panel.get("description", "").endswith("?"), panel["title"]
        assert f"**{panel['title']}**" in section[1], (
            f"panel {panel['title']!r} of {doc['uid']} is not listed in docs/grafana.md"
        )
        if panel["type"] != "text":
            assert panel.get("targets"), f"panel {panel['title']!r} has no query"


@pytest.mark.parametrize("name", list(DASHBOARDS))
def test_every_variable_in_a_query_is_defined(name: str) -> None:
    doc = load(DEFAULT_OUT / name)
    defined = {v["name"] for v in doc.get("templating", {}).get("list", [])}
    builtins = {k.lstrip("$") for k in PROM_INTERVALS}
    for q in queries(doc):
        used = set(re.findall(r"\$\{?(\w+)", q.text))
        assert used <= defined | builtins, (q.id, used - defined - builtins)


def test_variable_expansion_follows_grafana_formatting() -> None:
    multi = {"route": True, "model": False, "feature": True}
    expr = 'rate(x{route=~"$route"}[$__rate_interval])'
    assert (
        expand_promql(expr, {"route": ["/v1/predict", "/healthz"]}, multi)
        == 'rate(x{route=~"(/v1/predict|/healthz)"}[30s])'
    )
    sql = "WHERE model_name = '$model' AND feature IN ($feature)"
    assert (
        expand_sql(sql, {"model": ["m"], "feature": ["a", "o'b"]}, multi)
        == "WHERE model_name = 'm' AND feature IN ('a','o''b')"
    )
    with pytest.raises(KeyError, match="route"):
        expand_promql(expr, {}, multi)


def test_bool_form_of_alert_expressions() -> None:
    assert with_bool('up{job="a"} == 0') == 'up{job="a"} == bool 0'
    assert with_bool("a / b\n > 0.05") == "a / b\n > bool 0.05"
    assert with_bool("time() - t > 8 * 86400") == "time() - t > bool 8 * 86400"
    assert with_bool('x{status=~"5.."} > bool 0') == 'x{status=~"5.."} > bool 0'


def test_dashboards_use_only_provisioned_datasources() -> None:
    """Every datasource a dashboard names is provisioned with that uid and plugin type."""
    files = sorted((ROOT / "grafana/provisioning/datasources").glob("*.yml"))
    if not files:
        pytest.skip("grafana/provisioning/datasources/*.yml is not on this branch yet")
    provisioned = {
        ds["uid"]: ds["type"] for f in files for ds in yaml.safe_load(f.read_text())["datasources"]
    }
    used: dict[str, str] = {}

    def walk(node: object) -> None:
        if isinstance(node, dict):
            ds = node.get("datasource")
            if isinstance(ds, dict) and "uid" in ds:
                used[ds["uid"]] = ds.get("type", "")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for name in DASHBOARDS:
        walk(load(DEFAULT_OUT / name))
    assert used == {uid: provisioned.get(uid) for uid in used}, (used, provisioned)


@pytest.mark.parametrize("name", list(DASHBOARDS))
def test_panel_ids_are_unique(name: str) -> None:
    doc = load(DEFAULT_OUT / name)
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)) and all(ids)


def test_or_operands_split_only_at_the_top_level() -> None:
    expr = (
        'max without (state) (g{state="degraded"}) == 1\nor\nrollguard_live_quality_degraded == 1'
    )
    assert or_operands(expr) == [
        'max without (state) (g{state="degraded"}) == 1',
        "rollguard_live_quality_degraded == 1",
    ]
    assert or_operands('(a or b) + c{x="or"}') == ['(a or b) + c{x="or"}']
    assert or_operands("sum(rate(error[5m])) or vector(0)") == ["sum(rate(error[5m]))", "vector(0)"]
