"""Pure formatting for the UI: API answers and :class:`ui.client.ApiError` into the sentences,
tables and chart frames the pages show. No I/O here."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from ui.client import ApiError


class UseCaseView:
    """Wording and form of the pages, from the API's ``GET /v1/usecase`` answer (the UI never
    imports a use case).

    Args:
        info: the JSON of ``/v1/usecase`` (see ``api.schemas.UseCaseInfo``).
    """

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info
        self.title: str = info["title"]
        self.subject: str = info["subject"]
        self.entity_column: str = info["entity_column"]
        self.is_classification = info["task"] == "binary_classification"
        self.label: dict[str, Any] = info["label"]
        self.money_unit: str = info["value"]["unit"]
        self.contribution_unit: str = info["contribution_unit"]
        self.features: list[dict[str, Any]] = info["features"]

    @property
    def singular(self) -> str:
        """One of :attr:`subject` (``customers`` -> ``customer``)."""
        return self.subject[:-1] if self.subject.endswith("s") else self.subject

    @property
    def feature_names(self) -> list[str]:
        return [f["name"] for f in self.features]

    @property
    def defaults(self) -> dict[str, Any]:
        """The declared example value of every feature (the what-if defaults)."""
        return {f["name"]: f["example"] for f in self.features}

    def score_name(self) -> str:
        """What a score is, short: ``Probability`` or ``Predicted rate (EUR)``."""
        if self.is_classification:
            return "Probability"
        unit = f" ({self.label['unit']})" if self.label.get("unit") else ""
        return f"Predicted {self.label['column']}{unit}"

    def score_text(self, score: float) -> str:
        """A score as shown: a percentage (classification) or a value with the label's unit."""
        if self.is_classification:
            return percent(score)
        unit = f" {self.label['unit']}" if self.label.get("unit") else ""
        return f"{score:,.2f}{unit}"

    def feature_info(self, feature: dict[str, Any]) -> str:
        """The hint beside a form field: description, unit and bounds (or the levels)."""
        if feature["kind"] == "categorical":
            return f"{feature['description']} Levels: {', '.join(feature['categories'])}."
        unit = f" Unit: {feature['unit']}." if feature.get("unit") else ""
        low, high = feature.get("minimum"), feature.get("maximum")
        bounds = ""
        if low is not None or high is not None:
            bounds = f" Range [{'-inf' if low is None else f'{low:g}'}, "
            bounds += f"{'inf' if high is None else f'{high:g}'}]."
        return f"{feature['description']}{unit}{bounds}"


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
    if err.kind == "unauthorized":
        return (
            f"**Refused by the API** (HTTP {err.status}, `{err.error}`): {err.message}. The UI's "
            "key (`ROLLGUARD_API_KEY_FILE`) is missing, unknown or revoked: ask the operator."
        )
    if err.kind == "rate_limited":
        return f"**Too many requests**: {err.message}. Try again in {err.retry_after or 'a few'} s."
    if err.kind == "server":
        return f"**The API failed** (HTTP {err.status}, `{err.error}`): {err.message}."
    return f"**Refused** (HTTP {err.status}, `{err.error}`): {err.message}."


def percent(p: float) -> str:
    """A probability in [0, 1] as a percentage with one decimal (``0.4213`` → ``42.1 %``)."""
    return f"{100 * p:.1f} %"


def entity_summary(pred: dict[str, Any], view: UseCaseView) -> str:
    """Markdown: the score, what it means, targeted or not with rank and group size
    (classification) or the realized label when matured (regression), version, cutoff."""
    score = float(pred["scores"][0])
    lines = [
        f"### {view.singular.capitalize()} {pred[view.entity_column]}",
        f"{view.score_name()}: **{view.score_text(score)}** · {view.label['description']}",
    ]
    if view.is_classification and "rank" in pred:
        budget = float(pred["targeting_budget"])
        group = (
            "**In this week's targeted group**"
            if pred["targeted"]
            else "**Not in this week's targeted group**"
        )
        total = pred[f"n_{view.subject}"]
        lines.append(
            f"{group}: rank {pred['rank']:,} of {total:,} {view.subject}; the top "
            f"{budget:.0%} ({pred['n_targeted']:,} {view.subject}) are targeted."
        )
    elif not view.is_classification:
        realized = pred.get(view.label["column"])
        lines.append(
            f"Realized {view.label['column']}: **{view.score_text(float(realized))}**"
            if pred.get("label_available") and realized is not None
            else f"Realized {view.label['column']}: not known yet"
        )
    lines.append(
        f"Model **{pred['model_name']}** version **{pred['model_version']}** · features from the "
        f"snapshot at cutoff {pred['cutoff']}"
    )
    lines += [f"Warning: `{w['field']}` {w['problem']}" for w in pred.get("warnings") or []]
    return "\n\n".join(lines)


def contributions_frame(explanation: dict[str, Any]) -> pd.DataFrame:
    """One row per feature: ``feature``, ``contribution`` (XGBoost ``pred_contribs``: log-odds,
    or the label's unit) and ``effect`` (``raises`` / ``lowers`` the score), largest magnitude first (the chart
    lists features alphabetically, so each feature keeps its place from row to row)."""
    items = sorted(explanation["contributions"].items(), key=lambda kv: -abs(kv[1]))
    return pd.DataFrame(
        {
            "feature": [k for k, _ in items],
            "contribution": [round(float(v), 4) for _, v in items],
            "effect": ["raises" if v > 0 else "lowers" for _, v in items],
        }
    )


def explanation_note(explanation: dict[str, Any], view: UseCaseView) -> str:
    """Markdown: how to read the chart (base value + contributions = margin)."""
    base = float(explanation["base_value"])
    if view.is_classification:
        return (
            f"Contributions are in log-odds: base value {base:+.3f} plus the bars gives the "
            "model's margin; the probability is its logistic. Bars to the right raise the "
            "probability, bars to the left lower it."
        )
    return (
        f"Contributions are in {view.contribution_unit}: base value {base:,.2f} plus the bars "
        f"gives the predicted {view.label['column']}. Bars to the right raise it, bars to the "
        "left lower it."
    )


def history_frame(history: dict[str, Any], view: UseCaseView | None = None) -> pd.DataFrame:
    """The entity's records, newest first: the record columns but the entity key."""
    records = history.get("records") or []
    key = view.entity_column if view is not None else None
    frame = pd.DataFrame(records)
    return frame.drop(columns=[key]) if key in frame.columns else frame


def _amount(value: float) -> str:
    """``1234.5`` -> ``1,234.50``; whole numbers without decimals (``6`` -> ``6``)."""
    text = f"{float(value):,.2f}"
    return text[:-3] if text.endswith(".00") else text


def history_summary(history: dict[str, Any]) -> str:
    """Markdown: record count, totals and the first and last record day."""
    shown = len(history.get("records") or [])
    n = int(history["n_records"])
    more = f" (newest {shown} shown)" if shown < n else ""
    totals = ", ".join(f"{k} {_amount(v)}" for k, v in history["totals"].items())
    return (
        f"**{n:,} record{'' if n == 1 else 's'}**{more}"
        + (f"; totals: {totals}" if totals else "")
        + f"; first {history['first']}, last {history['last']}."
    )


def what_if_summary(explained: dict[str, Any], view: UseCaseView) -> str:
    """Markdown: the score of the edited row, the version that scored it, and any warning."""
    e = explained["explanations"][0]
    text = (
        f"{view.score_name()}: **{view.score_text(float(e['score']))}** · "
        f"model **{explained['model_name']}** version **{explained['model_version']}**"
    )
    warnings = [f"Warning: `{w['field']}` {w['problem']}" for w in explained.get("warnings") or []]
    return "\n\n".join([text, *warnings])


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
