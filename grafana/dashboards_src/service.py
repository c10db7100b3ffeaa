"""The on-call dashboard of the model server: traffic, errors, latency per route, the model that
serves and its reloads, the prediction-log backlog and the alerts that fire. Every panel reads
Prometheus (uid ``prometheus``), which scrapes the API (job ``rollguard-api``) and the guard
(job ``rollguard-guard``)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.models.dashboard import VariableRefresh, VariableSort
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from grafana.dashboards_src import live
from grafana.dashboards_src.common import PROMETHEUS, SERVICE_UID, TAG, promql

ROUTE = 'route=~"$route"'


def _ts(title: str, question: str, unit: str) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(title)
        .description(question)
        .datasource(PROMETHEUS)
        .unit(unit)
        .height(8)
        .span(12)
    )


def _stat(title: str, question: str, unit: str = "none") -> stat.Panel:
    return stat.Panel().title(title).description(question).datasource(PROMETHEUS).unit(unit)


def _latency(q: str, ref: str) -> object:
    expr = (
        f"histogram_quantile({q}, sum by (route, le) "
        f"(rate(rollguard_http_request_duration_seconds_bucket{{{ROUTE}}}[$__rate_interval])))"
    )
    return promql(expr, f"p{round(float(q) * 100)} {{{{route}}}}", ref)


def build() -> dash.Dashboard:
    """The service dashboard (uid ``rollguard-service``)."""
    route = (
        dash.QueryVariable("route")
        .label("Route")
        .datasource(PROMETHEUS)
        .query("label_values(rollguard_http_requests_total, route)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )
    board = (
        dash.Dashboard("Rollguard / Service (on-call)")
        .uid(SERVICE_UID)
        .tags([TAG, "service"])
        .description("Is the model server answering, fast and correctly, with the right model?")
        .time("now-6h", "now")
        .refresh("30s")
        .timezone("utc")
        .with_variable(route)
        .with_variable(live.version_variable())
        .annotation(live.RollbacksAnnotation())
        .with_row(dash.Row("Now"))
        .with_panel(
            _stat("Model ready", "Does the model server have a champion loaded (1) or not (0)?")
            .with_target(promql("min(rollguard_model_ready)", instant=True))
            .span(4)
            .height(4)
        )
        .with_panel(
            _stat(
                "Champion version (registry)",
                "Which registered-model version is champion according to the store?",
            )
            .with_target(promql("max(rollguard_champion_version)", instant=True))
            .span(4)
            .height(4)
        )
        .with_panel(
            _stat("Registry reachable", "Could the model server reach MLflow on its last call?")
            .with_target(promql("min(rollguard_registry_up)", instant=True))
            .span(4)
            .height(4)
        )
        .with_panel(
            _stat("Scrape targets up", "Can Prometheus scrape the API and the guard right now?")
            .with_target(promql('up{job=~"rollguard-.*"}', "{{job}}", instant=True))
            .span(6)
            .height(4)
        )
        .with_panel(
            _stat(
                "Failed reloads in range",
                "How many attempts to load a new champion were refused or hit a registry error "
                "in the selected time range?",
            )
            .with_target(
                promql(
                    "sum(increase(rollguard_model_reloads_total"
                    '{outcome=~"refused|registry_error"}[$__range]))',
                    instant=True,
                )
            )
            .span(6)
            .height(4)
        )
        .with_panel(
            _stat(
                "Champion alias missing",
                "Is the champion alias of the served model gone, and why (1 per reason: "
                "alias_missing, version_missing, registry_unreachable; loaded replicas keep "
                "serving)?",
            )
            .with_target(
                promql("max by (reason) (rollguard_champion_missing)", "{{reason}}", instant=True)
            )
            .span(12)
            .height(4)
        )
        .with_panel(
            _stat(
                "Champion moved outside Rollguard",
                "Does a model server serve a champion that no Rollguard alias_audit row moved "
                "there (1) or not (0)?",
            )
            .with_target(promql("max(rollguard_champion_unaudited_move)", instant=True))
            .span(12)
            .height(4)
        )
        .with_row(dash.Row("Traffic"))
        .with_panel(
            _ts(
                "Request rate by route",
                "How many requests per second does each route get?",
                "reqps",
            ).with_target(
                promql(
                    f"sum by (route) (rate(rollguard_http_requests_total{{{ROUTE}}}[$__rate_interval]))",
                    "{{route}}",
                )
            )
        )
        .with_panel(
            _ts(
                "Error ratio",
                "Which share of requests fail on the server (5xx) or are rejected as bad input (4xx)?",
                "percentunit",
            )
            .with_target(
                promql(
                    "(sum(rate(rollguard_http_requests_total"
                    f'{{{ROUTE},status=~"5.."}}[$__rate_interval])) or vector(0)) '
                    f"/ sum(rate(rollguard_http_requests_total{{{ROUTE}}}[$__rate_interval]))",
                    "server errors (5xx)",
                    "A",
                )
            )
            .with_target(
                promql(
                    "(sum(rate(rollguard_http_requests_total"
                    f'{{{ROUTE},status=~"4.."}}[$__rate_interval])) or vector(0)) '
                    f"/ sum(rate(rollguard_http_requests_total{{{ROUTE}}}[$__rate_interval]))",
                    "rejected input (4xx)",
                    "B",
                )
            )
        )
        .with_panel(
            _ts(
                "Latency p50 / p95 / p99 by route",
                "How long do requests take on each route (the p99 target of scoring routes is 10 ms)?",
                "s",
            )
            .with_target(_latency("0.5", "A"))
            .with_target(_latency("0.95", "B"))
            .with_target(_latency("0.99", "C"))
            .span(24)
        )
        .with_panel(
            _ts(
                "Predictions and prediction errors",
                "How many rows are scored per second, by model version, and how many predict "
                "requests fail on the server side, by reason?",
                "short",
            )
            .with_target(
                promql(
                    "sum by (model_version) (rate(rollguard_predictions_total[$__rate_interval]))",
                    "rows scored by v{{model_version}}",
                    "A",
                )
            )
            .with_target(
                promql(
                    "sum by (reason) (rate(rollguard_prediction_errors_total[$__rate_interval]))",
                    "errors: {{reason}}",
                    "B",
                )
            )
        )
        .with_row(dash.Row("Model"))
        .with_panel(
            _ts(
                "Serving version over time",
                "Which model version served when (1 while a version serves)?",
                "none",
            )
            .with_target(promql("max by (version) (rollguard_model_info)", "v{{version}}"))
            .min(0)
            .max(1)
        )
        .with_panel(
            _ts(
                "Model reloads by outcome",
                "How often did the server swap in a new champion, refuse one (failed smoke test, "
                "wrong features) or fail to reach the registry?",
                "short",
            ).with_target(
                promql(
                    "sum by (outcome) (increase(rollguard_model_reloads_total[$__rate_interval]))",
                    "{{outcome}}",
                )
            )
        )
    )
    board = live.with_live_row(board, "Live signals per serving version", None)
    return (
        board.with_row(dash.Row("Prediction log"))
        .with_panel(
            _ts(
                "Prediction-log backlog",
                "Are prediction-log rows piling up in memory (store slow or down)?",
                "short",
            ).with_target(
                promql("sum(rollguard_prediction_log_queue_rows)", "rows waiting in memory")
            )
        )
        .with_panel(
            _ts(
                "Prediction-log rows written, spooled, dropped",
                "Are logged predictions reaching the store, going to the spool file, or being lost?",
                "short",
            )
            .with_target(
                promql(
                    "sum(rate(rollguard_prediction_log_written_rows_total[$__rate_interval]))",
                    "written to the store / s",
                    "A",
                )
            )
            .with_target(
                promql(
                    "sum(rate(rollguard_prediction_log_spooled_rows_total[$__rate_interval]))",
                    "spooled / s",
                    "B",
                )
            )
            .with_target(
                promql(
                    "sum(increase(rollguard_prediction_log_dropped_rows_total[$__rate_interval]))",
                    "dropped",
                    "C",
                )
            )
        )
        .with_row(dash.Row("Alerts"))
        .with_panel(
            table.Panel()
            .title("Active alerts")
            .description(
                "Which Rollguard alerts are pending or firing now (the rules live in Prometheus; "
                "see docs/runbook.md for each)?"
            )
            .datasource(PROMETHEUS)
            .with_target(
                promql('ALERTS{alertstate=~"firing|pending"}', instant=True).format(
                    PromQueryFormat.TABLE
                )
            )
            .span(24)
            .height(8)
        )
    )
