"""Model lifecycle: load the ``champion`` alias at start, watch it, hot-swap atomically.

The serving model is one reference, :attr:`ModelManager.current`, to an immutable
:class:`~api.model.ServingModel`. A request reads it once and uses that object for everything, so
in-flight requests finish on the old model while new ones get the new one, and no response mixes
versions. Only :meth:`ModelManager._swap` assigns it (a single reference assignment, atomic under
the GIL). New versions are downloaded, loaded, smoke-tested and warmed up on a background thread
(or on the admin reload's worker thread) before the swap; a version that fails is refused,
counted and logged, and the old one keeps serving.

The same poll also watches the alias itself (:meth:`ModelManager.champion_status`):

* **missing champion**: the alias is not set (``alias_missing``), the version behind it was
  deleted (``version_missing``; MLflow deletes a version's aliases with it, so this is "the alias
  is gone and the serving version no longer exists") or the registry does not answer
  (``registry_unreachable``). The loaded version keeps serving and readiness stays 200 (a replica
  with a good model keeps taking traffic); a replica with no model answers 503 naming the reason.
  Gauge ``rollguard_champion_missing{model,reason}``, one WARNING log line when a state starts and
  one INFO line when it clears.
* **out-of-band moves**: each new alias target is looked up in the store's ``alias_audit``: the
  newest ``moved`` row of the model must name it as ``to_version`` (Rollguard's compare-and-set
  writes that row in the transaction that moves the alias). A target still without such a row
  :data:`AUDIT_GRACE_SECONDS` after it was first seen (the compare-and-set sets the alias a moment
  before it commits its row) sets ``rollguard_champion_unaudited_move{model}`` to 1 and logs one
  WARNING; an audited target sets it back to 0. A store that cannot be read leaves the state
  as it was ("unknown", never flagged) and is asked again at the next poll. Detection only: the
  new version is served all the same.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from api.history import latest_champion_move
from api.metrics import CHAMPION_MISSING_REASONS, ServingMetrics
from api.model import ModelRefused, ServingModel, default_usecase, load_version
from rollguard.logs import bind_process_fields
from rollguard.usecase import UseCase

log = logging.getLogger("rollguard.api")

CHAMPION = "champion"
CHALLENGER = "challenger"
#: Seconds an alias target may go without its ``alias_audit`` row before it counts as moved
#: outside Rollguard (the compare-and-set sets the alias, then tags versions, then commits the
#: row: well under a second; the margin also covers a slow store).
AUDIT_GRACE_SECONDS = 5.0
_TRAIN_HINT = (
    "train and gate one (`rollguard train`, then `rollguard gate`, or let the weekly DAG run)"
)


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
        audit_store: returns the monitoring store's engine (raising when it cannot be opened),
            to check that each champion move has its ``alias_audit`` row; None: not checked.
        audit_grace_seconds: see :data:`AUDIT_GRACE_SECONDS`.
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
        audit_store: Callable[[], Engine] | None = None,
        audit_grace_seconds: float = AUDIT_GRACE_SECONDS,
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
        # the alias watch (see the module docstring)
        self.audit_store = audit_store
        self.audit_grace_seconds = audit_grace_seconds
        self.alias_target: str | None = None
        self.missing: dict[str, str] | None = None  # {"reason", "detail", "since"}
        self.audit: dict[str, Any] = {"state": "not_checked" if audit_store is None else "unknown"}
        self.unaudited: dict[str, str] | None = None  # {"version", "since"} while flagged
        self._audit_version: str | None = None
        self._audit_first_miss: float | None = None
        self._audit_store_error: str | None = None
        metrics.model_ready.set(0)
        for reason in CHAMPION_MISSING_REASONS:
            metrics.champion_missing.labels(model=model_name, reason=reason).set(0)
        metrics.champion_unaudited_move.labels(model=model_name).set(0)

    # --- the one place the serving model changes ---------------------------------------------
    def _swap(self, model: ServingModel) -> None:
        old = self.current
        self.current = model  # the atomic swap
        # Every later log line of this server names the version it serves (docs/logs.md).
        bind_process_fields(model_version=model.version)
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
                serving_gone = (
                    target is None and serving is not None and not self._version_exists(serving)
                )
            except Exception as exc:  # noqa: BLE001 - any failure means the registry is unusable
                self._registry_failed(exc)
                self._set_missing(
                    "registry_unreachable", f"registry unreachable: {self.registry_error}"
                )
                self.metrics.model_reloads.labels(outcome="registry_error").inc()
                log.warning("registry unreachable: %s", self.registry_error)
                return ReloadResult("registry_error", serving, None, self.registry_error or "")
            self._registry_answered()
            self.alias_target = target
            if target is None:
                if serving_gone:
                    message = (
                        f"version {serving} of {self.model_name} was deleted from the registry "
                        f"(and with it alias {CHAMPION!r})"
                    )
                    self._set_missing("version_missing", message)
                else:
                    message = f"alias {CHAMPION!r} of {self.model_name} is not set"
                    self._set_missing("alias_missing", message)
                return ReloadResult("unchanged", serving, None, message)
            if target == serving:
                self._clear_missing()
                return ReloadResult("unchanged", serving, target, f"version {target} is serving")
            if target in self._refused and not force:
                self._clear_missing()
                return ReloadResult(
                    "refused", serving, target, f"version {target} was refused before"
                )
            result = self._load_and_swap(target, serving)
            if result.outcome != "registry_error":  # a failed download set its own reason
                self._clear_missing()
            return result

    def _version_exists(self, version: str) -> bool:
        """Whether ``version`` of the model still exists in the registry.

        Raises:
            Exception: the registry did not answer.
        """
        from mlflow.exceptions import MlflowException

        try:
            self._registry().get_model_version(self.model_name, version)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise
        return True

    # --- missing champion --------------------------------------------------------------------------
    def _set_missing(self, reason: str, detail: str) -> None:
        """Record that the champion cannot be confirmed; gauge and one WARNING per new state."""
        previous = self.missing
        if previous is not None and previous["reason"] == reason:
            self.missing = {**previous, "detail": detail}
            return
        self.missing = {"reason": reason, "detail": detail, "since": _now()}
        for r in CHAMPION_MISSING_REASONS:
            self.metrics.champion_missing.labels(model=self.model_name, reason=r).set(
                1 if r == reason else 0
            )
        serving = self.current.version if self.current else None
        log.warning(
            "champion of %s is missing (%s): %s; %s",
            self.model_name,
            reason,
            detail,
            f"version {serving} keeps serving" if serving else "no version is serving",
        )

    def _clear_missing(self) -> None:
        """The alias answered with a version: clear a missing state (one INFO line)."""
        previous = self.missing
        if previous is None:
            return
        self.missing = None
        for r in CHAMPION_MISSING_REASONS:
            self.metrics.champion_missing.labels(model=self.model_name, reason=r).set(0)
        log.info(
            "champion of %s is back: alias %r points at version %s (was %s since %s)",
            self.model_name,
            CHAMPION,
            self.alias_target,
            previous["reason"],
            previous["since"],
        )

    # --- out-of-band moves -------------------------------------------------------------------------
    def check_audit(self) -> None:
        """Check that the alias target of the last registry answer has its ``alias_audit`` row
        (see the module docstring). Called by the watcher after each reload, outside the load
        lock, so a slow store never delays loading a version (nor the admin reload).

        Never raises: a store that cannot be read leaves the verdict as it was.
        """
        target = self.alias_target
        if self.audit_store is None or target is None:
            return
        if target != self._audit_version:
            self._audit_version = target
            self._audit_first_miss = None
            self.audit = {"state": "unknown", "version": target}
        elif self.audit["state"] == "audited":
            return
        try:
            audited_to = latest_champion_move(self.audit_store(), self.model_name)
        except Exception as exc:  # noqa: BLE001 - StoreUnavailable or worse: ask again next poll
            if self._audit_store_error is None:  # one line per outage, not per poll
                log.warning(
                    "cannot check the audit of %s version %s (asked again at every poll): %s",
                    self.model_name,
                    target,
                    exc,
                )
            self._audit_store_error = str(exc)[:300]
            self.audit = {**self.audit, "state": "unknown", "error": self._audit_store_error}
            return
        if self._audit_store_error is not None:
            log.info("the audit of %s can be checked again", self.model_name)
            self._audit_store_error = None
        if audited_to == target:
            self.audit = {"state": "audited", "version": target}
            if self.unaudited is not None:
                log.info(
                    "champion of %s: version %s was moved by Rollguard (audit row found); "
                    "the out-of-band move of version %s is superseded",
                    self.model_name,
                    target,
                    self.unaudited["version"],
                )
                self.unaudited = None
            self.metrics.champion_unaudited_move.labels(model=self.model_name).set(0)
            return
        now = time.monotonic()
        if self._audit_first_miss is None:
            self._audit_first_miss = now
        if now - self._audit_first_miss < self.audit_grace_seconds:
            self.audit = {"state": "pending", "version": target}
            return
        self.audit = {"state": "unaudited", "version": target, "audited_version": audited_to}
        if self.unaudited is None or self.unaudited["version"] != target:
            self.unaudited = {"version": target, "since": _now()}
            log.warning(
                "champion of %s was moved to version %s outside Rollguard: no alias_audit row "
                "moved it there (newest audited champion: %s); serving it anyway",
                self.model_name,
                target,
                audited_to,
            )
        self.metrics.champion_unaudited_move.labels(model=self.model_name).set(1)

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
            if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
                self._set_missing(
                    "version_missing",
                    f"alias {CHAMPION!r} points at version {target}, which does not exist: {exc}",
                )
            else:
                self._registry_failed(exc)
                self._set_missing("registry_unreachable", f"could not download version {target}")
            self.metrics.model_reloads.labels(outcome="registry_error").inc()
            log.warning("could not download version %s: %s", target, exc)
            return ReloadResult(
                "registry_error", serving, target, f"{type(exc).__name__}: {str(exc)[:300]}"
            )
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
                self.check_audit()
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

    def champion_status(self) -> dict[str, Any]:
        """The alias watch for ``/readyz`` and ``/v1/model`` (shape: :class:`api.schemas.ChampionStatus`).

        ``state``: ``ok`` (the alias points at the serving version), ``alias_missing``,
        ``version_missing``, ``registry_unreachable``, ``load_refused`` (the alias points at a
        version that was refused; the previous one, if any, serves), ``loading`` (a new target is
        being loaded) or ``unknown`` (not checked yet, or no registry configured).
        """
        # One read of each reference: the watcher thread replaces them (never mutates them).
        current, missing, unaudited = self.current, self.missing, self.unaudited
        refusal, target, audit = self.last_refusal, self.alias_target, self.audit
        serving = current.version if current else None
        reason: str | None = None
        if missing is not None:
            state, reason = missing["reason"], missing["detail"]
        elif self.tracking_uri is None or self.registry_ok is None:
            state = "unknown"
        elif target == serving:
            state = "ok"
        elif refusal is not None and refusal["version"] == target:
            state, reason = "load_refused", f"version {refusal['version']}: {refusal['reason']}"
        else:
            state = "loading"
        return {
            "state": state,
            "reason": reason,
            "since": missing["since"] if missing else None,
            "alias_version": target,
            "audit": audit["state"],
            "unaudited_version": unaudited["version"] if unaudited else None,
            "unaudited_since": unaudited["since"] if unaudited else None,
        }

    def unavailable_reason(self) -> str:
        """Why no model serves, for the 503 of predict and readiness: ``<state>: <detail>``."""
        status = self.champion_status()
        state = status["state"]
        if state == "alias_missing":
            return f"alias_missing: {status['reason']}: {_TRAIN_HINT}"
        if state in ("version_missing", "registry_unreachable"):
            return f"{state}: {status['reason']}"
        if state == "load_refused":
            return f"load refused: {status['reason']}"
        if state == "loading":
            return f"version {status['alias_version']} is being loaded"
        if self.tracking_uri is None:
            return f"no champion version loaded (no registry configured): {_TRAIN_HINT}"
        return f"no champion version loaded yet (first registry check under way): {_TRAIN_HINT}"


def _now() -> str:
    return datetime.now(UTC).isoformat()
