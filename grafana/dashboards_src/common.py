"""Typed pieces shared by the three dashboards: datasource references (uids from the shared
contract), a SQL query type for the monitoring store (the foundation SDK has no PostgreSQL query
builder), SQL annotations, and small panel helpers.

Every SQL text here is written to run unchanged on PostgreSQL (what Grafana reads in the stack) and
on SQLite (the embedded store): no Grafana time macros, ``||`` for concatenation, ``CASE`` for
pivots, double-quoted aliases. The only placeholders are template variables (``'$model'``,
``($feature)``), which Grafana's SQL datasources replace by single-quoted values (a multi-value
variable becomes a comma-separated list of quoted values).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    VariableRefresh,
    VariableSort,
)

from rollguard.usecase import UseCase

#: Datasource uids and plugin types, as provisioned by grafana/provisioning/datasources/ (contract).
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="prometheus")
STORE = DataSourceRef(type_val="grafana-postgresql-datasource", uid="rollguard-store")

#: Folder-independent dashboard uids (links and docs refer to them). The quality and business
#: dashboards exist once per use case: their uid is this prefix, ``-``, the use case's name.
SERVICE_UID = "rollguard-service"
QUALITY_UID = "rollguard-model-quality"
BUSINESS_UID = "rollguard-business"
#: Grafana's unit ids of the money units it formats as currencies (others become ``suffix:<unit>``).
CURRENCIES = frozenset(
    {"USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "SEK", "NOK", "DKK", "PLN"}
)

#: Tag on every dashboard (the provider folder holds only these).
TAG = "rollguard"


class SqlQuery(cogvariants.Dataquery):
    """One raw SQL target of the monitoring-store datasource (Grafana's SQL query JSON model)."""

    def __init__(self, ref_id: str, raw_sql: str, fmt: str) -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.format = fmt

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "datasource": STORE,
            "editorMode": "code",
            "format": self.format,
            "rawQuery": True,
            "rawSql": self.raw_sql,
        }


@dataclass(frozen=True)
class Sql(cogbuilder.Builder[cogvariants.Dataquery]):
    """Builder of a :class:`SqlQuery`; ``fmt`` is ``table`` (rows as they come) or
    ``time_series``."""

    raw_sql: str
    ref_id: str = "A"
    fmt: str = "table"

    def build(self) -> SqlQuery:
        return SqlQuery(self.ref_id, " ".join(self.raw_sql.split()), self.fmt)


class SqlAnnotationTarget:
    """The ``target`` of a SQL annotation query: columns ``time`` (timestamp), ``text`` and
    ``tags`` (comma-separated)."""

    def __init__(self, raw_sql: str) -> None:
        self.raw_sql = raw_sql

    def to_json(self) -> dict[str, object]:
        return {
            "refId": "Anno",
            "editorMode": "code",
            "format": "table",
            "rawQuery": True,
            "rawSql": self.raw_sql,
        }


@dataclass(frozen=True)
class SqlAnnotation(cogbuilder.Builder[Any]):
    """Builder of the target above (the SDK's own annotation target has no SQL fields)."""

    raw_sql: str

    def build(self) -> SqlAnnotationTarget:
        return SqlAnnotationTarget(" ".join(self.raw_sql.split()))


def promql(expr: str, legend: str = "", ref_id: str = "A", *, instant: bool = False) -> Any:
    """A Prometheus target; ``instant`` for stat and table panels that show the newest value."""
    q = prometheus.Dataquery().expr(" ".join(expr.split())).ref_id(ref_id)
    if legend:
        q = q.legend_format(legend)
    return q.instant() if instant else q.range()


def sql_annotation(name: str, color: str, raw_sql: str) -> dash.AnnotationQuery:
    """An annotation read from the store (enabled, shown on the dashboard's time-series panels)."""
    return (
        dash.AnnotationQuery()
        .name(name)
        .datasource(STORE)
        .enable(True)
        .icon_color(color)
        .target(SqlAnnotation(raw_sql))
    )


def model_variable() -> dash.QueryVariable:
    """``$model``: registered-model names that have monitoring rows (newest first by name)."""
    return (
        dash.QueryVariable("model")
        .label("Model")
        .datasource(STORE)
        .query("SELECT DISTINCT model_name FROM monitoring_results ORDER BY model_name")
        .refresh(VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )


def week_pivot(kind: str, columns: dict[str, str]) -> str:
    """SQL of one row per week, one column per metric of ``kind`` (portable pivot with ``CASE``).

    ``columns`` maps the metric name to its display name. Weeks without any value are left out
    (pending labels, skipped computations); the week is the cutoff ``YYYY-MM-DD`` as text.
    """
    picks = ", ".join(
        f"MAX(CASE WHEN metric = '{metric}' THEN value END) AS \"{label}\""
        for metric, label in columns.items()
    )
    metrics = ", ".join(f"'{m}'" for m in columns)
    return (
        f'SELECT week AS "Week", {picks} FROM monitoring_results '  # noqa: S608 - constants of the dashboard source; $model is Grafana's
        f"WHERE model_name = '$model' AND kind = '{kind}' AND feature = '' "
        f"AND metric IN ({metrics}) AND value IS NOT NULL "
        "GROUP BY week ORDER BY week"
    )


def week_pivot_pairs(
    kind: str, columns: dict[tuple[str, str], str], *, newest_first: bool = False
) -> str:
    """Like :func:`week_pivot`, with columns keyed by (metric, feature): per-baseline and
    per-feature figures beside dataset-level ones (``feature = ''``)."""
    picks = ", ".join(
        f"MAX(CASE WHEN metric = '{metric}' AND feature = '{feature}' THEN value END) "
        f'AS "{label}"'
        for (metric, feature), label in columns.items()
    )
    metrics = ", ".join(f"'{m}'" for m in dict.fromkeys(m for m, _ in columns))
    order = "week DESC" if newest_first else "week"
    return (
        f'SELECT week AS "Week", {picks} FROM monitoring_results '  # noqa: S608 - constants of the dashboard source; $model is Grafana's
        f"WHERE model_name = '$model' AND kind = '{kind}' "
        f"AND metric IN ({metrics}) AND value IS NOT NULL "
        f"GROUP BY week ORDER BY {order}"
    )


def grouping_to_matrix(column: str, row: str, value: str) -> DataTransformerConfig:
    """Long rows (week, feature, value) to one column per feature (Grafana transformation)."""
    return DataTransformerConfig(
        id_val="groupingToMatrix",
        options={"columnField": column, "rowField": row, "valueField": value},
    )


def usecase_uid(prefix: str, usecase: UseCase) -> str:
    """The uid of a per-use-case dashboard: ``<prefix>-<use case name>`` (Grafana allows 40
    characters)."""
    uid = f"{prefix}-{usecase.name}"
    if len(uid) > 40:
        raise ValueError(f"dashboard uid {uid!r} is longer than Grafana's 40 characters")
    return uid


def grafana_unit(unit: str) -> str:
    """Grafana's unit id of a declared unit: ``currencyEUR`` for a known money unit, ``none``
    when empty, else a custom suffix (``suffix: days``)."""
    if unit.upper() in CURRENCIES:
        return f"currency{unit.upper()}"
    return f"suffix: {unit}" if unit else "none"
