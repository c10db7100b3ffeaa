"""The gate and guard policies: thresholds of the validation gate and the live guard, read from one
YAML file.

The defaults are the contract of ``docs/design.md`` (sections "Gate" and "Live guard and rollback") and
are kept in ``registry_guard/policy.default.yaml``: the gate's shared fields at the top level, its
per-task fields under ``classification:`` and ``regression:``, the guard's under ``guard:``. A user copy set through ``ROLLGUARD_GATE_POLICY_PATH`` may change any of
them. Unknown keys are refused so a typo cannot silently fall back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rollguard.errors import ConfigurationError

#: The policy file shipped with the code.
DEFAULT_POLICY_PATH = Path(__file__).with_name("policy.default.yaml")
#: Key of the guard's section in the policy file.
GUARD_SECTION = "guard"


class ClassificationGatePolicy(BaseModel):
    """Gate thresholds for binary classification (policy file section ``classification:``).

    Units: AP, ROC AUC and Brier score are in [0, 1]; ``lift_relative_margin`` is a share of the
    champion's lift. Differences are ``challenger - champion``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    primary_metric: Literal["average_precision", "roc_auc"] = "average_precision"
    non_inferiority_margin: float = Field(
        0.01,
        ge=0,
        description="Promote when the CI lower bound of the difference is above -margin.",
    )
    min_rows: int = Field(2000, ge=1, description="Fewer evaluation rows is a reject.")
    min_positives: int = Field(100, ge=1, description="Fewer positive labels is a reject.")
    auc_margin: float = Field(0.02, ge=0, description="ROC AUC may drop by at most this much.")
    brier_margin: float = Field(
        0.01, ge=0, description="Brier score may rise by at most this much."
    )
    lift_relative_margin: float = Field(
        0.10, ge=0, lt=1, description="Lift at the budget may drop by at most this share."
    )
    slice_margin: float = Field(0.01, ge=0, description="Non-inferiority margin on each segment.")
    slice_min_rows: int = Field(500, ge=1, description="Smaller segments are reported, not judged.")
    slice_min_positives: int = Field(50, ge=1, description="Same, for positives in the segment.")


class RegressionGatePolicy(BaseModel):
    """Gate thresholds for regression (policy file section ``regression:``).

    Margins are *relative* to the champion: ``(MAE(challenger) - MAE(champion)) / MAE(champion)``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    primary_metric: Literal["mae"] = "mae"
    relative_margin: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="Promote when the CI upper bound of the relative MAE difference is below it.",
    )
    min_rows: int = Field(500, ge=1, description="Fewer evaluation rows is a reject.")
    rmse_relative_margin: float = Field(
        0.10, ge=0, description="RMSE may rise by at most this share of the champion's."
    )
    bias_mae_share: float = Field(
        0.05,
        ge=0,
        description="|bias| may grow by at most this share of the champion's MAE.",
    )
    slice_relative_margin: float = Field(
        0.05, ge=0, lt=1, description="Relative MAE non-inferiority margin on each segment."
    )
    slice_min_rows: int = Field(200, ge=1, description="Smaller segments are reported, not judged.")


TaskPolicy = ClassificationGatePolicy | RegressionGatePolicy


class GatePolicy(BaseModel):
    """Thresholds of the gate: shared fields at the top level, per-task fields in the
    ``classification`` and ``regression`` sections (the use case's task type picks one).

    Units: ``latency_*`` are seconds per 10,000 rows of batch scoring; sizes are bytes. The
    targeting budget is not a policy value: it is the use case's (``settings.targeting_budget``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    confidence: float = Field(0.95, gt=0.5, lt=1, description="Two-sided CI level.")
    n_resamples: int = Field(1000, ge=1000, description="Paired bootstrap resamples (>= 1,000).")
    seed: int = Field(20260401, description="Seed of the resample index matrix (reproducible).")
    latency_ratio_max: float = Field(1.5, gt=0, description="Challenger/champion scoring time.")
    latency_floor_seconds: float = Field(
        0.05,
        ge=0,
        description="Latency differences below this (s per 10k rows) are timer noise, never a fail.",
    )
    max_model_bytes: int = Field(100 * 1024 * 1024, gt=0, description="Largest model accepted.")
    classification: ClassificationGatePolicy = Field(default_factory=ClassificationGatePolicy)
    regression: RegressionGatePolicy = Field(default_factory=RegressionGatePolicy)

    def for_task(self, task: str) -> TaskPolicy:
        """The section of ``task`` (a :class:`rollguard.usecase.TaskType` or its value)."""
        return self.regression if str(task) == "regression" else self.classification


class GuardPolicy(BaseModel):
    """Thresholds of the live guard (:mod:`registry_guard.guard`).

    The realized-quality check reuses the gate's bootstrap settings (seed, resamples, confidence)
    and the task section's margin and minimum evidence from :class:`GatePolicy`; only the score
    distribution check has its own values here.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    psi_threshold: float = Field(
        1.0,
        gt=0,
        description=(
            "PSI above this is a broken model or feature path. Siddiqi's 0.25 assumes a stable "
            "population; on the default use case healthy model pairs measure 0.3-0.4 and a "
            "shuffled-label model "
            "about 4.5 (see policy.default.yaml)."
        ),
    )
    psi_min_predictions: int = Field(
        1000, ge=1, description="Fewer live predictions: the shift is not judged (inconclusive)."
    )
    psi_bins: int = Field(10, ge=2, description="Quantile bins of the reference scores (deciles).")
    live_min_predictions: int = Field(
        300,
        ge=1,
        description=(
            "The live (model-server) score shift is judged on at least this many predictions in "
            'the server\'s window (docs/design.md, "Live signals").'
        ),
    )
    auto_rollback: bool = Field(
        True, description="A degraded champion is rolled back by the guard without a human."
    )


def _read_policy_file(path: Path | str | None) -> tuple[Path, dict[str, Any]]:
    resolved = Path(path) if path is not None else DEFAULT_POLICY_PATH
    try:
        raw = yaml.safe_load(resolved.read_text()) or {}
    except OSError as exc:
        raise ConfigurationError(f"gate policy {resolved}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"gate policy {resolved}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigurationError(f"gate policy {resolved}: expected a mapping of fields")
    return resolved, raw


def _build(model: type[Any], raw: Any, resolved: Path, prefix: str = "") -> Any:
    if not isinstance(raw, dict):
        raise ConfigurationError(
            f"gate policy {resolved}: {prefix or 'policy'}: expected a mapping"
        )
    try:
        return model(**raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{prefix}{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigurationError(f"gate policy {resolved}: {problems}") from exc


def load_policy(path: Path | str | None = None) -> GatePolicy:
    """Read a gate policy from YAML (``None``: the shipped default file).

    The ``guard:`` section is checked too (see :func:`load_guard_policy`), so a typo there is
    reported by every command that reads the file.

    Raises:
        ConfigurationError: when the file is missing, not YAML, or holds an unknown key or a value
            out of range (the message names the file and the field).
    """
    resolved, raw = _read_policy_file(path)
    guard = raw.pop(GUARD_SECTION, None)
    if guard is not None:
        _build(GuardPolicy, guard, resolved, f"{GUARD_SECTION}.")
    return _build(GatePolicy, raw, resolved)


def load_guard_policy(path: Path | str | None = None) -> GuardPolicy:
    """Read the ``guard:`` section of a policy file (``None``: the shipped default file).

    A file without the section gets the defaults of :class:`GuardPolicy`.

    Raises:
        ConfigurationError: as :func:`load_policy`, for the guard's fields (named ``guard.<field>``).
    """
    resolved, raw = _read_policy_file(path)
    guard = raw.get(GUARD_SECTION)
    return _build(GuardPolicy, {} if guard is None else guard, resolved, f"{GUARD_SECTION}.")
