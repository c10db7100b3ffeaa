"""Model lifecycle: load the ``champion`` alias at start, watch it, hot-swap atomically.

The serving model is one reference, :attr:`ModelManager.current`, to an immutable
:class:`~api.model.ServingModel`. A request reads it once and uses that object for everything, so
in-flight requests finish on the old model while new ones get the new one, and no response mixes
versions. Only :meth:`ModelManager._swap` assigns it (a single reference assignment, atomic under
the GIL). New versions are downloaded, loaded, smoke-tested and warmed up on a background thread
(or on the admin reload's worker thread) before the swap; a version that fails is refused,
counted and logged, and the old one keeps serving.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from api.metrics import ServingMetrics
from api.model import ModelRefused, ServingModel, default_usecase, load_version
from rollguard.usecase import UseCase

log = logging.getLogger("rollguard.api")

CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class ReloadResult:
    """What one check of an alias did.

    ``outcome`` is ``swapped`` (a new version serves), ``unchanged`` (the alias points at the
    serving version), ``refused`` (the version failed to load or its smoke test; the old one keeps
    serving) or ``registry_error`` (the registry did not answer).
    """

    outcome: str
    serving_version: str | None
    candidate_version: str | None
    message: str


def configure_mlflow_http(environ: dict[str, str] | None = None) -> None:
    """Make MLflow's HTTP client fail fast (3 s timeout, no internal retries, no progress bars in
    the server log) unless the operator set these variables: our own poll loop is the retry, and a registry outage must not stall
    a reload for minutes (MLflow's default is 7 retries with exponential backoff)."""
    env = os.environ if environ is None else environ
    env.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    env.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


class ModelManager:
    """Holds the serving model and keeps it in step with the registry alias.

    Args:
        model_name: registered model name.
        metrics: where reloads, readiness and registry health are counted.
        tracking_uri: MLflow tracking/registry URI; None for a manager without a registry
            (a fixed model installed with :meth:`install`, as the unit tests do).
        poll_seconds: seconds between alias checks (also the retry period when the registry is down).
        shadow: also load the ``challenger`` alias for shadow scoring.
        usecase: the declarations a version is checked against (default: the use case of
            ``ROLLGUARD_USECASE``, :func:`api.model.default_usecase`).
    """

    def __init__(
        self,
        model_name: str,
        metrics: ServingMetrics,
        *,
        tracking_uri: str | None,
        poll_seconds: float = 5.0,
        shadow: bool = False,
        usecase: UseCase | None = None,
    ) -> None:
        self.model_name = model_name
        self.usecase = usecase or default_usecase()
        self.metrics = metrics
        self.tracking_uri = tracking_uri
        self.poll_seconds = poll_seconds
        self.shadow = shadow
        self.current: ServingModel | None = None
        self.challenger: ServingModel | None = None
        self.registry_ok: bool | None = None
        self.registry_error: str | None = None
        self.registry_checked_at: datetime | None = None
        self.last_refusal: dict[str, str] | None = None
        self._refused: set[str] = set()
        self._load_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: Any = None
        metrics.model_ready.set(0)

    # --- the one place the serving model changes ---------------------------------------------
    def _swap(self, model: ServingModel) -> None:
        old = self.current
        self.current = model  # the atomic swap
        if old is not None and old.version != model.version:
            with contextlib.suppress(KeyError):
                self.metrics.model_info.remove(old.version)
        self.metrics.model_info.labels(version=model.version).set(1)
        self.metrics.model_ready.set(1)

    def install(self, model: ServingModel) -> None:
        """Serve ``model`` now (for a manager without a registry, e.g. in tests)."""
        self._swap(model)

    # --- registry --------------------------------------------------------------------------------
    def _registry(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            )
        return self._client

    def _registry_failed(self, exc: BaseException) -> None:
        self.registry_ok = False
        self.registry_error = f"{type(exc).__name__}: {str(exc)[:300]}"
        self.registry_checked_at = datetime.now(UTC)
        self.metrics.registry_up.set(0)

    def _registry_answered(self) -> None:
        self.registry_ok = True
        self.registry_error = None
        self.registry_checked_at = datetime.now(UTC)
        self.metrics.registry_up.set(1)

    def _alias_version(self, alias: str) -> str | None:
        """The version ``alias`` points at, or None when the alias is not set.

        Raises:
            Exception: the registry did not answer (anything but "alias not found").
        """
        from mlflow.exceptions import MlflowException

        try:
            mv = self._registry().get_model_version_by_alias(self.model_name, alias)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        return str(mv.version)

    def reload(self, *, force: bool = False) -> ReloadResult:
        """Check the champion alias and swap to its version if it changed.

        A version refused before is tried again only with ``force`` (the admin route), so a bad
        version is not re-downloaded at every poll. Thread-safe: one load at a time.
        """
        if self.tracking_uri is None:
            v = self.current.version if self.current else None
            return ReloadResult("unchanged", v, v, "no registry configured")
        with self._load_lock:
            serving = self.current.version if self.current else None
            try:
                target = self._alias_version(CHAMPION)
            except Exception as exc:  # noqa: BLE001 - any failure means the registry is unusable
                self._registry_failed(exc)
                self.metrics.model_reloads.labels(outcome="registry_error").inc()
                log.warning("registry unreachable: %s", self.registry_error)
                return ReloadResult("registry_error", serving, None, self.registry_error or "")
            self._registry_answered()
            if target is None:
                return ReloadResult(
                    "unchanged",
                    serving,
                    None,
                    f"alias {CHAMPION!r} of {self.model_name} is not set",
                )
            if target == serving:
                return ReloadResult("unchanged", serving, target, f"version {target} is serving")
            if target in self._refused and not force:
                return ReloadResult(
                    "refused", serving, target, f"version {target} was refused before"
                )
            return self._load_and_swap(target, serving)

    def _load_and_swap(self, target: str, serving: str | None) -> ReloadResult:
        started = time.perf_counter()
        try:
            model = load_version(
                self._registry(),
                self.model_name,
                target,
                tracking_uri=self.tracking_uri,
                usecase=self.usecase,
            )
        except ModelRefused as exc:
            self._refused.add(target)
            self.last_refusal = {"version": target, "reason": str(exc), "at": _now()}
            self.metrics.model_reloads.labels(outcome="refused").inc()
            log.error("refused %s version %s: %s", self.model_name, target, exc)
            return ReloadResult("refused", serving, target, str(exc))
        except Exception as exc:  # noqa: BLE001 - registry/artifact store failure: retry later
            self._registry_failed(exc)
            self.metrics.model_reloads.labels(outcome="registry_error").inc()
            log.warning("could not download version %s: %s", target, exc)
            return ReloadResult("registry_error", serving, target, self.registry_error or "")
        self._refused.discard(target)
        self._swap(model)
        self.metrics.model_reloads.labels(outcome="swapped").inc()
        log.info(
            "serving %s version %s (was %s; loaded in %.2fs)",
            self.model_name,
            target,
            serving,
            time.perf_counter() - started,
        )
        return ReloadResult("swapped", target, target, f"now serving version {target}")

    def refresh_challenger(self) -> None:
        """Load the ``challenger`` alias for shadow scoring (no-op when shadow is off). Failures
        leave shadow scoring off for this round; the champion is never affected."""
        if not self.shadow or self.tracking_uri is None:
            return
        try:
            target = self._alias_version(CHALLENGER)
            if target is None:
                self.challenger = None
            elif (
                self.challenger is None or self.challenger.version != target
            ) and target not in self._refused:
                self.challenger = load_version(
                    self._registry(),
                    self.model_name,
                    target,
                    tracking_uri=self.tracking_uri,
                    usecase=self.usecase,
                )
        except ModelRefused as exc:
            log.warning("challenger refused for shadow scoring: %s", exc)
        except Exception as exc:  # noqa: BLE001
            log.warning("challenger not loaded: %s", exc)

    # --- background watcher ----------------------------------------------------------------------
    def start(self) -> None:
        """Start the watcher thread (first check right away). Never raises on a registry outage."""
        if self.tracking_uri is None or self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._watch, name="rollguard-model-watch", daemon=True
        )
        self._thread.start()

    def wake(self) -> None:
        """Check the alias now instead of at the next poll."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the watcher thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                self.reload()
                self.refresh_challenger()
            except Exception:  # noqa: BLE001 - the watcher must never die
                log.exception("model watcher iteration failed")
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    # --- status ----------------------------------------------------------------------------------
    def registry_status(self) -> dict[str, Any]:
        """Registry health for ``/readyz``."""
        return {
            "configured": self.tracking_uri is not None,
            "reachable": self.registry_ok,
            "error": self.registry_error,
            "checked_at": self.registry_checked_at.isoformat()
            if self.registry_checked_at
            else None,
            "last_refusal": self.last_refusal,
        }


def _now() -> str:
    return datetime.now(UTC).isoformat()
