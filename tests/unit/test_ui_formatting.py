"""Pure formatting of the UI: messages for every API failure, summaries, tables, CSV parsing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from api.schemas import api_contract
from tests.support.api_models import CDNOW, RATES
from ui import formatting as fmt
from ui.app import score_entity, what_if
from ui.batch import BatchFileError, parse_rows, read_csv
from ui.client import ApiError, RollguardClient
from usecases.cdnow.features import FEATURE_COLUMNS

URL = "http://127.0.0.1:8000"
#: What GET /v1/usecase answers for CDNOW and for the regression fixture.
VIEW = fmt.UseCaseView(api_contract(CDNOW, 10).info().model_dump(mode="json"))
RATES_VIEW = fmt.UseCaseView(api_contract(RATES, 10).info().model_dump(mode="json"))
DEFAULTS = VIEW.defaults


def err(kind: str, message: str = "m", **kw: object) -> ApiError:
    return ApiError(kind, message, URL, 12.5, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (err("timeout"), ["**Timeout**", "12.5 s", "ROLLGUARD_UI_TIMEOUT_SECONDS", URL]),
        (err("unreachable", "Connection refused"), ["**API unreachable**", URL, "refused"]),
        (
            err(
                "validation",
                details=[{"field": "rows.0.orders_4w", "problem": "must be >= 0"}],
            ),
            ["**Invalid input**", "`rows.0.orders_4w`: must be >= 0"],
        ),
        (err("not_found", "customer 7 is not in the snapshot"), ["**Not found**", "customer 7"]),
        (
            err("not_ready", "no model is serving yet", retry_after="5"),
            ["**No model is serving yet**", "retry in 5 s"],
        ),
        (err("too_large", "body too large", status=413), ["**Too large**", "MAX_BODY_BYTES"]),
        (err("unavailable", "no snapshot", status=503), ["**Not available right now**", "503"]),
        (err("not_rollguard", "HTTP 404"), ["**Unexpected answer**", "ROLLGUARD_UI_API_URL"]),
        (err("server", "boom", status=500, error="internal_error"), ["**The API failed**", "500"]),
        (err("http", "nope", status=405, error="x"), ["**Refused**", "405"]),
    ],
)
def test_every_failure_kind_has_its_own_clear_message(error: ApiError, expected: list[str]) -> None:
    text = fmt.error_message(error, subject="the score")
    for part in expected:
        assert part in text


def test_customer_summary_says_probability_group_rank_and_version() -> None:
    pred = {
        "customer_id": 42,
        "scores": [0.4213],
        "targeted": True,
        "rank": 12,
        "n_customers": 23570,
        "n_targeted": 2357,
        "targeting_budget": 0.1,
        "model_name": "cdnow-repurchase",
        "model_version": "3",
        "cutoff": "1997-03-31",
    }
    text = fmt.entity_summary(pred, VIEW)
    assert "### Customer 42" in text
    assert "42.1 %" in text and "**In this week's targeted group**" in text
    assert "rank 12 of 23,570" in text and "2,357 customers" in text and "10%" in text
    assert "version **3**" in text and "1997-03-31" in text
    assert "Not in this week" in fmt.entity_summary({**pred, "targeted": False}, VIEW)


def test_regression_summary_gives_the_value_in_its_unit_and_the_realized_label() -> None:
    pred = {
        "booking_id": 7,
        "scores": [123.456],
        "label_available": True,
        "rate": 120.0,
        "model_name": "rates",
        "model_version": "2",
        "cutoff": "2017-03-06",
        "warnings": [],
    }
    text = fmt.entity_summary(pred, RATES_VIEW)
    assert "### Booking 7" in text and "Predicted rate (EUR): **123.46 EUR**" in text
    assert "Realized rate: **120.00 EUR**" in text and "targeted" not in text
    pending = fmt.entity_summary({**pred, "label_available": False, "rate": None}, RATES_VIEW)
    assert "not known yet" in pending
    note = fmt.explanation_note({"base_value": 100.0}, RATES_VIEW)
    assert "in EUR" in note and "log-odds" not in note


def test_contributions_are_ordered_by_magnitude_with_their_effect() -> None:
    frame = fmt.contributions_frame(
        {"contributions": {"a": 0.1, "b": -0.5, "c": 0.3}, "base_value": -2.0, "score": 0.2}
    )
    assert list(frame["feature"]) == ["b", "c", "a"]
    assert list(frame["effect"]) == ["lowers", "raises", "raises"]


def test_history_summary_counts_and_notes_a_cut_list() -> None:
    history = {
        "customer_id": 9,
        "n_records": 3,
        "totals": {"number_of_cds": 6.0, "dollar_value": 82.2},
        "first": "1997-01-01",
        "last": "1997-02-04",
        "records": [
            {
                "transaction_id": 5,
                "customer_id": 9,
                "date": "1997-02-04",
                "number_of_cds": 3,
                "dollar_value": 38.9,
            }
        ],
    }
    text = fmt.history_summary(history)
    assert "**3 records** (newest 1 shown)" in text
    assert "totals: number_of_cds 6, dollar_value 82.20;" in text
    assert list(fmt.history_frame(history, VIEW).columns) == [
        "transaction_id",
        "date",
        "number_of_cds",
        "dollar_value",
    ]
    one = {**history, "n_records": 1}
    assert "**1 record**;" in fmt.history_summary(one)


def test_gate_evidence_comes_from_the_newest_move_with_a_gate_report() -> None:
    info = {"model_version": "1", "gate": {"rollguard.gate_decision": "bootstrap"}}
    moves = [
        {"outcome": "moved", "to_version": "1", "evidence": {}},  # the rollback: no report
        {"outcome": "moved", "to_version": "2", "evidence": {"gate": {"outcome": "promote"}}},
        {
            "outcome": "moved",
            "to_version": "1",
            "evidence": {
                "gate": {
                    "outcome": "bootstrap",
                    "reason_code": "no_champion",
                    "reasons": ["no champion yet"],
                    "n_rows": 100,
                    "n_positives": 9,
                    "checks": [{"name": "evidence", "verdict": "pass", "value": 100}],
                }
            },
        },
    ]
    rows = dict(fmt.gate_frame(info, moves).itertuples(index=False))
    assert rows["decision"] == "bootstrap (no_champion)"
    assert rows["reason"] == "no champion yet"
    assert rows["check evidence"] == "pass · value 100"
    assert rows["rollguard.gate_decision"] == "bootstrap"


def test_csv_parsing_reports_each_bad_cell_and_keeps_good_rows(tmp_path: Path) -> None:
    good = {n: 1.0 for n in FEATURE_COLUMNS}
    rows = [
        good,
        {**good, "frequency": "many"},
        {**good, "cds_total": ""},
        {**good, "n_orders": "inf"},
    ]
    path = tmp_path / "x.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    parsed, errors = parse_rows(read_csv(path, VIEW), VIEW)
    assert sorted(parsed) == [0]
    assert [(e.row, e.field, e.problem) for e in errors] == [
        (2, "frequency", "not a number: 'many'"),
        (3, "cds_total", "missing value"),
        (4, "n_orders", "must be a finite number"),
    ]


def test_unusable_files_are_refused_with_the_reason(tmp_path: Path) -> None:
    missing = tmp_path / "missing.csv"
    missing.write_text("customer_id,recency_days\n1,2\n")
    with pytest.raises(
        BatchFileError, match="feature columns missing from the header: tenure_days"
    ):
        read_csv(missing, VIEW)
    empty = tmp_path / "empty.csv"
    empty.write_text(",".join(FEATURE_COLUMNS) + "\n")
    with pytest.raises(BatchFileError, match="no data rows"):
        read_csv(empty, VIEW)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(BatchFileError, match="not a readable CSV"):
        read_csv(binary, VIEW)


def test_categorical_cells_are_sent_as_text(tmp_path: Path) -> None:
    path = tmp_path / "rates.csv"
    path.write_text("booking_id,nights,lead_days,segment,meal\n1,2,30,online,HB\n2,3,,groups,BB\n")
    parsed, errors = parse_rows(read_csv(path, RATES_VIEW), RATES_VIEW)
    assert parsed == {0: {"nights": 2.0, "lead_days": 30.0, "segment": "online", "meal": "HB"}}
    assert [(e.row, e.field, e.problem) for e in errors] == [(2, "lead_days", "missing value")]


def test_form_hints_carry_units_bounds_and_levels() -> None:
    nights = next(f for f in RATES_VIEW.features if f["name"] == "nights")
    assert RATES_VIEW.feature_info(nights) == "Nights booked. Unit: nights. Range [1, 30]."
    meal = next(f for f in RATES_VIEW.features if f["name"] == "meal")
    assert RATES_VIEW.feature_info(meal).endswith("Levels: BB, HB, FB.")
    assert VIEW.defaults == {f.name: f.example for f in CDNOW.features}


def test_invalid_page_inputs_never_reach_the_api() -> None:
    client = RollguardClient("http://127.0.0.1:9", timeout=1)  # nothing listens on port 9
    assert score_entity(client, VIEW, None)["status"].startswith("**Invalid input**")
    assert score_entity(client, VIEW, -1)["status"].startswith("**Invalid input**")
    assert "customer_id" in score_entity(client, VIEW, 1.5)["status"]
    values: list[object] = [DEFAULTS[n] for n in FEATURE_COLUMNS]
    values[0] = None
    assert "recency_days" in what_if(client, VIEW, values)["status"]
    rates: list[object] = [RATES_VIEW.defaults[n] for n in RATES_VIEW.feature_names]
    rates[2] = ""
    assert "segment" in what_if(client, RATES_VIEW, rates)["status"]
