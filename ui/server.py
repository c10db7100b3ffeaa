"""Run the UI process: Gradio without analytics, telemetry or share links (the UI must work on a
machine without internet), bound to ``Settings.ui_host``/``ui_port``."""

from __future__ import annotations

import os

from rollguard.settings import Settings

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

    demo = build_app(settings)
    print(
        f"Rollguard UI on http://{settings.ui_host}:{settings.ui_port} "
        f"(API {settings.ui_api_url}, timeout {settings.ui_timeout_seconds:g} s)",
        flush=True,
    )
    demo.launch(**launch_options(settings, demo))
