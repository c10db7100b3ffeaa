"""``python -m ui [--host H] [--port P] [--api-url URL]``: the same as ``rollguard serve ui``."""

from ui.cli import main

if __name__ == "__main__":
    main()
