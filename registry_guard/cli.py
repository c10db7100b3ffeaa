"""Commands of the registry guard: ``gate``, ``models``, ``history``, ``promote``, ``rollback``,
``guard-check``.

Thin edges: each command gathers settings, an MLflow client and the monitoring store, calls one
function of :mod:`registry_guard.registry`, and prints the result (``--json`` for one document).
"""

# No ``from __future__ import annotations`` here: typer reads the command signatures at runtime.
from typing import TYPE_CHECKING, Annotated, Any

import typer

from domain.evaluation import evaluation_rows
from registry_guard.guard import check_champion
from registry_guard.policy import load_policy
from registry_guard.registry import (
    describe_models,
    force_promote,
    history,
    read_pointer,
    rollback,
    run_gate,
)
from rollguard.commands import JsonFlag, emit, reports_errors, settings, to_jsonable
from rollguard.errors import RollguardError
from rollguard.mlflow_client import mlflow_client
from rollguard.store import open_store

if TYPE_CHECKING:
    import pandas as pd

    from rollguard.settings import Settings

NO_EVALUATION = "no evaluation data: run rollguard train first"


class NoEvaluationData(RollguardError):
    """There are no out-of-time evaluation rows to run the gate on."""

    kind = "no_evaluation_data"


def gate_rows(s: "Settings") -> "pd.DataFrame":
    """The gate's evaluation rows: :func:`domain.evaluation.evaluation_rows` (matured row frames
    of the newest evaluation cutoffs of the settings' use case).

    Raises:
        NoEvaluationData: nothing ingested, no matured cutoff, or no rows.
    """
    try:
        rows = evaluation_rows(s).rows
    except RollguardError as exc:
        raise NoEvaluationData(f"{NO_EVALUATION} ({exc})") from exc
    if rows.empty:
        raise NoEvaluationData(NO_EVALUATION)
    return rows


def _gate(s: "Settings", client: Any, engine: Any, **kw: Any) -> Any:
    """Run the gate on the settings' use case and evaluation rows (see ``registry.run_gate``)."""
    rows = gate_rows(s)
    return run_gate(
        rows,
        usecase=s.usecase_spec,
        model_name=s.model_name,
        policy=load_policy(s.gate_policy_path),
        client=client,
        engine=engine,
        budget=s.targeting_budget,
        **kw,
    )


def _context(s: "Settings") -> tuple[Any, Any]:
    return mlflow_client(s), open_store(s)


def _format_gate(run: Any) -> str:
    d = run.decision
    lines = [
        f"gate: {d.outcome} ({d.reason_code}) challenger {run.challenger_version} vs champion "
        f"{run.champion_version or '-'}"
    ]
    lines += [f"  - {r}" for r in d.reasons]
    lines += [f"  {c.name:<26} {c.verdict:<5} {c.detail or ''}" for c in d.checks]
    if run.move is not None:
        lines.append(f"champion: {run.move.from_version} -> {run.move.to_version}")
    return "\n".join(lines)


def _format_move(move: Any) -> str:
    tag = " (already done for this fingerprint)" if move.replayed else ""
    return (
        f"{move.action}: champion {move.from_version or '-'} -> {move.to_version} by "
        f"{move.actor}: {move.reason}{tag}"
    )


def _format_guard(result: Any) -> str:
    if result.champion_version is None:
        return f"guard: no champion to watch yet ({result.state}: {result.reason})"
    lines = [
        f"guard: champion {result.champion_version} is {result.state} "
        f"(cutoff {result.cutoff or '-'}, reference {result.reference_version or '-'}, "
        f"previous {result.previous_version or '-'})"
    ]
    lines += [f"  {c.name:<17} {c.verdict:<12} {c.detail}" for c in result.report.checks]
    if result.rollback is not None:
        lines.append(_format_move(result.rollback))
    if result.rollback_refused:
        lines.append(f"no rollback: {result.rollback_refused}")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Add the registry-guard commands to the ``rollguard`` application."""

    def _nonempty_reason(value: str) -> str:
        if not value.strip():
            raise typer.BadParameter("must say why (it is stored in the audit log)")
        return value.strip()

    def _version_number(value: str | None) -> str | None:
        if value is not None and not (value.isdigit() and 0 < int(value) < 2**63):
            raise typer.BadParameter(f"{value!r} is not a model version (a positive integer)")
        return value

    Reason = Annotated[
        str,
        typer.Option("--reason", help="Why (stored in the audit log).", callback=_nonempty_reason),
    ]

    @app.command("gate")
    @reports_errors
    def gate(
        version: Annotated[
            str | None, typer.Option(help="Challenger version (default: alias challenger).")
        ] = None,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Decide and report, move and tag nothing.")
        ] = False,
        actor: Annotated[str, typer.Option(help="pipeline, guard, alert or human.")] = "human",
        as_json: JsonFlag = False,
    ) -> None:
        """Evaluate the challenger against the champion now, and apply the decision."""
        s = settings()
        client, engine = _context(s)
        run = _gate(s, client, engine, version=version, actor=actor, apply=not dry_run)
        emit(
            {
                "model": run.model_name,
                "challenger_version": run.challenger_version,
                "champion_version": run.champion_version,
                "decision": run.decision.to_dict(),
                "move": to_jsonable(run.move),
                "artifacts": list(run.artifacts),
            },
            as_json,
            lambda _: _format_gate(run),
        )

    @app.command("models")
    @reports_errors
    def models(as_json: JsonFlag = False) -> None:
        """List the registered versions: status, aliases and gate decision."""
        s = settings()
        client, engine = _context(s)
        rows = describe_models(client, engine, s.model_name)
        emit(
            {"model": s.model_name, "versions": rows},
            as_json,
            lambda _: (
                "\n".join(
                    [f"{'version':>7}  {'status':<12} {'aliases':<20} gate"]
                    + [
                        f"{r['version']:>7}  {r['status'] or '-':<12} "
                        f"{','.join(r['aliases']) or '-':<20} {r['gate_decision'] or '-'}"
                        for r in rows
                    ]
                )
                if rows
                else f"no versions of {s.model_name} registered yet"
            ),
        )

    @app.command("history")
    @reports_errors
    def history_cmd(
        limit: Annotated[int, typer.Option(min=1, help="Most rows shown.")] = 50,
        moves_only: Annotated[
            bool, typer.Option("--moves-only", help="Hide refused attempts.")
        ] = False,
        as_json: JsonFlag = False,
    ) -> None:
        """Alias moves of the champion (and refused attempts), newest first."""
        s = settings()
        _, engine = _context(s)
        rows = history(engine, s.model_name, limit=limit, include_refused=not moves_only)
        emit(
            {"model": s.model_name, "history": rows},
            as_json,
            lambda _: (
                "\n".join(
                    f"{m.moved_at:%Y-%m-%d %H:%M:%S}  {m.outcome:<7} {m.action:<9} "
                    f"{m.from_version or '-'} -> {m.to_version or '-'}  {m.actor:<8} {m.reason}"
                    for m in rows
                )
                or "no alias moves yet"
            ),
        )

    @app.command("promote")
    @reports_errors
    def promote(
        version: Annotated[
            str, typer.Argument(help="Version to make champion.", callback=_version_number)
        ],
        reason: Reason,
        force: Annotated[
            bool, typer.Option("--force", help="Skip the gate (human override, audited).")
        ] = False,
        as_json: JsonFlag = False,
    ) -> None:
        """Make VERSION champion: through the gate, or directly with --force."""
        s = settings()
        client, engine = _context(s)
        if force:
            expected = read_pointer(engine, s.model_name)
            move = force_promote(
                s.model_name, version, expected=expected, reason=reason, client=client,
                engine=engine,
            )  # fmt: skip
            emit(move, as_json, _format_move)
            return
        run = _gate(s, client, engine, version=version, actor="human", reason=reason)
        emit(
            {"decision": run.decision.to_dict(), "move": to_jsonable(run.move)},
            as_json,
            lambda _: _format_gate(run),
        )
        if run.move is None:
            raise typer.Exit(code=1)

    @app.command("rollback")
    @reports_errors
    def rollback_cmd(
        reason: Reason,
        to: Annotated[
            str | None,
            typer.Option("--to", help="Version to return to.", callback=_version_number),
        ] = None,
        force: Annotated[
            bool,
            typer.Option(
                "--force", help="Allow --to a rejected, rolled-back or never-gated version."
            ),
        ] = False,
        fingerprint: Annotated[
            str | None, typer.Option(help="Idempotency key (e.g. alert fingerprint).")
        ] = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Move champion back to the previous good version (or --to VERSION)."""
        s = settings()
        client, engine = _context(s)
        move = rollback(
            reason,
            "human",
            to=to,
            fingerprint=fingerprint,
            model_name=s.model_name,
            cooldown_seconds=s.rollback_cooldown_seconds,
            client=client,
            engine=engine,
            force=force,
        )
        emit(move, as_json, _format_move)

    @app.command("guard-check")
    @reports_errors
    def guard_check(
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Check and record, but never roll back.")
        ] = False,
        as_json: JsonFlag = False,
    ) -> None:
        """Check the champion now (score shift, realized quality); roll it back when degraded."""
        s = settings()
        client, engine = _context(s)
        result = check_champion(s, client=client, engine=engine, act=not dry_run)
        emit(
            {
                "model": result.model_name,
                "champion_version": result.champion_version,
                "reference_version": result.reference_version,
                "previous_version": result.previous_version,
                "cutoff": result.cutoff,
                "state": result.state,
                "reason": result.reason,
                "checks": result.report.to_dict()["checks"],
                "rollback": to_jsonable(result.rollback),
                "rollback_refused": result.rollback_refused,
                "checked_at": result.checked_at,
            },
            as_json,
            lambda _: _format_guard(result),
        )
