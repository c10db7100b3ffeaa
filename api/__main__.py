"""``python -m api [--host H] [--port P]``: the same as ``rollguard serve api``."""

import typer

from api.cli import serve_api

if __name__ == "__main__":
    typer.run(serve_api)
