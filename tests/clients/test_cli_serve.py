"""`suanli demo` and `suanli serve` as real processes: start, answer, stop on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp

SUANLI = str(Path(sys.executable).with_name("suanli"))
START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(*args: str) -> tuple[subprocess.Popen[str], list[str]]:
    """Start the CLI and read its banner until the server says where it listens."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [SUANLI, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if line.startswith("state:"):
            break
    return process, lines


def _serving(*args: str, port: int) -> tuple[subprocess.Popen[str], list[str]]:
    process, lines = _start(*args)
    _wait_ready(port)
    return process, lines


def _wait_ready(port: int) -> None:
    """The banner prints once the socket listens; poll briefly all the same."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _get(port: int, path: str) -> object:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return json.loads(response.read())


def _stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_demo_serves_a_seeded_market_and_recovers_it_after_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    data_dir = str(tmp_path / "demo")
    still = ("--flow", "0")  # no demo traders: the state must be exactly what was seeded
    process, banner = _serving(
        "demo", "--port", str(port), "--data-dir", data_dir, *still, port=port
    )
    try:
        assert any(f"http://127.0.0.1:{port}" in line for line in banner), banner
        health = _get(port, "/healthz")
        instruments = _get(port, "/api/v1/instruments")
        # Keys are printed after the banner's state line; read a few more lines.
        assert process.stdout is not None
        keys = [process.stdout.readline().rstrip() for _ in range(3)]
    finally:
        assert _stop(process) == 0
    assert isinstance(health, dict) and health["status"] == "ok" and health["seq"] > 0
    assert isinstance(instruments, list) and len(instruments) >= 3
    assert keys[0].startswith("demo API keys"), keys
    assert "sk_demo-" in keys[1]

    # A second start recovers the journal instead of seeding again.
    process, _ = _serving("demo", "--port", str(port), "--data-dir", data_dir, *still, port=port)
    try:
        again = _get(port, "/healthz")
        instruments_again = _get(port, "/api/v1/instruments")
    finally:
        assert _stop(process) == 0
    assert isinstance(again, dict) and again["seq"] == health["seq"]
    assert instruments_again == instruments


def test_serve_starts_an_empty_exchange_in_memory() -> None:
    port = _free_port()
    process, banner = _serving("serve", "--port", str(port), "--data-dir", "", port=port)
    try:
        assert any("in memory only" in line for line in banner), banner
        instruments = _get(port, "/api/v1/instruments")
    finally:
        assert _stop(process) == 0
    assert instruments == []


def test_sigterm_closes_open_connections_with_1001_and_exits_cleanly() -> None:
    port = _free_port()
    process, _ = _serving("serve", "--port", str(port), "--data-dir", "", port=port)

    async def watch() -> tuple[int | None, str]:
        url = f"http://127.0.0.1:{port}/ws"
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            welcome = await asyncio.wait_for(ws.receive_json(), 10)
            assert welcome["type"] == "welcome"
            process.send_signal(signal.SIGTERM)
            while True:
                msg = await asyncio.wait_for(ws.receive(), 20)
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    return ws.close_code, str(msg.extra or "")

    try:
        code, reason = asyncio.run(watch())
        assert process.wait(timeout=20) == 0
    finally:
        _stop(process)
    assert (code, reason) == (1001, "server shutting down")
