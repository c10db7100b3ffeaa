"""What a new user's attack on the serving API found (issue 20), each against the real model server
(uvicorn, ``python -m api``) and a real MLflow tracking server on loopback:

- ``X-Request-ID``: the client's when valid, a new one otherwise, on every response;
- ``/docs`` and ``/redoc`` load only files the server itself serves;
- duplicate keys in a JSON row are a 422 naming the key;
- 422 messages in Rollguard's own words (a hypothesis fuzz over bodies, paths and queries).
"""

from __future__ import annotations

import json
import re
import uuid
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, urlparse

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.api_models import (
    EXAMPLE_ROW,
    cdnow_features,
    log_registered_version,
    train_booster,
)
from tests.support.api_servers import start_api, wait_for

TOKEN = "findings-admin-token-0123456789"
HEX32 = re.compile(r"[0-9a-f]{32}")


class Api:
    def __init__(self, server, name: str, tracking: str, home: Path) -> None:  # type: ignore[no-untyped-def]
        self.server, self.name, self.tracking, self.home = server, name, tracking, home
        self.url: str = server.url


@pytest.fixture(scope="module")
def api(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    name = f"findings-{uuid.uuid4().hex[:8]}"
    version = log_registered_version(train_booster(seed=1, rounds=5), name, mlflow_server)
    MlflowClient(mlflow_server, mlflow_server).set_registered_model_alias(name, "champion", version)
    root = tmp_path_factory.mktemp("findings")
    features = root / "home" / "warehouse" / "features"
    features.mkdir(parents=True)
    frame = cdnow_features()
    frame[frame["cutoff"] == frame["cutoff"].max()].to_parquet(
        features / "cutoff=1997-06-02.parquet"
    )
    server = start_api(
        root / "home",
        mlflow_server,
        name,
        root / "logs",
        token=TOKEN,
        ROLLGUARD_API_MAX_BODY_BYTES="100000",
    )
    yield Api(server, name, mlflow_server, root / "home")
    server.stop()
    if getattr(server, "failed", False):
        print(server.log_tail())


def _known_customer() -> int:
    return int(cdnow_features()["customer_id"].iloc[0])


def _requests(api: Api) -> list[tuple[str, str, dict]]:
    """(method, path, httpx keyword arguments): successes and every kind of error."""
    known = _known_customer()
    good = {"rows": [EXAMPLE_ROW]}
    return [
        ("GET", "/healthz", {}),
        ("GET", "/readyz", {}),
        ("GET", "/v1/model", {}),
        ("GET", "/v1/model/history", {}),
        ("GET", "/v1/usecase", {}),
        ("GET", f"/v1/customers/{known}/prediction", {}),
        ("GET", f"/v1/customers/{known}/history", {}),  # 200, or 404/503 without records
        ("GET", "/metrics", {}),
        ("GET", "/openapi.json", {}),
        ("GET", "/docs", {}),
        ("GET", "/docs-assets/swagger-ui.css", {}),
        ("POST", "/v1/predict", {"json": good}),
        ("POST", "/v1/explain", {"json": good}),
        ("GET", "/no/such/path", {}),  # 404
        ("DELETE", "/v1/predict", {}),  # 405
        ("POST", "/v1/predict", {"json": {"rows": [{"recency_days": "x"}]}}),  # 422
        ("GET", "/v1/customers/99999999999999999999999/prediction", {}),  # 422
        ("POST", "/v1/predict", {"content": b"x" * 100_001, "headers": {}}),  # 413
        ("POST", "/v1/predict", {"content": b"{}", "headers": {"content-type": "text/plain"}}),
        ("POST", "/v1/admin/reload", {}),  # 401
    ]


def _send(client: httpx.Client, method: str, path: str, kwargs: dict, rid: str | None):  # type: ignore[no-untyped-def]
    kwargs = dict(kwargs)
    headers = dict(kwargs.pop("headers", None) or {})
    if rid is not None:
        headers["X-Request-ID"] = rid
    return client.request(method, path, headers=headers, **kwargs)


def _check_body_agrees(response: httpx.Response, expected: str) -> None:
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        if isinstance(body, dict) and "request_id" in body:
            assert body["request_id"] == expected, (response.request.url, body)


def test_request_id_is_passed_through_when_valid_on_every_response(api: Api) -> None:
    statuses = set()
    with httpx.Client(base_url=api.url, timeout=30) as client:
        for method, path, kwargs in _requests(api):
            given_id = f"client-{uuid.uuid4().hex[:12]}.a:b_c"
            r = _send(client, method, path, kwargs, given_id)
            statuses.add(r.status_code)
            assert r.headers.get("x-request-id") == given_id, (method, path, r.status_code)
            _check_body_agrees(r, given_id)
    assert {200, 401, 404, 405, 413, 415, 422} <= statuses, statuses


@pytest.mark.parametrize(
    "bad",
    [None, "", "has space", "x" * 65, "semi;colon", 'quote"d', "ünïcode", "a/b"],
    ids=["absent", "empty", "space", "65-chars", "semicolon", "quote", "non-ascii", "slash"],
)
def test_request_id_is_generated_when_absent_or_invalid(api: Api, bad: str | None) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as client:
        for method, path, kwargs in _requests(api):
            if bad is not None and not bad.isascii():
                # httpx refuses non-ASCII header values: send the raw bytes.
                kwargs = {**kwargs, "headers": {**(kwargs.get("headers") or {})}}
                r = client.request(
                    method,
                    path,
                    headers=[("X-Request-ID", bad.encode())],
                    **{k: v for k, v in kwargs.items() if k != "headers"},
                )
            else:
                r = _send(client, method, path, kwargs, bad)
            rid = r.headers.get("x-request-id", "")
            assert HEX32.fullmatch(rid), (method, path, r.status_code, rid)
            assert rid != bad
            _check_body_agrees(r, rid)


def test_a_64_character_id_is_kept_and_logged_with_the_predictions(api: Api) -> None:
    from sqlalchemy import select

    from rollguard.db.models import PredictionLogRow
    from rollguard.settings import Settings
    from rollguard.store import open_store

    rid = "Z" * 40 + uuid.uuid4().hex[:24]
    r = httpx.post(
        api.url + "/v1/predict", json={"rows": [EXAMPLE_ROW] * 2}, headers={"X-Request-ID": rid}
    )
    assert r.status_code == 200
    assert r.headers["x-request-id"] == rid and r.json()["request_id"] == rid
    engine = open_store(Settings(home=api.home))

    def logged() -> list[int]:
        with engine.connect() as conn:
            rows = conn.execute(
                select(PredictionLogRow.row_index).where(PredictionLogRow.request_id == rid)
            )
            return sorted(row[0] for row in rows)

    wait_for(lambda: logged() == [0, 1], timeout=30, what="the prediction log rows")


# --- /docs and /redoc without any outside request -------------------------------------------------


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_files_the_server_serves(api: Api, page: str) -> None:
    r = httpx.get(api.url + page)
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    # The browser is told so too: nothing from another origin (a logo in ReDoc's menu would be).
    assert "default-src 'self'" in r.headers["content-security-policy"]
    parser = _Refs()
    parser.feed(r.text)
    # URLs in script text too (Swagger UI's configuration names the OpenAPI document).
    in_scripts = re.findall(r"""['"](https?://[^'"]+|//[^'"]+)['"]""", r.text)
    assert not in_scripts, in_scripts
    assert parser.urls, r.text
    for url in parser.urls:
        parsed = urlparse(url)
        assert not parsed.scheme and not parsed.netloc, url
        assert httpx.get(api.url + url).status_code == 200, url
    assert "/openapi.json" in r.text


# --- duplicate keys -------------------------------------------------------------------------------


def _row_text(row: dict, duplicate: str | None = None, value: float = 1.0) -> str:
    text = json.dumps(row)
    if duplicate is not None:
        text = text[:-1] + f', "{duplicate}": {value}' + "}"
    return text


def test_duplicate_keys_are_a_422_naming_the_key(api: Api) -> None:
    rows = [_row_text(EXAMPLE_ROW)] * 3 + [_row_text(EXAMPLE_ROW, "recency_days", 999.0)]
    body = '{"rows": [' + ", ".join(rows) + "]}"
    r = httpx.post(
        api.url + "/v1/predict", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert r.json()["details"] == [
        {
            "field": "rows.3.recency_days",
            "problem": "duplicate key: it appears more than once in this object",
        }
    ]
    # The envelope's own key, twice: named too (a client's bug would score the second list).
    body = '{"rows": [' + rows[0] + '], "rows": [' + rows[0] + "]}"
    r = httpx.post(
        api.url + "/v1/explain", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert {
        "field": "rows",
        "problem": "duplicate key: it appears more than once in this object",
    } in r.json()["details"]
    # The same value twice is still a duplicate; a ':' inside no string keeps the fast path exact.
    same = '{"rows": [' + _row_text(EXAMPLE_ROW, "frequency", EXAMPLE_ROW["frequency"]) + "]}"
    r = httpx.post(
        api.url + "/v1/predict", content=same, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "rows.0.frequency"
    ok = httpx.post(
        api.url + "/v1/predict",
        content='{"rows": [' + rows[0] + "]}",
        headers={"content-type": "application/json"},
    )
    assert ok.status_code == 200


# --- 422 messages in Rollguard's words -----------------------------------------------------------

LEAKS = re.compile(
    r"Input should|sys\.|Envelope|PredictRequest|FeatureRow|pydantic|errors\.pydantic|"
    r"4611686018427387904|\[type=|dictionary or instance|Traceback",
    re.IGNORECASE,
)


def _assert_own_words(r: httpx.Response) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        text = r.text
        assert not LEAKS.search(text), text[:500]


def test_the_reported_messages_are_in_rollguards_words(api: Api) -> None:
    post = lambda body: httpx.post(  # noqa: E731
        api.url + "/v1/predict", content=body, headers={"content-type": "application/json"}
    )
    r = post(b"[]")
    assert r.status_code == 422
    assert r.json()["details"] == [
        {"field": "body", "problem": "must be a JSON object with a 'rows' list"}
    ]
    r = post(b'{"rows": [{"recency_days": ' + b"9" * 5000 + b"}]}")
    assert r.status_code == 422 and "too many digits" in r.text
    _assert_own_words(r)
    r = httpx.get(api.url + "/v1/customers/99999999999999999999999/prediction")
    assert r.json()["details"] == [{"field": "customer_id", "problem": "number too large"}]
    for bad in (
        b'"rows"',
        b"1",
        b"null",
        b'{"rows": {}}',
        b'{"rows": [[]]}',
        b'{"rows": [1]}',
        b'{"rows": [{"recency_days": true}]}',
        b'{"rows": []}',
    ):
        _assert_own_words(post(bad))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from([*EXAMPLE_ROW, "rows", "x"]), inner, max_size=5)
    ),
    max_leaves=20,
)
_bodies = st.one_of(
    _json.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["rows", "x"]), _json, max_size=2).map(
        lambda v: json.dumps(v).encode()
    ),
    st.lists(
        st.dictionaries(st.sampled_from(list(EXAMPLE_ROW)), _json, max_size=20), max_size=3
    ).map(lambda rows: json.dumps({"rows": rows}).encode()),
    st.binary(max_size=40),
    # Integer literals longer than Python's 4,300-digit conversion limit.
    st.integers(min_value=4000, max_value=4600).map(lambda n: b'{"rows": [' + b"7" * n + b"]}"),
)
_params = st.one_of(st.integers(), st.text(max_size=30), st.floats().map(str), st.just("9" * 5000))


def test_fuzzed_requests_get_messages_in_rollguards_words(api: Api) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as client:

        @settings(
            max_examples=150,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(body=_bodies, route=st.sampled_from(["/v1/predict", "/v1/explain"]))
        def bodies(body: bytes, route: str) -> None:
            _assert_own_words(
                client.post(route, content=body, headers={"content-type": "application/json"})
            )

        @settings(
            max_examples=100,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(value=_params, where=st.sampled_from(["id", "limit", "history-limit", "cutoff"]))
        def params(value: object, where: str) -> None:
            text = str(value)
            path = {
                "id": ("/v1/customers/{}/prediction", None),
                "limit": ("/v1/model/history", "limit"),
                "history-limit": (f"/v1/customers/{_known_customer()}/history", "limit"),
                "cutoff": (f"/v1/customers/{_known_customer()}/prediction", "cutoff"),
            }[where]
            if path[1] is None:
                url, params_ = path[0].format(quote(text, safe="") or "x"), None
            else:
                url, params_ = path[0], {path[1]: text}
            _assert_own_words(client.get(url, params=params_))

        bodies()
        params()
