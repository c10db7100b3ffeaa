"""Deliberate faults for the main job (``rollguard demo``) and for tests: what production throws
at the loop, made on purpose so that one can watch Rollguard catch it.

* :func:`write_malformed_week` drops a bad weekly file into the landing zone (ingestion must
  quarantine it and go on);
* :func:`register_shuffled_label_model` trains a model on randomly permuted labels — a model that
  learned nothing, as a broken feature path or label join would produce — and registers it as the
  challenger. The gate must reject it; if a person forces it into production anyway, the live
  guard must roll it back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rollguard.settings import Settings
from usecases.cdnow.features import LABEL

FAULT_TAG = "rollguard.fault"


def write_malformed_week(settings: Settings, week: str) -> str:
    """Write ``partner_<week>.csv`` with a negative amount and a date outside the week; returns
    the file name. Its content differs for every week, so each is a new file."""
    from rollguard.files import write_atomic
    from rollguard.weeks import parse_iso_week

    monday = parse_iso_week(week)
    name = f"partner_{week}.csv"
    body = (
        "transaction_id,customer_id,date,number_of_cds,dollar_value\n"
        f"900001,1,{monday.isoformat()},1,-15.99\n"
        f"900002,2,{monday.isoformat()},2,23.50\n"
    )
    write_atomic(settings.landing_dir / name, body.encode("utf-8"))
    return name


@dataclass(frozen=True)
class BrokenModel:
    """A registered model version trained on shuffled labels."""

    version: str
    run_id: str
    evaluation_cutoff: str


def register_shuffled_label_model(settings: Settings, *, seed: int = 7) -> BrokenModel:
    """Train on the current training set with labels permuted (fixed ``seed``), log it like any
    model (signature, input example, lineage tags, ``rollguard.fault=shuffled_labels``), register
    it and point alias ``challenger`` at it.

    Raises:
        pipeline.training.TrainingDataError: not enough matured history.
    """
    from pipeline import tracking, training, tuning

    client = tracking.settings_client(settings)
    inputs = training.load_training_inputs(settings)
    plan = training.plan_cutoffs(
        inputs[1],
        n_fit=settings.training_cutoffs,
        n_validation=settings.validation_cutoffs,
        horizon_days=settings.horizon_days,
    )
    data = training.build_training_set(inputs[0], plan)
    rng = np.random.default_rng(seed)
    shuffled = training.TrainingSet(
        plan=data.plan,
        fit=data.fit.assign(**{LABEL: rng.permutation(data.fit[LABEL].to_numpy())}),
        validation=data.validation.assign(
            **{LABEL: rng.permutation(data.validation[LABEL].to_numpy())}
        ),
        evaluation=data.evaluation,
        dataset_sha256=data.dataset_sha256,
    )
    stored = tuning.load_stored_params(settings.model_name, client=client)
    config = training.TrainingConfig.from_settings(settings, stored.params if stored else None)
    model = training.train_model(shuffled, config)
    experiment = tracking.ensure_experiment(
        client, tracking_uri=client.tracking_uri, artifact_root=settings.mlflow_artifact_root
    )
    tags = {
        FAULT_TAG: "shuffled_labels",
        "rollguard.cutoff.evaluation": plan.evaluation.isoformat(),
        "rollguard.cutoff.validation": ",".join(c.isoformat() for c in plan.validation),
        "rollguard.cutoff.fit": ",".join(c.isoformat() for c in plan.fit),
        "rollguard.dataset_sha256": data.dataset_sha256,
        "rollguard.code_version": tracking.code_version(),
    }
    if stored is not None:  # the parameters it reuses keep their provenance
        tags[tuning.PARAMS_FOUND_CUTOFF_TAG] = stored.found_cutoff.isoformat()
    run = client.create_run(experiment, run_name=f"fault-shuffled-{plan.evaluation}", tags=tags)
    for key, value in config.tunable.items():
        client.log_param(run.info.run_id, f"{tuning.PARAM_PREFIX}{key}", value)
    uri = tracking.log_model(
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
        tags={**tags, tracking.STATUS_TAG: "candidate"},
    )
    client.set_terminated(run.info.run_id, status="FINISHED")
    return BrokenModel(str(version.version), run.info.run_id, plan.evaluation.isoformat())
