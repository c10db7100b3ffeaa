"""End-to-end: the real UI process in headless system Chromium (Selenium, no browser download)
against the real API process serving real models from a real MLflow server.

Screenshots of every page land in ``tests/artifacts/ui/`` (or ``$ROLLGUARD_TEST_ARTIFACTS/ui``);
the path is printed. Skips with the reason when chromium/chromedriver are absent."""

from __future__ import annotations

import json
import uuid
from datetime import date
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import pytest

from tests.support.api_models import EXAMPLE_ROW as DEFAULTS
from tests.support.api_models import (
    RATES,
    RATES_NAME,
    log_rates_version,
    rate_records,
    register_rates,
    train_rates_booster,
)
from tests.support.api_servers import start_api
from tests.support.ui_stack import (
    SlowServer,
    Stack,
    artifacts_dir,
    browser_unavailable,
    build_home,
    make_driver,
    start_ui,
    wait_until,
)
from usecases.cdnow.features import FEATURE_COLUMNS

pytestmark = pytest.mark.slow
TOKEN = "ui-browser-test-token-0123456789"


@pytest.fixture(scope="module", autouse=True)
def _browser() -> None:
    reason = browser_unavailable()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def shots() -> Path:
    path = artifacts_dir() / "ui"
    path.mkdir(parents=True, exist_ok=True)
    print(f"\nUI screenshots: {path}")
    return path


@pytest.fixture(scope="module")
def stack(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    home = tmp_path_factory.mktemp("ui-browser") / "home"
    return build_home(home, mlflow_server, f"ui-browser-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ui-browser-logs")


@pytest.fixture(scope="module")
def api(stack: Stack, logs: Path):  # type: ignore[no-untyped-def]
    server = start_api(stack.home, stack.tracking_uri, stack.model_name, logs, token=TOKEN)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ui(api, logs: Path):  # type: ignore[no-untyped-def]
    server = start_ui(api.url, logs, timeout_seconds=30)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def driver():  # type: ignore[no-untyped-def]
    d = make_driver()
    yield d
    d.quit()


def by_id(driver, elem_id: str):  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, elem_id)


def text_of(driver, elem_id: str) -> str:  # type: ignore[no-untyped-def]
    return str(by_id(driver, elem_id).text)


def chart_shown(driver, elem_id: str) -> bool:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    return any(e.is_displayed() for e in driver.find_elements(By.ID, elem_id))


def open_page(driver, url: str) -> None:  # type: ignore[no-untyped-def]
    driver.get(url)
    wait_until(lambda: by_id(driver, "score-button").is_displayed(), what="the UI page")


def open_tab(driver, name: str) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, f"//button[@role='tab' and normalize-space()='{name}']").click()


def score(driver, customer_id: int) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    field = driver.find_element(By.CSS_SELECTOR, "#entity-id input")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.DELETE)
    field.send_keys(str(customer_id))
    by_id(driver, "score-button").click()


def shot(driver, folder: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    path = folder / name
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")


def outside_requests(driver) -> list[str]:  # type: ignore[no-untyped-def]
    """URLs the page requested from anywhere but loopback (Chrome's performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            parsed = urlparse(url)
            if parsed.scheme in ("http", "https", "ws", "wss") and parsed.hostname not in (
                "127.0.0.1",
                "localhost",
            ):
                urls.append(url)
    return urls


def test_score_a_known_customer_shows_the_version(driver, ui, stack: Stack, shots: Path) -> None:  # type: ignore[no-untyped-def]
    open_page(driver, ui.url)
    score(driver, stack.known_customer)
    summary = wait_until(
        lambda: "version" in text_of(driver, "score-summary") and text_of(driver, "score-summary"),
        what="the score",
    )
    assert f"Customer {stack.known_customer}" in summary
    assert f"version {stack.champion}" in summary
    assert "targeted group" in summary and "%" in summary
    assert text_of(driver, "score-status") == ""
    chart = wait_until(lambda: "frequency" in text_of(driver, "score-chart"), what="the chart")
    assert chart
    assert "record" in text_of(driver, "history-summary")
    shot(driver, shots, "1-score-customer.png")
    assert outside_requests(driver) == []  # works offline: nothing fetched from the internet


def test_unknown_customer_gives_the_not_found_message(driver, ui, shots: Path) -> None:  # type: ignore[no-untyped-def]
    open_page(driver, ui.url)
    score(driver, 99_999_999)
    status = wait_until(
        lambda: "Not found" in text_of(driver, "score-status") and text_of(driver, "score-status"),
        what="the not-found message",
    )
    assert "99999999" in status and "snapshot" in status
    assert text_of(driver, "score-summary") == ""
    shot(driver, shots, "2-score-unknown-customer.png")


def test_what_if_predicts_the_edited_customer(driver, ui, stack: Stack, shots: Path) -> None:  # type: ignore[no-untyped-def]
    open_page(driver, ui.url)
    open_tab(driver, "What if")
    by_id(driver, "whatif-button").click()
    summary = wait_until(
        lambda: (
            "version" in text_of(driver, "whatif-summary") and text_of(driver, "whatif-summary")
        ),
        what="the what-if prediction",
    )
    assert f"version {stack.champion}" in summary and "%" in summary
    wait_until(lambda: "recency_days" in text_of(driver, "whatif-chart"), what="the chart")
    shot(driver, shots, "3-what-if.png")


def test_batch_scores_a_csv_and_lists_row_errors(  # type: ignore[no-untyped-def]
    driver, ui, shots: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    good = {n: DEFAULTS[n] for n in FEATURE_COLUMNS}
    rows = [
        {"customer_id": 1, **good},
        {"customer_id": 2, **good, "orders_4w": -2},
        {"customer_id": 3, **good, "recency_days": "n/a"},
        {"customer_id": 4, **good, "recency_days": 200},
    ]
    path = tmp_path / "customers.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    open_page(driver, ui.url)
    open_tab(driver, "Batch")
    driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(path))
    wait_until(lambda: "customers" in text_of(driver, "upload"), what="the upload")
    by_id(driver, "batch-button").click()
    summary = wait_until(
        lambda: "scored" in text_of(driver, "batch-summary") and text_of(driver, "batch-summary"),
        what="the batch result",
    )
    assert "2 of 4 rows scored" in summary
    errors = text_of(driver, "batch-errors")
    assert "orders_4w" in errors and "must be >= 0" in errors and "not a number" in errors
    assert "scored-customers" in text_of(driver, "scored-file")
    shot(driver, shots, "4-batch.png")


def test_model_page_shows_version_gate_evidence_and_history(  # type: ignore[no-untyped-def]
    driver, ui, stack: Stack, shots: Path
) -> None:
    open_page(driver, ui.url)
    open_tab(driver, "Model")
    summary = wait_until(
        lambda: "Serving" in text_of(driver, "model-summary") and text_of(driver, "model-summary"),
        what="the model summary",
    )
    assert f"version {stack.champion}" in summary
    moves = wait_until(
        lambda: (
            "live average precision" in text_of(driver, "moves-table")
            and text_of(driver, "moves-table")
        ),
        what="the promotion history",
    )
    assert "rollback" in moves and "promote" in moves and "bootstrap" in moves
    assert "bootstrap" in text_of(driver, "gate-table")
    shot(driver, shots, "5-model.png")


def test_stopped_api_gives_the_unreachable_message(  # type: ignore[no-untyped-def]
    driver, stack: Stack, logs: Path, shots: Path
) -> None:
    api = start_api(stack.home, stack.tracking_uri, stack.model_name, logs, token=TOKEN)
    ui = start_ui(api.url, logs, timeout_seconds=30)
    try:
        open_page(driver, ui.url)
        score(driver, stack.known_customer)
        wait_until(lambda: "version" in text_of(driver, "score-summary"), what="the score")
        api.stop()
        score(driver, stack.known_customer)
        status = wait_until(
            lambda: (
                "unreachable" in text_of(driver, "score-status") and text_of(driver, "score-status")
            ),
            what="the unreachable message",
        )
        assert api.url in status and "rollguard serve api" in status
        assert text_of(driver, "score-summary") == ""
        assert not chart_shown(driver, "score-chart")  # no stale chart beside the error
        shot(driver, shots, "6-score-api-stopped.png")
    finally:
        ui.stop()
        api.stop()


def test_slow_api_gives_the_timeout_message(driver, logs: Path, shots: Path) -> None:  # type: ignore[no-untyped-def]
    """The pages are built from the API's declarations: an API too slow to give them at start
    is a page saying so, with the configured timeout."""
    slow = SlowServer(delay=120).start()
    ui = start_ui(slow.url, logs, timeout_seconds=2)
    try:
        driver.get(ui.url)
        status = wait_until(
            lambda: (
                "Timeout" in text_of(driver, "startup-status") and text_of(driver, "startup-status")
            ),
            what="the timeout message",
        )
        assert "2 s" in status and "ROLLGUARD_UI_TIMEOUT_SECONDS" in status
        assert "/v1/usecase" in status
        shot(driver, shots, "7-score-api-timeout.png")
    finally:
        ui.stop()
        slow.stop()


# --- a regression use case with categorical features --------------------------------------------
RATES_CUTOFF = date(2017, 3, 6)


@pytest.fixture(scope="module")
def rates_ui(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory, logs: Path):  # type: ignore[no-untyped-def]
    """The API for the test fixture use case RATES (selected by ROLLGUARD_USECASE, found by its
    entry point) with a version in the real MLflow registry and a snapshot, and the UI on it."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("rates-ui")
    entry_points = register_rates(root / "site")
    name = f"rates-ui-{uuid.uuid4().hex[:8]}"
    version = log_rates_version(train_rates_booster(), name, mlflow_server)
    MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server).set_registered_model_alias(
        name, "champion", version
    )
    folder = root / "home" / "warehouse" / "features"
    folder.mkdir(parents=True)
    rows = RATES.build_rows(rate_records(), RATES_CUTOFF, label_available=True)
    rows.to_parquet(folder / f"cutoff={RATES_CUTOFF}.parquet")
    repo = Path(__file__).resolve().parents[2]
    api = start_api(
        root / "home",
        mlflow_server,
        name,
        logs,
        token=TOKEN,
        ROLLGUARD_USECASE=RATES_NAME,
        PYTHONPATH=f"{repo}:{entry_points}",
    )
    ui = start_ui(api.url, logs, timeout_seconds=30)
    ui.booking = int(rows["booking_id"].iloc[3])  # type: ignore[attr-defined]
    yield ui
    ui.stop()
    api.stop()


def test_regression_use_case_pages(driver, rates_ui, shots: Path) -> None:  # type: ignore[no-untyped-def]
    """The pages of a regression use case with categorical features: wording, the booking
    score with its realized rate, and the what-if form of numbers and dropdowns."""
    open_page(driver, rates_ui.url)
    assert "Room rates (test fixture)" in text_of(driver, "header")
    score(driver, rates_ui.booking)
    summary = wait_until(
        lambda: "version" in text_of(driver, "score-summary") and text_of(driver, "score-summary"),
        what="the booking score",
    )
    assert f"Booking {rates_ui.booking}" in summary and "EUR" in summary
    assert "Realized rate" in summary and "targeted" not in summary
    wait_until(lambda: "segment" in text_of(driver, "score-chart"), what="the chart")
    shot(driver, shots, "8-regression-score.png")

    open_tab(driver, "What if")
    assert "Levels: online, offline, corporate, groups" in text_of(driver, "whatif-segment")
    assert "Range [1, 30]" in text_of(driver, "whatif-nights")
    by_id(driver, "whatif-button").click()
    what = wait_until(
        lambda: (
            "version" in text_of(driver, "whatif-summary") and text_of(driver, "whatif-summary")
        ),
        what="the what-if prediction",
    )
    assert "Predicted rate (EUR)" in what and "%" not in what
    shot(driver, shots, "9-regression-what-if.png")
    assert outside_requests(driver) == []
