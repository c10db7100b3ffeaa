"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) render in headless system Chromium with every
host but the server's own cut off (an air-gapped deployment), and the browser requests nothing
from another origin. Skips with the reason when chromium/chromedriver are absent."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.support.api_servers import start_api
from tests.support.ui_stack import browser_unavailable, make_driver, wait_until

pytestmark = pytest.mark.slow

#: Every name resolves to nothing except loopback: a CDN request would fail, and the page be blank.
OFFLINE = ("--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",)


@pytest.fixture(scope="module")
def api(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    reason = browser_unavailable()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("docs-offline")
    server = start_api(
        root / "home",
        mlflow_server,
        f"docs-offline-{uuid.uuid4().hex[:8]}",  # no champion needed for the docs
        root / "logs",
        token="docs-offline-token-0123456789",
        ready_path="/healthz",
    )
    yield server
    server.stop()


def _requested_urls(driver) -> list[str]:  # type: ignore[no-untyped-def]
    """URLs the browser asked for; those its Content-Security-Policy stopped before any request
    (``blockedReason`` ``csp``) are left out: they never left the browser."""
    sent, blocked = {}, set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message.get("method") == "Network.requestWillBeSent":
            sent[params["requestId"]] = params["request"]["url"]
        elif (
            message.get("method") == "Network.loadingFailed"
            and params.get("blockedReason") == "csp"
        ):
            blocked.add(params["requestId"])
    return [url for rid, url in sent.items() if rid not in blocked]


@pytest.mark.parametrize(
    ("page", "rendered"),
    [
        ("/docs", "document.querySelectorAll('.swagger-ui .opblock').length"),
        ("/redoc", "document.querySelectorAll('.api-content h2').length"),
    ],
)
def test_docs_render_without_any_outside_host(
    api, page: str, rendered: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    driver = make_driver(extra_args=OFFLINE)
    try:
        driver.get(api.url + page)
        wait_until(
            lambda: driver.execute_script(f"return {rendered}") > 3,
            timeout=60,
            what=f"{page} to render its operations",
        )
        assert "Rollguard model server" in driver.page_source
        urls = _requested_urls(driver)
        assert any(u.startswith(api.url + "/docs-assets/") for u in urls), urls
        outside = [u for u in urls if not u.startswith((api.url, "data:", "blob:", "about:"))]
        assert not outside, outside
    finally:
        driver.quit()
