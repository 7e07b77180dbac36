"""Configuration: a TOML file, then the SUANLI_* environment on top."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from gateway.app import _open_service
from gateway.config import BootstrapKey, GatewayConfig, load_config
from gateway.metrics import Metrics


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
