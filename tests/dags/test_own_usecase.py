"""A team's own use case: a package written in a temporary folder (a TEST FIXTURE, not a built-in),
installed with uv, registered under ``rollguard.usecases`` by its own ``pyproject.toml``, then checked
and run end to end by ``rollguard demo --usecase`` with no edit to Rollguard's source.

The fixture is deliberately the third shape: binary classification (as CDNOW) but with one row per
event (as hotel) and categorical features. Its data are synthetic support tickets, generated with a
fixed seed: escalation is likelier for long waits, high priority and customers with many tickets.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rollguard.files import sha256_file
from tests.dags.conftest import REPO, clean_environment

pytestmark = [pytest.mark.slow]

PACKAGE = "acme_tickets"
USECASE_MODULE = '''
"""Ticket escalation (TEST FIXTURE of tests/dags/test_own_usecase.py): will a support ticket be
escalated? One row per ticket opened in the week before the cutoff; the label is known at once."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pandera.pandas as pa
from pandera.engines import pandas_engine

from rollguard.errors import DatasetError
from rollguard.files import sha256_file
from rollguard.usecase import (
    FeatureSpec, History, LabelSpec, SliceSpec, TargetingSpec, TaskType, UseCase, ValueSpec,
)

DATA = Path(__file__).with_name("tickets.csv")
DATA_SHA256 = "{sha256}"
PRIORITIES = ("low", "medium", "high")
PRODUCTS = ("billing", "mobile", "web")


class TicketEscalation(UseCase):
    name = "acme"
    title = "ACME ticket escalation"
    model_name = "acme-escalation"
    task = TaskType.BINARY_CLASSIFICATION
    scoring_unit = "event"
    entity_column = "ticket_id"
    record_schema = pa.DataFrameSchema(
        {{
            "ticket_id": pa.Column("int64", coerce=True),
            "opened": pa.Column(
                pandas_engine.DateTime(to_datetime_kwargs={{"format": "%Y-%m-%d"}}), coerce=True
            ),
            "priority": pa.Column(str, pa.Check.isin(PRIORITIES, name="unknown_category")),
            "product": pa.Column(str, pa.Check.isin(PRODUCTS, name="unknown_category")),
            "wait_hours": pa.Column("float64", pa.Check.ge(0, name="negative_value"), coerce=True),
            "previous_tickets": pa.Column(
                "int64", pa.Check.ge(0, name="negative_value"), coerce=True
            ),
            "escalated": pa.Column("int64", pa.Check.isin([0, 1]), coerce=True),
        }},
        strict=True,
        ordered=True,
    )
    record_id_column = "ticket_id"
    record_time_column = "opened"
    file_prefix = "acme_"
    features = (
        FeatureSpec("wait_hours", "numeric", "Hours until the first answer.", 4.0, "hours", 0),
        FeatureSpec("previous_tickets", "numeric", "Earlier tickets of the customer.", 1.0, "count", 0),
        FeatureSpec("priority", "categorical", "Priority set by the customer.", "medium",
                    categories=PRIORITIES),
        FeatureSpec("product", "categorical", "Product concerned.", "web", categories=PRODUCTS),
    )
    label = LabelSpec("escalated", "The ticket was escalated to the second line (1) or not (0).")
    value = ValueSpec("escalation_cost", "Cost of an escalation, 40 EUR each.", "EUR")
    slices = (SliceSpec("priority", "priority_slice", "low, medium or high priority"),)
    targeting = TargetingSpec(0.2, "team leads review the 20% riskiest tickets", "tickets")
    training_cutoffs = 6
    evaluation_cutoffs = 4  # 4 x 700 tickets: above the gate's 2,000-row minimum evidence

    def load_history(self, path: Path | None = None, expected_sha256: str | None = None) -> History:
        source = path or DATA
        digest = sha256_file(source)
        if digest != (expected_sha256 or DATA_SHA256):
            raise DatasetError(source, f"SHA-256 mismatch: found {{digest}}")
        records = self.record_schema.validate(pd.read_csv(source, dtype=str))
        return History(records, source, digest, "acme fixture", {{"n_tickets": len(records)}})

    def build_rows(self, records, cutoff: date, *, label_available: bool) -> pd.DataFrame:
        end = pd.Timestamp(cutoff)
        week = records[(records["opened"] >= end - pd.Timedelta(days=7)) & (records["opened"] < end)]
        week = week.sort_values("ticket_id")
        label = week["escalated"].astype("Int8")
        return pd.DataFrame(
            {{
                "ticket_id": week["ticket_id"].to_numpy(),
                "cutoff": end,
                "wait_hours": week["wait_hours"].astype("float64").to_numpy(),
                "previous_tickets": week["previous_tickets"].astype("float64").to_numpy(),
                "priority": week["priority"].to_numpy(),
                "product": week["product"].to_numpy(),
                "escalated": label.to_numpy() if label_available else pd.NA,
                "escalation_cost": (40.0 * week["escalated"]).to_numpy() if label_available else float("nan"),
                "label_available": label_available,
                "priority_slice": week["priority"].to_numpy(),
            }}
        ).astype({{"escalated": "Int8"}})


USECASE = TicketEscalation()
'''

PYPROJECT = """
[project]
name = "acme-tickets"
version = "0.1.0"
requires-python = ">=3.11"

[project.entry-points."rollguard.usecases"]
acme = "acme_tickets:USECASE"

[build-system]
requires = ["hatchling>=1.24"]
build-backend = "hatchling.build"

[tool.hatch.build.targets.wheel]
packages = ["acme_tickets"]
"""


def _tickets(weeks: int = 40, per_week: int = 700, seed: int = 11) -> pd.DataFrame:
    """Synthetic tickets: ``weeks`` ISO weeks from Monday 2021-01-04, ``per_week`` tickets each."""
    rng = np.random.default_rng(seed)
    n = weeks * per_week
    day = np.repeat(np.arange(weeks) * 7, per_week) + rng.integers(0, 7, n)
    priority = rng.choice(["low", "medium", "high"], n, p=[0.5, 0.35, 0.15])
    wait = rng.gamma(2.0, 3.0, n)
    previous = rng.poisson(1.5, n)
    logit = -2.2 + 0.18 * wait + 1.3 * (priority == "high") + 0.25 * previous
    escalated = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame(
        {
            "ticket_id": np.arange(1, n + 1),
            "opened": (pd.Timestamp("2021-01-04") + pd.to_timedelta(day, unit="D")).strftime(
                "%Y-%m-%d"
            ),
            "priority": priority,
            "product": rng.choice(["billing", "mobile", "web"], n),
            "wait_hours": wait.round(2),
            "previous_tickets": previous,
            "escalated": escalated,
        }
    )


def _uv() -> str:
    found = shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")
    if not Path(found).exists():
        pytest.skip("uv is not installed (make setup installs it into .tools/)")
    return found


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture package, written and installed (``uv pip install --target``) into a folder."""
    root = tmp_path_factory.mktemp("acme")
    package = root / "src" / PACKAGE
    package.mkdir(parents=True)
    _tickets().to_csv(package / "tickets.csv", index=False)
    module = USECASE_MODULE.format(sha256=sha256_file(package / "tickets.csv"))
    (package / "__init__.py").write_text(textwrap.dedent(module))
    (root / "src" / "pyproject.toml").write_text(PYPROJECT)
    target = root / "site"
    subprocess.run(
        [
            _uv(),
            "pip",
            "install",
            "--no-deps",
            "--quiet",
            "--python",
            sys.executable,
            "--target",
            str(target),
            str(root / "src"),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


def _rollguard(
    site: Path, home: Path, *args: str, timeout: float = 1200
) -> subprocess.CompletedProcess:
    env = clean_environment(
        {
            "PYTHONPATH": f"{site}:{REPO}",
            "ROLLGUARD_HOME": str(home),
            "ROLLGUARD_TUNING_TRIALS": "3",
            "ROLLGUARD_NUM_BOOST_ROUND": "60",
            "ROLLGUARD_SHAP_SAMPLE_ROWS": "200",
        }
    )
    rollguard = Path(sys.executable).with_name("rollguard")
    return subprocess.run(
        [str(rollguard), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_own_usecase_is_registered_and_passes_its_contract_check(
    site: Path, tmp_path: Path
) -> None:
    listed = _rollguard(site, tmp_path / "home", "usecase", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["acme"] == "acme_tickets:USECASE"
    checked = _rollguard(site, tmp_path / "home", "usecase", "check", "acme", "--json")
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["ok"] is True
    assert not (REPO / "usecases" / "acme_tickets").exists(), "nothing was written into Rollguard"


def test_demo_runs_end_to_end_on_the_own_usecase(site: Path, tmp_path: Path) -> None:
    run = _rollguard(site, tmp_path / "home", "demo", "--usecase", "acme", "--weeks", "6", "--json")
    assert run.returncode == 0, run.stderr[-6000:]
    out = json.loads(run.stdout)
    rows, events, summary = out["rows"], out["events"], out["summary"]
    assert rows[0]["decision"] == "bootstrap", rows[0]
    assert summary["files_quarantined"] == 1
    gated = [e for e in events if e.get("event") == "broken model gated"]
    assert gated and gated[0]["outcome"] == "reject", events
    assert summary["rollbacks"] >= 1, json.dumps(rows, indent=1)
