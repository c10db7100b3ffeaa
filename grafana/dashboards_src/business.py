"""The business leads' dashboard, in their words: how many customers the model picks each week,
how many of them buy again, how much they spend, and how that compares with picking the same
number of customers at random. Week-by-week panels read the monitoring store (uid
``rollguard-store``); the newest-week figures read Prometheus (the guard's store exporter)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import barchart, stat, table, text
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models.text import TextMode

from grafana.dashboards_src.common import (
    BUSINESS_UID,
    PROMETHEUS,
    STORE,
    TAG,
    Sql,
    model_variable,
    promql,
    week_pivot,
)

HOW_TO_READ = """\
**How to read this page.** Each week the model ranks every known customer by how likely they are
to buy again within the horizon, and marketing contacts the top of the list (the *targeted
customers*; the budget is a fixed share of customers). Four weeks later we know who actually came
back, so each bar is about a week whose outcome is known.

- **Repurchase rate**: the share of targeted customers who bought again, next to the share of *all*
  customers who did. The gap is what the model adds.
- **Lift**: targeted repurchase rate divided by the rate of all customers. 1.0 means "no better than
  picking at random"; 3.0 means targeted customers were three times as likely to come back.
- **Revenue**: what the targeted customers spent in the horizon, in dollars, and their share of all
  customers' spending.
- **Random targeting** is what a random pick of the same number of customers would have given on
  average: the baseline to beat.

A week is missing when its outcome is not known yet. The technical view is the
*Model quality and drift* dashboard.
"""

KPIS = {
    "targeted_customers": "Customers targeted",
    "targeted_repurchase_rate": "Repurchase rate, targeted",
    "base_rate": "Repurchase rate, all customers",
    "random_repurchase_rate": "Repurchase rate, random pick",
    "lift": "Lift",
    "random_lift": "Lift, random pick",
    "targeted_revenue_dollars": "Revenue from targeted ($)",
    "random_revenue_dollars": "Revenue from random pick ($)",
    "targeted_revenue_share": "Share of revenue, targeted",
    "random_revenue_share": "Share of revenue, random pick",
}


def _weekly(title: str, question: str, unit: str, metrics: list[str]) -> barchart.Panel:
    return (
        barchart.Panel()
        .title(title)
        .description(question)
        .datasource(STORE)
        .unit(unit)
        .with_target(Sql(week_pivot("kpi", {m: KPIS[m] for m in metrics})))
        .x_tick_label_rotation(-45)
        .x_tick_label_spacing(100)
        .height(8)
        .span(12)
    )


def _newest(title: str, question: str, expr: str, unit: str) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(question)
        .datasource(PROMETHEUS)
        .unit(unit)
        .with_target(promql(expr, instant=True))
        .span(6)
        .height(4)
    )


def build() -> dash.Dashboard:
    """The business KPI dashboard (uid ``rollguard-business``)."""
    return (
        dash.Dashboard("Rollguard / Business KPIs")
        .uid(BUSINESS_UID)
        .tags([TAG, "business"])
        .description("Does targeting the customers the model picks bring more buyers and revenue?")
        .time("now-7d", "now")
        .refresh("5m")
        .timezone("utc")
        .with_variable(model_variable())
        .with_panel(
            text.Panel()
            .title("How to read this dashboard")
            .description("What do the figures on this page mean?")
            .mode(TextMode.MARKDOWN)
            .content(HOW_TO_READ)
            .span(24)
            .height(9)
        )
        .with_row(dash.Row("Newest week with a known outcome"))
        .with_panel(
            _newest(
                "Customers targeted, newest week",
                "How many customers did the model pick in the newest week with a known outcome?",
                'max(rollguard_business_kpi{kpi="targeted_customers",targeting="model"})',
                "short",
            )
        )
        .with_panel(
            _newest(
                "Lift, newest week",
                "How many times more likely to buy again were the targeted customers?",
                'max(rollguard_business_kpi{kpi="lift",targeting="model"})',
                "none",
            )
        )
        .with_panel(
            _newest(
                "Revenue from targeted customers, newest week",
                "How much did the targeted customers spend within the horizon?",
                'max(rollguard_business_kpi{kpi="revenue_dollars",targeting="model"})',
                "currencyUSD",
            )
        )
        .with_panel(
            _newest(
                "Repurchase rate of all customers, newest week",
                "Which share of all customers bought again (the baseline)?",
                "max(rollguard_base_rate)",
                "percentunit",
            )
        )
        .with_row(dash.Row("Week by week"))
        .with_panel(
            _weekly(
                "Customers targeted",
                "How many customers did the model pick each week?",
                "short",
                ["targeted_customers"],
            )
        )
        .with_panel(
            _weekly(
                "Repurchase rate: targeted vs all customers vs random pick",
                "Did the customers we targeted buy again more often than customers in general, "
                "and than a random pick of the same size?",
                "percentunit",
                ["targeted_repurchase_rate", "base_rate", "random_repurchase_rate"],
            )
        )
        .with_panel(
            _weekly(
                "Lift: model vs random pick",
                "How many times better than picking at random was the model each week (random = 1)?",
                "none",
                ["lift", "random_lift"],
            )
        )
        .with_panel(
            _weekly(
                "Revenue from targeted customers: model vs random pick",
                "How many dollars did the customers we targeted spend, against what a random pick "
                "of the same size would have spent?",
                "currencyUSD",
                ["targeted_revenue_dollars", "random_revenue_dollars"],
            )
        )
        .with_panel(
            _weekly(
                "Share of all revenue from targeted customers: model vs random pick",
                "Which share of all customers' spending came from the customers we targeted, "
                "against a random pick?",
                "percentunit",
                ["targeted_revenue_share", "random_revenue_share"],
            ).span(24)
        )
        .with_panel(
            table.Panel()
            .title("All figures by week")
            .description("What were all the business figures, week by week, newest first?")
            .datasource(STORE)
            .with_target(
                Sql(week_pivot("kpi", KPIS).replace("ORDER BY week", "ORDER BY week DESC"))
            )
            .span(24)
            .height(10)
        )
    )
