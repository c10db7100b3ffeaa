"""The business leads' dashboard, one per use case, in the use case's words and money unit.

- Binary classification: how many rows (customers, ...) the model picks each week, how many of them
  turn out positive, how much business value they bring, and how that compares with picking the
  same number at random.
- Regression: how far the predictions are from the outcome in the money unit (MAE, bias,
  value-weighted MAE), next to the declared baselines and the training median, and the predicted
  against the realized totals.

Week-by-week panels read the monitoring store (uid ``rollguard-store``); the newest-week figures
read Prometheus (the guard's store exporter). The subject, the label's and the value's
descriptions, the money unit and the baselines come from the use case's declarations.
"""

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
    grafana_unit,
    model_variable,
    promql,
    usecase_uid,
    week_pivot,
    week_pivot_pairs,
)
from rollguard.usecase import UseCase

#: The training-median baseline's name (monitoring.compute.TRAINING_MEDIAN).
TRAINING_MEDIAN = "training_median"


def how_to_read(usecase: UseCase) -> str:
    """The Markdown of the "How to read this dashboard" panel, in the use case's words."""
    subject, money = usecase.targeting.subject, usecase.value.unit
    if usecase.is_classification:
        budget = f"{usecase.targeting.budget:.0%}"
        return f"""\
**How to read this page ({usecase.title}).** Each week the model ranks the {subject} by score \
and the top {budget} are the *targeted {subject}* ({_quote(usecase.targeting.description)}). \
The outcome is *{_quote(usecase.label.description)}*; once it is known, each bar is about a week \
whose outcome is known.

- **Positive rate**: the share of targeted {subject} with a positive outcome, next to the share of \
*all* {subject}. The gap is what the model adds.
- **Lift**: targeted positive rate divided by the rate of all {subject}. 1.0 means "no better than \
picking at random".
- **Value**: *{_quote(usecase.value.description)}* ({money}) of the targeted {subject}, and \
their share of all {subject}' value.
- **Random pick** is what a random pick of the same number of {subject} would have given on \
average: the baseline to beat.

A week is missing when its outcome is not known yet. The technical view is the \
*Model quality and drift* dashboard of this use case.
"""
    baselines = ", ".join(f"*{b.name}* ({_quote(b.description)})" for b in usecase.baselines)
    unit = usecase.label.unit or money
    return f"""\
**How to read this page ({usecase.title}).** For every one of the week's {subject} the model \
predicts the label (*{_quote(usecase.label.description)}*, in {unit}). Once the outcome is known, \
each bar is about a week whose outcome is known.

- **MAE**: the mean absolute error of the predictions, in {unit}; lower is better. **Bias**: the \
mean of prediction minus outcome; above 0 the model over-predicts.
- **Value-weighted MAE**: the same error, weighted by the business value of each row \
(*{_quote(usecase.value.description)}*, in {money}): mistakes on the {subject} that bring the most \
money count most.
- **Baselines** to beat: {baselines or "none declared"}{", and " if baselines else ""}the \
*training median* (the median outcome of the model's training data, predicted for everyone).
- **Totals**: the sum of the predictions against the sum of the outcomes.

A week is missing when its outcome is not known yet. The technical view is the \
*Model quality and drift* dashboard of this use case.
"""


def _quote(text: str) -> str:
    """A declared description inside a sentence: without its closing full stop."""
    return text.strip().rstrip(".")


def _weekly(title: str, question: str, unit: str, raw_sql: str) -> barchart.Panel:
    return (
        barchart.Panel()
        .title(title)
        .description(question)
        .datasource(STORE)
        .unit(unit)
        .with_target(Sql(raw_sql))
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


def _kpi(kpi: str, targeting: str = "model") -> str:
    return f'max(rollguard_business_kpi{{kpi="{kpi}",targeting="{targeting}"}})'


def classification_kpis(usecase: UseCase) -> dict[str, str]:
    """Store metric -> column name of the classification KPIs, in the use case's words."""
    subject, money = usecase.targeting.subject, usecase.value.unit
    return {
        "targeted_count": f"{subject.capitalize()} targeted",
        "targeted_positive_rate": "Positive rate, targeted",
        "base_rate": f"Positive rate, all {subject}",
        "random_positive_rate": "Positive rate, random pick",
        "lift": "Lift",
        "random_lift": "Lift, random pick",
        "targeted_value": f"Value from targeted ({money})",
        "random_value": f"Value from random pick ({money})",
        "targeted_value_share": "Share of value, targeted",
        "random_value_share": "Share of value, random pick",
    }


def _classification(board: dash.Dashboard, usecase: UseCase) -> dash.Dashboard:
    subject, money = usecase.targeting.subject, grafana_unit(usecase.value.unit)
    kpis = classification_kpis(usecase)

    def pivot(metrics: list[str]) -> str:
        return week_pivot("kpi", {m: kpis[m] for m in metrics})

    return (
        board.with_row(dash.Row("Newest week with a known outcome"))
        .with_panel(
            _newest(
                f"{subject.capitalize()} targeted, newest week",
                f"How many {subject} did the model pick in the newest week with a known outcome?",
                _kpi("targeted_count"),
                "short",
            )
        )
        .with_panel(
            _newest(
                "Lift, newest week",
                f"How many times more likely to be positive were the targeted {subject}?",
                _kpi("lift"),
                "none",
            )
        )
        .with_panel(
            _newest(
                f"Value from targeted {subject}, newest week",
                f"How much value ({usecase.value.description}) did the targeted {subject} bring?",
                _kpi("value"),
                money,
            )
        )
        .with_panel(
            _newest(
                f"Positive rate of all {subject}, newest week",
                f"Which share of all {subject} had a positive outcome (the baseline)?",
                "max(rollguard_base_rate)",
                "percentunit",
            )
        )
        .with_row(dash.Row("Week by week"))
        .with_panel(
            _weekly(
                f"{subject.capitalize()} targeted",
                f"How many {subject} did the model pick each week?",
                "short",
                pivot(["targeted_count"]),
            )
        )
        .with_panel(
            _weekly(
                f"Positive rate: targeted vs all {subject} vs random pick",
                f"Were the {subject} we targeted positive more often than {subject} in general, "
                "and than a random pick of the same size?",
                "percentunit",
                pivot(["targeted_positive_rate", "base_rate", "random_positive_rate"]),
            )
        )
        .with_panel(
            _weekly(
                "Lift: model vs random pick",
                "How many times better than picking at random was the model each week (random = 1)?",
                "none",
                pivot(["lift", "random_lift"]),
            )
        )
        .with_panel(
            _weekly(
                f"Value from targeted {subject}: model vs random pick",
                f"How much value did the {subject} we targeted bring, against what a random pick "
                "of the same size would have brought?",
                money,
                pivot(["targeted_value", "random_value"]),
            )
        )
        .with_panel(
            _weekly(
                f"Share of all value from targeted {subject}: model vs random pick",
                f"Which share of all {subject}' value came from the {subject} we targeted, "
                "against a random pick?",
                "percentunit",
                pivot(["targeted_value_share", "random_value_share"]),
            ).span(24)
        )
        .with_panel(
            table.Panel()
            .title("All figures by week")
            .description("What were all the business figures, week by week, newest first?")
            .datasource(STORE)
            .with_target(
                Sql(week_pivot("kpi", kpis).replace("ORDER BY week", "ORDER BY week DESC"))
            )
            .span(24)
            .height(10)
        )
    )


def regression_columns(usecase: UseCase) -> dict[tuple[str, str], str]:
    """(store metric, feature) -> column name of the regression KPIs, in the money unit."""
    money = usecase.value.unit
    unit = usecase.label.unit or money
    columns = {
        ("rows", ""): f"{usecase.targeting.subject.capitalize()}",
        ("mae", ""): f"Model MAE ({unit})",
    }
    for name in [b.name for b in usecase.baselines] + [TRAINING_MEDIAN]:
        columns[("baseline_mae", name)] = f"{name} MAE ({unit})"
    columns[("bias", "")] = f"Model bias ({unit})"
    for name in [b.name for b in usecase.baselines] + [TRAINING_MEDIAN]:
        columns[("baseline_bias", name)] = f"{name} bias ({unit})"
    columns[("value_weighted_mae", "")] = f"Value-weighted MAE ({unit})"
    columns[("predicted_total", "")] = f"Predicted total ({unit})"
    columns[("realized_total", "")] = f"Realized total ({unit})"
    columns[("value_total", "")] = f"Value ({money})"
    return columns


def _regression(board: dash.Dashboard, usecase: UseCase) -> dash.Dashboard:
    subject = usecase.targeting.subject
    unit = grafana_unit(usecase.label.unit or usecase.value.unit)
    columns = regression_columns(usecase)
    names = [b.name for b in usecase.baselines] + [TRAINING_MEDIAN]

    def pick(*keys: tuple[str, str]) -> dict[tuple[str, str], str]:
        return {k: columns[k] for k in keys}

    board = (
        board.with_row(dash.Row("Newest week with a known outcome"))
        .with_panel(
            _newest(
                "Model MAE, newest week",
                f"How far were the predictions from the outcome, on average, in the newest week "
                f"with a known outcome ({usecase.label.unit or usecase.value.unit})?",
                _kpi("mae"),
                unit,
            )
        )
        .with_panel(
            stat.Panel()
            .title("Baseline MAE, newest week")
            .description(
                "How far were the naive baselines from the outcome in the same week (the figures "
                "the model must beat)?"
            )
            .datasource(PROMETHEUS)
            .unit(unit)
            .with_target(
                promql(
                    'max by (targeting) (rollguard_business_kpi{kpi="mae",targeting!="model"})',
                    "{{targeting}}",
                    instant=True,
                )
            )
            .span(6)
            .height(4)
        )
        .with_panel(
            _newest(
                "Model bias, newest week",
                "Does the model over-predict (above 0) or under-predict (below 0) on average?",
                _kpi("bias"),
                unit,
            )
        )
        .with_panel(
            _newest(
                f"{subject.capitalize()} with a known outcome, newest week",
                f"How many {subject} does the newest figure cover?",
                _kpi("rows"),
                "short",
            )
        )
        .with_row(dash.Row("Week by week"))
    )
    return (
        board.with_panel(
            _weekly(
                "MAE: model vs baselines",
                "Was the model closer to the outcome than the naive baselines, week after week?",
                unit,
                week_pivot_pairs("kpi", pick(("mae", ""), *(("baseline_mae", n) for n in names))),
            )
        )
        .with_panel(
            _weekly(
                "Bias: model vs baselines",
                "Did the model over- or under-predict each week, next to the baselines?",
                unit,
                week_pivot_pairs("kpi", pick(("bias", ""), *(("baseline_bias", n) for n in names))),
            )
        )
        .with_panel(
            _weekly(
                "Value-weighted MAE",
                f"How large were the errors on the {subject} that bring the most value "
                f"({usecase.value.description})?",
                unit,
                week_pivot_pairs("kpi", pick(("value_weighted_mae", ""), ("mae", ""))),
            )
        )
        .with_panel(
            _weekly(
                "Predicted vs realized total",
                "Did the sum of the predictions match the sum of the outcomes each week?",
                unit,
                week_pivot_pairs("kpi", pick(("predicted_total", ""), ("realized_total", ""))),
            )
        )
        .with_panel(
            table.Panel()
            .title("All figures by week")
            .description("What were all the business figures, week by week, newest first?")
            .datasource(STORE)
            .with_target(Sql(week_pivot_pairs("kpi", columns, newest_first=True)))
            .span(24)
            .height(10)
        )
    )


def build(usecase: UseCase) -> dash.Dashboard:
    """The business KPI dashboard of ``usecase`` (uid ``rollguard-business-<use case>``)."""
    question = (
        f"Does acting on the {usecase.targeting.subject} the model picks bring more positives "
        "and value?"
        if usecase.is_classification
        else f"Are the model's predictions for {usecase.targeting.subject} closer to the outcome "
        "than the naive baselines, in money?"
    )
    board = (
        dash.Dashboard(f"Rollguard / {usecase.title} / Business KPIs")
        .uid(usecase_uid(BUSINESS_UID, usecase))
        .tags([TAG, "business", usecase.name])
        .description(question)
        .time("now-7d", "now")
        .refresh("5m")
        .timezone("utc")
        .with_variable(model_variable())
        .with_panel(
            text.Panel()
            .title("How to read this dashboard")
            .description("What do the figures on this page mean?")
            .mode(TextMode.MARKDOWN)
            .content(how_to_read(usecase))
            .span(24)
            .height(9)
        )
    )
    if usecase.is_classification:
        return _classification(board, usecase)
    return _regression(board, usecase)
