"""API keys of the model server's clients: create, list, revoke, and verify them (with a cache).

A key is ``rg_<key_id>_<secret>``: ``key_id`` is 8 lowercase hex characters, public (it is what
logs, metrics and ``rollguard apikey list`` show); ``secret`` is 32 URL-safe characters from
:func:`secrets.token_urlsafe` (192 random bits). The store (table ``api_keys``, migration 0008)
keeps the key id, a name, a random 16-byte salt and ``sha256(salt + key)`` in hex; the key itself
is printed once, at creation, and never stored.

Why salted SHA-256 and not a slow KDF (``hashlib.scrypt``): slow hashes protect *low-entropy*
secrets (passwords) against guessing after a leak of the table. A key carries 192 random bits,
so no guessing attack on a leaked hash is feasible with any hash function, and SHA-256 keeps a
verification to about a microsecond (scrypt with its defaults costs tens of milliseconds and
16 MB per check, which would make every uncached request slow and the server easy to flood).
This is the reasoning of the Python docs on :mod:`hashlib` (``scrypt``/``pbkdf2_hmac`` are "for
password hashing") and of OWASP's Password Storage Cheat Sheet, which scopes slow hashing to
passwords; the salt only makes equal keys hash differently. Comparisons are constant-time
(:func:`hmac.compare_digest`).

:class:`KeyVerifier` answers "is this key valid now?" from memory: a verified key id stays cached
for ``ttl_seconds`` (30 s by default), so a revocation takes effect within that time and the store
is read at most once per key id and TTL, never per request. Unknown key ids are cached too, so
random keys cannot make every request read the store.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from rollguard.db.models import ApiKey
from rollguard.errors import RollguardError

log = logging.getLogger("rollguard.apikeys")

#: ``rg_<key_id>_<secret>``: key id 8 lowercase hex characters, secret 32 URL-safe characters.
KEY_PATTERN = re.compile(r"rg_([0-9a-f]{8})_([A-Za-z0-9_-]{32})")
#: How a key looks, in words (for error messages).
KEY_FORMAT = "rg_<8 lowercase hex>_<32 URL-safe characters>"
#: Seconds a verified (or unknown) key id is trusted from memory before the store is read again.
DEFAULT_TTL_SECONDS = 30.0
#: Most key ids held by the verifier's cache; beyond it the cache is emptied (an attacker sending
#: random key ids only causes store reads, bounded by this many per TTL).
MAX_CACHED_KEYS = 10_000


class ApiKeyError(RollguardError):
    """A key operation cannot be done as asked (unknown key id, a key already registered with
    another secret, a malformed key)."""

    kind = "invalid_input"


@dataclass(frozen=True)
class ApiKeyInfo:
    """What may be shown about a key: never its hash or salt."""

    key_id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class CreatedKey:
    """The result of :func:`create_key`: ``key`` is the full key (shown once), ``created`` is
    False when a given key was already registered (nothing changed)."""

    info: ApiKeyInfo
    key: str
    created: bool


@dataclass(frozen=True)
class StoredKey:
    """The verification data of one key id."""

    hash: str
    salt: str
    revoked: bool


def parse_key(key: str) -> tuple[str, str]:
    """``(key_id, secret)`` of a key.

    Raises:
        ApiKeyError: the key does not have the format :data:`KEY_FORMAT`.
    """
    match = KEY_PATTERN.fullmatch(key)
    if match is None:
        raise ApiKeyError(f"an API key has the form {KEY_FORMAT}")
    return match.group(1), match.group(2)


def generate_key() -> str:
    """A new random key ``rg_<key_id>_<secret>`` (key id from 4 random bytes)."""
    return f"rg_{secrets.token_hex(4)}_{secrets.token_urlsafe(24)}"


def hash_key(key: str, salt: str) -> str:
    """Hex SHA-256 of ``salt`` (hex text) followed by ``key`` (see the module docstring)."""
    return hashlib.sha256(f"{salt}{key}".encode()).hexdigest()


def create_key(
    engine: Engine, name: str, key: str | None = None, now: datetime | None = None
) -> CreatedKey:
    """Register a key named ``name``: a new random one, or ``key`` when given (idempotent: the
    same key registered again changes nothing and returns ``created=False``).

    Raises:
        ApiKeyError: ``name`` is empty, longer than 255 characters or not printable; ``key`` is malformed, or
            its key id is already registered with another secret or was revoked.
    """
    name = name.strip()
    if not name or len(name) > 255 or not name.isprintable():
        raise ApiKeyError(
            "a key needs a name of 1 to 255 printable characters (no line breaks or control "
            "characters)"
        )
    given = key is not None
    key = key.strip() if key is not None else generate_key()
    key_id, _ = parse_key(key)
    stored = _lookup(engine, key_id)
    if stored is not None:
        if not given or not hmac.compare_digest(stored.hash, hash_key(key, stored.salt)):
            raise ApiKeyError(f"key id {key_id} is already registered (with another secret)")
        if stored.revoked:
            raise ApiKeyError(f"key {key_id} was revoked; create a new key instead")
        info = next(k for k in list_keys(engine) if k.key_id == key_id)
        return CreatedKey(info, key, created=False)
    salt = secrets.token_hex(16)
    row_values = {
        "key_id": key_id,
        "name": name,
        "hash": hash_key(key, salt),
        "salt": salt,
        "created_at": now or datetime.now(UTC),
        "revoked_at": None,
    }
    try:
        with engine.begin() as conn:
            conn.execute(insert(ApiKey).values(**row_values))
    except IntegrityError:
        raise ApiKeyError(f"key id {key_id} was registered at the same time; try again") from None
    info = ApiKeyInfo(key_id, name, row_values["created_at"], None)  # type: ignore[arg-type]
    return CreatedKey(info, key, created=True)


def list_keys(engine: Engine) -> list[ApiKeyInfo]:
    """Every key, oldest first (id, name, created and revoked times; never hashes)."""
    table = ApiKey.__table__
    with engine.connect() as conn:
        rows = conn.execute(
            select(table.c.key_id, table.c.name, table.c.created_at, table.c.revoked_at).order_by(
                table.c.id
            )
        ).all()
    return [
        ApiKeyInfo(
            r.key_id,
            r.name,
            _utc(r.created_at),
            _utc(r.revoked_at) if r.revoked_at is not None else None,
        )
        for r in rows
    ]


def _utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; the store writes UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def revoke_key(engine: Engine, key_id: str, now: datetime | None = None) -> ApiKeyInfo:
    """Revoke the key ``key_id`` (idempotent: a revoked key keeps its first revocation time).
    Servers refuse it within their cache TTL (:data:`DEFAULT_TTL_SECONDS`).

    Raises:
        ApiKeyError: no key has this id.
    """
    with engine.begin() as conn:
        conn.execute(
            update(ApiKey)
            .where(ApiKey.key_id == key_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=now or datetime.now(UTC))
        )
    for info in list_keys(engine):
        if info.key_id == key_id:
            return info
    raise ApiKeyError(f"no API key has the id {key_id!r}: see `rollguard apikey list`")


def _lookup(engine: Engine, key_id: str) -> StoredKey | None:
    table = ApiKey.__table__
    with engine.connect() as conn:
        row = conn.execute(
            select(table.c.hash, table.c.salt, table.c.revoked_at).where(table.c.key_id == key_id)
        ).first()
    return None if row is None else StoredKey(row.hash, row.salt, row.revoked_at is not None)


def store_lookup(engine_factory: Callable[[], Engine]) -> Callable[[str], StoredKey | None]:
    """A lookup for :class:`KeyVerifier` reading the store that ``engine_factory`` opens."""
    return lambda key_id: _lookup(engine_factory(), key_id)


class Outcome(enum.Enum):
    """The verdict on a presented key."""

    VALID = "valid"
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    REVOKED = "revoked"


@dataclass(frozen=True)
class Verdict:
    """``key_id`` is the key's id when it names a stored key (valid or revoked), else None."""

    outcome: Outcome
    key_id: str | None


_MALFORMED = Verdict(Outcome.MALFORMED, None)
_UNKNOWN = Verdict(Outcome.UNKNOWN, None)


class KeyVerifier:
    """Verifies keys against the store through an in-memory cache keyed by key id.

    Args:
        lookup: reads one key id's :class:`StoredKey` (None when unknown); may raise when the
            store is unreachable.
        ttl_seconds: how long a looked-up key id is trusted (a revocation takes effect within it).
        clock: monotonic seconds (for tests).
    """

    def __init__(
        self,
        lookup: Callable[[str], StoredKey | None],
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._ttl = ttl_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, StoredKey | None]] = {}
        self._lock = threading.Lock()

    def cached(self, key: str) -> Verdict | None:
        """The verdict from memory alone, or None when the store must be read (cache miss or
        expired entry): cheap enough for the event loop (a regex match, one dict lookup, one
        SHA-256 of about 50 bytes)."""
        match = KEY_PATTERN.fullmatch(key)
        if match is None:
            return _MALFORMED
        key_id = match.group(1)
        entry = self._cache.get(key_id)
        if entry is None or self._clock() - entry[0] > self._ttl:
            return None
        return self._judge(key, key_id, entry[1])

    def verify(self, key: str) -> Verdict:
        """The verdict, reading the store on a cache miss (blocking: call it off the event loop).

        When the store cannot be read, an expired entry is used (keys keep working during a
        store outage; revocations apply once it is back) and the failure is logged.

        Raises:
            Exception: the store cannot be read and this key id was never looked up.
        """
        verdict = self.cached(key)
        if verdict is not None:
            return verdict
        key_id = key[3:11]
        try:
            stored = self._lookup(key_id)
        except Exception as exc:
            entry = self._cache.get(key_id)
            if entry is None:
                raise
            log.warning("API key store unreachable, using key %s as last seen: %s", key_id, exc)
            return self._judge(key, key_id, entry[1])
        with self._lock:
            if stored is None and len(self._cache) >= MAX_CACHED_KEYS:
                # Only unknown ids are dropped: a flood of made-up ids must not evict the real
                # keys (which then keep working through a store outage); the real ones are
                # bounded by the store's rows.
                self._cache = {k: v for k, v in self._cache.items() if v[1] is not None}
            if stored is not None or len(self._cache) < MAX_CACHED_KEYS:
                self._cache[key_id] = (self._clock(), stored)
        return self._judge(key, key_id, stored)

    @staticmethod
    def _judge(key: str, key_id: str, stored: StoredKey | None) -> Verdict:
        if stored is None or not hmac.compare_digest(stored.hash, hash_key(key, stored.salt)):
            return _UNKNOWN
        return Verdict(Outcome.REVOKED if stored.revoked else Outcome.VALID, key_id)
