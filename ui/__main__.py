"""``python -m ui [--host H] [--port P] [--api-url URL]``: the same as ``rollguard serve ui``."""

import typer

from ui.cli import serve_ui

if __name__ == "__main__":
    typer.run(serve_ui)
