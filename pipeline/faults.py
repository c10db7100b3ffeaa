"""Deliberate faults for the main job (``rollguard demo``) and for tests: what production throws
at the loop, made on purpose so that one can watch Rollguard catch it.

* :func:`write_malformed_week` drops a bad weekly file into the landing zone (ingestion must
  quarantine it and go on);
* :func:`register_shuffled_label_model` trains a model on randomly permuted labels (targets, for
  regression) — a model that learned nothing, as a broken feature path or label join would
  produce — and registers it as the challenger. The gate must reject it; if a person forces it into production anyway, the live
  guard must roll it back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from domain.evaluation import (
    TrainingSet,
    build_training_set,
    load_training_inputs,
    plan_cutoffs,
)
from monitoring.weekly import TRAINING_MEDIAN_TAG
from pipeline import tracking, training, tuning
from rollguard.files import write_atomic
from rollguard.settings import Settings
from rollguard.weeks import parse_iso_week

FAULT_TAG = "rollguard.fault"


def write_malformed_week(settings: Settings, week: str) -> str:
    """Write ``partner_<week>.csv``: the use case's header, then two records of ``n/a`` values (a
    partner system's export of missing records): line 2 has the week's Monday in the time column
    and ``n/a`` elsewhere, line 3 is ``n/a`` throughout. Ingestion must quarantine it as
    ``bad_type`` at line 2, the first bad line, and go on. Returns the file name; the content
    differs for every week (the Monday on line 2), so each is a new file."""
    usecase = settings.usecase_spec
    columns = list(usecase.record_columns)
    monday = parse_iso_week(week).isoformat()
    good = [monday if c == usecase.record_time_column else "n/a" for c in columns]
    name = f"partner_{week}.csv"
    lines = [",".join(columns), ",".join(good), ",".join("n/a" for _ in columns)]
    write_atomic(settings.landing_dir / name, ("\n".join(lines) + "\n").encode("utf-8"))
    return name


@dataclass(frozen=True)
class BrokenModel:
    """A registered model version trained on shuffled labels (or targets)."""

    version: str
    run_id: str
    evaluation_cutoff: str


def register_shuffled_label_model(settings: Settings, *, seed: int = 7) -> BrokenModel:
    """Train on the current training set with labels permuted (fixed ``seed``), log it like any
    model (signature, input example, lineage tags, ``rollguard.fault=shuffled_labels``), register
    it and point alias ``challenger`` at it.

    Raises:
        domain.evaluation.TrainingDataError: not enough matured history.
    """
    usecase = settings.usecase_spec
    label = usecase.label.column
    client = tracking.settings_client(settings)
    inputs = load_training_inputs(settings)
    plan = plan_cutoffs(
        usecase,
        inputs.weeks,
        n_fit=settings.training_cutoffs,
        n_validation=settings.validation_cutoffs,
        horizon_days=settings.horizon_days,
    )
    data = build_training_set(usecase, inputs.records, plan)
    rng = np.random.default_rng(seed)
    shuffled = TrainingSet(
        plan=data.plan,
        fit=data.fit.assign(**{label: rng.permutation(data.fit[label].to_numpy())}),
        validation=data.validation.assign(
            **{label: rng.permutation(data.validation[label].to_numpy())}
        ),
        evaluation=data.evaluation,
        dataset_sha256=data.dataset_sha256,
    )
    stored = tuning.load_stored_params(settings.model_name, client=client)
    config = training.TrainingConfig.from_settings(settings, stored.params if stored else None)
    model = training.train_model(usecase, shuffled, config)
    experiment = tracking.ensure_experiment(
        client, tracking_uri=client.tracking_uri, artifact_root=settings.mlflow_artifact_root
    )
    tags = {
        FAULT_TAG: "shuffled_labels",
        "rollguard.usecase": usecase.name,
        "rollguard.cutoff.evaluation": plan.evaluation.isoformat(),
        "rollguard.cutoff.evaluation_pool": ",".join(c.isoformat() for c in plan.evaluations),
        "rollguard.cutoff.validation": ",".join(c.isoformat() for c in plan.validation),
        "rollguard.cutoff.fit": ",".join(c.isoformat() for c in plan.fit),
        "rollguard.dataset_sha256": data.dataset_sha256,
        "rollguard.code_version": tracking.code_version(),
    }
    if not usecase.is_classification:  # the constant it must beat, as retrain records it
        trained = pd.concat([data.fit, data.validation])[label].to_numpy(dtype="float64")
        tags[TRAINING_MEDIAN_TAG] = f"{float(np.median(trained)):.6g}"
    if stored is not None:  # the parameters it reuses keep their provenance
        tags[tuning.PARAMS_FOUND_CUTOFF_TAG] = stored.found_cutoff.isoformat()
    run = client.create_run(experiment, run_name=f"fault-shuffled-{plan.evaluation}", tags=tags)
    for key, value in config.tunable.items():
        client.log_param(run.info.run_id, f"{tuning.PARAM_PREFIX}{key}", value)
    uri = tracking.log_model(
        usecase,
        model.booster,
        data.evaluation.head(50),
        run_id=run.info.run_id,
        tracking_uri=client.tracking_uri,
    )
    version = tracking.register_version(
        uri,
        model_name=settings.model_name,
        run_id=run.info.run_id,
        client=client,
        tracking_uri=client.tracking_uri,
        tags={
            **tags,
            **tracking.training_profile_tags(usecase, (data.fit, data.validation)),
            tracking.STATUS_TAG: "candidate",
        },
    )
    client.set_terminated(run.info.run_id, status="FINISHED")
    return BrokenModel(str(version.version), run.info.run_id, plan.evaluation.isoformat())
