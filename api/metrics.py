"""Prometheus metrics of the model server.

Process model: **one server process per container** (``uvicorn --workers 1``; scale out with
replicas that Prometheus scrapes one by one, as docs/design.md "Beyond one machine" says). We chose this
over prometheus-client's multiprocess mode because (1) every worker would hold its own model and
hot-swap on its own schedule, so "the serving version" would not be one value; (2) multiprocess
mode cannot export per-process gauges such as ``rollguard_model_info`` without a live-sum/max mode
per gauge and a shared, cleaned-up ``PROMETHEUS_MULTIPROC_DIR``; (3) the prediction-log writer and
its spool file are per process. ``rollguard serve api`` starts exactly one worker, and
:func:`api.app.create_app` refuses to start when ``WEB_CONCURRENCY`` or
``PROMETHEUS_MULTIPROC_DIR`` asks for several workers (see :func:`check_single_process`).

Every label value comes from a bounded set: route templates (or ``unmatched``), HTTP methods (or
``other``), status codes, registered-model versions, reload outcomes, error reasons, the one served model name, the champion-missing reasons, and API key ids (bounded by the keys in the store; keys not in the store are counted as ``unknown``). The live
signals of :mod:`api.live` are a collector in the same registry (labels: version, feature).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Status recorded for a request whose client hung up before it was answered (nginx's 499
#: "client closed request"): not a server error, so not a 5xx in the error-ratio alert.
CLIENT_CLOSED_REQUEST = 499
#: Route label for requests that match no route (one series however many unknown paths arrive).
UNMATCHED = "unmatched"
#: Methods kept as label values; anything else is counted as ``other``.
KNOWN_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
#: Reload outcomes (``rollguard_model_reloads_total{outcome}``).
RELOAD_OUTCOMES = ("swapped", "refused", "registry_error")
#: Why the champion cannot be confirmed (``rollguard_champion_missing{model,reason}``).
CHAMPION_MISSING_REASONS = ("alias_missing", "version_missing", "registry_unreachable")
#: Prediction error reasons (``rollguard_prediction_errors_total{reason}``).
ERROR_REASONS = ("not_ready", "non_finite_score", "internal")

# Latency buckets in seconds: the p99 target is 10 ms, so resolution is finest below it.
_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class MultipleWorkersError(RuntimeError):
    """The server was asked to run several worker processes in one container."""


def check_single_process(environ: dict[str, str] | None = None) -> None:
    """Refuse a multi-worker setup (see the module docstring for why).

    Raises:
        MultipleWorkersError: ``WEB_CONCURRENCY`` > 1 or ``PROMETHEUS_MULTIPROC_DIR`` is set.
    """
    env = os.environ if environ is None else environ
    workers = env.get("WEB_CONCURRENCY", "1").strip() or "1"
    if workers != "1" or env.get("PROMETHEUS_MULTIPROC_DIR"):
        raise MultipleWorkersError(
            "the Rollguard API runs one process per container (WEB_CONCURRENCY=1, no "
            "PROMETHEUS_MULTIPROC_DIR); scale out with more containers instead"
        )


@dataclass(frozen=True)
class ServingMetrics:
    """The metric objects of one server, in their own registry (so tests can build many apps)."""

    registry: CollectorRegistry
    http_requests: Counter
    http_duration: Histogram
    predictions: Counter
    prediction_errors: Counter
    model_ready: Gauge
    model_info: Gauge
    model_reloads: Counter
    registry_up: Gauge
    champion_missing: Gauge
    champion_unaudited_move: Gauge
    log_queue_rows: Gauge
    log_spooled_rows: Counter
    log_dropped_rows: Counter
    log_written_rows: Counter
    live_errors: Counter
    requests_by_key: Counter

    @classmethod
    def create(cls) -> ServingMetrics:
        """New metrics in a fresh :class:`CollectorRegistry`."""
        r = CollectorRegistry(auto_describe=True)
        m = cls(
            registry=r,
            http_requests=Counter(
                "rollguard_http_requests_total",
                "HTTP requests answered, by route template, method and status code.",
                ["route", "method", "status"],
                registry=r,
            ),
            http_duration=Histogram(
                "rollguard_http_request_duration_seconds",
                "Time from request start to the last response byte, seconds, by route template.",
                ["route"],
                buckets=_BUCKETS,
                registry=r,
            ),
            predictions=Counter(
                "rollguard_predictions_total",
                "Feature rows scored, by the model version that scored them.",
                ["model_version"],
                registry=r,
            ),
            prediction_errors=Counter(
                "rollguard_prediction_errors_total",
                "Predict/explain requests that failed on the server side, by reason.",
                ["reason"],
                registry=r,
            ),
            model_ready=Gauge(
                "rollguard_model_ready",
                "1 when a champion model is loaded and serving.",
                registry=r,
            ),
            model_info=Gauge(
                "rollguard_model_info",
                "1 for the version serving now (one series at a time).",
                ["version"],
                registry=r,
            ),
            model_reloads=Counter(
                "rollguard_model_reloads_total",
                "Attempts to load a new champion version, by outcome.",
                ["outcome"],
                registry=r,
            ),
            registry_up=Gauge(
                "rollguard_registry_up",
                "1 when the last call to the MLflow registry succeeded, else 0.",
                registry=r,
            ),
            champion_missing=Gauge(
                "rollguard_champion_missing",
                "1 while the champion alias of the model cannot be confirmed, by reason "
                "(alias_missing, version_missing, registry_unreachable); 0 otherwise. The "
                "loaded version, if any, keeps serving.",
                ["model", "reason"],
                registry=r,
            ),
            champion_unaudited_move=Gauge(
                "rollguard_champion_unaudited_move",
                "1 while the champion alias points at a version that no Rollguard alias_audit "
                "row moved it to (a move made outside Rollguard's compare-and-set); else 0.",
                ["model"],
                registry=r,
            ),
            log_queue_rows=Gauge(
                "rollguard_prediction_log_queue_rows",
                "Prediction-log rows waiting in memory for the writer.",
                registry=r,
            ),
            log_spooled_rows=Counter(
                "rollguard_prediction_log_spooled_rows",
                "Prediction-log rows written to the local spool file because the store was down "
                "or the queue full.",
                registry=r,
            ),
            log_dropped_rows=Counter(
                "rollguard_prediction_log_dropped_rows",
                "Prediction-log rows lost (store down and spool file not writable).",
                registry=r,
            ),
            log_written_rows=Counter(
                "rollguard_prediction_log_written_rows",
                "Prediction-log rows written to the monitoring store (including replays).",
                registry=r,
            ),
            live_errors=Counter(
                "rollguard_live_errors_total",
                "Scored requests whose live-signal observation failed (the request was answered; "
                "see api/live.py).",
                registry=r,
            ),
            requests_by_key=Counter(
                "rollguard_api_requests_by_key_total",
                "Requests to key-protected routes (predict, explain, entity routes), by API key "
                "id ('anonymous' when keys are off, 'none' without a valid-looking key, "
                "'unknown' for a key not in the store), route template and outcome "
                "(accepted, missing, malformed, unknown, revoked, rate_limited).",
                ["key_id", "route", "outcome"],
                registry=r,
            ),
        )
        for outcome in RELOAD_OUTCOMES:
            m.model_reloads.labels(outcome=outcome)
        for reason in ERROR_REASONS:
            m.prediction_errors.labels(reason=reason)
        return m
