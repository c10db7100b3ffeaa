"""``rollguard train``: the thin command around :func:`pipeline.retrain.retrain`."""

from datetime import datetime
from typing import Annotated, Any

import typer

from pipeline.retrain import retrain
from rollguard.commands import JsonFlag, emit, reports_errors, settings


def register(app: typer.Typer) -> None:
    """Add the ``train`` command to ``app`` (the ``rollguard`` entry point)."""

    @app.command("train")
    @reports_errors
    def train(
        cutoff: Annotated[
            datetime | None,
            typer.Option(
                formats=["%Y-%m-%d"],
                help="Evaluation cutoff (a Monday with a matured label); default newest.",
            ),
        ] = None,
        tune: Annotated[
            bool | None,
            typer.Option(
                "--tune/--reuse",
                help="Force tuning or reuse of the champion's parameters; default decides.",
            ),
        ] = None,
        guard_degraded: Annotated[
            bool, typer.Option(help="The live guard reported degradation (tune in auto mode).")
        ] = False,
        as_json: JsonFlag = False,
    ) -> None:
        """Train the challenger: tune or reuse parameters, log to MLflow, register, alias it."""
        s = settings()
        if s.mlflow_tracking_uri is None or s.optuna_storage_url is None:
            s.ensure_dirs()
        mode = "auto" if tune is None else ("tune" if tune else "reuse")
        outcome = retrain(
            s, cutoff=cutoff.date() if cutoff else None, mode=mode, guard_degraded=guard_degraded
        )
        emit(summary(outcome), as_json, human)


def summary(outcome: Any) -> dict[str, Any]:
    """The fields ``rollguard train`` prints."""
    d = outcome.decision
    return {
        "run_id": outcome.run_id,
        "model": outcome.model_name,
        "version": outcome.version,
        "created": outcome.created,
        "decision": d.action,
        "reason": d.reason,
        "why": d.detail,
        "drift_share": d.drift_share,
        "params_age_days": d.params_age_days,
        "optuna_study": outcome.tuning.study_name if outcome.tuning else None,
        "optuna_best_trial": outcome.tuning.best_trial if outcome.tuning else None,
        "cutoffs": outcome.cutoffs,
        "metrics": outcome.metrics,
        "shap": outcome.shap,
        "training_key": outcome.training_key,
        "seconds": round(outcome.seconds, 2),
    }


def human(data: dict[str, Any]) -> str:
    m = data["metrics"]
    state = "registered" if data["created"] else "already registered (nothing trained)"
    return "\n".join(
        [
            f"{data['model']} version {data['version']} {state}; run {data['run_id']}",
            f"parameters: {data['decision']} ({data['reason']}): {data['why']}",
            f"evaluation cutoff {data['cutoffs']['evaluation']}: "
            f"AP {m.get('eval_average_precision', float('nan')):.4f}, "
            f"ROC AUC {m.get('eval_roc_auc', float('nan')):.4f}, "
            f"lift@budget {m.get('eval_lift_at_budget', float('nan')):.2f}, "
            f"revenue share@budget {m.get('eval_revenue_share_at_budget', float('nan')):.1%}",
        ]
    )
