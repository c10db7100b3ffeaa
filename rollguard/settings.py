"""The one settings object of Rollguard.

Every part reads its configuration from :class:`Settings` (environment variables with the prefix
``ROLLGUARD_``, plus MLflow's own ``MLFLOW_TRACKING_URI``). Creating a ``Settings`` object has no side
effects: folders are created by :meth:`Settings.ensure_dirs`, which the commands that write call.

Embedded default: everything lives under ``ROLLGUARD_HOME`` (default ``./.rollguard``) — SQLite files
for the monitoring store, the MLflow backend, Optuna and Airflow metadata, the local MLflow artifact
store, and the ``landing/``, ``warehouse/``, ``quarantine/`` and ``reports/`` folders. The stack sets
PostgreSQL URLs and an MLflow tracking server instead; no code changes.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rollguard.usecase import UseCase, default_usecase_name, load_usecase

#: Secret values that are refused outside ``development`` (see :meth:`Settings._refuse_placeholders`).
PLACEHOLDER_SECRETS = frozenset(
    {"", "changeme", "change-me", "placeholder", "secret", "admin", "token"}
)

#: ``scheme:`` at the start of a URI; two letters at least, so a Windows drive is a path.
_URI_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
#: Artifact-root schemes whose first component after ``//`` is a bucket or container.
_OBJECT_STORE_SCHEMES = frozenset({"s3", "gs", "wasbs", "abfss", "oss"})

#: Settings whose default is the use case's declaration.
_USECASE_DEFAULTS: dict[str, Callable[[UseCase], Any]] = {
    "model_name": lambda uc: uc.model_name,
    "horizon_days": lambda uc: uc.label.horizon_days,
    "targeting_budget": lambda uc: uc.targeting.budget,
    "training_cutoffs": lambda uc: uc.training_cutoffs,
}


class Settings(BaseSettings):
    """Rollguard configuration, read from ``ROLLGUARD_*`` environment variables.

    Paths are resolved against the current directory when relative. URLs left unset fall back to
    SQLite files and local folders under :attr:`home` (the embedded default).

    Raises:
        pydantic.ValidationError: on a malformed value, or a placeholder secret outside development.
    """

    model_config = SettingsConfigDict(env_prefix="ROLLGUARD_", extra="ignore", frozen=True)

    env: Literal["development", "test", "production"] = "development"
    home: Path = Field(default=Path(".rollguard"), description="Root of all embedded state.")

    # --- logs (docs/logs.md) ----------------------------------------------------------------
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto",
        description="Log lines on stderr: JSON lines (json), readable columns (console), or "
        "console when stderr is a terminal and JSON otherwise (auto).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Least severe level written to the log."
    )
    log_access: bool = Field(
        default=False,
        description="The API and the guard write one INFO line per request (method, path, "
        "status, duration). Off by default: it costs a third of single-row throughput "
        "(docs/logs.md, 'Access lines').",
    )

    # --- stores -------------------------------------------------------------------------------
    database_url: str | None = Field(
        default=None,
        description="Monitoring store (SQLAlchemy URL). Default: SQLite file under home.",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ROLLGUARD_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking URI. Default: SQLite backend under home.",
    )
    optuna_storage_url: str | None = Field(
        default=None, description="Optuna RDB storage URL. Default: SQLite file under home."
    )
    artifact_root: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "ROLLGUARD_MLFLOW_ARTIFACT_ROOT", "ROLLGUARD_ARTIFACT_ROOT", "artifact_root"
        ),
        description=(
            "Where experiments Rollguard creates keep their MLflow artifacts: a folder, or a URI "
            "such as s3://bucket/prefix (S3-compatible store; MLflow's MLFLOW_S3_ENDPOINT_URL and "
            "boto3's credentials apply). Default: <home>/mlartifacts. With a tracking server "
            "(http(s)://) only a URI is used; a folder is left to the server's "
            "--artifacts-destination."
        ),
    )
    mlflow_username: str | None = Field(
        default=None,
        description=(
            "MLflow user this process authenticates as against an authenticated tracking server "
            "(pipeline, gate, guard, reader; docs/security.md). Unset: no credentials are sent."
        ),
    )
    mlflow_password_file: Path | None = Field(
        default=None,
        description="File holding the password of mlflow_username (required with it).",
    )
    mlflow_gate_password_file: Path | None = Field(
        default=None,
        description=(
            "Password file of the MLflow user gate: when set (with mlflow_username), the "
            "pipeline DAG's gate task authenticates as gate instead of mlflow_username."
        ),
    )
    mlflow_guard_password_file: Path | None = Field(
        default=None,
        description=(
            "Password file of the MLflow user guard: when set (with mlflow_username), the "
            "pipeline DAG's guard_check task authenticates as guard instead of mlflow_username."
        ),
    )

    # --- data -----------------------------------------------------------------------------------
    dataset_path: Path | None = Field(
        default=None,
        description="A file of the use case's source shape to use instead of its packaged copy.",
    )
    dataset_sha256: str | None = Field(
        default=None,
        description="Expected SHA-256 of the transaction log in use (--path, dataset_path or the packaged file); unset: a user file is not checked.",
    )
    max_file_bytes: int = Field(
        default=50 * 1024 * 1024, gt=0, description="Largest landing file accepted, in bytes."
    )

    # --- use case -------------------------------------------------------------------------------
    usecase: str = Field(
        default=None,  # type: ignore[assignment]  # filled before validation: the default use case
        description="Use case to run: a name registered under the entry-point group "
        "rollguard.usecases. Default: the one Rollguard's pyproject.toml nominates "
        "(rollguard.default_usecase).",
    )
    horizon_days: int = Field(
        default=None,  # type: ignore[assignment]  # filled from the use case before validation
        ge=0,
        description="Label horizon after a cutoff, days. Default: the use case's.",
    )
    targeting_budget: float = Field(
        default=None,  # type: ignore[assignment]  # filled from the use case before validation
        gt=0,
        le=1,
        description="Share of rows the business acts on each week. Default: the use case's.",
    )

    # --- training -------------------------------------------------------------------------------
    training_cutoffs: int = Field(
        default=None,  # type: ignore[assignment]  # filled from the use case before validation
        ge=1,
        description="Weekly cutoffs the model is fitted on (before validation). Default: the use case's.",
    )
    validation_cutoffs: int = Field(
        default=1, ge=1, description="Newest training cutoffs held out for early stopping."
    )
    num_boost_round: int = Field(default=400, gt=0, description="Most boosting rounds.")
    early_stopping_rounds: int = Field(
        default=30, gt=0, description="Rounds without validation gain before training stops."
    )
    tuning_trials: int = Field(default=30, gt=0, description="Optuna budget: trials per study.")
    tuning_timeout_seconds: float = Field(
        default=900.0, gt=0, description="Optuna budget: seconds per tuning call."
    )
    drift_threshold: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Share of drifted features above which stored parameters are re-tuned.",
    )
    training_lock_timeout_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="Longest wait for another training of the same key to register its version "
        "(seconds); then the training fails with a lock_timeout error.",
    )
    params_max_age_days: int = Field(
        default=91,
        gt=0,
        description="Re-tune when parameters were found this many days (data time) before.",
    )
    seed: int = Field(default=20260101, description="Seed of XGBoost, Optuna and SHAP samples.")
    nthread: int = Field(default=2, gt=0, description="XGBoost threads (fixed for determinism).")
    shap_sample_rows: int = Field(
        default=2000, gt=0, description="Evaluation rows explained with SHAP per training run."
    )

    # --- weekly pipeline ------------------------------------------------------------------------
    max_champion_age_weeks: int = Field(
        default=26,
        gt=0,
        description="Retrain when the champion's evaluation cutoff is older than this (weeks): a "
        "half-year backstop; at 8 the age rule only added retrains the gate did not show better "
        "(docs/decisions.md, retrain trigger).",
    )
    retrain_drift_threshold: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Retrain when the share of drifted features since the champion is above this.",
    )

    # --- monitoring -----------------------------------------------------------------------------
    monitor_sample_rows: int = Field(
        default=50_000,
        gt=0,
        description="Most rows per side compared by the weekly drift reports (seeded sample above).",
    )
    monitor_sample_seed: int = Field(
        default=20260301, description="Seed of the monitoring samples (same seed, same sample)."
    )
    monitor_experiment: str = Field(
        default="rollguard-monitoring",
        description="MLflow experiment holding one monitoring run per model and week.",
    )

    # --- model registry -------------------------------------------------------------------------
    model_name: str = Field(
        default=None,  # type: ignore[assignment]  # filled from the use case before validation
        description="Registered model name in the MLflow registry. Default: the use case's.",
    )

    # --- serving API ----------------------------------------------------------------------------
    api_host: str = Field(default="127.0.0.1", description="Address the model server binds.")
    api_port: int = Field(default=8000, gt=0, lt=65536, description="Port of the model server.")
    api_max_rows: int = Field(
        default=10_000, gt=0, description="Most feature rows in one predict or explain request."
    )
    api_max_body_bytes: int = Field(
        default=8 * 1024 * 1024, gt=0, description="Largest request body accepted, in bytes (413)."
    )
    api_poll_seconds: float = Field(
        default=5.0, gt=0, description="Seconds between checks of the champion alias."
    )
    api_shadow: bool = Field(
        default=False, description="Also score the challenger off the hot path and log its scores."
    )
    api_cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS; empty means no CORS at all."
    )
    api_log_queue_rows: int = Field(
        default=200_000, gt=0, description="Prediction-log rows held in memory before spilling."
    )

    api_replica_id: str | None = Field(
        default=None,
        description="Name of this API replica; keys its prediction-log spool folder "
        "(default: host name and port).",
    )
    live_signals: bool = Field(
        default=True,
        description="Export live score and feature signals per serving version (docs/api.md).",
    )
    live_window_rows: int = Field(
        default=2000, gt=0, description="Rows in each version's live window (the last N scored)."
    )
    live_min_rows: int = Field(
        default=300,
        gt=0,
        description="Rows a version's live window needs before PSI and shares are exported.",
    )
    api_keys_required: bool = Field(
        default=False,
        validation_alias=AliasChoices(
            "ROLLGUARD_API_KEYS", "ROLLGUARD_API_KEYS_REQUIRED", "api_keys_required"
        ),
        description="Require an API key (X-API-Key) on predict, explain and entity routes.",
    )
    api_key_rate: str = Field(
        default="600/minute",
        description="Per-key rate limit in the `limits` notation (e.g. 600/minute, 10/second).",
    )

    # --- local process stack (``rollguard stack``) ---------------------------------------------
    stack_postgres_url: str | None = Field(
        default=None,
        description="Admin URL of an existing PostgreSQL server; `stack up` creates the stack's "
        "databases <stack_db_prefix>_{airflow,mlflow,store,optuna} there. Default: SQLite.",
    )
    stack_db_prefix: str = Field(
        default="rollguard_stack",
        pattern=r"^[a-z][a-z0-9_]{0,40}$",
        description="Prefix of the databases the stack creates on stack_postgres_url.",
    )
    stack_executor: Literal["LocalExecutor", "CeleryExecutor"] = Field(
        default="LocalExecutor", description="Airflow executor of the stack."
    )
    stack_celery_workers: int = Field(
        default=2, ge=1, description="`airflow celery worker` processes (CeleryExecutor)."
    )
    stack_redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Celery broker (CeleryExecutor)."
    )
    stack_redis_prefix: str = Field(
        default="rollguard:", description="Prefix of every Redis key the Celery broker writes."
    )
    stack_api_ports: list[int] = Field(
        default_factory=list,
        description="One API replica per port (default: one replica on api_port).",
    )
    stack_mlflow_port: int = Field(default=5000, gt=0, lt=65536)
    stack_airflow_port: int = Field(default=8080, gt=0, lt=65536)
    stack_scheduler_health_port: int = Field(default=8974, gt=0, lt=65536)
    stack_worker_log_port: int = Field(
        default=8793, gt=0, lt=65536, description="Airflow log server of the scheduler/worker 1 "
        "(worker n uses this + n - 1)."
    )  # fmt: skip
    stack_trigger_log_port: int = Field(default=8794, gt=0, lt=65536)
    stack_prometheus_port: int = Field(default=9090, gt=0, lt=65536)
    stack_alertmanager_port: int = Field(default=9093, gt=0, lt=65536)
    stack_grafana_port: int = Field(default=3000, gt=0, lt=65536)
    stack_scrape_seconds: float = Field(
        default=15.0, gt=0, description="Prometheus scrape and rule evaluation interval, seconds."
    )
    stack_ready_timeout_seconds: float = Field(
        default=300.0, gt=0, description="Longest wait for one service to become ready, seconds."
    )
    stack_stop_timeout_seconds: float = Field(
        default=20.0, gt=0, description="Wait after SIGTERM before SIGKILL, seconds."
    )

    # --- UI -------------------------------------------------------------------------------------
    ui_host: str = Field(default="127.0.0.1", description="Address the Gradio UI binds.")
    ui_port: int = Field(default=7860, gt=0, lt=65536, description="Port of the Gradio UI.")
    ui_api_url: str = Field(
        default="http://127.0.0.1:8000", description="Base URL of the REST API the UI calls."
    )
    ui_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Seconds the UI waits for one API answer before showing a timeout message.",
    )
    ui_batch_rows: int = Field(
        default=1000, gt=0, description="Rows of an uploaded CSV sent per predict request."
    )
    ui_max_upload_bytes: int = Field(
        default=20 * 1024 * 1024, gt=0, description="Largest CSV the UI accepts, in bytes."
    )
    ui_auth_file: Path | None = Field(
        default=None,
        description="File of user:password lines: the UI asks for a login (Gradio auth).",
    )
    api_key_file: Path | None = Field(
        default=None,
        description="File holding the API key the UI sends to the API (X-API-Key).",
    )

    # --- registry guard -------------------------------------------------------------------------
    gate_policy_path: Path | None = Field(
        default=None,
        description="Gate policy YAML. Default: registry_guard/policy.default.yaml.",
    )
    rollback_cooldown_seconds: float = Field(
        default=900.0,
        ge=0,
        description="Refuse an automatic rollback this soon (seconds) after the previous one.",
    )

    # --- guard service (``rollguard serve guard``) ---------------------------------------------------
    guard_host: str = Field(default="127.0.0.1", description="Address the guard service binds.")
    guard_port: int = Field(default=8100, gt=0, lt=65536, description="Port of the guard service.")
    guard_token_file: Path | None = Field(
        default=None,
        description="File holding the bearer token Alertmanager sends to POST /v1/alerts "
        "(default: ROLLGUARD_ADMIN_TOKEN).",
    )
    guard_rollback_alerts: list[str] = Field(
        default_factory=lambda: ["RollguardLiveQualityDegraded", "RollguardLiveScoreShift"],
        description="Alert names whose firing webhooks roll the champion back.",
    )
    prometheus_url: str | None = Field(
        default=None,
        description=(
            "Prometheus the guard asks to confirm a live score shift before it acts on "
            "RollguardLiveScoreShift (e.g. http://prometheus:9090); unset: that alert never "
            "rolls back."
        ),
    )

    # --- secrets --------------------------------------------------------------------------------
    admin_token: SecretStr | None = Field(
        default=None, description="Bearer token for admin routes (API reload, guard webhook)."
    )

    @model_validator(mode="before")
    @classmethod
    def _usecase_defaults(cls, data: Any) -> Any:
        """Fill ``model_name``, ``horizon_days`` and ``targeting_budget`` from the use case when
        they are not set (the use case is loaded, and its declaration checked, only then).

        Raises:
            rollguard.usecase.UseCaseError: the use case is not registered or is malformed.
        """
        if not isinstance(data, dict):
            return data
        if data.get("usecase") in (None, ""):
            data["usecase"] = default_usecase_name()
        unset = [k for k in _USECASE_DEFAULTS if data.get(k) in (None, "")]
        if unset:
            usecase = load_usecase(str(data["usecase"]))
            for key in unset:
                data[key] = _USECASE_DEFAULTS[key](usecase)
        return data

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _log_case(cls, value: Any, info: Any) -> Any:
        """``info``/``INFO`` and ``JSON``/``json`` alike (levels upper, formats lower case)."""
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "log_level" else value.lower()

    @field_validator("artifact_root", mode="after")
    @classmethod
    def _artifact_root_uri(cls, value: str | None) -> str | None:
        """A URI root needs ``scheme://`` and, for object stores, a bucket: ``s3:/bucket`` (a
        folded ``Path``) or ``s3://`` alone would put artifacts nowhere anyone can find them."""
        if value is None or not value.strip():
            return None
        value = value.strip()
        match = _URI_SCHEME.match(value)
        if match is None:
            return value
        scheme = match.group(1).lower()
        rest = value[match.end() :]
        if scheme in _OBJECT_STORE_SCHEMES and (
            not rest.startswith("//") or not rest[2:].split("/", 1)[0]
        ):
            raise ValueError(f"{value!r} names no bucket; write it as {scheme}://BUCKET/PREFIX")
        return value

    @field_validator("home", "dataset_path", mode="after")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.expanduser().absolute() if value is not None else None

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Settings:
        token = self.admin_token
        if (
            self.env != "development"
            and token is not None
            and token.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS
        ):
            raise ValueError(
                "ROLLGUARD_ADMIN_TOKEN is a placeholder; set a real secret outside development"
            )
        return self

    def as_mlflow_user(self, username: str) -> Settings:
        """These settings with the MLflow identity ``username`` (``gate`` or ``guard``) when its
        password file is configured (``mlflow_gate_password_file``, ``mlflow_guard_password_file``)
        and the process authenticates at all; otherwise these settings unchanged (pure).

        The pipeline DAG's gate and guard_check tasks run in the same worker as its other tasks;
        this is how they, and only they, act as the identities that may move ``champion``.

        Raises:
            ValueError: ``username`` is neither ``gate`` nor ``guard``.
        """
        files = {"gate": self.mlflow_gate_password_file, "guard": self.mlflow_guard_password_file}
        if username not in files:
            raise ValueError(f"username must be gate or guard, not {username!r}")
        path = files[username]
        if self.mlflow_username is None or path is None:
            return self
        return self.model_copy(update={"mlflow_username": username, "mlflow_password_file": path})

    # --- derived locations (pure: nothing is created here) ----------------------------------------
    @property
    def landing_dir(self) -> Path:
        """Folder where weekly files arrive (one CSV per ISO week)."""
        return self.home / "landing"

    @property
    def warehouse_dir(self) -> Path:
        """Partitioned Parquet of accepted transactions, and feature snapshots."""
        return self.home / "warehouse"

    @property
    def quarantine_dir(self) -> Path:
        """Rejected files, each beside a ``.reason.json``; nothing here is ever deleted."""
        return self.home / "quarantine"

    @property
    def reports_dir(self) -> Path:
        """HTML and JSON reports (drift, gate, demo)."""
        return self.home / "reports"

    @property
    def monitoring_db_url(self) -> str:
        """SQLAlchemy URL of the monitoring store."""
        return self.database_url or f"sqlite:///{self.home / 'monitoring.db'}"

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking URI (embedded: SQLite backend under home)."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def mlflow_artifact_root(self) -> str | Path:
        """Artifact root of the experiments Rollguard creates: ``artifact_root`` as it is when
        it is a URI (``s3://bucket/prefix``: a string, never a ``Path``, which would fold ``//``),
        as an absolute folder when it is a path, else ``<home>/mlartifacts``."""
        if self.artifact_root is None:
            return self.home / "mlartifacts"
        if _URI_SCHEME.match(self.artifact_root):
            return self.artifact_root
        return Path(self.artifact_root).expanduser().absolute()

    @property
    def usecase_spec(self) -> UseCase:
        """The use case these settings run (loaded once per process, declaration checked)."""
        return load_usecase(self.usecase)

    @property
    def api_replica(self) -> str:
        """This API replica's name, safe as a folder name (``api_replica_id`` or host-port)."""
        name = self.api_replica_id or f"{socket.gethostname()}-{self.api_port}"
        return re.sub(r"[^A-Za-z0-9_.-]", "_", name)

    @property
    def api_spool_dir(self) -> Path:
        """Prediction-log spool folder of this API replica (one per replica: no shared file)."""
        return self.home / "spool" / self.api_replica

    @property
    def optuna_url(self) -> str:
        """Optuna RDB storage URL."""
        return self.optuna_storage_url or f"sqlite:///{self.home / 'optuna.db'}"

    def ensure_dirs(self) -> None:
        """Create the embedded folders under :attr:`home` (idempotent)."""
        for path in (
            self.home,
            self.landing_dir,
            self.warehouse_dir,
            self.quarantine_dir,
            self.reports_dir,
        ):
            path.mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read once from the environment.

    Tests and tools that need other values construct :class:`Settings` directly and pass it on.
    """
    return Settings()
