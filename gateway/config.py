"""Gateway configuration: a TOML or JSON file, overridden by the environment.

Every field has a default, so an empty file is a valid configuration (an
in-memory exchange on 127.0.0.1:8080 with no accounts). Environment
variables win over the file:

=========================  =====================================================
``SUANLI_HOST``            address to listen on
``SUANLI_PORT``            port to listen on
``SUANLI_DATA_DIR``        data directory of the durable store (journal,
                           snapshots); empty: in memory only
``SUANLI_KEYS_FILE``       where API keys issued at run time are kept (hashed)
``SUANLI_API_KEYS``        bootstrap keys, ``account=key`` pairs separated by
                           commas, added to ``api_keys``; hashed at start, held
                           in memory only (never written to the keys file),
                           never logged
``SUANLI_OPERATORS``       operator account ids to admit at start if missing
``SUANLI_LOG_LEVEL``       debug, info, warning or error
=========================  =====================================================
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

import msgspec

from exchange.store import Retention, SnapshotCapture
from gateway.session import SessionLimits


class BootstrapKey(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    account_id: str
    key: str


class GatewayConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = ""  # empty: no journal, state lives in memory only
    keys_file: str = ""  # empty: keys issued at run time live in memory only
    snapshot_every: int = 100_000  # commands between store snapshots
    snapshot_capture: SnapshotCapture = "auto"  # fork (Linux), or loop
    journal_retention: Retention = "archive"  # segments behind the oldest kept snapshot
    operators: list[str] = []  # admitted as operators at start if missing
    api_keys: list[BootstrapKey] = []  # accepted while configured; never written to keys_file
    demo: bool = False  # seed the demo market into an empty exchange
    demo_flow: float = 1.0  # demo only: orders a second from the demo's traders; 0: none
    event_loop: str = "auto"  # auto (uvloop if installed), uvloop or asyncio
    log_level: str = "info"
    log_json: bool = True
    book_depth: int = 20
    checksum_depth: int = 10
    shutdown_timeout: float = 5.0
    max_connections: int = 10_000
    # Room kept for accounts: an upgrade without a key is refused once this share of
    # max_connections is open, so anonymous watchers cannot lock traders out.
    anonymous_share: float = 0.9
    max_connections_per_account: int = 64  # one account cannot take the room of all
    max_open_orders_per_account: int = 10_000  # a new order beyond: TOO_MANY_OPEN_ORDERS
    session: SessionLimits = SessionLimits()

    def with_env(self, env: Mapping[str, str]) -> GatewayConfig:
        """This configuration with the ``SUANLI_*`` variables of ``env`` applied."""
        changes: dict[str, object] = {}
        if "SUANLI_HOST" in env:
            changes["host"] = env["SUANLI_HOST"]
        if "SUANLI_PORT" in env:
            changes["port"] = int(env["SUANLI_PORT"])
        if "SUANLI_DATA_DIR" in env:
            changes["data_dir"] = env["SUANLI_DATA_DIR"]
        if "SUANLI_KEYS_FILE" in env:
            changes["keys_file"] = env["SUANLI_KEYS_FILE"]
        if "SUANLI_LOG_LEVEL" in env:
            changes["log_level"] = env["SUANLI_LOG_LEVEL"]
        if env.get("SUANLI_OPERATORS"):
            changes["operators"] = [
                *self.operators,
                *(o.strip() for o in env["SUANLI_OPERATORS"].split(",") if o.strip()),
            ]
        if env.get("SUANLI_API_KEYS"):
            keys = list(self.api_keys)
            for pair in env["SUANLI_API_KEYS"].split(","):
                account_id, sep, key = pair.strip().partition("=")
                if not sep or not account_id or not key:
                    raise ValueError("SUANLI_API_KEYS: expected account=key pairs")
                keys.append(BootstrapKey(account_id=account_id, key=key))
            changes["api_keys"] = keys
        return msgspec.structs.replace(self, **changes) if changes else self


def load_config(path: Path | None, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read ``path`` (.toml or .json; None: defaults) and apply the environment."""
    config = GatewayConfig()
    if path is not None:
        raw = path.read_bytes()
        if path.suffix == ".json":
            config = msgspec.json.decode(raw, type=GatewayConfig)
        else:
            config = msgspec.convert(tomllib.loads(raw.decode()), type=GatewayConfig)
    return config.with_env(os.environ if env is None else env)
