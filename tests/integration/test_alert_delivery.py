"""Alerts reach a person, end to end with the real binaries: a real SMTP server (aiosmtpd, with
SMTP AUTH), a webhook sink (a real HTTP server taking the Slack-compatible and the PagerDuty
payloads), real Alertmanager running the config that ``rollguard stack alertmanager-config``
renders, and real Prometheus evaluating the shipped rules (only the intervals and the ``for:`` of
the two alerts caused here are shortened).

A model server that stops answering fires ``RollguardApiDown`` (critical: e-mail, webhook, page);
starting it again resolves it. A degradation injected as the live guard records one fires
``RollguardLiveQualityDegraded`` (critical), the guard rolls back, which fires the warning
``RollguardRollbackHappened`` (e-mail and webhook, no page); a newer healthy guard check resolves
the degradation. Each notification must carry the summary and the description as Prometheus
expanded them (the value is in them), the labels, the runbook link and the absolute dashboard
link, then arrive again as resolved.
"""

from __future__ import annotations

import email
import email.policy
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import insert

from rollguard.db.models import GuardCheckRow
from tests.support.alert_stack import (
    RULES,
    TEST_INTERVALS,
    TRIGGER,
    AlertStack,
    Intervals,
    missing_binaries,
    render_alertmanager_config,
    start_stack,
    targets_up,
    wait_until,
    write_rules,
)
from tests.support.servers import free_port

pytestmark = [
    pytest.mark.slow,
    # AUTH without TLS is what this loopback test wants (Alertmanager sends PLAIN only to 127.0.0.1).
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]

API_DOWN = "RollguardApiDown"
ROLLBACK = "RollguardRollbackHappened"
#: The alerts this test causes; their ``for:`` is shortened to the test interval.
CAUSED = (API_DOWN, TRIGGER)
#: Where notifications point; any base works, the links must be made absolute with it.
GRAFANA = "http://grafana.rollguard.test:3000/"
RUNBOOKS = "https://git.rollguard.test/rollguard/blob/main/"
#: Until every rule carries ``dashboard_url`` (issue 19's rules work), this test's copy of the
#: rules gives the rules without one the service dashboard.
DEFAULT_DASHBOARD = "/d/rollguard-service"
SMTP_USER, SMTP_PASSWORD = "alertmanager", "smtp-password-0123456789"
RECIPIENTS = ["oncall@rollguard.test", "lead@rollguard.test"]
ROUTING_KEY = "pagerduty-routing-key-0123456789abcdef"


# --- the sinks ------------------------------------------------------------------------------------
class Mailbox:
    """aiosmtpd handler and authenticator: keeps every accepted message and every AUTH attempt."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self.logins: list[tuple[str, bool]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), message))
        return "250 OK"

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login.decode(),
            auth_data.password.decode(),
        ) == (SMTP_USER, SMTP_PASSWORD)
        self.logins.append((mechanism, ok))
        return AuthResult(success=ok)


@dataclass
class WebhookSink:
    """A real HTTP server recording the JSON bodies POSTed to it, by path."""

    bodies: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> WebhookSink:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                sink.bodies.append((self.path, json.loads(self.rfile.read(length))))
                self.send_response(202 if self.path == "/pagerduty" else 200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status": "success"}')

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


# --- configs --------------------------------------------------------------------------------------
def _duration(seconds: float) -> str:
    return f"{int(round(seconds * 1000))}ms"


def write_delivery_rules(path: Path, iv: Intervals) -> Path:
    """The shipped rules at the test's evaluation interval, with the caused alerts' ``for:``
    shortened, and ``dashboard_url`` on the rules that lack one (see DEFAULT_DASHBOARD)."""
    write_rules(path, iv)
    doc = yaml.safe_load(path.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in CAUSED:
                rule["for"] = _duration(iv.trigger_for)
            if "alert" in rule:
                rule["annotations"].setdefault("dashboard_url", DEFAULT_DASHBOARD)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def shorten_routes(path: Path, iv: Intervals) -> None:
    """Every route's group_wait and group_interval set to the test's (resolved notifications go
    out one group_interval after the resolution)."""
    doc = yaml.safe_load(path.read_text())
    routes = [doc["route"], *doc["route"]["routes"]]
    for route in routes:
        route["group_wait"] = _duration(iv.group_wait)
        route["group_interval"] = _duration(iv.group_interval)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


@dataclass
class Delivery:
    stack: AlertStack
    mailbox: Mailbox
    sink: WebhookSink


@pytest.fixture
def delivery(mlflow_server: str, tmp_path: Path) -> Iterator[Delivery]:
    reason = missing_binaries()
    if reason:
        pytest.skip(reason)
    mailbox, sink = Mailbox(), WebhookSink().start()
    smtp = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=mailbox,
        auth_required=True,
        auth_require_tls=False,
        # PLAIN only: aiosmtpd's LOGIN challenges ("User Name\\0") are not the "Username:" that
        # Alertmanager's LOGIN client expects; common servers offer PLAIN too.
        auth_exclude_mechanism=["LOGIN"],
    )
    smtp.start()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "smtp_password").write_text(SMTP_PASSWORD)  # no line break: sent as it is
    (secrets / "webhook_url").write_text(f"{sink.url}/slack\n")
    (secrets / "routing_key").write_text(ROUTING_KEY + "\n")

    def alertmanager_config(path: Path, iv: Intervals, guard_url: str, token_file: Path) -> Path:
        done = render_alertmanager_config(
            path,
            {
                "ROLLGUARD_ENV": "test",
                "ROLLGUARD_ALERT_SMTP_SMARTHOST": f"127.0.0.1:{smtp.port}",
                "ROLLGUARD_ALERT_EMAIL_FROM": "alertmanager@rollguard.test",
                "ROLLGUARD_ALERT_EMAIL_TO": ", ".join(RECIPIENTS),
                "ROLLGUARD_ALERT_SMTP_USERNAME": SMTP_USER,
                "ROLLGUARD_ALERT_SMTP_PASSWORD_FILE": str(secrets / "smtp_password"),
                "ROLLGUARD_ALERT_SMTP_REQUIRE_TLS": "false",
                "ROLLGUARD_ALERT_WEBHOOK_URL_FILE": str(secrets / "webhook_url"),
                "ROLLGUARD_ALERT_PAGERDUTY_ROUTING_KEY_FILE": str(secrets / "routing_key"),
                "ROLLGUARD_ALERT_PAGERDUTY_URL": f"{sink.url}/pagerduty",
                "ROLLGUARD_ALERT_GRAFANA_URL": GRAFANA,
                "ROLLGUARD_ALERT_RUNBOOK_BASE_URL": RUNBOOKS,
                "ROLLGUARD_ALERT_GUARD_URL": guard_url,
                "ROLLGUARD_ALERT_GUARD_TOKEN_FILE": str(token_file),
            },
        )
        assert done.returncode == 0, done.stdout + done.stderr
        shorten_routes(path, iv)
        return path

    stack = None
    try:
        stack = start_stack(
            tmp_path / "stack",
            mlflow_server,
            TEST_INTERVALS,
            rules=write_delivery_rules,
            alertmanager_config=alertmanager_config,
        )
        yield Delivery(stack, mailbox, sink)
    finally:
        if stack is not None:
            stack.stop()
            print(stack.logs())  # pytest shows captured output only when the test failed
        print("e-mails:", [str(m["Subject"]) for _, m in mailbox.messages])
        print("webhook:", [(path, body) for path, body in sink.bodies])
        smtp.stop()
        sink.stop()


# --- what arrived ---------------------------------------------------------------------------------
def prometheus_annotations(stack: AlertStack, alertname: str) -> dict[str, str]:
    """The annotations Prometheus expanded for the firing ``alertname`` (its $value inside)."""
    alerts = httpx.get(stack.prometheus.url + "/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    firing = [a for a in alerts if a["labels"]["alertname"] == alertname and a["state"] == "firing"]
    return firing[0]["annotations"] if firing else {}


def rule(alertname: str) -> dict[str, Any]:
    doc = yaml.safe_load(RULES.read_text())
    return next(r for g in doc["groups"] for r in g["rules"] if r.get("alert") == alertname)


def links(annotations: dict[str, str]) -> tuple[str, str]:
    """(runbook, dashboard) as a person must get them: the rule's paths on the configured bases."""
    return (
        RUNBOOKS + annotations["runbook_url"].lstrip("/"),
        GRAFANA + annotations["dashboard_url"].lstrip("/"),
    )


def mails(d: Delivery, alertname: str, status: str) -> list[tuple[list[str], EmailMessage]]:
    tag = "[FIRING" if status == "firing" else "[RESOLVED]"
    return [
        (to, m)
        for to, m in d.mailbox.messages
        if str(m["Subject"]).startswith(tag) and f"] {alertname} (" in str(m["Subject"])
    ]


def slack_posts(d: Delivery, alertname: str, status: str) -> list[dict[str, Any]]:
    tag = "[FIRING" if status == "firing" else "[RESOLVED]"
    return [
        body["attachments"][0]
        for path, body in d.sink.bodies
        if path == "/slack"
        and body["attachments"][0]["title"].startswith(tag)
        and f"] {alertname} (" in body["attachments"][0]["title"]
    ]


def pages(d: Delivery, alertname: str, action: str) -> list[dict[str, Any]]:
    return [
        body
        for path, body in d.sink.bodies
        if path == "/pagerduty"
        and body["event_action"] == action
        and f"] {alertname} (" in body["payload"]["summary"]
    ]


def part(message: EmailMessage, subtype: str) -> str:
    """The ``text/<subtype>`` body of an e-mail, decoded."""
    body = message.get_body(preferencelist=(subtype,))
    assert body is not None, f"no text/{subtype} part"
    return str(body.get_content())


def assert_delivered(
    d: Delivery, alertname: str, status: str, annotations: dict[str, str], *, paged: bool
) -> None:
    """Wait for ``alertname``'s ``status`` notification by e-mail and webhook (and page, when
    ``paged``), then check what a person reads in each."""
    wait_until(lambda: mails(d, alertname, status), 60, f"{alertname} {status} e-mail")
    wait_until(lambda: slack_posts(d, alertname, status), 60, f"{alertname} {status} webhook")
    action = "trigger" if status == "firing" else "resolve"
    if paged:
        wait_until(lambda: pages(d, alertname, action), 60, f"{alertname} {status} page")
    runbook, dashboard = links(annotations)
    fields = {
        "Summary": annotations["summary"],
        "Details": annotations["description"],
        "Runbook": runbook,
        "Dashboard": dashboard,
    }
    header = f"[{status.upper()}] {alertname}"
    to, message = mails(d, alertname, status)[0]
    assert sorted(to) == sorted(RECIPIENTS)
    assert annotations["summary"] in str(message["Subject"])
    text = part(message, "plain")
    for line in [header, *(f"{k}: {v}" for k, v in fields.items())]:
        assert line in text, f"e-mail lacks {line!r}:\n{text}"
    assert f'href="{dashboard}"' in part(message, "html")
    post = slack_posts(d, alertname, status)[0]
    assert post["title_link"] == dashboard
    severity = rule(alertname)["labels"]["severity"]
    colors = {"critical": "danger", "warning": "warning"}
    assert post["color"] == ("good" if status == "resolved" else colors[severity])
    for line in [f"*{header}*", *(f"*{k}:* {v}" for k, v in fields.items())]:
        assert line in post["text"], f"webhook lacks {line!r}:\n{post['text']}"
    if paged:
        page = pages(d, alertname, action)[0]
        assert page["routing_key"] == ROUTING_KEY
        assert {link["href"] for link in page["links"]} == {runbook, dashboard}
        assert annotations["summary"] in page["payload"]["summary"]
        assert annotations["description"] in page["payload"]["custom_details"]["alerts"]
    else:
        assert not pages(d, alertname, "trigger"), f"{alertname} must not page"


def test_a_page_and_a_warning_reach_email_and_webhook_then_their_resolution(
    delivery: Delivery,
) -> None:
    d, stack = delivery, delivery.stack
    wait_until(lambda: targets_up(stack), 60, "Prometheus scraping API and guard")
    for name in (API_DOWN, TRIGGER, ROLLBACK):
        assert "$value" in rule(name)["annotations"]["description"], f"{name} omits its value"

    # 1. The model server stops answering: a critical alert pages, is e-mailed and posted.
    stack.api.stop()
    down = wait_until(lambda: prometheus_annotations(stack, API_DOWN), 60, f"{API_DOWN} firing")
    assert "(up = 0)" in down["description"]
    assert down["runbook_url"] == rule(API_DOWN)["annotations"]["runbook_url"]
    assert_delivered(d, API_DOWN, "firing", down, paged=True)
    where = f"Where: instance 127.0.0.1:{stack.api.port}"
    assert where in part(mails(d, API_DOWN, "firing")[0][1], "plain")

    # ... and it comes back: the resolution reaches the same people.
    stack.api.start(timeout=120)
    assert_delivered(d, API_DOWN, "resolved", down, paged=True)

    # 2. A degraded champion: critical (the guard rolls back), then the rollback's warning.
    stack.inject_degradation()
    degraded = wait_until(lambda: prometheus_annotations(stack, TRIGGER), 60, f"{TRIGGER} firing")
    assert "(value 1)" in degraded["description"]
    assert_delivered(d, TRIGGER, "firing", degraded, paged=True)
    rolled = wait_until(lambda: prometheus_annotations(stack, ROLLBACK), 60, f"{ROLLBACK} firing")
    assert_delivered(d, ROLLBACK, "firing", rolled, paged=False)

    # A resolved notification carries the annotations of the alert's last evaluation: since the
    # rollback they name the restored champion.
    degraded = wait_until(
        lambda: (
            (a := prometheus_annotations(stack, TRIGGER))
            and f"(version {stack.v1})" in a["description"]
            and a
        ),
        60,
        f"{TRIGGER}'s description naming the restored champion",
    )
    # A newer check finds the restored champion healthy: the degradation resolves.
    with stack.engine.begin() as conn:
        conn.execute(
            insert(GuardCheckRow).values(
                model_name=stack.settings.model_name,
                champion_version=stack.v1,
                state="ok",
                reason="restored champion checked healthy",
                report="{}",
                checked_at=datetime.now(UTC),
            )
        )
    assert_delivered(d, TRIGGER, "resolved", degraded, paged=True)

    # Every delivery authenticated to the SMTP server with the password from the secret file.
    assert d.mailbox.logins and all(ok for _, ok in d.mailbox.logins)
