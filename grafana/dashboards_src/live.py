"""The model server's live signals (issue 19), shared by the service dashboard and the per-use-case
model-quality dashboards: a score histogram per serving version, the rolling-window score PSI
against each version's score reference, the per-feature PSI and missing / out-of-range shares
against the version's training profile, the window's rows, and which reference each version is
compared with. Every panel reads Prometheus (the API's ``rollguard_live_*`` series, labels
``version`` and ``feature``; docs/api.md), and a ``Rollbacks`` annotation marks every rollback.

Thresholds drawn on the panels are those of the alert rules (monitoring/prometheus/rules/): score
PSI 1.0 (the guard policy's ``psi_threshold``, ``RollguardLiveScoreShift``) and feature PSI 0.25
(Siddiqi, *Credit Risk Scorecards*, 2006; ``RollguardLiveFeatureShift``).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import heatmap, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models.common import (
    GraphThresholdsStyleMode,
    HeatmapCellLayout,
)
from grafana_foundation_sdk.models.dashboard import (
    AnnotationQuery,
    DataTransformerConfig,
    Threshold,
    ThresholdsMode,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.heatmap import HeatmapColorMode, HeatmapColorScale
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from grafana.dashboards_src.common import PROMETHEUS, grafana_unit, promql
from rollguard.usecase import UseCase

#: Thresholds of the live alert rules (see the module docstring).
SCORE_PSI_THRESHOLD = 1.0
FEATURE_PSI_THRESHOLD = 0.25
#: The ``$version`` variable: every version with a live score histogram in the time range.
VERSION_QUERY = "label_values(rollguard_live_score_bucket, version)"
VERSION = 'version=~"$version"'
#: The newest rollback's time in milliseconds (the guard's store export): with "series value as
#: timestamp" Grafana marks the rollback itself, also the first one ever (the series appears with
#: it, which ``changes()`` would not see).
ROLLBACKS_PROMQL = "max(rollguard_last_rollback_timestamp_seconds) * 1000"


class _PromAnnotationQuery(AnnotationQuery):
    """A Prometheus annotation with the fields Grafana's Prometheus annotation editor writes and
    the SDK's model lacks (``titleFormat``, ``textFormat``, ``useValueForTime``)."""

    def __init__(self, name: str, color: str, expr: str, extra: dict[str, object]) -> None:
        super().__init__(name=name, datasource=PROMETHEUS, enable=True, icon_color=color, expr=expr)
        self.extra = extra

    def to_json(self) -> dict[str, object]:
        return super().to_json() | self.extra


class RollbacksAnnotation(cogbuilder.Builder[AnnotationQuery]):
    """Builder of the ``Rollbacks`` annotation (red): a mark at the time of each rollback the
    guard's export reports (``rollguard_last_rollback_timestamp_seconds``; who and why are in the
    store's ``alias_audit``: ``rollguard history``)."""

    def build(self) -> AnnotationQuery:
        return _PromAnnotationQuery(
            "Rollbacks",
            "red",
            ROLLBACKS_PROMQL,
            {
                "titleFormat": "Rollback",
                "textFormat": "The champion alias was rolled back (who and why: rollguard history)",
                "useValueForTime": True,
            },
        )


def version_variable() -> dash.QueryVariable:
    """``$version``: the versions with live series (multi, All = every one)."""
    return (
        dash.QueryVariable("version")
        .label("Version")
        .datasource(PROMETHEUS)
        .query(VERSION_QUERY)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.NUMERICAL_DESC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def score_unit(usecase: UseCase | None) -> str:
    """Grafana unit of a score: a percentage for binary classification, the label's unit for
    regression, ``short`` when the dashboard serves every use case (the service dashboard)."""
    if usecase is None:
        return "short"
    return "percentunit" if usecase.is_classification else grafana_unit(usecase.label.unit)


def _threshold_line(panel: timeseries.Panel, value: float) -> timeseries.Panel:
    steps = [Threshold(None, "green"), Threshold(value, "red")]
    return panel.thresholds(
        dash.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps)
    ).thresholds_style(
        common_builders.GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.DASHED)
    )


def prometheus_timeseries(title: str, question: str, unit: str) -> timeseries.Panel:
    """A half-width time series on Prometheus, 8 rows high (the live and quality panels' shape)."""
    return (
        timeseries.Panel()
        .title(title)
        .description(question)
        .datasource(PROMETHEUS)
        .unit(unit)
        .height(8)
        .span(12)
    )


def score_heatmap(usecase: UseCase | None) -> heatmap.Panel:
    """Scores per second in each histogram bucket, one heatmap per selected version (repeated
    over ``$version``; buckets: 0.05 wide on [0, 1] for classification, 20 equal widths over the
    label's declared range for regression)."""
    if usecase is None:
        what = "scores (regression: predictions, in the label's unit)"
    else:
        what = "scores" if usecase.is_classification else "predictions (in the label's unit)"
    expr = f"sum by (le) (rate(rollguard_live_score_bucket{{{VERSION}}}[$__rate_interval]))"
    return (
        heatmap.Panel()
        .title("Score histogram, v$version")
        .description(
            f"How are the {what} of this version spread over time, and did their shape change "
            "when a new version started serving?"
        )
        .datasource(PROMETHEUS)
        .with_target(promql(expr, "{{le}}").format(PromQueryFormat.HEATMAP))
        .calculate(False)
        .rows_frame(heatmap.RowsHeatmapOptions().layout(HeatmapCellLayout.LE))
        .color(
            heatmap.HeatmapColorOptions()
            .mode(HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .scale(HeatmapColorScale.EXPONENTIAL)
            .exponent(0.5)
            .steps(64)
        )
        .y_axis(heatmap.YAxisConfig().unit(score_unit(usecase)))
        .repeat("version")
        .repeat_direction("h")
        .max_per_row(3)
        .height(8)
        .span(24)
    )


def reference_table() -> table.Panel:
    """Which reference each version's score PSI compares with (instant)."""
    return (
        table.Panel()
        .title("Score reference by version")
        .description(
            "Whose gate-time scores is each version's live score PSI compared with: its own "
            "(gated), or those of the champion it replaced because it never passed the gate "
            "(replaced: the guard rolls such a version back on a score shift)?"
        )
        .datasource(PROMETHEUS)
        .with_target(
            promql(
                "max by (version, reference_version, source) (rollguard_live_reference_info)",
                instant=True,
            ).format(PromQueryFormat.TABLE)
        )
        .with_transformation(
            DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {"Time": True, "Value": True},
                    "renameByName": {
                        "version": "Version",
                        "reference_version": "Reference version",
                        "source": "Source",
                    },
                },
            )
        )
        .span(6)
        .height(8)
    )


def panels(usecase: UseCase | None) -> list[cogbuilder.Builder[object]]:
    """The live panels in layout order, after a row the caller adds. The per-feature panels show
    every feature: the live series exist before the monitor step writes the store rows the
    quality dashboard's ``$feature`` variable reads."""
    psi = _threshold_line(
        prometheus_timeseries(
            "Live score PSI by version",
            "Above 1.0 (dashed line) on the serving version, RollguardLiveScoreShift fires: how "
            "far did each version's live scores (rolling window of its newest scored rows) move "
            "from its score reference?",
            "none",
        ).with_target(
            promql(f"max by (version) (rollguard_live_score_psi{{{VERSION}}})", "v{{version}}")
        ),
        SCORE_PSI_THRESHOLD,
    ).min(0)
    rows = (
        prometheus_timeseries(
            "Live window rows by version",
            "How many scored rows does each version's rolling window hold (no PSI or share is "
            "exported below the minimum, 300 rows by default)?",
            "short",
        )
        .with_target(
            promql(f"max by (version) (rollguard_live_window_rows{{{VERSION}}})", "v{{version}}")
        )
        .span(6)
    )
    feature_psi = _threshold_line(
        prometheus_timeseries(
            "Live feature PSI",
            "Which inputs moved away from the version's training profile (PSI per feature; above "
            "0.25, the dashed line, for 5 minutes fires RollguardLiveFeatureShift)?",
            "none",
        ).with_target(
            promql(
                f"max by (version, feature) (rollguard_live_feature_psi{{{VERSION}}})",
                "v{{version}} {{feature}}",
            )
        ),
        FEATURE_PSI_THRESHOLD,
    ).min(0)
    shares = (
        prometheus_timeseries(
            "Live missing and out-of-range shares",
            "Which share of each input's live values is missing, or outside what the version "
            "saw in training (numeric: outside the training min..max; categorical: a level the "
            "model does not know)?",
            "percentunit",
        )
        .with_target(
            promql(
                f"max by (version, feature) (rollguard_live_feature_missing_share{{{VERSION}}})",
                "v{{version}} {{feature}} missing",
                "A",
            )
        )
        .with_target(
            promql(
                "max by (version, feature) "
                f"(rollguard_live_feature_out_of_range_share{{{VERSION}}})",
                "v{{version}} {{feature}} out of range",
                "B",
            )
        )
        .min(0)
    )
    return [score_heatmap(usecase), psi, rows, reference_table(), feature_psi, shares]


def with_live_row(board: dash.Dashboard, title: str, usecase: UseCase | None) -> dash.Dashboard:
    """``board`` with a row ``title`` holding :func:`panels`."""
    board = board.with_row(dash.Row(title))
    for panel in panels(usecase):
        board = board.with_panel(panel)
    return board
