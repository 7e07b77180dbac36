"""API keys and what each role may ask.

A key looks like ``sk_<key_id>_<secret>``. The gateway stores only the key id,
the account, a random per-key salt and ``sha256(salt + secret)``; the secret
itself is shown once, when the key is issued, and never logged. A fast hash is
enough because the secret is 32 random bytes, not a password a person chose:
there is nothing to guess. Comparison is constant-time.

``KeyStore`` holds keys from two sources, under one space of key ids:

* *issued* keys, made at run time by an operator (``issue_api_key``): kept in
  memory and, when the store has a path, in a JSON file rewritten atomically
  on every change, so they survive a restart;
* *configured* keys, given in full in the configuration's ``api_keys`` or in
  ``SUANLI_API_KEYS``: hashed at start and kept in memory only, for the life
  of the process. They are never written to the file, so a key taken out of
  the configuration is gone at the next start. Revoking one refuses it until
  the process ends; if it is still configured, the next start accepts it
  again. To revoke a configured key for good, take it out of the
  configuration.

``redact`` takes API keys and ``Authorization`` values out of a log line.

``PERMISSIONS`` says which roles may send each request; ``None`` means anyone,
anonymous connections included. The exchange checks permissions again, so a
gap here could only ever produce a ``NOT_PERMITTED`` rejection there.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path
from typing import Final

import msgspec
import structlog

from exchange.journal import PRIVATE_DIR, PRIVATE_FILE
from exchange.reference import Role
from gateway import protocol as p

KEY_PREFIX: Final = "sk"

log = structlog.get_logger("gateway.auth")


class Principal(msgspec.Struct, frozen=True):
    """Who a connection or HTTP request acts as."""

    account_id: str
    role: Role
    key_id: str = ""


class KeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str
    account_id: str
    salt: str  # hex
    digest: str  # hex sha256(salt + secret)
    created_at: int  # ns
    revoked: bool = False


def _digest(salt: bytes, secret: str) -> str:
    return hashlib.sha256(salt + secret.encode()).hexdigest()


def _record(account_id: str, key_id: str, secret: str, now: int) -> KeyRecord:
    salt = os.urandom(16)
    return KeyRecord(
        key_id=key_id,
        account_id=account_id,
        salt=salt.hex(),
        digest=_digest(salt, secret),
        created_at=now,
    )


def split_key(key: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    parts = key.split("_")
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


class KeyStore:
    """Hashed API keys, by key id: issued ones (persisted) and configured ones (memory)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.issued: dict[str, KeyRecord] = {}  # what the file holds
        self.configured: dict[str, KeyRecord] = {}  # never written anywhere
        if path is not None and path.exists():
            for record in msgspec.json.decode(path.read_bytes(), type=list[KeyRecord]):
                self.issued[record.key_id] = record

    def issue(self, account_id: str, now: int, *, key_id: str = "", secret: str = "") -> str:
        """Store and persist a new key for ``account_id``; return it in full (the only time)."""
        key_id = key_id or secrets.token_hex(8)
        secret = secret or secrets.token_urlsafe(32).replace("_", "-")
        if key_id in self.issued or key_id in self.configured:
            raise ValueError(f"key id {key_id!r} already exists")
        if "_" in key_id or "_" in secret:
            raise ValueError("key id and secret must not contain '_'")
        self.issued[key_id] = _record(account_id, key_id, secret, now)
        self._save()
        return f"{KEY_PREFIX}_{key_id}_{secret}"

    def configure(self, account_id: str, key: str, now: int = 0) -> str:
        """Accept ``key`` (given in full by the configuration) for the life of this
        process, without writing it anywhere; return its id.

        Giving the same key twice (in the file and the environment) is harmless;
        a key id already used by another key is a ``ValueError``. An earlier
        version wrote configured keys to the file: a record there that matches
        ``key`` is taken out of the file (and kept in memory), unless it was
        revoked, which then still holds.
        """
        parts = split_key(key)
        if parts is None:
            raise ValueError(f"malformed API key for account {account_id!r}")
        key_id, secret = parts
        existing = self.configured.get(key_id) or self.issued.get(key_id)
        if existing is not None:
            if existing.account_id != account_id or not self._matches(existing, secret):
                raise ValueError(f"key id {key_id!r} already belongs to another key")
            if key_id in self.configured or existing.revoked:
                return key_id
            del self.issued[key_id]
            self.configured[key_id] = existing
            self._save()
            log.warning("configured_key_removed_from_keys_file", key_id=key_id)
            return key_id
        self.configured[key_id] = _record(account_id, key_id, secret, now)
        return key_id

    def revoke(self, key_id: str) -> KeyRecord | None:
        """Refuse the key from now on; None if there is no such key id.

        An issued key's revocation is persisted; a configured key's lasts only as
        long as this process (the configuration, not the file, says what it
        accepts at start).
        """
        record = self.issued.get(key_id)
        if record is not None:
            self.issued[key_id] = msgspec.structs.replace(record, revoked=True)
            self._save()
            return record
        record = self.configured.get(key_id)
        if record is not None:
            self.configured[key_id] = msgspec.structs.replace(record, revoked=True)
            log.warning("configured_key_revoked_until_restart", key_id=key_id)
        return record

    def verify(self, key: str) -> tuple[str, str] | None:
        """(account id, key id) of a valid, unrevoked key, else None."""
        parts = split_key(key)
        if parts is None:
            return None
        key_id, secret = parts
        record = self.issued.get(key_id) or self.configured.get(key_id)
        if record is None or record.revoked or not self._matches(record, secret):
            return None
        return record.account_id, key_id

    @staticmethod
    def _matches(record: KeyRecord, secret: str) -> bool:
        return hmac.compare_digest(_digest(bytes.fromhex(record.salt), secret), record.digest)

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        records = sorted(self.issued.values(), key=lambda r: r.key_id)
        # Owner-only from its creation (hashes, but of every key), not chmod-ed after.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
        with os.fdopen(fd, "wb") as out:
            out.write(msgspec.json.format(msgspec.json.encode(records), indent=2))
        os.chmod(tmp, PRIVATE_FILE)  # a tmp left by an older version keeps its old mode
        tmp.replace(self.path)


_REDACTED: Final = "[REDACTED]"
# Text may show a header as a repr ("b'X-API-Key:\\x01...'"), as JSON, or a URL
# percent-encoded ("?token=%22sk_..."), where a character becomes an escape that
# ends in a letter or digit: a key or a value may begin right after one.
_AFTER_ESCAPE = r"(?<=\\[a-z])|(?<=\\x[0-9a-fA-F]{2})|(?<=\\u[0-9a-fA-F]{4})|(?<=%[0-9a-fA-F]{2})"
# sk_<key id>_<secret>: the key id stays (it is logged on purpose), the secret goes.
_KEY = re.compile(
    rf"(?:(?<![A-Za-z0-9])|{_AFTER_ESCAPE}){KEY_PREFIX}_([^_\s\"'\\,;&<>]+)_[^\s\"'\\,;&<>]+"
)
# The credential of an Authorization header ("Bearer <token>", "Basic <token>").
_SCHEME = re.compile(r"\b(Bearer|Basic)\s+[^\s\"'\\,;]+", re.IGNORECASE)
# The whole value of an Authorization or X-API-Key header ("X-API-Key: abc",
# "'Authorization': 'Token abc'"), up to a quote or the end of its line, escapes
# included; an Authorization scheme followed by a space stays readable.
_HEADER = re.compile(
    r"\b((?:Authorization(?:['\"]?\s*[:=]\s*['\"]?)(?:[A-Za-z]+ +)?)"
    r"|(?:X-API-Key(?:['\"]?\s*[:=]\s*['\"]?)))"
    r"(?!\[REDACTED\])(?:[^\"'\\\r\n]|\\(?![rn]))+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with the secret of every API key and every Authorization or
    X-API-Key header value replaced by ``[REDACTED]``."""
    text = _HEADER.sub(rf"\1{_REDACTED}", text)
    text = _SCHEME.sub(rf"\1 {_REDACTED}", text)
    return _KEY.sub(rf"{KEY_PREFIX}_\1_{_REDACTED}", text)


_ANY = None
_TRADERS = frozenset({Role.STARTUP, Role.PROVIDER})
_OPERATOR = frozenset({Role.OPERATOR})

PERMISSIONS: Final[dict[type[p.Request], frozenset[Role] | None]] = {
    p.Auth: _ANY,
    p.Ping: _ANY,
    p.Subscribe: _ANY,  # private channels are checked per channel
    p.Unsubscribe: _ANY,
    p.NewOrder: _TRADERS,
    p.AmendOrder: _TRADERS,
    p.CancelOrder: _TRADERS | _OPERATOR,
    p.CancelAll: _TRADERS | _OPERATOR,
    p.MassStatus: _TRADERS | _OPERATOR,
    p.OrderStatus: _TRADERS | _OPERATOR,
    p.ListInstrument: _OPERATOR,
    p.SetInstrumentStatus: _OPERATOR,
    p.AdmitAccount: _OPERATOR,
    p.RelateParties: _OPERATOR,
    p.IssueApiKey: _OPERATOR,
    p.RevokeApiKey: _OPERATOR,
    p.Deposit: _OPERATOR,
    p.Withdraw: _OPERATOR,
    p.RegisterCapacity: frozenset({Role.PROVIDER, Role.OPERATOR}),
    p.CreateProgramme: frozenset({Role.ISSUER}),
    p.IssueVoucher: frozenset({Role.ISSUER}),
    p.SettleClaim: frozenset({Role.ISSUER}),
}

CHANNEL_ROLES: Final[dict[p.Channel, frozenset[Role] | None]] = {
    p.Channel.BOOK: _ANY,
    p.Channel.TRADES: _ANY,
    p.Channel.TICKER: _ANY,
    p.Channel.STATUS: _ANY,
    p.Channel.PRIVATE: frozenset(Role),
    p.Channel.ORDERS: _OPERATOR,
    p.Channel.ACCOUNTS: _OPERATOR,
    p.Channel.VOUCHERS: frozenset({Role.OPERATOR, Role.ISSUER}),
}


def permitted(roles: frozenset[Role] | None, principal: Principal | None) -> p.ErrorCode | None:
    """None if ``principal`` may act under ``roles``, else the error to answer."""
    if roles is None:
        return None
    if principal is None:
        return p.ErrorCode.NOT_AUTHENTICATED
    if principal.role not in roles:
        return p.ErrorCode.NOT_PERMITTED
    return None
