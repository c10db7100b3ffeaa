"""API keys over a real SQLite store: create, list, revoke through the CLI, hashes never shown,
and the verifier's cache (a revocation takes effect within the TTL; the store is read once per key
id and TTL, never per request)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from api.keys import parse_rate
from rollguard import apikeys
from rollguard.cli import app
from rollguard.db.models import ApiKey
from rollguard.errors import ConfigurationError
from rollguard.settings import Settings
from rollguard.store import open_store


def _run(args: list[str]) -> dict | list:
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_cli_create_list_revoke(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLGUARD_HOME", str(home))
    created = _run(["apikey", "create", "crm-batch"])
    key, key_id = created["key"], created["key_id"]
    assert apikeys.parse_key(key) == (key_id, key[12:])
    assert created["created"] is True and created["revoked_at"] is None

    listed = _run(["apikey", "list"])
    assert [(k["key_id"], k["name"], k["revoked_at"]) for k in listed] == [
        (key_id, "crm-batch", None)
    ]
    human = CliRunner().invoke(app, ["apikey", "list"]).stdout
    assert key_id in human and "crm-batch" in human

    engine = open_store(Settings(home=home))
    with engine.connect() as conn:
        row = conn.execute(select(ApiKey.hash, ApiKey.salt)).one()
    assert key not in (row.hash, row.salt) and key[12:] not in row.hash
    assert row.hash == apikeys.hash_key(key, row.salt)
    assert row.hash not in human and row.hash not in json.dumps(listed)

    revoked = _run(["apikey", "revoke", key_id])
    assert revoked["revoked_at"] is not None
    assert _run(["apikey", "revoke", key_id])["revoked_at"] == revoked["revoked_at"]  # idempotent
    assert _run(["apikey", "list"])[0]["revoked_at"] == revoked["revoked_at"]

    unknown = CliRunner().invoke(app, ["apikey", "revoke", "deadbeef", "--json"])
    assert unknown.exit_code == 2 and "deadbeef" in json.loads(unknown.stdout)["error"]


def test_cli_registers_a_key_from_a_file_idempotently(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROLLGUARD_HOME", str(home))
    key_file = tmp_path / "ui_api_key"
    key_file.write_text(apikeys.generate_key() + "\n")
    first = _run(["apikey", "create", "ui", "--from-file", str(key_file)])
    again = _run(["apikey", "create", "ui", "--from-file", str(key_file)])
    assert first["created"] is True and again["created"] is False
    assert "key" not in first  # the key is in the file already: never printed
    assert len(_run(["apikey", "list"])) == 1

    other = tmp_path / "other"
    other.write_text(key_file.read_text()[:12] + "Z" * 32)  # same key id, another secret
    refused = CliRunner().invoke(app, ["apikey", "create", "ui", "--from-file", str(other)])
    assert refused.exit_code == 2 and "already registered" in refused.output
    bad = tmp_path / "bad"
    bad.write_text("not-a-key")
    refused = CliRunner().invoke(app, ["apikey", "create", "ui", "--from-file", str(bad)])
    assert refused.exit_code == 2 and "rg_<8 lowercase hex>" in refused.output


def test_verifier_caches_by_key_id_and_sees_revocation_after_the_ttl(settings: Settings) -> None:
    engine = open_store(settings)
    key = apikeys.create_key(engine, "crm").key
    reads: list[str] = []
    lookup = apikeys.store_lookup(lambda: engine)
    now = [0.0]

    def counting(key_id: str):  # type: ignore[no-untyped-def]
        reads.append(key_id)
        return lookup(key_id)

    verifier = apikeys.KeyVerifier(counting, ttl_seconds=30, clock=lambda: now[0])
    assert verifier.cached(key) is None  # first sight: the store must be read
    assert verifier.verify(key).outcome is apikeys.Outcome.VALID
    for _ in range(100):
        assert verifier.cached(key).outcome is apikeys.Outcome.VALID  # type: ignore[union-attr]
    assert reads == [key[3:11]]

    forged = key[:-1] + ("a" if key[-1] != "a" else "b")
    assert verifier.cached(forged).outcome is apikeys.Outcome.UNKNOWN  # type: ignore[union-attr]
    assert verifier.cached("rg_nothex00_" + "x" * 32).outcome is apikeys.Outcome.MALFORMED  # type: ignore[union-attr]

    apikeys.revoke_key(engine, key[3:11])
    now[0] = 29.0
    assert verifier.cached(key).outcome is apikeys.Outcome.VALID  # type: ignore[union-attr]
    now[0] = 31.0
    assert verifier.cached(key) is None
    assert verifier.verify(key).outcome is apikeys.Outcome.REVOKED

    stranger = apikeys.generate_key()
    assert verifier.verify(stranger).outcome is apikeys.Outcome.UNKNOWN
    assert verifier.cached(stranger).outcome is apikeys.Outcome.UNKNOWN  # type: ignore[union-attr]
    assert len(reads) == 3  # unknown ids are cached too


def test_verifier_uses_the_last_seen_entry_while_the_store_is_down(settings: Settings) -> None:
    engine = open_store(settings)
    key = apikeys.create_key(engine, "crm").key
    lookup = apikeys.store_lookup(lambda: engine)
    down = [False]
    now = [0.0]

    def flaky(key_id: str):  # type: ignore[no-untyped-def]
        if down[0]:
            raise ConnectionError("store down")
        return lookup(key_id)

    verifier = apikeys.KeyVerifier(flaky, ttl_seconds=30, clock=lambda: now[0])
    assert verifier.verify(key).outcome is apikeys.Outcome.VALID
    down[0], now[0] = True, 100.0
    assert verifier.verify(key).outcome is apikeys.Outcome.VALID
    with pytest.raises(ConnectionError):
        verifier.verify(apikeys.generate_key())


@pytest.mark.parametrize("name", ["evil\nkey id  deadbeef", "bell\x07", "tab\tname"])
def test_a_key_name_with_control_characters_is_refused(settings: Settings, name: str) -> None:
    with pytest.raises(apikeys.ApiKeyError, match="printable"):
        apikeys.create_key(open_store(settings), name)


@pytest.mark.parametrize("rate", ["0/minute", "1/0 minute", "1 per 0 second", "banana"])
def test_a_rate_that_admits_nothing_or_names_no_period_is_refused(rate: str) -> None:
    with pytest.raises(ConfigurationError, match="ROLLGUARD_API_KEY_RATE"):
        parse_rate(rate)
    assert parse_rate("10/2 minutes").amount == 10


def test_a_flood_of_unknown_ids_does_not_evict_a_real_key(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(apikeys, "MAX_CACHED_KEYS", 50)
    engine = open_store(settings)
    key = apikeys.create_key(engine, "crm").key
    lookup = apikeys.store_lookup(lambda: engine)
    down = [False]

    def flaky(key_id: str):  # type: ignore[no-untyped-def]
        if down[0]:
            raise ConnectionError("store down")
        return lookup(key_id)

    verifier = apikeys.KeyVerifier(flaky, ttl_seconds=30)
    assert verifier.verify(key).outcome is apikeys.Outcome.VALID
    for _ in range(200):  # four times the cache's size in made-up ids
        assert verifier.verify(apikeys.generate_key()).outcome is apikeys.Outcome.UNKNOWN
    down[0] = True
    assert verifier.verify(key).outcome is apikeys.Outcome.VALID
