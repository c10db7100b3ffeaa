"""The shipped alert rules and Alertmanager config, checked by the real promtool and amtool."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from rollguard.cli import app

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "monitoring" / "prometheus" / "rules" / "rollguard.rules.yml"
RULE_TESTS = sorted((ROOT / "monitoring" / "prometheus" / "tests").glob("*.test.yml"))
ALERTMANAGER = ROOT / "monitoring" / "alertmanager" / "alertmanager.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
#: The alerts issue 7 asks for (the rules file may have more).
REQUIRED = {
    "RollguardApiDown",
    "RollguardApiHighErrorRatio",
    "RollguardApiLatencyP99High",
    "RollguardModelNotReady",
    "RollguardModelReloadFailing",
    "RollguardDataDrift",
    "RollguardScoreDrift",
    "RollguardLiveQualityDegraded",
    "RollguardPipelineStale",
    "RollguardPipelineFailed",
    "RollguardRollbackHappened",
    "RollguardPredictionLogBacklog",
    "RollguardPredictionLogLoss",
    # issue 19: the model server's live signals
    "RollguardLiveScoreShift",
    "RollguardLiveFeatureShift",
}
#: Annotations every rule carries (the notifications show them; docs/alerting.md).
ANNOTATIONS = {"summary", "description", "runbook_url", "dashboard_url"}
DASHBOARDS = ROOT / "grafana" / "dashboards"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(
            f"{name} is not installed (Debian package prometheus / prometheus-alertmanager)"
        )
    return path


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_check_rules() -> None:
    out = subprocess.run(
        [tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_unit_tests_pass() -> None:
    out = subprocess.run(
        [tool("promtool"), "test", "rules", *map(str, RULE_TESTS)],
        capture_output=True,
        text=True,
        cwd=RULE_TESTS[0].parent,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_labels_annotations_runbook_section_and_tests() -> None:
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    assert names >= REQUIRED, REQUIRED - names
    anchors = _runbook_anchors()
    tests = [yaml.safe_load(p.read_text()) for p in RULE_TESTS]
    cases = [c for t in tests for case in t["tests"] for c in case["alert_rule_test"]]
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert "for" in rule, f"{name} has no for:"
        ann = rule["annotations"]
        assert ann["summary"] and "$value" in ann["description"], name
        anchor = ann["runbook_url"].split("#", 1)[1]
        assert ann["runbook_url"].startswith("docs/runbook.md#"), name
        assert anchor in anchors, f"{name}: runbook has no section #{anchor}"
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name}: no firing test"
        assert any(not c["exp_alerts"] for c in mine), f"{name}: no not-firing test"


def _runbook_anchors() -> set[str]:
    """GitHub's anchors of docs/runbook.md's headings (lower case, punctuation dropped, spaces to
    dashes)."""
    return {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    }


def _dashboards() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(DASHBOARDS.rglob("*.json"))]


def test_every_rule_links_its_runbook_section_and_an_existing_dashboard() -> None:
    """Summary, description, runbook_url and dashboard_url on every rule; the runbook anchor is a
    heading of docs/runbook.md; the dashboard path is ``/d/<uid>`` of a committed dashboard, or
    ``/dashboards?tag=<tag>`` whose tag only the per-use-case quality dashboards carry (one per
    registered use case)."""
    anchors = _runbook_anchors()
    boards = _dashboards()
    uids = {d["uid"] for d in boards}
    quality = {d["uid"] for d in boards if d["uid"].startswith("rollguard-model-quality-")}
    assert quality, "no committed model-quality dashboard"
    doc = yaml.safe_load(RULES.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert rules
    for rule in rules:
        name = rule.get("alert") or rule.get("record")
        ann = rule.get("annotations", {})
        assert {k for k, v in ann.items() if v} >= ANNOTATIONS, (name, ANNOTATIONS - set(ann))
        page, _, anchor = ann["runbook_url"].partition("#")
        assert page == "docs/runbook.md" and anchor in anchors, (name, ann["runbook_url"])
        url = ann["dashboard_url"]
        if url.startswith("/d/"):
            assert url.removeprefix("/d/") in uids, f"{name}: no committed dashboard {url}"
        else:
            tag = url.removeprefix("/dashboards?tag=")
            assert tag != url, f"{name}: dashboard_url {url!r} is neither /d/<uid> nor a tag list"
            tagged = {d["uid"] for d in boards if tag in d.get("tags", [])}
            assert tagged == quality, f"{name}: tag {tag!r} lists {sorted(tagged)}"


def test_live_rules_follow_the_issue_19_contract() -> None:
    """The live rules' expressions, for: and severity exactly as the contract of issue 19 states
    (the guard and the Alertmanager routes rely on the names, the version label and severity)."""
    rules = {r["alert"]: r for r in alert_rules()}
    shift = rules["RollguardLiveScoreShift"]
    assert " ".join(shift["expr"].split()) == (
        "max by (version) (rollguard_live_score_psi and on (instance, version) "
        "(rollguard_model_info == 1)) > 1"
    )
    assert (shift["for"], shift["labels"]) == ("15s", {"severity": "critical"})
    feature = rules["RollguardLiveFeatureShift"]
    assert (
        feature["expr"].strip()
        == "max by (version, feature) (rollguard_live_feature_psi and on (instance, version) "
        "(rollguard_model_info == 1)) > 0.25"
    )
    assert (feature["for"], feature["labels"]) == ("5m", {"severity": "warning"})


def test_amtool_check_config() -> None:
    out = subprocess.run(
        [tool("amtool"), "check-config", str(ALERTMANAGER)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_rollback_trigger_reaches_the_guard_webhook_with_a_token_file() -> None:
    """The degraded-model alert routes to the guard (and on to its severity route); others don't."""
    config = yaml.safe_load(ALERTMANAGER.read_text())
    guard = next(r for r in config["receivers"] if r["name"] == "rollguard-guard")
    hook = guard["webhook_configs"][0]
    assert hook["url"].endswith("/v1/alerts")
    assert hook["http_config"]["authorization"]["credentials_file"]
    amtool = tool("amtool")

    def route(**labels: str) -> list[str]:
        out = subprocess.run(
            [amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}"]
            + [f"{k}={v}" for k, v in labels.items()],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout.strip().split(",")

    assert route(alertname="RollguardLiveQualityDegraded", severity="critical") == [
        "rollguard-guard",
        "rollguard-critical",
    ]
    assert route(alertname="RollguardLiveScoreShift", severity="critical") == [
        "rollguard-guard",
        "rollguard-critical",
    ]
    assert route(alertname="RollguardLiveFeatureShift", severity="warning") == ["rollguard-warning"]
    assert route(alertname="RollguardApiDown", severity="critical") == ["rollguard-critical"]
    assert route(alertname="RollguardDataDrift", severity="warning") == ["rollguard-warning"]
    assert route(alertname="Other", severity="info") == ["rollguard-default"]


# --- receivers rendered from the environment (rollguard stack alertmanager-config) ---------------
@dataclass(frozen=True)
class Rendered:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def render(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """``rollguard stack alertmanager-config --out OUT`` in this process with exactly ``env`` among
    the ROLLGUARD_ALERT_* and ROLLGUARD_ENV variables (the command line as the compose job runs
    it; the delivery test runs it as a subprocess)."""

    def run(out: Path, env: dict[str, str]) -> Rendered:
        for name in list(os.environ):
            if name.startswith("ROLLGUARD_ALERT_") or name == "ROLLGUARD_ENV":
                monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        result = CliRunner().invoke(app, ["stack", "alertmanager-config", "--out", str(out)])
        return Rendered(result.exit_code, result.stdout, result.stderr)

    return run


def receiver_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Every integration configured, secrets in files (no line break: Alertmanager reads them as
    they are)."""
    (tmp_path / "smtp_password").write_text("smtp-password")
    (tmp_path / "webhook_url").write_text("https://hooks.example.test/services/T0/B0/x")
    (tmp_path / "routing_key").write_text("0123456789abcdef0123456789abcdef")
    return {
        "ROLLGUARD_ENV": "production",
        "ROLLGUARD_ALERT_SMTP_SMARTHOST": "smtp.example.test:587",
        "ROLLGUARD_ALERT_EMAIL_FROM": "alertmanager@example.test",
        "ROLLGUARD_ALERT_EMAIL_TO": "oncall@example.test",
        "ROLLGUARD_ALERT_SMTP_USERNAME": "alertmanager",
        "ROLLGUARD_ALERT_SMTP_PASSWORD_FILE": str(tmp_path / "smtp_password"),
        "ROLLGUARD_ALERT_WEBHOOK_URL_FILE": str(tmp_path / "webhook_url"),
        "ROLLGUARD_ALERT_PAGERDUTY_ROUTING_KEY_FILE": str(tmp_path / "routing_key"),
        **extra,
    }


def test_rendered_receivers_route_by_severity_and_send_resolved(
    tmp_path: Path, render: Any
) -> None:
    """Critical pages (PagerDuty), posts and e-mails; warnings and the rest post and e-mail; the
    guard keeps its webhook; every integration sends resolved notifications; amtool accepts it."""
    out = tmp_path / "am" / "alertmanager.yml"
    done = render(out, receiver_env(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    checked = subprocess.run(
        [tool("amtool"), "check-config", str(out)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "2 templates" in checked.stdout
    config = yaml.safe_load(out.read_text())
    shipped = yaml.safe_load(ALERTMANAGER.read_text())
    assert config["route"] == shipped["route"]
    assert config["inhibit_rules"] == shipped["inhibit_rules"]
    kinds = {r["name"]: sorted(k for k in r if k.endswith("_configs")) for r in config["receivers"]}
    assert kinds == {
        "rollguard-critical": ["email_configs", "pagerduty_configs", "slack_configs"],
        "rollguard-warning": ["email_configs", "slack_configs"],
        "rollguard-default": ["email_configs", "slack_configs"],
        "rollguard-guard": ["webhook_configs"],
    }
    integrations = [c for r in config["receivers"] for k in kinds[r["name"]] for c in r[k]]
    assert integrations and all(c["send_resolved"] is True for c in integrations)
    text = out.read_text()
    for secret in ("smtp-password", "hooks.example.test", "0123456789abcdef"):
        assert secret not in text, "the rendered config must name secret files, not hold secrets"
    links = (out.parent / "rollguard-links.tmpl").read_text()
    assert '"rollguard.grafana_base_url" }}http://localhost:3000/{{' in links


def test_no_receiver_is_refused_outside_development_in_one_line(
    tmp_path: Path, render: Any
) -> None:
    out = tmp_path / "alertmanager.yml"
    done = render(out, {"ROLLGUARD_ENV": "production"})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for variable in (
        "ROLLGUARD_ALERT_SMTP_SMARTHOST",
        "ROLLGUARD_ALERT_EMAIL_FROM",
        "ROLLGUARD_ALERT_EMAIL_TO",
        "ROLLGUARD_ALERT_WEBHOOK_URL_FILE",
        "ROLLGUARD_ALERT_PAGERDUTY_ROUTING_KEY_FILE",
    ):
        assert variable in lines[0]
    assert "Traceback" not in done.stderr and not out.exists()
    # The compose stack mounts every secret file, empty when unset: empty files are no receiver.
    for name in ("webhook_url", "routing_key"):
        (tmp_path / name).write_text("")
    empty = {
        "ROLLGUARD_ENV": "production",
        "ROLLGUARD_ALERT_WEBHOOK_URL_FILE": str(tmp_path / "webhook_url"),
        "ROLLGUARD_ALERT_PAGERDUTY_ROUTING_KEY_FILE": str(tmp_path / "routing_key"),
    }
    assert render(out, empty).returncode == 2 and not out.exists()


def test_no_receiver_in_development_renders_and_says_so(tmp_path: Path, render: Any) -> None:
    out = tmp_path / "alertmanager.yml"
    done = render(out, {"ROLLGUARD_ENV": "development"})
    assert done.returncode == 0, done.stderr
    assert "no alert receiver is configured" in done.stdout
    config = yaml.safe_load(out.read_text())
    shipped = yaml.safe_load(ALERTMANAGER.read_text())
    assert config["receivers"] == shipped["receivers"]
    checked = subprocess.run([tool("amtool"), "check-config", str(out)], capture_output=True)
    assert checked.returncode == 0


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"ROLLGUARD_ALERT_EMAIL_TO": ""}, "set ROLLGUARD_ALERT_EMAIL_TO as well"),
        ({"ROLLGUARD_ALERT_SMTP_USERNAME": ""}, "SMTP AUTH needs both"),
        ({"ROLLGUARD_ALERT_SMTP_SMARTHOST": "smtp.example.test"}, "SMTP_SMARTHOST"),
        ({"ROLLGUARD_ALERT_GRAFANA_URL": "grafana:3000"}, "GRAFANA_URL"),
        ({"ROLLGUARD_ALERT_WEBHOOK_URL_FILE": "/nonexistent/url"}, "cannot be read"),
        ({"newline": "1"}, "ends with a line break"),
    ],
)
def test_malformed_receivers_are_refused_with_the_variable(
    tmp_path: Path, render: Any, change: dict[str, str], expected: str
) -> None:
    env = receiver_env(tmp_path, **{k: v for k, v in change.items() if k != "newline"})
    if "newline" in change:
        (tmp_path / "smtp_password").write_text("smtp-password\n")
    out = tmp_path / "alertmanager.yml"
    done = render(out, {**env, "ROLLGUARD_ENV": "development"})
    assert done.returncode == 2, done.stdout
    assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not out.exists()
