"""The UI's login (Gradio ``auth`` from ROLLGUARD_UI_AUTH_FILE) and its API key file."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from rollguard.errors import ConfigurationError
from rollguard.settings import Settings
from ui.app import launch_options, read_auth
from ui.client import RollguardClient, read_api_key


def test_auth_file_becomes_gradio_auth(tmp_path: Path) -> None:
    auth = tmp_path / "ui_auth"
    auth.write_text("# people of the UI\nrollguard:s3cret:with:colons\n\nana: pw2\n")
    demo = SimpleNamespace(rollguard_out_dir=tmp_path)
    options = launch_options(Settings(home=tmp_path, ui_auth_file=auth), demo)
    assert options["auth"] == [("rollguard", "s3cret:with:colons"), ("ana", " pw2")]
    assert "auth" not in launch_options(Settings(home=tmp_path), demo)  # embedded default: open


@pytest.mark.parametrize("text", ["", "# only a comment\n", "nocolon\n", ":pw\n", "user:\n"])
def test_malformed_auth_file_is_refused_without_echoing_it(tmp_path: Path, text: str) -> None:
    auth = tmp_path / "ui_auth"
    auth.write_text(text)
    with pytest.raises(ConfigurationError, match="ROLLGUARD_UI_AUTH_FILE") as caught:
        read_auth(auth)
    assert "pw" not in str(caught.value)  # the line is named by number, never shown
    with pytest.raises(ConfigurationError, match="cannot read"):
        read_auth(tmp_path / "missing")


def test_api_key_file(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("rg_0123abcd_" + "x" * 32 + "\n")
    assert read_api_key(key) == "rg_0123abcd_" + "x" * 32
    assert read_api_key(None) is None
    key.write_text("  \n")
    with pytest.raises(ConfigurationError, match="empty"):
        read_api_key(key)
    client = RollguardClient("http://127.0.0.1:9", 1, api_key="rg_0123abcd_" + "x" * 32)
    assert client._http.headers["X-API-Key"] == "rg_0123abcd_" + "x" * 32
    client.close()
    assert "X-API-Key" not in RollguardClient("http://127.0.0.1:9", 1)._http.headers
