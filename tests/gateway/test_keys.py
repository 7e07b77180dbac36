"""API keys from the configuration live in memory only; keys issued at run time persist.

A configured key (``api_keys`` or ``SUANLI_API_KEYS``) is accepted while it is
configured, is never written to ``keys_file``, and is refused after a restart
without it. A key an operator issues at run time is kept, hashed, in
``keys_file`` and survives a restart. Revoking a configured key refuses it for
the rest of the process.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgspec
import pytest
import structlog
from aiohttp.test_utils import TestServer

from gateway import protocol as p
from gateway.__main__ import demo_config
from gateway.app import create_app
from gateway.auth import KeyRecord, KeyStore
from gateway.config import BootstrapKey, GatewayConfig
from tests.gateway.conftest import ACCOUNTS, Client, Gateway, key, make_config, seed_market


def configured(keys_file: Path, accounts: tuple[str, ...] = ACCOUNTS) -> GatewayConfig:
    """The test gateway's configuration, with ``keys_file`` and keys for ``accounts``."""
    return msgspec.structs.replace(
        make_config(),
        keys_file=str(keys_file),
        api_keys=[BootstrapKey(account_id=a, key=key(a)) for a in accounts],
    )


@contextlib.asynccontextmanager
async def running(config: GatewayConfig) -> AsyncIterator[Gateway]:
    """A gateway from ``config`` (in memory, seeded afresh), stopped on leaving."""
    server = TestServer(create_app(config, seed=seed_market), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            yield Gateway(server, http)
    finally:
        await server.close()


async def auth(gateway: Gateway, api_key: str) -> object:
    """What the gateway answers an ``auth`` with ``api_key`` on a new connection."""
    client: Client = await gateway.connect()
    rid = await client.send("auth", key=api_key)
    while True:
        answer = await client.recv()
        if getattr(answer, "id", None) == rid:
            return answer


def stored_key_ids(keys_file: Path) -> set[str]:
    return {r.key_id for r in msgspec.json.decode(keys_file.read_bytes(), type=list[KeyRecord])}


async def test_a_configured_key_works_only_while_configured_and_is_never_written(
    tmp_path: Path,
) -> None:
    keys_file = tmp_path / "keys.json"
    async with running(configured(keys_file)) as gateway:
        answer = await auth(gateway, key("su2"))
        assert isinstance(answer, p.Authenticated) and answer.account_id == "su2"
        ops = await gateway.connect("ops")
        rid = await ops.send("issue_api_key", account_id="su1")
        issued = await ops.expect(p.ApiKeyIssued, id=rid)

    # Only the key issued at run time is in the file: no configured key id, no secret.
    assert stored_key_ids(keys_file) == {issued.key_id}
    text = keys_file.read_text()
    for account in ACCOUNTS:
        key_id, secret = key(account).split("_")[1:]
        assert key_id not in text and secret not in text

    # Restarted without su2's key: it is refused; the issued key survives the restart.
    without_su2 = tuple(a for a in ACCOUNTS if a != "su2")
    async with running(configured(keys_file, without_su2)) as gateway:
        refused = await auth(gateway, key("su2"))
        assert isinstance(refused, p.Error) and refused.code == p.ErrorCode.AUTH_FAILED
        answer = await auth(gateway, issued.key)
        assert isinstance(answer, p.Authenticated) and answer.account_id == "su1"
        answer = await auth(gateway, key("ops"))
        assert isinstance(answer, p.Authenticated) and answer.account_id == "ops"
    assert stored_key_ids(keys_file) == {issued.key_id}


async def test_revoking_a_configured_key_refuses_it_until_the_process_ends(
    tmp_path: Path,
) -> None:
    keys_file = tmp_path / "keys.json"
    async with running(configured(keys_file)) as gateway:
        su2 = await gateway.connect("su2")
        ops = await gateway.connect("ops")
        rid = await ops.send("revoke_api_key", key_id=key("su2").split("_")[1])
        await ops.expect(p.Ack, id=rid)
        code, _ = await su2.closed()
        assert code == p.CloseCode.AUTH_REVOKED
        refused = await auth(gateway, key("su2"))
        assert isinstance(refused, p.Error) and refused.code == p.ErrorCode.AUTH_FAILED
    # Nothing about it was written: not the key, not its revocation.
    assert not keys_file.exists() or stored_key_ids(keys_file) == set()
    # Still configured, so accepted again after a restart (documented).
    async with running(configured(keys_file)) as gateway:
        answer = await auth(gateway, key("su2"))
        assert isinstance(answer, p.Authenticated)


async def test_a_configured_key_of_an_unknown_account_is_refused_and_reported(
    tmp_path: Path,
) -> None:
    config = msgspec.structs.replace(
        configured(tmp_path / "keys.json"),
        api_keys=[
            BootstrapKey(account_id="ops", key=key("ops")),
            BootstrapKey(account_id="ghost", key=key("ghost")),
        ],
    )
    with structlog.testing.capture_logs() as logs:
        async with running(config) as gateway:
            refused = await auth(gateway, key("ghost"))
            assert isinstance(refused, p.Error) and refused.code == p.ErrorCode.AUTH_FAILED
            # Admitted later, the account's configured key starts to work.
            ops = await gateway.connect("ops")
            rid = await ops.send("admit_account", account_id="ghost", role="STARTUP")
            await ops.expect(p.Ack, id=rid)
            answer = await auth(gateway, key("ghost"))
            assert isinstance(answer, p.Authenticated) and answer.account_id == "ghost"
    warned = [e for e in logs if e["event"] == "configured_key_unknown_account"]
    assert [(e["account_id"], e["key_id"]) for e in warned] == [("ghost", "test-ghost")]
    assert all(key("ghost") not in repr(e) for e in logs)


def test_configured_keys_are_in_memory_only(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    store = KeyStore(path)
    store.configure("ops", key("ops"))
    store.configure("ops", key("ops"))  # the same key from the file and the environment
    assert store.verify(key("ops")) == ("ops", "test-ops")
    assert not path.exists()
    issued = store.issue("su1", now=1)
    assert stored_key_ids(path) == {issued.split("_")[1]}
    again = KeyStore(path)
    assert again.verify(key("ops")) is None
    assert again.verify(issued) == ("su1", issued.split("_")[1])


def test_conflicting_key_ids_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    store = KeyStore(path)
    store.configure("ops", "sk_shared_one")
    with pytest.raises(ValueError, match="already belongs"):
        store.configure("su1", "sk_shared_one")  # another account
    with pytest.raises(ValueError, match="already belongs"):
        store.configure("ops", "sk_shared_two")  # another secret
    with pytest.raises(ValueError, match="already exists"):
        store.issue("su1", now=1, key_id="shared")
    with pytest.raises(ValueError, match="malformed"):
        store.configure("ops", "not-a-key")
    issued = store.issue("su1", now=1)
    with pytest.raises(ValueError, match="already belongs"):
        KeyStore(path).configure("ops", f"sk_{issued.split('_')[1]}_other")


def test_a_configured_key_an_earlier_version_wrote_is_taken_out_of_the_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys.json"
    old = KeyStore(path)
    old.issue("ops", now=1, key_id="ops1", secret="s3cret")  # as ``add`` used to
    kept = old.issue("su1", now=2)
    old.issue("su2", now=3, key_id="gone", secret="x")
    old.revoke("gone")

    store = KeyStore(path)
    store.configure("ops", "sk_ops1_s3cret")
    assert store.verify("sk_ops1_s3cret") == ("ops", "ops1")
    assert stored_key_ids(path) == {kept.split("_")[1], "gone"}
    # A revocation an operator made under an earlier version still holds.
    store.configure("su2", "sk_gone_x")
    assert store.verify("sk_gone_x") is None
    assert KeyStore(path).verify("sk_gone_x") is None


async def test_the_demo_keeps_keys_issued_at_run_time_beside_its_store(tmp_path: Path) -> None:
    data_dir = tmp_path / "var" / "demo"
    base = msgspec.structs.replace(make_config(), demo_flow=0)
    config = demo_config(base, str(data_dir))
    async with running(config) as gateway:
        ops = await gateway.connect("ops")
        rid = await ops.send("issue_api_key", account_id="su1")
        issued = await ops.expect(p.ApiKeyIssued, id=rid)
    keys_file = data_dir / "keys.json"
    assert stored_key_ids(keys_file) == {issued.key_id}
    assert keys_file.stat().st_mode & 0o777 == 0o600
    assert data_dir.stat().st_mode & 0o777 == 0o700
    async with running(config) as gateway:  # the same market, recovered
        answer = await auth(gateway, issued.key)
        assert isinstance(answer, p.Authenticated) and answer.account_id == "su1"
    # In memory, the demo keeps no keys file; a configured one is used as it is.
    assert demo_config(base, "").keys_file == ""
    chosen = msgspec.structs.replace(base, keys_file=str(tmp_path / "elsewhere.json"))
    assert demo_config(chosen, str(data_dir)).keys_file == str(tmp_path / "elsewhere.json")


def test_a_keys_file_directory_is_created_owner_only(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "secrets" / "keys.json")
    store.issue("su1", now=1)
    assert (tmp_path / "secrets").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "secrets" / "keys.json").stat().st_mode & 0o777 == 0o600
