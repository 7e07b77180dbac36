"""A gateway that cannot start says why in one log line, exits 1 and prints no
banner: its port is taken, or its store is open in another process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _gateway(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "--demo", "--demo-flow", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _refused(*args: str) -> tuple[str, list[dict[str, object]]]:
    """Run a gateway that must fail to start: its stdout and its log records."""
    process = _gateway(*args)
    try:
        out, err = process.communicate(timeout=START_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 1, (out, err)
    assert "Traceback" not in err, err
    return out, [json.loads(line) for line in err.splitlines()]


def test_a_taken_port_and_a_store_in_use_are_told_plainly(tmp_path: Path) -> None:
    port = _free_port()
    data_dir = str(tmp_path / "demo")
    running = _gateway("--port", str(port), "--data-dir", data_dir)
    try:
        assert running.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        banner = ""
        while "state:" not in banner and time.monotonic() < deadline:
            banner += running.stdout.readline()
        assert f"on http://127.0.0.1:{port}" in banner  # printed once it listens

        out, records = _refused("--port", str(port), "--data-dir", "")
        assert "Suanli gateway on" not in out and "sk_demo-" not in out
        (failed,) = [r for r in records if r["event"] == "cannot_start"]
        assert "address already in use" in str(failed["reason"])
        assert "--port or SUANLI_PORT" in str(failed["reason"])

        out, records = _refused("--port", str(_free_port()), "--data-dir", data_dir)
        assert "Suanli gateway on" not in out
        (failed,) = [r for r in records if r["event"] == "cannot_start"]
        assert "in use by another process" in str(failed["reason"])
    finally:
        running.send_signal(signal.SIGTERM)
        try:
            assert running.wait(timeout=20) == 0
        finally:
            if running.poll() is None:
                running.kill()
            running.communicate()
