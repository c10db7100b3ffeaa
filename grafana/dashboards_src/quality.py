"""The ML engineers' dashboard, one per use case: drift of the features and of the scores week by
week, realized quality against what the gate expected (average precision and ROC AUC for binary
classification; MAE, RMSE and bias in the label's unit for regression), the live guard's state, and
every champion move and gate decision with its reason (as annotations and tables). Titles, units,
metric names and the feature list come from the use case's declarations.

Week-based panels read the monitoring store (uid ``rollguard-store``; one bar per monitored week,
the week being the cutoff ``YYYY-MM-DD``); the newest-week and guard panels read Prometheus, which
scrapes the guard's store exporter.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import barchart, stat, table, text, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models.dashboard import (
    DataTransformerConfig,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat
from grafana_foundation_sdk.models.text import TextMode

from grafana.dashboards_src import live
from grafana.dashboards_src.common import (
    PROMETHEUS,
    QUALITY_UID,
    STORE,
    TAG,
    Sql,
    grafana_unit,
    grouping_to_matrix,
    model_variable,
    promql,
    sql_annotation,
    usecase_uid,
    week_pivot,
)
from rollguard.usecase import UseCase

#: Realized-quality figures per task: (metric name in the store, display name), and the metric
#: the degraded rule judges with its words.
_QUALITY = {
    "binary_classification": (
        (
            ("average_precision", "average precision"),
            ("roc_auc", "ROC AUC"),
        ),
        "ROC AUC",
        "lie below the gate-time ROC AUC minus the policy margin",
    ),
    "regression": (
        (("mae", "MAE"), ("rmse", "RMSE"), ("bias", "bias")),
        "MAE",
        "lie above the gate-time MAE times one plus the policy's relative margin",
    ),
}

#: Annotation texts: what moved, who moved it and why (alias_audit), what the gate said. The
#: rollbacks that moved the alias have their own annotation (red), the other moves (bootstrap,
#: promotion, refused moves) are champion moves.
CHAMPION_MOVES_SQL = """
SELECT moved_at AS time,
       action || ' ' || outcome || ': v' || COALESCE(from_version, '-') || ' -> v'
         || COALESCE(to_version, '-') || ' by ' || actor || ' - ' || reason AS text,
       action || ',' || outcome || ',' || actor AS tags
FROM alias_audit WHERE model_name = '$model'
  AND NOT (action = 'rollback' AND outcome = 'moved') ORDER BY moved_at
"""
ROLLBACKS_SQL = """
SELECT moved_at AS time,
       'rollback: v' || COALESCE(from_version, '-') || ' -> v' || COALESCE(to_version, '-')
         || ' by ' || actor || ' - ' || reason AS text,
       'rollback,' || actor AS tags
FROM alias_audit WHERE model_name = '$model' AND action = 'rollback' AND outcome = 'moved'
ORDER BY moved_at
"""
GATE_DECISIONS_SQL = """
SELECT decided_at AS time,
       'gate ' || outcome || ' for v' || challenger_version || ' (champion v'
         || COALESCE(champion_version, '-') || '): ' || reason_code AS text,
       'gate,' || outcome AS tags
FROM gate_decisions WHERE model_name = '$model' ORDER BY decided_at
"""


def _weekly(title: str, question: str, unit: str) -> barchart.Panel:
    return (
        barchart.Panel()
        .title(title)
        .description(question)
        .datasource(STORE)
        .unit(unit)
        .x_tick_label_rotation(-45)
        .x_tick_label_spacing(100)
        .height(8)
        .span(12)
    )


def _table(title: str, question: str, raw_sql: str) -> table.Panel:
    return (
        table.Panel()
        .title(title)
        .description(question)
        .datasource(STORE)
        .with_target(Sql(raw_sql))
        .height(8)
        .span(24)
    )


def features_markdown(usecase: UseCase) -> str:
    """The declared features as a Markdown table (name, kind, unit, description)."""
    lines = [
        f"**{usecase.title}**: {len(usecase.features)} features, compared for drift by kind "
        "(numerical: Kolmogorov-Smirnov / Wasserstein; categorical: chi-squared / "
        "Jensen-Shannon, Evidently's defaults).",
        "",
        "| feature | kind | unit | description |",
        "|---|---|---|---|",
    ]
    for f in usecase.features:
        kind = f"categorical ({', '.join(f.categories)})" if f.is_categorical else "numerical"
        lines.append(f"| `{f.name}` | {kind} | {f.unit or '-'} | {f.description} |")
    return "\n".join(lines) + "\n"


#: One row per feature: its state in the newest monitored week (the exporter's
#: ``rollguard_feature_state``, 1 for the current state).
FEATURE_STATES_PROMQL = "max by (feature, state) (rollguard_feature_state == 1)"


def feature_states_panel() -> table.Panel:
    """Every feature's state in the newest monitored week (Prometheus, instant): ok, drifted,
    skipped_constant, skipped_missing or schema_mismatch, the unusable ones first."""
    return (
        table.Panel()
        .title("Feature states")
        .description(
            "A skipped feature has no drift figure, and RollguardFeatureUnusable fires for the "
            "unusable ones: could every feature be compared in the newest monitored week (ok, "
            "drifted), or was it skipped because constant or all missing, or absent from the "
            "data (schema mismatch)?"
        )
        .datasource(PROMETHEUS)
        .with_target(promql(FEATURE_STATES_PROMQL, instant=True).format(PromQueryFormat.TABLE))
        .with_transformation(
            DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {"Time": True, "Value": True},
                    "renameByName": {"feature": "Feature", "state": "State"},
                },
            )
        )
        .sort_by([common_builders.TableSortByFieldState().display_name("State").desc(True)])
        .span(24)
        .height(8)
    )


#: The newest guard check: each check's verdict, and the evidence it read (Prometheus, instant).
GUARD_VERDICTS_PROMQL = "max by (check, verdict) (rollguard_guard_check_verdict == 1)"
GUARD_EVIDENCE_PROMQL = "max by (check, figure) (rollguard_guard_evidence)"


def guard_panels() -> tuple[stat.Panel, table.Panel]:
    """The newest guard check per check (score_shift, realized_quality): its verdict, and the
    evidence it waited for: rows, positives, value, threshold and the bootstrap interval."""
    verdicts = (
        stat.Panel()
        .title("Guard checks")
        .description(
            "Skip or inconclusive means the guard is waiting for evidence (labels not matured, "
            "too few rows or positives, or an interval that straddles the margin); degraded on "
            "either check rolls back. What did each check of the newest live-guard check say?"
        )
        .datasource(PROMETHEUS)
        .with_target(promql(GUARD_VERDICTS_PROMQL, "{{check}}: {{verdict}}", instant=True))
        .span(8)
        .height(6)
    )
    evidence = (
        table.Panel()
        .title("Guard evidence")
        .description(
            "Per check: n_rows and n_positives read; value (score_shift: PSI; realized_quality: "
            "champion minus previous champion, AP difference or relative MAE difference); "
            "threshold; ci_low..ci_high, the bootstrap interval of the difference (degraded "
            "when it lies wholly past the threshold). What evidence did the newest guard check "
            "wait for and read?"
        )
        .datasource(PROMETHEUS)
        .with_target(promql(GUARD_EVIDENCE_PROMQL, instant=True).format(PromQueryFormat.TABLE))
        .with_transformation(grouping_to_matrix("figure", "check", "Value"))
        .span(16)
        .height(6)
    )
    return verdicts, evidence


def _quality_words(usecase: UseCase) -> tuple[tuple[tuple[str, str], ...], str, str, str]:
    """(metrics, judged metric's name, the degraded rule in words, panel unit)."""
    metrics, judged, rule = _QUALITY[usecase.task.value]
    unit = grafana_unit(usecase.label.unit) if not usecase.is_classification else "none"
    return metrics, judged, rule, unit


def _realized_quality(board: dash.Dashboard, usecase: UseCase) -> dash.Dashboard:
    """Rows "Realized quality" (store) and the live quality panel (Prometheus)."""
    metrics, judged, rule, unit = _quality_words(usecase)
    columns: dict[str, str] = {}
    for metric, name in metrics:
        columns[metric] = f"Live {name}"
        columns[f"expected_{metric}"] = f"Gate-time {name}"
    names = ", ".join(name for _, name in metrics)
    weekly = (
        _weekly(
            "Live quality vs gate expectation by week",
            f"Once labels are known, are the champion's realized {names} (the rule judges "
            f"{judged}) as good as what the gate measured?",
            unit,
        )
        .with_target(Sql(week_pivot("quality", columns)))
        .span(16)
    )
    if usecase.is_classification:
        weekly = weekly.max(1)
    return (
        board.with_row(dash.Row("Realized quality (store, matured labels)"))
        .with_panel(weekly)
        .with_panel(
            table.Panel()
            .title("Degraded weeks")
            .description(
                f"In which weeks did the live {judged} interval {rule} (1), and which weeks had "
                "too little evidence for a verdict (inconclusive)?"
            )
            .datasource(STORE)
            .with_target(
                Sql(
                    'SELECT week AS "Week", value AS "Degraded", state AS "State", '
                    "detail AS \"Detail\" FROM monitoring_results WHERE model_name = '$model' "
                    "AND kind = 'quality' AND metric = 'degraded' ORDER BY week DESC"
                )
            )
            .height(8)
            .span(8)
        )
    )


def _live_quality(usecase: UseCase) -> timeseries.Panel:
    metrics, _, _, unit = _quality_words(usecase)
    pick = "|".join(m for m, _ in metrics)
    panel = (
        live.prometheus_timeseries(
            "Live quality vs gate expectation",
            "What do the newest matured figures say right now, next to the gate's "
            "expectation, and when did the champion change?",
            unit,
        )
        .with_target(
            promql(
                f'max by (metric) (rollguard_live_quality{{metric=~"{pick}"}})',
                "live {{metric}}",
                "A",
            )
        )
        .with_target(
            promql(
                f'max by (metric) (rollguard_expected_quality{{metric=~"{pick}"}})',
                "gate-time {{metric}}",
                "B",
            )
        )
    )
    return panel.min(0).max(1) if usecase.is_classification else panel


def build(usecase: UseCase) -> dash.Dashboard:
    """The model quality and drift dashboard of ``usecase`` (uid
    ``rollguard-model-quality-<use case>``)."""
    feature = (
        dash.QueryVariable("feature")
        .label("Feature")
        .datasource(STORE)
        .query(
            "SELECT DISTINCT feature FROM monitoring_results WHERE model_name = '$model' "
            "AND kind = 'data_drift' AND feature <> '' ORDER BY feature"
        )
        .refresh(VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
    )
    score_unit = "percentunit" if usecase.is_classification else grafana_unit(usecase.label.unit)
    guard_verdicts, guard_evidence = guard_panels()
    board = (
        dash.Dashboard(f"Rollguard / {usecase.title} / Model quality and drift")
        .uid(usecase_uid(QUALITY_UID, usecase))
        .tags([TAG, "model", usecase.name])
        .description(
            f"{usecase.title} ({usecase.task.value.replace('_', ' ')}): are the inputs and the "
            "scores still like the ones the champion was trained on, and is its realized quality "
            "what the gate promised?"
        )
        .time("now-7d", "now")
        .refresh("5m")
        .timezone("utc")
        .with_variable(model_variable())
        .with_variable(feature)
        .with_variable(live.version_variable())
        .annotation(sql_annotation("Champion moves", "orange", CHAMPION_MOVES_SQL))
        .annotation(sql_annotation("Rollbacks", "red", ROLLBACKS_SQL))
        .annotation(sql_annotation("Gate decisions", "blue", GATE_DECISIONS_SQL))
        .with_row(dash.Row("Newest monitored week (Prometheus)"))
        .with_panel(
            stat.Panel()
            .title("Dataset drift share")
            .description("Which share of the features drifted in the newest monitored week?")
            .datasource(PROMETHEUS)
            .unit("percentunit")
            .with_target(promql("max(rollguard_dataset_drift_share)", instant=True))
            .span(6)
            .height(4)
        )
        .with_panel(
            stat.Panel()
            .title("Score PSI")
            .description(
                "How far did the champion's score distribution move from its gate-time scores "
                "(PSI; above 0.25 is a large shift)?"
            )
            .datasource(PROMETHEUS)
            .with_target(promql("max(rollguard_score_drift_psi)", instant=True))
            .span(6)
            .height(4)
        )
        .with_panel(
            stat.Panel()
            .title("Guard state")
            .description(
                "What did the live guard's newest check say: ok, degraded or inconclusive?"
            )
            .datasource(PROMETHEUS)
            .with_target(
                promql("max by (state) (rollguard_guard_state) == 1", "{{state}}", instant=True)
            )
            .span(6)
            .height(4)
        )
        .with_panel(
            stat.Panel()
            .title("Gate decisions and rollbacks")
            .description(
                "How many challengers were promoted or rejected, and how many rollbacks moved "
                "the champion, since the store began?"
            )
            .datasource(PROMETHEUS)
            .with_target(
                promql(
                    "sum by (decision) (rollguard_gate_decisions_total)",
                    "gate {{decision}}",
                    "A",
                    instant=True,
                )
            )
            .with_target(
                promql(
                    "sum by (actor) (rollguard_rollbacks_total)",
                    "rollbacks by {{actor}}",
                    "B",
                    instant=True,
                )
            )
            .span(6)
            .height(4)
        )
        .with_panel(guard_verdicts)
        .with_panel(guard_evidence)
        .with_panel(feature_states_panel())
    )
    board = live.with_live_row(board, "Live signals of the model server (Prometheus)", usecase)
    board = (
        board.with_row(dash.Row("Drift by week (store)"))
        .with_panel(
            text.Panel()
            .title("Features monitored")
            .description("Which features does the model use, of which kind and unit?")
            .mode(TextMode.MARKDOWN)
            .content(features_markdown(usecase))
            .span(24)
            .height(min(4 + len(usecase.features), 24))
        )
        .with_panel(
            _weekly(
                "Dataset drift share by week",
                "Which share of the features drifted, week after week?",
                "percentunit",
            )
            .with_target(
                Sql(
                    week_pivot(
                        "data_drift",
                        {"drift_share": "Drift share"},
                    )
                )
            )
            .max(1)
        )
        .with_panel(
            _weekly(
                "Per-feature drift score by week",
                "How strongly did each selected feature drift, week after week (Evidently drift "
                "score; the Feature variable picks the features)?",
                "none",
            )
            .with_target(
                Sql(
                    'SELECT week AS "Week", feature AS "Feature", value AS "Drift score" '
                    "FROM monitoring_results WHERE model_name = '$model' AND kind = 'data_drift' "
                    "AND metric = 'drift_score' AND feature IN ($feature) AND value IS NOT NULL "
                    "ORDER BY week, feature"
                )
            )
            .with_transformation(grouping_to_matrix("Feature", "Week", "Drift score"))
        )
        .with_panel(
            _table(
                "Drifted features by week",
                "How many features drifted each week, and how many were compared?",
                week_pivot(
                    "data_drift",
                    {
                        "drifted_features": "Drifted features",
                        "n_features": "Features compared",
                        "drift_share": "Drift share",
                    },
                ),
            )
        )
        .with_row(dash.Row("Scores by week (store)"))
        .with_panel(
            _weekly(
                "Score distribution by week",
                "How are the champion's scores spread each week (mean and quantiles)?",
                score_unit,
            ).with_target(
                Sql(
                    week_pivot(
                        "score_drift",
                        {
                            "score_mean": "Mean",
                            "score_p50": "Median",
                            "score_p90": "90th percentile",
                            "score_p99": "99th percentile",
                        },
                    )
                )
            )
        )
        .with_panel(
            _weekly(
                "Score drift by week",
                "How far did the scores move from the champion's gate-time scores (PSI, and the "
                "Evidently drift score of the score column)?",
                "none",
            ).with_target(
                Sql(
                    week_pivot(
                        "score_drift",
                        {"psi": "PSI", "drift_score": "Drift score"},
                    )
                )
            )
        )
    )
    board = _realized_quality(board, usecase)
    return (
        board.with_row(
            dash.Row("Live (Prometheus; annotations: champion moves and gate decisions)")
        )
        .with_panel(_live_quality(usecase))
        .with_panel(
            live.prometheus_timeseries(
                "Score quantiles and guard state",
                "Where do the newest week's score quantiles sit, and which state did the live "
                "guard report over time?",
                "none",
            )
            .with_target(
                promql("max by (quantile) (rollguard_score_quantile)", "score q{{quantile}}", "A")
            )
            .with_target(promql("max by (state) (rollguard_guard_state)", "guard {{state}}", "B"))
            .with_target(
                promql(
                    "max by (metric) (rollguard_live_quality_degraded)",
                    "live {{metric}} below expectation",
                    "C",
                )
            )
            .with_target(
                promql(
                    "max by (state) (rollguard_live_quality_state)", "live quality {{state}}", "D"
                )
            )
        )
        .with_panel(
            live.prometheus_timeseries(
                "Champion version over time",
                "Which version was champion when (with promotions, rejections and rollbacks as "
                "annotations)?",
                "none",
            )
            .with_target(promql("max(rollguard_champion_version)", "champion version"))
            .decimals(0)
            .span(24)
        )
        .with_row(dash.Row("Champion history (store)"))
        .with_panel(
            _table(
                "Champion moves",
                "Who moved the champion alias, from which version to which, and why (including "
                "refused moves)?",
                'SELECT moved_at AS "When", action AS "Action", outcome AS "Outcome", '
                'from_version AS "From", to_version AS "To", actor AS "Actor", '
                "reason AS \"Reason\" FROM alias_audit WHERE model_name = '$model' "
                "ORDER BY moved_at DESC LIMIT 200",
            )
        )
        .with_panel(
            _table(
                "Gate decisions",
                "What did the gate decide about each challenger, against which champion, and why?",
                'SELECT decided_at AS "When", challenger_version AS "Challenger", '
                'champion_version AS "Champion", outcome AS "Decision", '
                'reason_code AS "Reason", actor AS "Actor" FROM gate_decisions '
                "WHERE model_name = '$model' ORDER BY decided_at DESC LIMIT 200",
            )
        )
        .with_panel(
            _table(
                "Guard checks",
                "What did each live-guard check conclude about the champion, and did it roll back?",
                'SELECT checked_at AS "When", champion_version AS "Champion", '
                'cutoff AS "Cutoff", state AS "State", rolled_back_to AS "Rolled back to", '
                "reason AS \"Reason\" FROM guard_checks WHERE model_name = '$model' "
                "ORDER BY checked_at DESC LIMIT 200",
            )
        )
    )
