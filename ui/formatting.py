"""Pure formatting for the UI: API answers and :class:`ui.client.ApiError` into the sentences,
tables and chart frames the pages show. No I/O here."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from ui.client import ApiError

#: Feature descriptions shown beside the What-if sliders (same wording as the API's schema).
FEATURE_LABELS = {
    "recency_days": "Days since the last purchase",
    "tenure_days": "Days since the first purchase",
    "frequency": "Distinct purchase days",
    "n_orders": "Purchases",
    "monetary_total": "USD spent in all",
    "monetary_mean": "USD per purchase",
    "monetary_max": "Largest purchase, USD",
    "cds_total": "CDs bought",
    "cds_per_order": "CDs per purchase",
    "orders_4w": "Purchases in the last 4 weeks",
    "orders_12w": "Purchases in the last 12 weeks",
    "orders_26w": "Purchases in the last 26 weeks",
    "spend_4w": "USD in the last 4 weeks",
    "spend_12w": "USD in the last 12 weeks",
    "spend_26w": "USD in the last 26 weeks",
    "mean_gap_days": "Mean days between purchase days",
    "last_gap_days": "Days between the last two purchase days",
    "recency_ratio": "Days since last purchase / mean gap",
}


def error_message(err: ApiError, *, subject: str = "the request") -> str:
    """One Markdown paragraph saying what went wrong with ``subject`` and what to do.

    Names the configured timeout for timeouts, the API address for connection failures, each
    field and problem for validation errors, and the API's own message otherwise.
    """
    url = err.url
    if err.kind == "timeout":
        return (
            f"**Timeout**: the API at `{url}` did not answer {subject} within the configured "
            f"{err.timeout:g} s (`ROLLGUARD_UI_TIMEOUT_SECONDS`). It may be overloaded or stuck; "
            "try again, or ask the operator to check it."
        )
    if err.kind == "unreachable":
        return (
            f"**API unreachable**: nothing answers at `{url}` ({err.message}). Is "
            "`rollguard serve api` running, and is `ROLLGUARD_UI_API_URL` right?"
        )
    if err.kind == "validation":
        items = "\n".join(f"- `{d['field']}`: {d['problem']}" for d in err.details)
        return f"**Invalid input**: the API refused {subject}.\n\n{items or err.message}"
    if err.kind == "not_found":
        return f"**Not found**: {err.message}."
    if err.kind == "not_ready":
        wait = f" (the API asks to retry in {err.retry_after} s)" if err.retry_after else ""
        return f"**No model is serving yet**: {err.message}. Try again shortly{wait}."
    if err.kind == "unavailable":
        return f"**Not available right now** (HTTP {err.status}): {err.message}."
    if err.kind == "too_large":
        return (
            f"**Too large**: {err.message}. The API's limit is `ROLLGUARD_API_MAX_BODY_BYTES`; "
            "send fewer rows per request (`ROLLGUARD_UI_BATCH_ROWS`) or a smaller file."
        )
    if err.kind == "not_rollguard":
        return (
            f"**Unexpected answer**: `{url}` answered {subject} ({err.message}), but not like "
            "the Rollguard API. Check `ROLLGUARD_UI_API_URL`."
        )
    if err.kind == "server":
        return f"**The API failed** (HTTP {err.status}, `{err.error}`): {err.message}."
    return f"**Refused** (HTTP {err.status}, `{err.error}`): {err.message}."


def percent(p: float) -> str:
    """A probability in [0, 1] as a percentage with one decimal (``0.4213`` → ``42.1 %``)."""
    return f"{100 * p:.1f} %"


def customer_summary(pred: dict[str, Any]) -> str:
    """Markdown: probability, targeted or not (with rank and group size), version, cutoff."""
    score = float(pred["scores"][0])
    budget = float(pred["targeting_budget"])
    group = (
        "**In this week's targeted group**"
        if pred["targeted"]
        else "**Not in this week's targeted group**"
    )
    return (
        f"### Customer {pred['customer_id']}\n\n"
        f"Probability of buying again within the horizon: **{percent(score)}**\n\n"
        f"{group}: rank {pred['rank']:,} of {pred['n_customers']:,} customers; the top "
        f"{budget:.0%} ({pred['n_targeted']:,} customers) are targeted.\n\n"
        f"Model **{pred['model_name']}** version **{pred['model_version']}** · features from the "
        f"snapshot at cutoff {pred['cutoff']}"
    )


def contributions_frame(explanation: dict[str, Any]) -> pd.DataFrame:
    """One row per feature: ``feature``, ``contribution`` (log-odds, XGBoost ``pred_contribs``)
    and ``effect`` (``raises`` / ``lowers`` the probability), largest magnitude first (the chart
    lists features alphabetically, so each feature keeps its place from customer to customer)."""
    items = sorted(explanation["contributions"].items(), key=lambda kv: -abs(kv[1]))
    return pd.DataFrame(
        {
            "feature": [k for k, _ in items],
            "contribution": [round(float(v), 4) for _, v in items],
            "effect": ["raises" if v > 0 else "lowers" for _, v in items],
        }
    )


def explanation_note(explanation: dict[str, Any]) -> str:
    """Markdown: how to read the chart (base value + contributions = margin)."""
    return (
        f"Contributions are in log-odds: base value {explanation['base_value']:+.3f} plus the "
        "bars gives the model's margin; the probability is its logistic. Bars to the right raise "
        "the probability, bars to the left lower it."
    )


def history_frame(history: dict[str, Any]) -> pd.DataFrame:
    """The customer's purchases, newest first: ``date``, ``CDs``, ``USD``."""
    purchases = history.get("purchases") or []
    return pd.DataFrame(
        {
            "date": [p["date"] for p in purchases],
            "CDs": [int(p["number_of_cds"]) for p in purchases],
            "USD": [round(float(p["dollar_value"]), 2) for p in purchases],
        }
    )


def history_summary(history: dict[str, Any]) -> str:
    """Markdown: purchase count, totals and the first and last purchase day."""
    shown = len(history.get("purchases") or [])
    more = f" (newest {shown} shown)" if shown < history["n_purchases"] else ""
    return (
        f"**{history['n_purchases']:,} purchase{'' if history['n_purchases'] == 1 else 's'}**{more}, {history['total_cds']:,} CDs, "
        f"USD {history['total_dollars']:,.2f}; first {history['first_purchase']}, "
        f"last {history['last_purchase']}."
    )


def what_if_summary(explained: dict[str, Any]) -> str:
    """Markdown: the probability of the edited row and the version that scored it."""
    e = explained["explanations"][0]
    return (
        f"Probability of buying again within the horizon: **{percent(float(e['score']))}** · "
        f"model **{explained['model_name']}** version **{explained['model_version']}**"
    )


def model_summary(info: dict[str, Any]) -> str:
    """Markdown: the serving version, its status, when it was loaded, its run, the shadow."""
    shadow = (
        f" · challenger **{info['shadow_version']}** scored in shadow"
        if info.get("shadow_version")
        else ""
    )
    return (
        f"### Serving: {info['model_name']} version {info['model_version']}\n\n"
        f"Status **{info.get('status') or 'unknown'}** · loaded {info['loaded_at']} · "
        f"run `{info.get('run_id') or '-'}`{shadow}"
    )


def gate_frame(info: dict[str, Any], moves: list[dict[str, Any]]) -> pd.DataFrame:
    """Gate evidence of the serving version: its ``gate`` tags, then the checks of the gate
    report stored with the newest move to that version that carries one (a rollback carries
    none, so the report of the promotion is shown), one row each:
    ``evidence``, ``value``."""
    rows: list[tuple[str, str]] = [(k, v) for k, v in sorted(info.get("gate", {}).items())]
    version = info["model_version"]
    for move in moves:
        gate = move.get("evidence", {}).get("gate")
        if move["outcome"] == "moved" and move["to_version"] == version and isinstance(gate, dict):
            rows.append(("decision", f"{gate.get('outcome')} ({gate.get('reason_code')})"))
            rows += [("reason", str(r)) for r in gate.get("reasons", [])]
            if gate.get("n_rows") is not None:
                rows.append(
                    ("evaluation rows", f"{gate['n_rows']:,} ({gate.get('n_positives')} pos.)")
                )
            rows += [(f"check {c['name']}", _check_text(c)) for c in gate.get("checks", [])]
            break
    return pd.DataFrame(rows, columns=["evidence", "value"])


def _num(v: Any) -> str:
    return "-" if v is None else f"{float(v):.4g}"


def _check_text(check: dict[str, Any]) -> str:
    parts = [str(check.get("verdict", ""))]
    if check.get("value") is not None:
        parts.append(f"value {_num(check['value'])}")
    if check.get("ci_low") is not None or check.get("ci_high") is not None:
        parts.append(f"CI [{_num(check.get('ci_low'))}, {_num(check.get('ci_high'))}]")
    if check.get("threshold") is not None:
        parts.append(f"threshold {_num(check['threshold'])}")
    if check.get("detail"):
        parts.append(str(check["detail"]))
    return " · ".join(parts)


def moves_frame(history: dict[str, Any]) -> pd.DataFrame:
    """Recent champion alias moves, newest first: when, action, outcome, versions, actor, reason."""
    moves = history.get("moves") or []
    return pd.DataFrame(
        [
            {
                "when (UTC)": m["moved_at"][:19].replace("T", " "),
                "action": m["action"],
                "outcome": m["outcome"],
                "from → to": f"{m['from_version'] or '-'} → {m['to_version'] or '-'}",
                "actor": m["actor"],
                "reason": m["reason"],
            }
            for m in moves
        ],
        columns=["when (UTC)", "action", "outcome", "from → to", "actor", "reason"],
    )


def compact_json(value: Any, limit: int = 200) -> str:
    """``value`` as one line of JSON, cut at ``limit`` characters."""
    text = json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
