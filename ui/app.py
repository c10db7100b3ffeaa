"""The Gradio Blocks app: four pages over the REST API (it never loads a model or imports a use
case). Wording and the what-if form come from the API's ``GET /v1/usecase``
(:class:`ui.formatting.UseCaseView`), read once when the app is built.

* **Score a <subject>** — the score (a probability, or a predicted value in the label's unit),
  for classification whether the row is in this week's targeted group (rank and group size), for
  regression the realized label once known, the model version, a chart of per-feature
  contributions and the row's raw records.
* **What if** — edit the features (numbers with their units and bounds, dropdowns of the
  categorical levels; defaults: the declared example values) and see the score and contributions.
* **Batch** — upload a CSV of feature rows, download it scored, with an error per refused row.
* **Model** — the serving version, its gate evidence, recent promotions and rollbacks.

Each page shows API failures as a sentence in its status box (see :func:`ui.formatting.error_message`).
The callbacks are thin: gather inputs, call :class:`ui.client.RollguardClient`, format.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

from rollguard.errors import ConfigurationError
from rollguard.settings import Settings
from ui import formatting as fmt
from ui.batch import BatchFileError, errors_frame, score_csv, to_csv_bytes
from ui.client import ApiError, RollguardClient, read_api_key
from ui.formatting import UseCaseView

_EMPTY_CHART = pd.DataFrame(
    {
        "feature": pd.Series(dtype="object"),
        "contribution": pd.Series(dtype="float64"),
        "effect": pd.Series(dtype="object"),
    }
)
_CHART_COLORS = {"raises": "#2e7d32", "lowers": "#c62828"}


# --- page logic (plain functions over the client; the Gradio callbacks only wire them) ----------
def score_entity(
    client: RollguardClient, view: UseCaseView, entity_id: float | None
) -> dict[str, Any]:
    """Everything the Score page shows for ``entity_id``: keys ``status``, ``summary``,
    ``chart`` (contributions frame), ``note``, ``history_summary``, ``history`` (frame)."""
    out: dict[str, Any] = {
        "status": "",
        "summary": "",
        "chart": _EMPTY_CHART,
        "note": "",
        "history_summary": "",
        "history": fmt.history_frame({}),
    }
    key = view.entity_column
    if entity_id is None or entity_id < 0 or entity_id != int(entity_id):
        out["status"] = f"**Invalid input**: enter a {key} (a whole number ≥ 0)."
        return out
    eid = int(entity_id)
    try:
        pred = client.entity_prediction(view.info, eid)
        explained = client.explain([pred["features"]])
    except ApiError as exc:
        out["status"] = fmt.error_message(exc, subject=f"the score of {key} {eid}")
        return out
    explanation = explained["explanations"][0]
    out["summary"] = fmt.entity_summary(pred, view)
    out["chart"] = fmt.contributions_frame(explanation)
    out["note"] = fmt.explanation_note(explanation, view)
    if not view.info.get("history_route"):
        return out
    try:
        history = client.entity_history(view.info, eid)
    except ApiError as exc:
        out["history_summary"] = fmt.error_message(exc, subject="the history")
    else:
        out["history_summary"] = fmt.history_summary(history)
        out["history"] = fmt.history_frame(history, view)
    return out


def what_if(client: RollguardClient, view: UseCaseView, values: list[Any]) -> dict[str, Any]:
    """Score and explain the edited row (``values`` in :attr:`UseCaseView.feature_names`
    order): keys ``status``, ``summary``, ``chart``, ``note``."""
    out: dict[str, Any] = {"status": "", "summary": "", "chart": _EMPTY_CHART, "note": ""}
    names = view.feature_names
    missing = [n for n, v in zip(names, values, strict=True) if v is None or v == ""]
    if missing:
        out["status"] = "**Invalid input**: give a value for " + ", ".join(missing) + "."
        return out
    kinds = {f["name"]: f["kind"] for f in view.features}
    row = {
        n: str(v) if kinds[n] == "categorical" else float(v)
        for n, v in zip(names, values, strict=True)
    }
    try:
        explained = client.explain([row])
    except ApiError as exc:
        out["status"] = fmt.error_message(exc, subject=f"the edited {view.singular}")
        return out
    explanation = explained["explanations"][0]
    out["summary"] = fmt.what_if_summary(explained, view)
    out["chart"] = fmt.contributions_frame(explanation)
    out["note"] = fmt.explanation_note(explanation, view)
    return out


def batch(
    client: RollguardClient, view: UseCaseView, path: str | None, *, chunk_rows: int, out_dir: Path
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
        result = score_csv(Path(path), client, view, chunk_rows=chunk_rows)
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
#: How long :func:`load_view` waits for an API that refuses connections (one starting up), s.
STARTUP_WAIT_SECONDS = 60.0


def load_view(client: RollguardClient, wait_seconds: float = 0.0) -> UseCaseView:
    """The use case's declarations from the API (``GET /v1/usecase``), retrying once a second
    for up to ``wait_seconds`` while nothing listens at the API's address (it may be starting).

    Raises:
        ApiError: the API did not answer them (the page then says so; see :func:`build_app`).
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return UseCaseView(client.usecase())
        except ApiError as exc:
            if exc.kind != "unreachable" or time.monotonic() >= deadline:
                raise
        time.sleep(1.0)


def build_app(settings: Settings, client: RollguardClient | None = None) -> Any:
    """The Gradio Blocks app, wired to ``client`` (default: one on ``settings.ui_api_url`` with
    ``settings.ui_timeout_seconds``), its pages built from the API's use case declarations.
    An API that refuses connections is waited for (:data:`STARTUP_WAIT_SECONDS`); when it still
    cannot give them, the app is one page saying why (restart the UI once the API answers). Returns ``gradio.Blocks``; launch it with :func:`launch_options`."""
    import gradio as gr

    client = client or RollguardClient(
        settings.ui_api_url,
        settings.ui_timeout_seconds,
        api_key=read_api_key(settings.api_key_file),
    )
    out_dir = Path(tempfile.mkdtemp(prefix="rollguard-ui-"))
    try:
        view = load_view(client, STARTUP_WAIT_SECONDS)
    except ApiError as exc:
        with gr.Blocks(title="Rollguard", analytics_enabled=False) as demo:
            gr.Markdown("# Rollguard", elem_id="header")
            gr.Markdown(
                fmt.error_message(exc, subject="the use case declarations (GET /v1/usecase)")
                + "\n\nThe pages are built from them: restart the UI once the API answers.",
                elem_id="startup-status",
            )
        demo.rollguard_out_dir = out_dir  # type: ignore[attr-defined]
        return demo
    with gr.Blocks(title=f"Rollguard · {view.title}", analytics_enabled=False) as demo:
        gr.Markdown(
            f"# Rollguard · {view.title}\n{view.info['score_description']} From the champion "
            f"model. API: `{client.base_url}` · timeout {client.timeout:g} s",
            elem_id="header",
        )
        score_parts = _score_tab(gr, view)
        whatif_parts = _what_if_tab(gr, view)
        batch_parts = _batch_tab(gr, view, settings)
        model_parts = _model_tab(gr)
        _wire(
            gr,
            demo,
            client,
            view,
            settings,
            out_dir,
            score_parts,
            whatif_parts,
            batch_parts,
            model_parts,
        )
    demo.queue(default_concurrency_limit=8)
    demo.rollguard_out_dir = out_dir  # type: ignore[attr-defined]
    return demo


def _chart(gr: Any, view: UseCaseView, elem_id: str) -> Any:
    return gr.BarPlot(
        None,
        x="contribution",
        y="feature",
        color="effect",
        color_map=_CHART_COLORS,
        x_title=f"contribution ({view.contribution_unit})",
        label="Per-feature contributions",
        height=460,
        visible=False,
        elem_id=elem_id,
    )


def _score_tab(gr: Any, view: UseCaseView) -> dict[str, Any]:
    with gr.Tab(f"Score a {view.singular}", id="score"):
        with gr.Row():
            entity = gr.Number(
                value=None,
                label=view.entity_column,
                precision=0,
                minimum=0,
                elem_id="entity-id",
                scale=3,
            )
            button = gr.Button("Score", variant="primary", elem_id="score-button")
        parts = {
            "entity": entity,
            "button": button,
            "status": gr.Markdown(elem_id="score-status"),
            "summary": gr.Markdown(elem_id="score-summary"),
            "chart": _chart(gr, view, "score-chart"),
            "note": gr.Markdown(elem_id="score-note"),
            "history_summary": gr.Markdown(elem_id="history-summary"),
            "history": gr.DataFrame(
                fmt.history_frame({}),
                label="Records (newest first)",
                interactive=False,
                elem_id="history-table",
            ),
        }
    return parts


def _feature_input(gr: Any, view: UseCaseView, feature: dict[str, Any]) -> Any:
    name = feature["name"]
    if feature["kind"] == "categorical":
        return gr.Dropdown(
            choices=list(feature["categories"]),
            value=feature["example"],
            label=name,
            info=view.feature_info(feature),
            elem_id=f"whatif-{name}",
        )
    unit = f" ({feature['unit']})" if feature.get("unit") else ""
    return gr.Number(
        value=feature["example"],
        label=f"{name}{unit}",
        info=view.feature_info(feature),
        minimum=feature.get("minimum"),
        maximum=feature.get("maximum"),
        elem_id=f"whatif-{name}",
    )


def _what_if_tab(gr: Any, view: UseCaseView) -> dict[str, Any]:
    with gr.Tab("What if", id="whatif"):
        gr.Markdown(
            f"Change the features of a {view.singular} and see how the score moves. Defaults: "
            "the declared example values."
        )
        inputs = []
        features = view.features
        for i in range(0, len(features), 3):
            with gr.Row():
                inputs += [_feature_input(gr, view, f) for f in features[i : i + 3]]
        parts = {
            "inputs": inputs,
            "button": gr.Button("Predict", variant="primary", elem_id="whatif-button"),
            "status": gr.Markdown(elem_id="whatif-status"),
            "summary": gr.Markdown(elem_id="whatif-summary"),
            "chart": _chart(gr, view, "whatif-chart"),
            "note": gr.Markdown(elem_id="whatif-note"),
        }
    return parts


def _batch_tab(gr: Any, view: UseCaseView, settings: Settings) -> dict[str, Any]:
    with gr.Tab("Batch", id="batch"):
        gr.Markdown(
            f"Upload a CSV with a header naming the {len(view.features)} features "
            f"({', '.join(view.feature_names)}); other columns are kept as they are. "
            f"Rows are sent {settings.ui_batch_rows:,} per request."
        )
        parts = {
            "upload": gr.File(
                label="CSV of feature rows", file_types=[".csv"], type="filepath", elem_id="upload"
            ),
            "button": gr.Button("Score file", variant="primary", elem_id="batch-button"),
            "status": gr.Markdown(elem_id="batch-status"),
            "summary": gr.Markdown(elem_id="batch-summary"),
            "file": gr.File(label="Scored CSV", interactive=False, elem_id="scored-file"),
            "errors": gr.DataFrame(
                errors_frame([]), label="Row errors", interactive=False, elem_id="batch-errors"
            ),
        }
    return parts


def _model_tab(gr: Any) -> dict[str, Any]:
    with gr.Tab("Model", id="model"):
        parts = {
            "refresh": gr.Button("Refresh", elem_id="model-refresh"),
            "status": gr.Markdown(elem_id="model-status"),
            "summary": gr.Markdown(elem_id="model-summary"),
            "gate": gr.DataFrame(
                fmt.gate_frame({"model_version": None}, []),
                label="Gate evidence of the serving version",
                interactive=False,
                wrap=True,
                elem_id="gate-table",
            ),
            "moves": gr.DataFrame(
                fmt.moves_frame({}),
                label="Recent promotions and rollbacks (newest first)",
                interactive=False,
                wrap=True,
                elem_id="moves-table",
            ),
        }
    return parts


def _wire(
    gr: Any,
    demo: Any,
    client: RollguardClient,
    view: UseCaseView,
    settings: Settings,
    out_dir: Path,
    score: dict[str, Any],
    whatif: dict[str, Any],
    batch_parts: dict[str, Any],
    model: dict[str, Any],
) -> None:
    def bars(frame: pd.DataFrame) -> Any:
        # Hidden when there is nothing to show, so a failed call never leaves the previous
        # row's chart beside the error message.
        return gr.BarPlot(value=frame, visible=not frame.empty)

    def on_score(eid: float | None) -> tuple[Any, ...]:
        r = score_entity(client, view, eid)
        return (
            r["status"],
            r["summary"],
            bars(r["chart"]),
            r["note"],
            r["history_summary"],
            r["history"],
        )

    score_outputs = [
        score[k] for k in ("status", "summary", "chart", "note", "history_summary", "history")
    ]
    score["button"].click(on_score, score["entity"], score_outputs)
    score["entity"].submit(on_score, score["entity"], score_outputs)

    def on_what_if(*values: Any) -> tuple[Any, ...]:
        r = what_if(client, view, list(values))
        return r["status"], r["summary"], bars(r["chart"]), r["note"]

    whatif["button"].click(
        on_what_if,
        whatif["inputs"],
        [whatif["status"], whatif["summary"], whatif["chart"], whatif["note"]],
    )

    def on_batch(path: str | None) -> tuple[Any, ...]:
        r = batch(client, view, path, chunk_rows=settings.ui_batch_rows, out_dir=out_dir)
        return r["status"], r["summary"], r["file"], r["errors"]

    batch_parts["button"].click(
        on_batch,
        batch_parts["upload"],
        [batch_parts["status"], batch_parts["summary"], batch_parts["file"], batch_parts["errors"]],
    )

    def on_model() -> tuple[Any, ...]:
        r = model_page(client)
        return r["status"], r["summary"], r["gate"], r["moves"]

    model_outputs = [model["status"], model["summary"], model["gate"], model["moves"]]
    model["refresh"].click(on_model, None, model_outputs)
    demo.load(on_model, None, model_outputs)


def read_auth(path: Path | None) -> list[tuple[str, str]] | None:
    """The ``(user, password)`` pairs of ``ROLLGUARD_UI_AUTH_FILE`` (one ``user:password`` per
    line; blank lines and ``#`` comments skipped; the password may contain ``:``), or None when
    no file is configured (the UI is open, as in the embedded default).

    Raises:
        ConfigurationError: the file cannot be read, a line has no ``:`` or an empty user or
            password (the line number is named, never the line), or no user is declared.
    """
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"ROLLGUARD_UI_AUTH_FILE={path}: cannot read it: {exc}") from None
    pairs = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user.strip() or not password:
            raise ConfigurationError(
                f"ROLLGUARD_UI_AUTH_FILE={path}: line {n} is not user:password"
            )
        pairs.append((user.strip(), password))
    if not pairs:
        raise ConfigurationError(f"ROLLGUARD_UI_AUTH_FILE={path} declares no user:password")
    return pairs


def launch_options(settings: Settings, demo: Any) -> dict[str, Any]:
    """Keyword arguments of ``Blocks.launch`` for ``settings``: bind address and port, no
    share link, no server-side rendering (needs Node), the upload limit, the folder of
    scored files as the one extra path Gradio may serve, and Gradio's login (``auth``) when
    ``ROLLGUARD_UI_AUTH_FILE`` is set (:func:`read_auth`).

    Raises:
        ConfigurationError: the auth file is unreadable or malformed.
    """
    auth = read_auth(settings.ui_auth_file)
    return {
        **({"auth": auth, "auth_message": "Rollguard: sign in"} if auth else {}),
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
