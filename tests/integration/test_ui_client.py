"""The UI's API client and page logic against a real API process (real MLflow server, real
models, real warehouse), a stopped API, and a real slow HTTP server on loopback."""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd
import pytest

from api.schemas import api_contract
from tests.support.api_models import CDNOW
from tests.support.api_servers import start_api
from tests.support.servers import free_port
from tests.support.ui_stack import SlowServer, Stack, build_home
from ui import app as pages
from ui.batch import score_csv
from ui.client import ApiError, RollguardClient
from ui.formatting import UseCaseView, error_message
from usecases.cdnow.features import FEATURE_COLUMNS

TOKEN = "ui-client-test-token-0123456789"


@pytest.fixture(scope="module")
def stack(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    home = tmp_path_factory.mktemp("ui-client") / "home"
    return build_home(home, mlflow_server, f"ui-client-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def api(stack: Stack, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    logs = tmp_path_factory.mktemp("ui-client-logs")
    server = start_api(
        stack.home,
        stack.tracking_uri,
        stack.model_name,
        logs,
        token=TOKEN,
        ROLLGUARD_API_MAX_BODY_BYTES="20000",
    )
    yield server
    server.stop()


@pytest.fixture
def client(api):  # type: ignore[no-untyped-def]
    c = RollguardClient(api.url, timeout=30)
    yield c
    c.close()


@pytest.fixture
def view(client: RollguardClient) -> UseCaseView:
    """The pages' wording and form, from the real API's GET /v1/usecase."""
    return pages.load_view(client)


#: The CDNOW view for clients whose API never answers (stopped, slow).
OFFLINE_VIEW = UseCaseView(api_contract(CDNOW, 10).info().model_dump(mode="json"))
DEFAULTS = OFFLINE_VIEW.defaults


def test_customer_page_shows_score_targeting_version_chart_and_history(
    client: RollguardClient, view: UseCaseView, stack: Stack
) -> None:
    assert view.title == CDNOW.title and view.entity_column == "customer_id"
    page = pages.score_entity(client, view, stack.known_customer)
    assert page["status"] == ""
    assert f"Customer {stack.known_customer}" in page["summary"]
    assert f"version **{stack.champion}**" in page["summary"]
    assert "targeted group" in page["summary"] and "rank" in page["summary"]
    chart = page["chart"]
    assert set(chart["feature"]) == set(FEATURE_COLUMNS)
    assert list(chart["contribution"].abs()) == sorted(chart["contribution"].abs(), reverse=True)
    assert len(page["history"]) >= 1 and "record" in page["history_summary"]
    assert "dollar_value" in page["history"].columns and "customer_id" not in page["history"]


def test_unknown_customer_is_a_not_found_message(
    client: RollguardClient, view: UseCaseView
) -> None:
    page = pages.score_entity(client, view, 99_999_999)
    assert page["status"].startswith("**Not found**")
    assert "99999999" in page["status"] and page["summary"] == ""


def test_what_if_scores_the_edited_row_and_explains_it(
    client: RollguardClient, view: UseCaseView
) -> None:
    values = [view.defaults[n] for n in view.feature_names]
    base = pages.what_if(client, view, values)
    assert base["status"] == "" and "%" in base["summary"]
    recent = list(values)
    recent[FEATURE_COLUMNS.index("recency_days")] = 400.0
    changed = pages.what_if(client, view, recent)
    assert changed["summary"] != base["summary"]


def test_validation_errors_name_the_field_and_problem(client: RollguardClient) -> None:
    row = {n: 1.0 for n in FEATURE_COLUMNS}
    row["orders_4w"] = -3.0
    with pytest.raises(ApiError) as info:
        client.predict([row])
    assert info.value.kind == "validation" and info.value.status == 422
    text = error_message(info.value, subject="the edited customer")
    assert "`rows.0.orders_4w`: must be >= 0" in text


def test_a_body_above_the_api_limit_is_a_too_large_message(client: RollguardClient) -> None:
    rows = [{n: 1.0 for n in FEATURE_COLUMNS}] * 200  # about 80 kB > the 20 kB limit set above
    with pytest.raises(ApiError) as info:
        client.predict(rows)
    assert info.value.kind == "too_large" and info.value.status == 413
    assert "ROLLGUARD_API_MAX_BODY_BYTES" in error_message(info.value)


def test_batch_scores_valid_rows_and_reports_each_bad_row(
    client: RollguardClient, view: UseCaseView, tmp_path: Path
) -> None:
    good = {n: DEFAULTS[n] for n in FEATURE_COLUMNS}
    rows = [
        {"customer_id": "a", **good},
        {"customer_id": "b", **good, "recency_days": "soon"},  # not a number (UI)
        {"customer_id": "c", **good, "orders_4w": -1},  # negative (API)
        {"customer_id": "d", **good, "spend_4w": ""},  # missing (UI)
        {"customer_id": "e", **good, "tenure_days": 300},
    ]
    path = tmp_path / "rows.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    result = score_csv(path, client, view, chunk_rows=2)
    table = result.table
    assert list(table["customer_id"]) == ["a", "b", "c", "d", "e"]
    assert table["score"].notna().tolist() == [True, False, False, False, True]
    assert [(e.row, e.field) for e in result.errors] == [
        (2, "recency_days"),
        (3, "orders_4w"),
        (4, "spend_4w"),
    ]
    assert result.errors[1].problem == "must be >= 0"
    direct = client.predict([{**good}])["scores"][0]
    assert table["score"].iloc[0] == pytest.approx(direct)
    page = pages.batch(client, view, str(path), chunk_rows=500, out_dir=tmp_path / "out")
    assert "2 of 5 rows scored" in page["summary"]
    scored = pd.read_csv(page["file"])
    assert list(scored.columns[-3:]) == ["score", "model_version", "error"]


def test_model_page_shows_version_gate_evidence_and_rollback_reason(
    client: RollguardClient, stack: Stack
) -> None:
    page = pages.model_page(client)
    assert page["status"] == ""
    assert f"version {stack.champion}" in page["summary"]
    moves = page["moves"]
    assert list(moves["action"][:3]) == ["rollback", "promote", "bootstrap"]
    assert moves["reason"].iloc[0] == "live average precision below the gate expectation"
    assert moves["from → to"].iloc[0] == f"{stack.rolled_back} → {stack.champion}"
    gate = dict(zip(page["gate"]["evidence"], page["gate"]["value"], strict=False))
    assert gate["rollguard.gate_decision"] == "bootstrap"
    assert gate["decision"].startswith("bootstrap")
    assert any(k.startswith("check ") for k in gate)


def test_stopped_api_is_an_unreachable_message() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = RollguardClient(url, timeout=30, connect_attempts=3)
    page = pages.score_entity(client, OFFLINE_VIEW, 1)
    assert page["status"].startswith("**API unreachable**") and url in page["status"]
    model = pages.model_page(client)
    assert "API unreachable" in model["status"]


def test_slow_api_is_a_timeout_message_naming_the_configured_timeout() -> None:
    slow = SlowServer(delay=60).start()
    try:
        client = RollguardClient(slow.url, timeout=1.5)
        page = pages.score_entity(client, OFFLINE_VIEW, 1)
        assert page["status"].startswith("**Timeout**")
        assert "1.5 s" in page["status"] and "ROLLGUARD_UI_TIMEOUT_SECONDS" in page["status"]
        assert slow.requests == 1  # a read timeout is never retried
    finally:
        slow.stop()


def test_an_address_that_is_not_the_api_is_said_so(mlflow_server: str) -> None:
    client = RollguardClient(mlflow_server, timeout=10)  # a real server, but not the API
    with pytest.raises(ApiError) as info:
        client.model_info()
    assert info.value.kind == "not_rollguard"
    assert "ROLLGUARD_UI_API_URL" in error_message(info.value)


def test_api_without_a_champion_is_a_not_ready_message(stack: Stack, tmp_path: Path) -> None:
    api = start_api(
        stack.home,
        stack.tracking_uri,
        f"no-such-model-{uuid.uuid4().hex[:6]}",
        tmp_path,
        token=TOKEN,
        ready_path="/healthz",
    )
    try:
        client = RollguardClient(api.url, timeout=30)
        page = pages.score_entity(client, pages.load_view(client), stack.known_customer)
        assert page["status"].startswith("**No model is serving yet**")
        assert "retry in" in page["status"]  # the API's Retry-After header
        model = pages.model_page(client)
        assert "No model is serving yet" in model["status"]
        assert model["moves"].empty  # the history route needs no model: an empty history
    finally:
        api.stop()


def test_a_refused_connection_is_retried_until_the_api_answers(api) -> None:  # type: ignore[no-untyped-def]
    """The proxy's port refuses the first attempt; it starts forwarding to the real API before
    the second, which then succeeds."""
    from urllib.parse import urlparse

    from tests.support.api_servers import SwitchableProxy

    target = urlparse(api.url)
    proxy = SwitchableProxy(target.hostname, target.port)
    attempts: list[int] = []

    def bring_up(state) -> None:  # type: ignore[no-untyped-def]
        attempts.append(state.attempt_number)
        if len(attempts) == 1:
            proxy.up()

    client = RollguardClient(proxy.url, timeout=30, connect_attempts=3, before_retry=bring_up)
    try:
        assert client.model_info()["model_version"]
        assert attempts == [1]
    finally:
        proxy.down()
