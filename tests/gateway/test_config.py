"""Configuration: a TOML file, then the SUANLI_* environment on top."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import structlog

from gateway.__main__ import configure_logging
from gateway.app import _open_service
from gateway.config import BootstrapKey, GatewayConfig, load_config
from gateway.metrics import Metrics
from tests.gateway.conftest import GatewayFactory


def test_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        'host = "0.0.0.0"\nport = 9000\noperators = ["ops"]\n'
        "[session]\nrate_limit = 50.0\nidle_timeout = 60.0\n"
    )
    config = load_config(path, env={})
    assert (config.host, config.port, config.operators) == ("0.0.0.0", 9000, ["ops"])
    assert (config.session.rate_limit, config.session.idle_timeout) == (50.0, 60.0)
    assert config.session.rate_burst == 400  # defaults fill the rest

    env = {
        "SUANLI_PORT": "9100",
        "SUANLI_DATA_DIR": "/var/lib/suanli",
        "SUANLI_OPERATORS": "ops2",
        "SUANLI_API_KEYS": "ops=sk_a_b, ops2=sk_c_d",
    }
    config = load_config(path, env=env)
    assert (config.port, config.data_dir, config.operators) == (
        9100,
        "/var/lib/suanli",
        ["ops", "ops2"],
    )
    assert config.api_keys == [
        BootstrapKey(account_id="ops", key="sk_a_b"),
        BootstrapKey(account_id="ops2", key="sk_c_d"),
    ]
    assert load_config(None, env={}).port == 8080


def test_bad_configuration_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text("prot = 9000\n")  # a misspelt field
    with pytest.raises(msgspec.ValidationError):
        load_config(path, env={})
    with pytest.raises(ValueError, match="account=key"):
        load_config(None, env={"SUANLI_API_KEYS": "no-equals-sign"})
    path.write_text('journal_retention = "shred"\n')
    with pytest.raises(msgspec.ValidationError, match="journal_retention"):
        load_config(path, env={})
    path.write_text('[[api_keys]]\naccount_id = "ops"\nkey = "sk_a_b"\nrole = "OPERATOR"\n')
    with pytest.raises(msgspec.ValidationError, match="role"):  # keys carry no role
        load_config(path, env={})


def test_store_options_reach_the_store(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    data_dir = tmp_path / "data"
    path.write_text(
        f'data_dir = "{data_dir}"\nsnapshot_capture = "loop"\njournal_retention = "keep"\n'
    )
    config = load_config(path, env={})
    service, close, _ = _open_service(config, Metrics())
    try:
        store = service.journal.journal._store
        assert (store.snapshot_capture, store.retention) == ("loop", "keep")
    finally:
        close()
    defaults = GatewayConfig()
    assert (defaults.snapshot_capture, defaults.journal_retention) == ("auto", "archive")


@contextlib.contextmanager
def json_logging() -> Iterator[io.StringIO]:
    """``configure_logging("info", as_json=True)`` run as in a new process (no root
    handlers), writing to the string it yields instead of stderr; all restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    saved = structlog.get_config()
    excepthook = sys.excepthook
    stream = io.StringIO()
    root.handlers.clear()
    try:
        with contextlib.redirect_stderr(stream):
            configure_logging("info", as_json=True)
        yield stream
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**saved)
        sys.excepthook = excepthook
        logging.captureWarnings(False)


def test_every_log_line_is_one_json_object_without_secrets() -> None:
    with json_logging() as log_stream:
        server = logging.getLogger("aiohttp.server")
        server.error("Error handling request from %s", "10.0.0.7")
        try:
            raise RuntimeError("bad key sk_ops1_s3cret-value")
        except RuntimeError:
            server.exception("Error handling request")
        logging.getLogger("aiohttp.access").info(
            "GET /ws {'Authorization': 'Bearer sk_ops1_s3cret-value', 'X-API-Key': 'abc123'}"
        )
        logging.getLogger("asyncio").debug("below the configured level")
        structlog.get_logger("gateway.session").info("authenticated", conn_id=3, key_id="ops1")
        structlog.get_logger("gateway.session").info("oops", key="sk_ops1_s3cret-value")

    lines = log_stream.getvalue().splitlines()
    assert len(lines) == 5, lines
    records = [json.loads(line) for line in lines]  # each line is one JSON object
    assert all(isinstance(r, dict) and "timestamp" in r for r in records)
    assert records[0]["event"] == "Error handling request from 10.0.0.7"
    assert (records[0]["level"], records[0]["logger"]) == ("error", "aiohttp.server")
    assert "RuntimeError: bad key sk_ops1_[REDACTED]" in records[1]["exception"]
    assert records[2]["logger"] == "aiohttp.access"
    assert records[3] == {
        "event": "authenticated",
        "conn_id": 3,
        "key_id": "ops1",
        "level": "info",
        "logger": "gateway.session",
        "timestamp": records[3]["timestamp"],
    }
    text = log_stream.getvalue()
    assert "s3cret" not in text and "abc123" not in text
    assert "Bearer [REDACTED]" in text


SECRET = "d000cea7ac7b616159c35eaa329f8434"


KEY = b"sk_ops1_" + SECRET.encode()
HOST = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"


@pytest.mark.parametrize(
    "head",
    [
        HOST + b"Authorization: Bearer\x01" + KEY,  # no space after the scheme
        HOST + b"Authorization: Bearer\t" + KEY + b"\x7f",
        HOST + b"Authorization: Token " + SECRET.encode() + b"\x01",  # a scheme not taken
        HOST + b"X-API-Key:\x01" + SECRET.encode(),  # a bare secret after a control character
        HOST + b"X-API-Key: " + KEY + b"\x01",
        b"GET /ws?token=%22" + KEY + b"%22\x01 HTTP/1.1\r\nHost: x",  # in the URL, quoted
        HOST + b"Referer: http://h/?k=%22" + KEY + b"%22\x01",
    ],
)
async def test_a_key_in_a_request_aiohttp_refuses_never_reaches_the_log(
    start_gateway: GatewayFactory, head: bytes
) -> None:
    # aiohttp logs the refused line in its traceback, control characters escaped:
    # the secret must go however an escape (or a URL's %-encoding) runs into it.
    gateway = await start_gateway()
    with json_logging() as log_stream:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.server.port)
        writer.write(head + b"\r\n\r\n")
        async with asyncio.timeout(5):
            answer = await reader.read()
        writer.close()
    assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request")
    text = log_stream.getvalue()
    assert "Error handling request" in text  # the line that showed the request
    assert SECRET not in text and "[REDACTED]" in text


def test_an_uncaught_exception_is_logged_as_json() -> None:
    with json_logging() as log_stream:
        try:
            raise ValueError("no start")
        except ValueError as exc:
            sys.excepthook(type(exc), exc, exc.__traceback__)
    (line,) = log_stream.getvalue().splitlines()
    record = json.loads(line)
    assert (record["event"], record["level"]) == ("unhandled_exception", "critical")
    assert "ValueError: no start" in record["exception"]
