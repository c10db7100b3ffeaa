"""The use-case contract refuses a broken use case at load or at its first build, with one error that
names the use case, the field and the problem; the CLI turns it into one line and exit code 2."""

from __future__ import annotations

import dataclasses
import json
from datetime import date

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from rollguard.cli import app
from rollguard.settings import Settings
from rollguard.usecase import (
    FeatureSpec,
    TaskType,
    UseCaseError,
    check_declaration,
    load_usecase,
)
from usecases.cdnow import USECASE as CDNOW
from usecases.cdnow import CdnowRepurchase
from usecases.hotel import USECASE as HOTEL

CUTOFF = date(1997, 3, 3)


@pytest.fixture(scope="module")
def cdnow_rows() -> pd.DataFrame:
    history = CDNOW.load_history()
    return CDNOW.build_rows(history.records, CUTOFF, label_available=True)


def _variant(**changes: object) -> CdnowRepurchase:
    """A CDNOW use case with some declarations changed (a subclass, as a team would write one)."""
    return type("Variant", (CdnowRepurchase,), changes)()


def test_built_in_use_cases_load_through_their_entry_points() -> None:
    assert load_usecase("cdnow") is CDNOW and load_usecase("hotel") is HOTEL
    assert CDNOW.task is TaskType.BINARY_CLASSIFICATION and HOTEL.task is TaskType.REGRESSION
    assert any(f.is_categorical for f in HOTEL.features)


@pytest.mark.parametrize("name", ["cdnwo", "CDNOW", ""])
def test_a_misspelt_entry_point_names_the_registered_ones(name: str) -> None:
    with pytest.raises(UseCaseError, match=r"no use case registered.*registered: cdnow, hotel"):
        load_usecase(name)


def test_settings_refuse_an_unknown_use_case_and_the_cli_says_so_in_one_line(monkeypatch) -> None:
    with pytest.raises(UseCaseError) as caught:
        Settings(usecase="nope", _env_file=None)  # type: ignore[call-arg]
    assert caught.value.field == "ROLLGUARD_USECASE"
    monkeypatch.setenv("ROLLGUARD_USECASE", "nope")
    result = CliRunner().invoke(app, ["data", "info", "--json"])
    assert result.exit_code == 2
    body = json.loads(result.stdout)
    assert body["kind"] == "usecase" and "'nope'" in body["error"]
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("changes", "field", "problem"),
    [
        ({"task": "ranking"}, "task", "is not one of"),
        ({"scoring_unit": "session"}, "scoring_unit", "entity_at_cutoff or event"),
        ({"record_time_column": "when"}, "record_time_column", "not a column of record_schema"),
        (
            {"features": (FeatureSpec("x", "numeric", "x", 5.0, minimum=0, maximum=1),)},
            "features.x",
            "outside",
        ),
        (
            {"features": (FeatureSpec("c", "categorical", "c", "z", categories=("a", "b")),)},
            "features.c",
            "not a declared category",
        ),
        ({"model_name": ""}, "model_name", "is not declared"),
    ],
)
def test_a_malformed_declaration_is_refused_naming_the_field(
    changes: dict, field: str, problem: str
) -> None:
    with pytest.raises(UseCaseError) as caught:
        check_declaration(_variant(**changes))
    assert caught.value.field == field and problem in caught.value.problem
    assert str(caught.value).startswith("use case 'cdnow': " + field)


def test_rows_of_the_built_in_use_case_pass(cdnow_rows: pd.DataFrame) -> None:
    CDNOW.check_rows(cdnow_rows)
    assert set(cdnow_rows["customer_type"]) == {"new", "returning"}


def test_a_declared_feature_the_build_does_not_produce_is_refused(cdnow_rows) -> None:
    extra = FeatureSpec("loyalty_points", "numeric", "Points.", 3.0, minimum=0)
    broken = _variant(features=(*CDNOW.features, extra))
    with pytest.raises(UseCaseError, match="features.loyalty_points: is declared but build_rows"):
        broken.check_rows(cdnow_rows)


def test_a_wrong_dtype_is_refused(cdnow_rows) -> None:
    rows = cdnow_rows.assign(frequency=cdnow_rows["frequency"].astype(str))
    with pytest.raises(UseCaseError, match=r"features.frequency: dtype object is not numeric"):
        CDNOW.check_rows(rows)


def test_values_outside_the_declared_bounds_are_refused(cdnow_rows) -> None:
    tight = [
        dataclasses.replace(f, maximum=10.0) if f.name == "recency_days" else f
        for f in CDNOW.features
    ]
    with pytest.raises(UseCaseError, match=r"features.recency_days: value \d+ is above"):
        _variant(features=tuple(tight)).check_rows(cdnow_rows)


def test_a_label_that_does_not_fit_the_task_type_is_refused(cdnow_rows) -> None:
    rows = cdnow_rows.assign(repurchase=cdnow_rows["repurchase"].astype("float64") * 2.5)
    with pytest.raises(UseCaseError, match="does not fit binary classification"):
        CDNOW.check_rows(rows)


def test_a_missing_slice_column_is_refused(cdnow_rows) -> None:
    with pytest.raises(
        UseCaseError, match="slices.customer_type: column .customer_type. is not produced"
    ):
        CDNOW.check_rows(cdnow_rows.drop(columns="customer_type"))


def test_unknown_categories_become_missing_model_inputs() -> None:
    spec = next(f for f in HOTEL.features if f.is_categorical)
    row = {f.name: f.example for f in HOTEL.features}
    row[spec.name] = "a level nobody declared"
    frame = HOTEL.feature_frame(pd.DataFrame([row]))
    assert list(frame.columns) == list(HOTEL.feature_names)
    assert pd.isna(frame[spec.name].iloc[0])
    assert list(frame[spec.name].cat.categories) == list(spec.categories)
    assert np.isfinite(frame.select_dtypes("number").to_numpy()).all()


@pytest.mark.parametrize("name", ["cdnow", "hotel"])
def test_usecase_check_runs_the_contract_on_the_use_cases_own_data(name: str) -> None:
    result = CliRunner().invoke(app, ["usecase", "check", name, "--weeks", "5", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["ok"] and body["usecase"] == name and body["rows_checked"] > 0
    assert len(body["weeks_checked"]) == 5


def test_usecase_check_refuses_an_unknown_name_in_one_line() -> None:
    result = CliRunner().invoke(app, ["usecase", "check", "hotle"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: use case 'hotle': ROLLGUARD_USECASE: no use case registered under this name "
        "(registered: cdnow, hotel)"
    ]


def test_key_columns_must_be_typed_and_unique(cdnow_rows) -> None:
    with pytest.raises(UseCaseError, match="entity_column: customer_id has dtype object"):
        CDNOW.check_rows(cdnow_rows.assign(customer_id=cdnow_rows["customer_id"].astype(str)))
    with pytest.raises(UseCaseError, match="cutoff: has dtype object, not datetime64"):
        CDNOW.check_rows(cdnow_rows.assign(cutoff="1997-03-03"))
    with pytest.raises(UseCaseError, match="appears more than once at cutoff 1997-03-03"):
        CDNOW.check_rows(pd.concat([cdnow_rows, cdnow_rows.head(2)], ignore_index=True))


def test_infinite_features_and_labels_outside_their_bounds_are_refused(cdnow_rows) -> None:
    with pytest.raises(UseCaseError, match="features.recency_days: holds an infinite value"):
        CDNOW.check_rows(cdnow_rows.assign(recency_days=np.inf))
    history = HOTEL.load_history()
    rows = HOTEL.build_rows(history.records, date(2017, 3, 6), label_available=True)
    HOTEL.check_rows(rows)
    label = HOTEL.label.column
    with pytest.raises(UseCaseError, match=rf"label.{label}: value 5000 is above the declared"):
        HOTEL.check_rows(rows.assign(**{label: rows[label].where(rows.index > 0, 5000.0)}))


def test_a_failing_factory_is_one_clear_error(tmp_path, monkeypatch) -> None:
    package = tmp_path / "broken_factory_uc"
    package.mkdir()
    (package / "__init__.py").write_text("def make():\n    raise RuntimeError('no data dir')\n")
    dist = tmp_path / "broken_factory_uc-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-factory-uc\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text(
        "[rollguard.usecases]\nbroken = broken_factory_uc:make\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UseCaseError, match=r"entry point: broken_factory_uc:make\(\) fails: Runti"):
        load_usecase("broken")
