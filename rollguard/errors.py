"""Errors that Rollguard reports to people: each says what failed, where, and what to do."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class RollguardError(Exception):
    """Base of every error the CLI prints as a clear message instead of a stack trace.

    ``kind`` is the stable, documented category printed by ``--json`` errors (subclasses set it).
    """

    kind = "invalid_input"


class DatasetError(RollguardError):
    """The transaction log is missing, altered or unparseable.

    Attributes:
        path: the file concerned.
        line: 1-based line number of the problem, or None when the whole file is concerned.
        problem: what is wrong, in words.
    """

    kind = "dataset"

    def __init__(self, path: Path | str, problem: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {problem}")


class ConfigurationError(RollguardError):
    """A setting or argument cannot be used as given."""

    kind = "configuration"


def describe_validation_error(exc: Any, prefix: str) -> str:
    """The problems of a pydantic-settings ``ValidationError`` as ``PREFIX_FIELD: message`` joined
    by ``"; "`` (the environment variable a person must fix, not the field's Python name)."""

    def variable(loc: tuple[Any, ...]) -> str:
        name = "_".join(str(p) for p in loc).upper()
        # A field read through an alias (AliasChoices) reports the alias: already the variable.
        return name if name.startswith(prefix) else prefix + name

    return "; ".join(f"{variable(e['loc'])}: {e['msg']}" for e in exc.errors())
