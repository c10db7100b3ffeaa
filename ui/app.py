"""The Gradio Blocks app: four pages over the REST API (it never loads a model).

* **Score a customer** — probability, whether the customer is in this week's targeted group
  (rank and group size), the model version, a chart of per-feature contributions and the
  customer's purchase history.
* **What if** — edit the 18 features (defaults: the API's example customer; ranges cover CDNOW
  customers) and see the prediction and contributions.
* **Batch** — upload a CSV of feature rows, download it scored, with an error per refused row.
* **Model** — the serving version, its gate evidence, recent promotions and rollbacks.

Each page shows API failures as a sentence in its status box (see :func:`ui.formatting.error_message`).
The callbacks are thin: gather inputs, call :class:`ui.client.RollguardClient`, format.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

from api.schemas import EXAMPLE_ROW
from rollguard.settings import Settings
from ui import formatting as fmt
from ui.batch import BatchFileError, errors_frame, score_csv, to_csv_bytes
from ui.client import ApiError, RollguardClient
from usecases.cdnow.features import FEATURE_COLUMNS

#: What-if defaults: the API's example customer (one CDNOW row), one definition for both.
DEFAULTS: dict[str, float] = dict(EXAMPLE_ROW)

#: What-if slider ranges (maximum, step). The CDNOW log spans 546 days, so day counts stop at
#: 550; counts and USD maxima are about twice the 99.9th percentile of CDNOW feature rows
#: (measured on the 1997-05-05 and 1997-06-02 snapshots), so real customers fit.
RANGES: dict[str, tuple[float, float]] = {
    "recency_days": (550, 1),
    "tenure_days": (550, 1),
    "frequency": (60, 1),
    "n_orders": (60, 1),
    "monetary_total": (3000, 0.01),
    "monetary_mean": (600, 0.01),
    "monetary_max": (1000, 0.01),
    "cds_total": (200, 1),
    "cds_per_order": (40, 0.01),
    "orders_4w": (20, 1),
    "orders_12w": (40, 1),
    "orders_26w": (60, 1),
    "spend_4w": (1000, 0.01),
    "spend_12w": (2000, 0.01),
    "spend_26w": (3000, 0.01),
    "mean_gap_days": (550, 0.1),
    "last_gap_days": (550, 1),
    "recency_ratio": (250, 0.01),
}
assert set(DEFAULTS) == set(RANGES) == set(FEATURE_COLUMNS)

_EMPTY_CHART = pd.DataFrame(
    {
        "feature": pd.Series(dtype="object"),
        "contribution": pd.Series(dtype="float64"),
        "effect": pd.Series(dtype="object"),
    }
)
_CHART_COLORS = {"raises": "#2e7d32", "lowers": "#c62828"}


# --- page logic (plain functions over the client; the Gradio callbacks only wire them) ----------
def score_customer(client: RollguardClient, customer_id: float | None) -> dict[str, Any]:
    """Everything the Score page shows for ``customer_id``: keys ``status``, ``summary``,
    ``chart`` (contributions frame), ``note``, ``history_summary``, ``history`` (frame)."""
    out: dict[str, Any] = {
        "status": "",
        "summary": "",
        "chart": _EMPTY_CHART,
        "note": "",
        "history_summary": "",
        "history": fmt.history_frame({}),
    }
    if customer_id is None or customer_id < 0 or customer_id != int(customer_id):
        out["status"] = "**Invalid input**: enter a customer id (a whole number ≥ 0)."
        return out
    cid = int(customer_id)
    try:
        pred = client.customer_prediction(cid)
        explained = client.explain([pred["features"]])
    except ApiError as exc:
        out["status"] = fmt.error_message(exc, subject=f"the score of customer {cid}")
        return out
    explanation = explained["explanations"][0]
    out["summary"] = fmt.customer_summary(pred)
    out["chart"] = fmt.contributions_frame(explanation)
    out["note"] = fmt.explanation_note(explanation)
    try:
        history = client.customer_history(cid)
    except ApiError as exc:
        out["history_summary"] = fmt.error_message(exc, subject="the purchase history")
    else:
        out["history_summary"] = fmt.history_summary(history)
        out["history"] = fmt.history_frame(history)
    return out


def what_if(client: RollguardClient, values: list[float | None]) -> dict[str, Any]:
    """Score and explain the edited row: keys ``status``, ``summary``, ``chart``, ``note``."""
    out: dict[str, Any] = {"status": "", "summary": "", "chart": _EMPTY_CHART, "note": ""}
    missing = [n for n, v in zip(FEATURE_COLUMNS, values, strict=True) if v is None]
    if missing:
        out["status"] = "**Invalid input**: give a value for " + ", ".join(missing) + "."
        return out
    row = {n: float(v) for n, v in zip(FEATURE_COLUMNS, values, strict=True)}  # type: ignore[arg-type]
    try:
        explained = client.explain([row])
    except ApiError as exc:
        out["status"] = fmt.error_message(exc, subject="the edited customer")
        return out
    explanation = explained["explanations"][0]
    out["summary"] = fmt.what_if_summary(explained)
    out["chart"] = fmt.contributions_frame(explanation)
    out["note"] = fmt.explanation_note(explanation)
    return out


def batch(
    client: RollguardClient, path: str | None, *, chunk_rows: int, out_dir: Path
) -> dict[str, Any]:
    """Score an uploaded CSV: keys ``status``, ``summary``, ``errors`` (frame), ``file`` (path
    of the scored CSV, or None)."""
    out: dict[str, Any] = {
        "status": "",
        "summary": "",
        "errors": errors_frame([]),
        "file": None,
    }
    if not path:
        out["status"] = "**No file**: upload a CSV of feature rows first."
        return out
    try:
        result = score_csv(Path(path), client, chunk_rows=chunk_rows)
    except BatchFileError as exc:
        out["status"] = f"**Unusable file**: {exc}."
        return out
    except ApiError as exc:
        out["status"] = fmt.error_message(exc, subject="the batch")
        return out
    target = out_dir / uuid.uuid4().hex / f"scored-{Path(path).stem}.csv"
    target.parent.mkdir(parents=True)
    target.write_bytes(to_csv_bytes(result.table))
    n = len(result.table)
    versions = ", ".join(result.versions) or "-"
    out["summary"] = (
        f"**{result.n_scored:,} of {n:,} rows scored** by model version {versions}; "
        f"{n - result.n_scored:,} rows in error (listed below, and in the `error` column)."
    )
    out["errors"] = errors_frame(result.errors)
    out["file"] = str(target)
    return out


def model_page(client: RollguardClient) -> dict[str, Any]:
    """The Model page: keys ``status``, ``summary``, ``gate`` (frame), ``moves`` (frame)."""
    out: dict[str, Any] = {
        "status": "",
        "summary": "",
        "gate": fmt.gate_frame({"model_version": None}, []),
        "moves": fmt.moves_frame({}),
    }
    problems = []
    moves: list[dict[str, Any]] = []
    try:
        history = client.model_history(20)
        moves = history["moves"]
        out["moves"] = fmt.moves_frame(history)
    except ApiError as exc:
        problems.append(fmt.error_message(exc, subject="the promotion history"))
    try:
        info = client.model_info()
        out["summary"] = fmt.model_summary(info)
        out["gate"] = fmt.gate_frame(info, moves)
    except ApiError as exc:
        problems.insert(0, fmt.error_message(exc, subject="the serving model"))
    out["status"] = "\n\n".join(problems)
    return out


# --- the Blocks app ------------------------------------------------------------------------------
def build_app(settings: Settings, client: RollguardClient | None = None) -> Any:
    """The Gradio Blocks app, wired to ``client`` (default: one on ``settings.ui_api_url`` with
    ``settings.ui_timeout_seconds``). Returns ``gradio.Blocks``; launch it with
    :func:`launch_options` for the server settings."""
    import gradio as gr

    client = client or RollguardClient(settings.ui_api_url, settings.ui_timeout_seconds)
    out_dir = Path(tempfile.mkdtemp(prefix="rollguard-ui-"))

    def chart(elem_id: str) -> Any:
        return gr.BarPlot(
            None,
            x="contribution",
            y="feature",
            color="effect",
            color_map=_CHART_COLORS,
            x_title="contribution (log-odds)",
            label="Per-feature contributions",
            height=460,
            visible=False,
            elem_id=elem_id,
        )

    with gr.Blocks(title="Rollguard", analytics_enabled=False) as demo:
        gr.Markdown(
            "# Rollguard\nRepurchase probability of CDNOW customers from the champion model. "
            f"API: `{client.base_url}` · timeout {client.timeout:g} s",
            elem_id="header",
        )
        with gr.Tab("Score a customer", id="score"):
            with gr.Row():
                customer = gr.Number(
                    value=None,
                    label="Customer id",
                    precision=0,
                    minimum=0,
                    elem_id="customer-id",
                    scale=3,
                )
                score_button = gr.Button("Score", variant="primary", elem_id="score-button")
            score_status = gr.Markdown(elem_id="score-status")
            score_summary = gr.Markdown(elem_id="score-summary")
            score_chart = chart("score-chart")
            score_note = gr.Markdown(elem_id="score-note")
            history_summary = gr.Markdown(elem_id="history-summary")
            history_table = gr.DataFrame(
                fmt.history_frame({}),
                label="Purchase history (newest first)",
                interactive=False,
                elem_id="history-table",
            )

        with gr.Tab("What if", id="whatif"):
            gr.Markdown(
                "Change a customer's features and see how the probability moves. Defaults: the "
                "API's example customer."
            )
            sliders = []
            names = list(FEATURE_COLUMNS)
            for i in range(0, len(names), 3):
                with gr.Row():
                    for name in names[i : i + 3]:
                        maximum, step = RANGES[name]
                        sliders.append(
                            gr.Slider(
                                minimum=0,
                                maximum=maximum,
                                value=DEFAULTS[name],
                                step=step,
                                label=name,
                                info=fmt.FEATURE_LABELS[name],
                                elem_id=f"whatif-{name}",
                            )
                        )
            whatif_button = gr.Button("Predict", variant="primary", elem_id="whatif-button")
            whatif_status = gr.Markdown(elem_id="whatif-status")
            whatif_summary = gr.Markdown(elem_id="whatif-summary")
            whatif_chart = chart("whatif-chart")
            whatif_note = gr.Markdown(elem_id="whatif-note")

        with gr.Tab("Batch", id="batch"):
            gr.Markdown(
                "Upload a CSV with a header naming the 18 features "
                f"({', '.join(FEATURE_COLUMNS)}); other columns are kept as they are. "
                f"Rows are sent {settings.ui_batch_rows:,} per request."
            )
            upload = gr.File(
                label="CSV of feature rows", file_types=[".csv"], type="filepath", elem_id="upload"
            )
            batch_button = gr.Button("Score file", variant="primary", elem_id="batch-button")
            batch_status = gr.Markdown(elem_id="batch-status")
            batch_summary = gr.Markdown(elem_id="batch-summary")
            scored_file = gr.File(label="Scored CSV", interactive=False, elem_id="scored-file")
            batch_errors = gr.DataFrame(
                errors_frame([]), label="Row errors", interactive=False, elem_id="batch-errors"
            )

        with gr.Tab("Model", id="model"):
            refresh = gr.Button("Refresh", elem_id="model-refresh")
            model_status = gr.Markdown(elem_id="model-status")
            model_summary = gr.Markdown(elem_id="model-summary")
            gate_table = gr.DataFrame(
                fmt.gate_frame({"model_version": None}, []),
                label="Gate evidence of the serving version",
                interactive=False,
                wrap=True,
                elem_id="gate-table",
            )
            moves_table = gr.DataFrame(
                fmt.moves_frame({}),
                label="Recent promotions and rollbacks (newest first)",
                interactive=False,
                wrap=True,
                elem_id="moves-table",
            )

        # --- wiring ---------------------------------------------------------------------------
        def bars(frame: pd.DataFrame) -> Any:
            # Hidden when there is nothing to show, so a failed call never leaves the previous
            # customer's chart beside the error message.
            return gr.BarPlot(value=frame, visible=not frame.empty)

        def on_score(cid: float | None) -> tuple[Any, ...]:
            r = score_customer(client, cid)
            return (
                r["status"],
                r["summary"],
                bars(r["chart"]),
                r["note"],
                r["history_summary"],
                r["history"],
            )

        score_outputs = [
            score_status,
            score_summary,
            score_chart,
            score_note,
            history_summary,
            history_table,
        ]
        score_button.click(on_score, customer, score_outputs)
        customer.submit(on_score, customer, score_outputs)

        def on_what_if(*values: float | None) -> tuple[Any, ...]:
            r = what_if(client, list(values))
            return r["status"], r["summary"], bars(r["chart"]), r["note"]

        whatif_button.click(
            on_what_if, sliders, [whatif_status, whatif_summary, whatif_chart, whatif_note]
        )

        def on_batch(path: str | None) -> tuple[Any, ...]:
            r = batch(client, path, chunk_rows=settings.ui_batch_rows, out_dir=out_dir)
            return r["status"], r["summary"], r["file"], r["errors"]

        batch_button.click(
            on_batch, upload, [batch_status, batch_summary, scored_file, batch_errors]
        )

        def on_model() -> tuple[Any, ...]:
            r = model_page(client)
            return r["status"], r["summary"], r["gate"], r["moves"]

        model_outputs = [model_status, model_summary, gate_table, moves_table]
        refresh.click(on_model, None, model_outputs)
        demo.load(on_model, None, model_outputs)

    demo.queue(default_concurrency_limit=8)
    demo.rollguard_out_dir = out_dir  # type: ignore[attr-defined]
    return demo


def launch_options(settings: Settings, demo: Any) -> dict[str, Any]:
    """Keyword arguments of ``Blocks.launch`` for ``settings``: bind address and port, no
    share link, no server-side rendering (needs Node), the upload limit, and the folder of
    scored files as the one extra path Gradio may serve."""
    return {
        "server_name": settings.ui_host,
        "server_port": settings.ui_port,
        "share": False,
        "ssr_mode": False,
        "max_file_size": settings.ui_max_upload_bytes,
        "allowed_paths": [str(demo.rollguard_out_dir)],
        "footer_links": [],
        "show_error": False,
        "quiet": True,
        "mcp_server": False,
        "pwa": False,
    }
