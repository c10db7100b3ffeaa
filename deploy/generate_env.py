#!/usr/bin/env python3
"""Write ``.env`` for docker-compose from ``.env.example``, filling every empty value with a fresh
random secret.

Standard library only, so it runs before anything is installed: ``python3 deploy/generate_env.py``.
Secrets are 32 random bytes from :mod:`secrets` (the operating system's CSPRNG) as URL-safe text
(they end up inside database URLs); ``AIRFLOW_FERNET_KEY`` is the URL-safe base64 encoding of 32
random bytes, the format of ``cryptography.fernet.Fernet.generate_key``. Values already set in the
example (ports, names) are copied as they are. An existing ``.env`` is never overwritten unless
``--force`` is given.

Exit codes: 0 written; 2 refused (``.env`` exists, or the example is missing).
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def new_secret(name: str) -> str:
    """A fresh random value for the variable ``name`` (Fernet key format for the Fernet key)."""
    if name == "AIRFLOW_FERNET_KEY":
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    return secrets.token_urlsafe(32)


def render(example: str) -> str:
    """``.env`` text: the example's lines with every empty ``NAME=`` given a new secret."""
    lines = []
    for line in example.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and "=" in stripped:
            name, value = stripped.split("=", 1)
            if value == "":
                line = f"{name}={new_secret(name)}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write .env with fresh secrets from .env.example.")
    parser.add_argument("--example", type=Path, default=ROOT / ".env.example")
    parser.add_argument("--output", type=Path, default=ROOT / ".env")
    parser.add_argument("--force", action="store_true", help="overwrite an existing .env")
    args = parser.parse_args(argv)
    if not args.example.is_file():
        print(f"error: {args.example} not found", file=sys.stderr)
        return 2
    if args.output.exists() and not args.force:
        print(
            f"error: {args.output} exists; keep it (the databases were created with its "
            "passwords) or pass --force",
            file=sys.stderr,
        )
        return 2
    text = render(args.example.read_text())
    fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    print(f"wrote {args.output} (mode 600) with fresh secrets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
