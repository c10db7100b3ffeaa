"""``python -m api [--host H] [--port P]``: the same as ``rollguard serve api``, refused starts
included (one ``error:`` line on stderr, exit code 2)."""

import sys

import typer

from api.cli import serve_api
from rollguard.errors import RollguardError

if __name__ == "__main__":
    try:
        typer.run(serve_api)
    except RollguardError as exc:  # e.g. ROLLGUARD_USECASE names no registered use case
        typer.echo(f"error: {' '.join(str(exc).split())}", err=True)
        sys.exit(2)
