"""The servers the tests start are the versions docs/deploy.md ("Versions") says they are: the
shipped ones where a registry package has them (PostgreSQL for the private clusters), else the
documented older ones (Debian's Prometheus and Alertmanager, the shared test database server).

tests/static/test_compose.py checks the other half: the images the stack ships are the table's."""

from __future__ import annotations

import os
import re
import subprocess

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.support.alert_stack import ALERTMANAGER_BIN, PROMETHEUS_BIN, missing_binaries
from tests.support.api_servers import PG_BIN, PrivatePostgres
from tests.support.compose import versions_table
from tests.support.embedded_postgres import BIN_ENV, server_version

TABLE = versions_table()
#: The session databases' server, as tests/conftest.py reads it.
PG_ADMIN_URL = os.environ.get(
    "ROLLGUARD_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _version(argv: list[str]) -> str:
    """The first ``X.Y.Z`` in a program's ``--version`` output."""
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    match = re.search(r"\d+\.\d+(\.\d+)?", out.stdout + out.stderr)
    assert match, out
    return match.group(0)


@pytest.mark.parametrize(
    ("component", "binary"), [("Prometheus", PROMETHEUS_BIN), ("Alertmanager", ALERTMANAGER_BIN)]
)
def test_monitoring_binaries_are_the_versions_docs_state(component: str, binary: object) -> None:
    reason = missing_binaries()
    if reason:
        pytest.skip(reason)
    running = _version([str(binary), "--version"])
    stated = TABLE[component]["tests"]
    assert running == stated or running.startswith(stated + "."), (component, running, stated)


def test_private_clusters_run_the_shipped_postgresql() -> None:
    """The clusters of test_stack_commands.py and test_api_server.py (compose's init script, the
    roles, migrations, a store outage) run the image's PostgreSQL release."""
    reason = PrivatePostgres.unavailable()
    if reason:
        pytest.skip(reason)
    running = server_version(PG_BIN)
    stated = TABLE["PostgreSQL"]["tests"]
    if running != stated:
        pytest.skip(
            f"the private clusters' server is {running} ({PG_BIN}), the stack ships {stated}: "
            f"set {BIN_ENV} to the folder `python3 -m tests.support.embedded_postgres install "
            "FOLDER` prints (docs/deploy.md, 'Versions')"
        )
    assert running == stated


def test_shared_test_server_is_the_version_docs_state() -> None:
    """The server of the session databases (``ROLLGUARD_TEST_PG_ADMIN_URL``): the documented gap."""
    url = make_url(PG_ADMIN_URL)
    try:
        conn = psycopg.connect(
            host=url.host, port=url.port or 5432, user=url.username, dbname=url.database,
            connect_timeout=3,
        )  # fmt: skip
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}")
    with conn:
        major = conn.info.server_version // 10000
    assert str(major) == TABLE["PostgreSQL (shared test databases)"]["tests"]
