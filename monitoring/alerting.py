"""Alertmanager's receivers from the environment: the config Alertmanager runs, rendered from the
shipped base (``monitoring/alertmanager/alertmanager.yml``) and ``ROLLGUARD_ALERT_*`` variables.

Alertmanager does not expand environment variables in its config file, so ``rollguard stack
alertmanager-config --out PATH`` writes the final file (docs/alerting.md, "Receivers"):

- the shipped routes, inhibitions and the guard's webhook (optionally re-pointed at another guard
  URL and token file);
- on ``rollguard-critical``: PagerDuty (when configured), the Slack-compatible webhook and e-mail;
  on ``rollguard-warning`` and ``rollguard-default``: the webhook and e-mail. ``send_resolved`` is
  on for every integration (e-mail's default is off);
- the notification templates: the shipped ``rollguard.tmpl`` copied beside the config, and
  ``rollguard-links.tmpl``, which defines the Grafana and runbook base URLs the links are made
  absolute with.

Secrets (the SMTP password, the webhook URL, the PagerDuty routing key) stay in files that
Alertmanager reads itself (``auth_password_file``, ``api_url_file``, ``routing_key_file``); the
rendered config names the files and holds no secret. An empty file counts as not configured (the
compose stack mounts every secret file, empty when its variable is). A configuration with no
integration at all is refused outside ``development``.
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import AnyHttpUrl, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rollguard.errors import ConfigurationError, describe_validation_error
from rollguard.files import write_atomic

ALERTMANAGER_DIR = Path(__file__).resolve().parent / "alertmanager"
#: The shipped base config and notification templates.
BASE_CONFIG = ALERTMANAGER_DIR / "alertmanager.yml"
TEMPLATES = ALERTMANAGER_DIR / "rollguard.tmpl"
#: The generated template file with the base URLs (written beside the rendered config).
LINKS_TEMPLATE = "rollguard-links.tmpl"
#: PagerDuty's Events API v2 endpoint (Alertmanager's own default for ``routing_key``).
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
GUARD_RECEIVER = "rollguard-guard"
#: Which integrations each severity receiver gets: critical pages, the rest is e-mailed.
ROUTING: dict[str, tuple[str, ...]] = {
    "rollguard-critical": ("pagerduty", "webhook", "email"),
    "rollguard-warning": ("webhook", "email"),
    "rollguard-default": ("webhook", "email"),
}
#: The variables that configure at least one integration (named in the refusal).
RECEIVER_VARIABLES = (
    "ROLLGUARD_ALERT_SMTP_SMARTHOST + ROLLGUARD_ALERT_EMAIL_FROM + ROLLGUARD_ALERT_EMAIL_TO",
    "ROLLGUARD_ALERT_WEBHOOK_URL_FILE",
    "ROLLGUARD_ALERT_PAGERDUTY_ROUTING_KEY_FILE",
)


class ReceiverSettings(BaseSettings):
    """The receivers' settings, from ``ROLLGUARD_ALERT_*`` environment variables (every field is
    optional; docs/alerting.md lists them). File paths are the paths *Alertmanager* reads (in the
    compose stack, ``/run/secrets/...``, mounted into the render job at the same place).

    Raises:
        pydantic.ValidationError: a malformed value (a smarthost without a port, a URL that is not
            http(s), a boolean that is not one).
    """

    model_config = SettingsConfigDict(env_prefix="ROLLGUARD_ALERT_", extra="ignore", frozen=True)

    smtp_smarthost: str | None = Field(
        default=None, pattern=r"^[^\s:]+:\d+$", description="SMTP server, host:port."
    )
    email_from: str | None = Field(default=None, description="Sender address of alert e-mail.")
    email_to: str | None = Field(
        default=None, description="Recipients of alert e-mail, comma-separated."
    )
    smtp_username: str | None = Field(default=None, description="SMTP AUTH user name.")
    smtp_password_file: Path | None = Field(
        default=None, description="File holding the SMTP AUTH password (read by Alertmanager)."
    )
    smtp_require_tls: bool = Field(
        default=True, description="Refuse to send without STARTTLS (Alertmanager's default)."
    )
    webhook_url_file: Path | None = Field(
        default=None, description="File holding the Slack-compatible webhook URL."
    )
    pagerduty_routing_key_file: Path | None = Field(
        default=None, description="File holding the PagerDuty (Events API v2) routing key."
    )
    pagerduty_url: AnyHttpUrl = Field(
        default=AnyHttpUrl(PAGERDUTY_EVENTS_URL), description="Events API v2 endpoint."
    )
    grafana_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("http://localhost:3000/"),
        description="Grafana as people reach it; dashboard links are made absolute with it.",
    )
    runbook_base_url: AnyHttpUrl | None = Field(
        default=None,
        description="Where the repository's files are browsable; relative runbook links "
        "(docs/runbook.md#...) are appended to it. Unset: the repository path as it is.",
    )
    guard_url: AnyHttpUrl | None = Field(
        default=None, description="The guard's base URL (default: the shipped http://guard:8100)."
    )
    guard_token_file: Path | None = Field(
        default=None, description="The guard token file Alertmanager sends (default: shipped)."
    )

    @field_validator("smtp_smarthost", "email_from", "email_to", "smtp_username", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(
        "smtp_password_file",
        "webhook_url_file",
        "pagerduty_routing_key_file",
        "guard_token_file",
        "runbook_base_url",
        "guard_url",
        mode="before",
    )
    @classmethod
    def _blank_path_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


@dataclass(frozen=True)
class Email:
    """One e-mail integration: ``to`` comma-separated addresses; ``password_file`` None without
    SMTP AUTH."""

    smarthost: str
    sender: str
    to: str
    require_tls: bool
    username: str | None = None
    password_file: str | None = None


@dataclass(frozen=True)
class Receivers:
    """What is configured, resolved from :class:`ReceiverSettings` (secret files checked).

    ``webhook_url_file`` / ``pagerduty_key_file``: the file Alertmanager reads, or None when that
    integration is off. ``grafana_url`` ends with ``/``; ``runbook_base_url`` is empty or ends
    with ``/``.
    """

    email: Email | None
    webhook_url_file: str | None
    pagerduty_key_file: str | None
    pagerduty_url: str
    grafana_url: str
    runbook_base_url: str
    guard_url: str | None = None
    guard_token_file: str | None = None

    @property
    def integrations(self) -> tuple[str, ...]:
        """The configured integration kinds, in :data:`ROUTING`'s order."""
        configured = {
            "pagerduty": self.pagerduty_key_file is not None,
            "webhook": self.webhook_url_file is not None,
            "email": self.email is not None,
        }
        return tuple(kind for kind in ("pagerduty", "webhook", "email") if configured[kind])


@dataclass(frozen=True)
class RenderedConfig:
    """The result of :func:`write_alertmanager_config`.

    ``files``: what was written (config first); ``receivers``: integration kinds per severity
    receiver; ``notice``: a line for the person (development without receivers), or None.
    """

    files: list[Path]
    receivers: dict[str, list[str]]
    notice: str | None


def _secret_file(path: Path | None, variable: str) -> str | None:
    """``str(path)`` when it names a non-empty file; None when unset or empty.

    Raises:
        ConfigurationError: the variable names a file that does not exist or cannot be read.
    """
    if path is None:
        return None
    try:
        content = path.read_text().strip()
    except OSError as exc:
        raise ConfigurationError(
            f"{variable}={path} cannot be read ({exc.strerror or exc}); point it at the file "
            "that holds the secret, or unset it"
        ) from None
    return str(path) if content else None


def _base_url(url: AnyHttpUrl | None) -> str:
    """The URL as a base ending with ``/`` (empty when None).

    Raises:
        ConfigurationError: the URL holds characters that would break the template syntax.
    """
    if url is None:
        return ""
    text = str(url)
    if any(c in text for c in "{}\"'`<> "):
        raise ConfigurationError(f"base URL {text!r} holds a character not allowed in a link")
    return text if text.endswith("/") else text + "/"


def resolve_receivers(settings: ReceiverSettings) -> Receivers:
    """Which integrations are configured (reads the secret files to tell empty from set).

    Raises:
        ConfigurationError: e-mail half configured (the missing variables named), an SMTP user
            without a password file (or the reverse), a password file ending with a line break,
            a secret file that cannot be read.
    """
    email_fields = {
        "ROLLGUARD_ALERT_SMTP_SMARTHOST": settings.smtp_smarthost,
        "ROLLGUARD_ALERT_EMAIL_FROM": settings.email_from,
        "ROLLGUARD_ALERT_EMAIL_TO": settings.email_to,
    }
    missing = [name for name, value in email_fields.items() if value is None]
    email = None
    if len(missing) < len(email_fields):
        if missing:
            raise ConfigurationError(
                f"e-mail alerts are half configured: set {', '.join(missing)} as well "
                "(or unset every ROLLGUARD_ALERT_SMTP_* / EMAIL_* variable)"
            )
        password = _secret_file(settings.smtp_password_file, "ROLLGUARD_ALERT_SMTP_PASSWORD_FILE")
        if password is not None and Path(password).read_bytes().endswith((b"\n", b"\r")):
            # Alertmanager sends the file's bytes as they are (0.25 to 0.27 do not trim them):
            # a trailing line break becomes part of the password and every login fails.
            raise ConfigurationError(
                f"ROLLGUARD_ALERT_SMTP_PASSWORD_FILE={password} ends with a line break, which "
                "Alertmanager would send as part of the password; write the file without one "
                "(printf '%s' \"$PASSWORD\" > FILE)"
            )
        if (settings.smtp_username is None) != (password is None):
            raise ConfigurationError(
                "SMTP AUTH needs both ROLLGUARD_ALERT_SMTP_USERNAME and a non-empty "
                "ROLLGUARD_ALERT_SMTP_PASSWORD_FILE (or neither, for a relay without AUTH)"
            )
        email = Email(
            smarthost=str(settings.smtp_smarthost),
            sender=str(settings.email_from),
            to=str(settings.email_to),
            require_tls=settings.smtp_require_tls,
            username=settings.smtp_username,
            password_file=password,
        )
    return Receivers(
        email=email,
        webhook_url_file=_secret_file(
            settings.webhook_url_file, "ROLLGUARD_ALERT_WEBHOOK_URL_FILE"
        ),
        pagerduty_key_file=_secret_file(
            settings.pagerduty_routing_key_file, "ROLLGUARD_ALERT_PAGERDUTY_ROUTING_KEY_FILE"
        ),
        pagerduty_url=str(settings.pagerduty_url),
        grafana_url=_base_url(settings.grafana_url),
        runbook_base_url=_base_url(settings.runbook_base_url),
        guard_url=str(settings.guard_url).rstrip("/") if settings.guard_url else None,
        guard_token_file=str(settings.guard_token_file) if settings.guard_token_file else None,
    )


def _integration(kind: str, receivers: Receivers) -> tuple[str, dict[str, Any]]:
    """``(config key, one integration's config)`` for ``kind``; texts from rollguard.tmpl."""
    if kind == "email":
        email = receivers.email
        assert email is not None  # noqa: S101 - type narrowing of an invariant; no access or input check relies on it
        config: dict[str, Any] = {
            "to": email.to,
            "from": email.sender,
            "smarthost": email.smarthost,
            "require_tls": email.require_tls,
            "send_resolved": True,
            "headers": {"Subject": '{{ template "rollguard.email.subject" . }}'},
            "html": '{{ template "rollguard.email.html" . }}',
            "text": '{{ template "rollguard.email.text" . }}',
        }
        if email.username is not None:
            config["auth_username"] = email.username
            config["auth_password_file"] = email.password_file
        return "email_configs", config
    if kind == "webhook":
        return "slack_configs", {
            "api_url_file": receivers.webhook_url_file,
            "send_resolved": True,
            "title": '{{ template "rollguard.slack.title" . }}',
            "title_link": '{{ template "rollguard.slack.title_link" . }}',
            "color": '{{ template "rollguard.slack.color" . }}',
            "text": '{{ template "rollguard.slack.text" . }}',
            "fallback": '{{ template "rollguard.slack.title" . }}',
        }
    if kind == "pagerduty":
        return "pagerduty_configs", {
            "routing_key_file": receivers.pagerduty_key_file,
            "url": receivers.pagerduty_url,
            "send_resolved": True,
            "client": "Rollguard Alertmanager",
            "description": '{{ template "rollguard.pagerduty.description" . }}',
            "severity": "critical",
            "details": {
                "alerts": '{{ template "rollguard.alerts.text" . }}',
                "num_firing": "{{ .Alerts.Firing | len }}",
                "num_resolved": "{{ .Alerts.Resolved | len }}",
            },
            "links": [
                {
                    "href": '{{ template "rollguard.dashboard_link" (index .Alerts 0) }}',
                    "text": "Grafana dashboard",
                },
                {
                    "href": '{{ template "rollguard.runbook_link" (index .Alerts 0) }}',
                    "text": "Runbook",
                },
            ],
        }
    raise ValueError(f"unknown integration kind {kind!r}")


def render_config(base: dict[str, Any], receivers: Receivers) -> dict[str, Any]:
    """The Alertmanager config: ``base`` (the shipped config, parsed) with the configured
    integrations on the severity receivers of :data:`ROUTING`, the guard webhook re-pointed when
    ``receivers`` says so, and ``templates`` naming the two template files (relative paths:
    Alertmanager resolves them against the config file's folder).

    Raises:
        ValueError: ``base`` lacks one of the receivers of :data:`ROUTING` or the guard's.
    """
    doc = copy.deepcopy(base)
    by_name = {r["name"]: r for r in doc.get("receivers", [])}
    absent = [name for name in (*ROUTING, GUARD_RECEIVER) if name not in by_name]
    if absent:
        raise ValueError(f"the base Alertmanager config has no receiver {', '.join(absent)}")
    for name, kinds in ROUTING.items():
        for kind in kinds:
            if kind in receivers.integrations:
                key, config = _integration(kind, receivers)
                by_name[name].setdefault(key, []).append(config)
    for hook in by_name[GUARD_RECEIVER].get("webhook_configs", []):
        if receivers.guard_url is not None:
            hook["url"] = f"{receivers.guard_url}/v1/alerts"
        if receivers.guard_token_file is not None:
            hook.setdefault("http_config", {}).setdefault("authorization", {})
            hook["http_config"]["authorization"]["credentials_file"] = receivers.guard_token_file
    doc["templates"] = [TEMPLATES.name, LINKS_TEMPLATE]
    return doc


def links_template(receivers: Receivers) -> str:
    """The text of ``rollguard-links.tmpl``: the two base URLs as Alertmanager template
    definitions (``rollguard.grafana_base_url``, ``rollguard.runbook_base_url``)."""
    return (
        "{{/* Written by `rollguard stack alertmanager-config` from ROLLGUARD_ALERT_GRAFANA_URL"
        " and ROLLGUARD_ALERT_RUNBOOK_BASE_URL; rendered again on every start. */}}\n"
        f'{{{{ define "rollguard.grafana_base_url" }}}}{receivers.grafana_url}{{{{ end }}}}\n'
        f'{{{{ define "rollguard.runbook_base_url" }}}}{receivers.runbook_base_url}{{{{ end }}}}\n'
    )


def check_receivers(receivers: Receivers, env: str) -> str | None:
    """Refuse a configuration that notifies nobody, outside development.

    Returns:
        None when some integration is configured; in development without any, the notice to print.

    Raises:
        ConfigurationError: no integration and ``env`` is not ``development`` (one line naming
            the variables to set).
    """
    if receivers.integrations:
        return None
    if env != "development":
        raise ConfigurationError(
            f"no alert receiver is configured (ROLLGUARD_ENV={env}): set "
            + ", or ".join(RECEIVER_VARIABLES)
            + " (docs/alerting.md, Receivers)"
        )
    return (
        "no alert receiver is configured: alerts reach only the guard, the Alertmanager UI and "
        "Grafana (allowed in development only; docs/alerting.md, Receivers)"
    )


def load_receiver_settings() -> ReceiverSettings:
    """:class:`ReceiverSettings` from the environment.

    Raises:
        ConfigurationError: a malformed variable (named, with the problem).
    """
    try:
        return ReceiverSettings()
    except ValidationError as exc:
        problems = describe_validation_error(exc, "ROLLGUARD_ALERT_")
        raise ConfigurationError(f"invalid alert receiver settings: {problems}") from None


def write_alertmanager_config(
    out: Path, settings: ReceiverSettings, *, env: str, base: Path = BASE_CONFIG
) -> RenderedConfig:
    """Render and write the config to ``out``, with ``rollguard.tmpl`` and
    ``rollguard-links.tmpl`` beside it (files mode 0644: Alertmanager may run as another user;
    they hold no secret). Nothing is written when the configuration is refused.

    Raises:
        ConfigurationError: see :func:`resolve_receivers` and :func:`check_receivers`.
        OSError: ``out``'s folder cannot be written.
    """
    receivers = resolve_receivers(settings)
    notice = check_receivers(receivers, env)
    doc = render_config(yaml.safe_load(base.read_text()), receivers)
    out.parent.mkdir(parents=True, exist_ok=True)
    templates = out.parent / TEMPLATES.name
    links = out.parent / LINKS_TEMPLATE
    if templates.resolve() != TEMPLATES.resolve():
        shutil.copyfile(TEMPLATES, templates)
    write_atomic(links, links_template(receivers).encode())
    write_atomic(out, yaml.safe_dump(doc, sort_keys=False).encode())
    for path in (out, templates, links):
        path.chmod(0o644)
    return RenderedConfig(
        files=[out, templates, links],
        receivers={
            name: [k for k in kinds if k in receivers.integrations]
            for name, kinds in ROUTING.items()
        },
        notice=notice,
    )
