#!/usr/bin/env python3
"""Write ``.env`` for docker-compose from ``.env.example``, filling every empty value with a fresh
random secret, except the alert receivers' settings (``ROLLGUARD_ALERT_*``).

Standard library only, so it runs before anything is installed: ``python3 deploy/generate_env.py``.
Secrets are 32 random bytes from :mod:`secrets` (the operating system's CSPRNG) as URL-safe text
(they end up inside database URLs); ``*_API_KEY`` are Rollguard API keys, ``*_AUTH`` log-in lines
(see :func:`new_secret`); ``AIRFLOW_FERNET_KEY`` is the URL-safe base64 encoding of 32
random bytes, the format of ``cryptography.fernet.Fernet.generate_key``. Values already set in the
example (ports, names) are copied as they are. The alert receivers' settings (SMTP server,
addresses, webhook URL, PagerDuty key; docs/alerting.md) are the operator's to give: they are
taken from this script's environment when set there (``ROLLGUARD_ALERT_EMAIL_TO=... make env``),
else copied from the example (empty), never generated. An existing ``.env`` is never overwritten
unless ``--force`` is given.

Exit codes: 0 written (with a note on stderr when no alert receiver is given); 2 refused (``.env``
exists, the example is missing, a given value spans lines).
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Variables the operator gives (the alert receivers): taken from the environment, never generated.
OPERATOR_PREFIX = "ROLLGUARD_ALERT_"
#: One of these given is a receiver Alertmanager can notify (e-mail also needs its addresses).
RECEIVER_VARIABLES = (
    "ROLLGUARD_ALERT_SMTP_SMARTHOST",
    "ROLLGUARD_ALERT_WEBHOOK_URL",
    "ROLLGUARD_ALERT_PAGERDUTY_ROUTING_KEY",
)


def new_secret(name: str) -> str:
    """A fresh random value for the variable ``name``: the Fernet key format for the Fernet key;
    a Rollguard API key ``rg_<8 hex>_<32 URL-safe characters>`` (:mod:`rollguard.apikeys`) for
    ``*_API_KEY``; ``rollguard:<secret>`` (one ``user:password`` line of a Gradio login file) for
    ``*_AUTH``; 32 random bytes as URL-safe text otherwise."""
    if name == "AIRFLOW_FERNET_KEY":
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    if name.endswith("_API_KEY"):
        return f"rg_{secrets.token_hex(4)}_{secrets.token_urlsafe(24)}"
    if name.endswith("_AUTH"):
        return f"rollguard:{secrets.token_urlsafe(32)}"
    return secrets.token_urlsafe(32)


def render(example: str, environ: Mapping[str, str] | None = None) -> str:
    """``.env`` text: the example's lines with every empty ``NAME=`` given a new secret, and each
    ``ROLLGUARD_ALERT_*`` variable given its value from ``environ`` (default: this process's
    environment) when set there, else kept as in the example.

    Raises:
        ValueError: a value from ``environ`` spans several lines (an env file holds one per line).
    """
    environ = os.environ if environ is None else environ
    lines = []
    for line in example.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and "=" in stripped:
            name, value = stripped.split("=", 1)
            if name.startswith(OPERATOR_PREFIX):
                if name in environ:
                    given = environ[name]
                    if "\n" in given or "\r" in given:
                        raise ValueError(f"{name} must be one line")
                    line = f"{name}={given}"
            elif value == "":
                line = f"{name}={new_secret(name)}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def receivers_given(env_text: str) -> bool:
    """True when the ``.env`` text gives a value to one of :data:`RECEIVER_VARIABLES`."""
    values = dict(
        line.split("=", 1)
        for line in env_text.splitlines()
        if line and not line.startswith("#") and "=" in line
    )
    return any(values.get(name) for name in RECEIVER_VARIABLES)


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
    try:
        text = render(args.example.read_text())
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    print(f"wrote {args.output} (mode 600) with fresh secrets")
    if not receivers_given(text):
        print(
            "note: no alert receiver is set: give ROLLGUARD_ALERT_SMTP_SMARTHOST, _EMAIL_FROM "
            "and _EMAIL_TO, or ROLLGUARD_ALERT_WEBHOOK_URL, or ROLLGUARD_ALERT_PAGERDUTY_ROUTING_KEY "
            f"in {args.output} before `make up` (docs/alerting.md, Receivers)",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
