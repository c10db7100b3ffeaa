"""The committed Grafana dashboards are exactly what the code generates, and they hold together:
fixed uids, only the provisioned datasources, every panel asks a question that docs/grafana.md
lists, every template variable a query uses exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from grafana.dashboards_src import (
    DEFAULT_OUT,
    PER_USECASE,
    SHARED,
    registered_usecases,
    render,
    render_usecase,
    write_all,
)
from grafana.dashboards_src.common import BUSINESS_UID, QUALITY_UID, SERVICE_UID
from grafana.dashboards_src.inventory import load, panels, queries
from rollguard.usecase import UseCase
from tests.support.grafana_queries import (
    PROM_INTERVALS,
    expand_promql,
    expand_sql,
    or_operands,
    with_bool,
)
from tests.support.regression_usecase import USECASE as TOY

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "grafana.md"
USECASES = registered_usecases()
#: Every committed dashboard: (file relative to grafana/dashboards, the use case or None).
COMMITTED: list[tuple[str, UseCase | None]] = [(name, None) for name in SHARED] + [
    (f"{uc.name}/{name}", uc) for uc in USECASES for name in PER_USECASE
]


def _docs_text(usecase: UseCase | None) -> str:
    """docs/grafana.md with the use-case placeholders filled in (``<Subject>``, ``<subject>``)."""
    text = DOCS.read_text()
    if usecase is None:
        return text
    subject = usecase.targeting.subject
    return text.replace("<Subject>", subject.capitalize()).replace("<subject>", subject)


def test_committed_json_is_what_the_code_generates(tmp_path: Path) -> None:
    written = write_all(tmp_path)
    committed = sorted(p.relative_to(DEFAULT_OUT) for p in DEFAULT_OUT.rglob("*.json"))
    assert sorted(p.relative_to(tmp_path) for p in written) == committed, (
        "the committed dashboards are not those of the registered use cases: run "
        "`make dashboards` and commit the result"
    )
    for path in written:
        committed_path = DEFAULT_OUT / path.relative_to(tmp_path)
        assert path.read_text() == committed_path.read_text(), (
            f"{committed_path.relative_to(ROOT)} differs from the generator: run "
            "`make dashboards` and commit the result"
        )


def test_rendering_is_deterministic() -> None:
    for build in SHARED.values():
        assert render(build) == render(build)
    for usecase in [*USECASES, TOY]:
        for build in PER_USECASE.values():
            assert render_usecase(build, usecase) == render_usecase(build, usecase)


def test_uids_and_provider_path() -> None:
    uids = {load(DEFAULT_OUT / name)["uid"] for name, _ in COMMITTED}
    expected = {SERVICE_UID} | {
        f"{prefix}-{uc.name}" for uc in USECASES for prefix in (QUALITY_UID, BUSINESS_UID)
    }
    assert uids == expected
    provider = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/rollguard.yml").read_text())
    (prov,) = provider["providers"]
    assert prov["type"] == "file" and prov["options"]["path"] == "/var/lib/grafana/dashboards"


def _check_panels_listed(doc: dict, usecase: UseCase | None) -> None:
    text = _docs_text(usecase)
    uid = doc["uid"] if usecase is None else doc["uid"].removesuffix(f"-{usecase.name}")
    marker = f"`{uid}`" if usecase is None else f"`{uid}-<use case>`"
    section = text.split(marker, 1)
    assert len(section) == 2, f"docs/grafana.md has no section naming {marker}"
    for panel in panels(doc):
        assert panel.get("description", "").endswith("?"), panel["title"]
        assert f"**{panel['title']}**" in section[1], (
            f"panel {panel['title']!r} of {doc['uid']} is not listed in docs/grafana.md"
        )
        if panel["type"] != "text":
            assert panel.get("targets"), f"panel {panel['title']!r} has no query"


@pytest.mark.parametrize(("name", "usecase"), COMMITTED, ids=[n for n, _ in COMMITTED])
def test_every_panel_answers_a_question_listed_in_the_docs(
    name: str, usecase: UseCase | None
) -> None:
    _check_panels_listed(load(DEFAULT_OUT / name), usecase)


@pytest.mark.parametrize("name", list(PER_USECASE))
def test_a_regression_use_case_gets_its_own_words_units_and_panels(name: str) -> None:
    """The regression fixture's dashboards speak of MAE in EUR, its baselines and its features,
    and never of anything another use case declares."""
    doc = json.loads(render_usecase(PER_USECASE[name], TOY))
    _check_panels_listed(doc, TOY)
    assert doc["uid"].endswith("-toyrates") and "Toy room rates" in doc["title"]
    text = json.dumps(doc)
    for other in USECASES:
        for feature in set(other.feature_names) - set(TOY.feature_names):
            assert f'"{feature}"' not in text and f"`{feature}`" not in text, feature
    if name == "rollguard-business.json":
        assert "currencyEUR" in text and "last_rate MAE (EUR)" in text
        assert "training_median MAE (EUR)" in text and "Bookings with a known outcome" in text
        assert "rollguard_base_rate" not in text and "Lift" not in text
    else:
        assert "`segment` | categorical (direct, online, group)" in text
        assert 'rollguard_live_quality{metric=~\\"mae|rmse|bias\\"}' in text
        assert "Live MAE" in text and "average precision" not in text
        # The live score histogram's axis is in the label's unit (predictions in EUR).
        (histogram,) = [p for p in panels(doc) if p["type"] == "heatmap"]
        assert histogram["options"]["yAxis"]["unit"] == "currencyEUR"


def test_every_variable_in_a_query_is_defined() -> None:
    builtins = {k.lstrip("$") for k in PROM_INTERVALS}
    docs = [load(DEFAULT_OUT / name) for name, _ in COMMITTED]
    docs += [json.loads(render_usecase(b, TOY)) for b in PER_USECASE.values()]
    for doc in docs:
        defined = {v["name"] for v in doc.get("templating", {}).get("list", [])}
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

    for name, _ in COMMITTED:
        walk(load(DEFAULT_OUT / name))
    assert used == {uid: provisioned.get(uid) for uid in used}, (used, provisioned)


@pytest.mark.parametrize("name", [n for n, _ in COMMITTED])
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
