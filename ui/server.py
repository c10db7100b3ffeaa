"""Run the UI process: Gradio without analytics, telemetry or share links (the UI must work on a
machine without internet), bound to ``Settings.ui_host``/``ui_port``."""

from __future__ import annotations

import logging
import os

from rollguard.logs import configure_logging
from rollguard.settings import Settings

log = logging.getLogger("rollguard.ui")

#: Set before Gradio is imported: no usage analytics or version check (Gradio reads
#: GRADIO_ANALYTICS_ENABLED), no Hugging Face Hub telemetry.
OFFLINE_ENV = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
}


def run(settings: Settings) -> None:
    """Build the app and serve it until interrupted (blocks)."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    from ui.app import build_app, launch_options

    configure_logging(settings, service="ui")
    demo = build_app(settings)
    log.info(
        "Rollguard UI on http://%s:%s (API %s, timeout %g s)",
        settings.ui_host,
        settings.ui_port,
        settings.ui_api_url,
        settings.ui_timeout_seconds,
    )
    demo.launch(**launch_options(settings, demo))
