"""Run the gateway.

    python -m gateway --demo                 # seeded demo market on 127.0.0.1:8080
    python -m gateway --config suanli.toml   # production-style: file + SUANLI_* env
    python -m gateway --schema               # print docs/protocol.schema.json

SIGTERM or SIGINT stops it gracefully: no new connections, every WebSocket is
closed with 1001, the exchange finishes its queue and the journal is closed.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import sys
from pathlib import Path
from types import TracebackType

import msgspec
import structlog
from aiohttp import web
from structlog.stdlib import ProcessorFormatter
from structlog.typing import EventDict, Processor, WrappedLogger

from exchange.store import StoreError
from gateway import demo
from gateway.app import Seed, create_app
from gateway.auth import redact
from gateway.config import BootstrapKey, GatewayConfig, load_config
from gateway.protocol import json_schema_text

DEMO_DATA_DIR = "var/demo"
DEMO_KEYS_FILE = "keys.json"  # in the demo's data directory


# Event fields whose values are credentials, whatever their shape.
_SECRET_FIELDS = frozenset({"key", "api_key", "secret", "token", "password", "authorization"})


def _redact_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for name in _SECRET_FIELDS & event_dict.keys():
        event_dict[name] = "[REDACTED]"
    return event_dict


def _redacted(renderer: Processor) -> Processor:
    """``renderer``, with API keys and Authorization credentials taken out of its line
    (the event, every field and the traceback alike)."""

    def render(logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        line = renderer(logger, name, event_dict)
        if not isinstance(line, str):
            raise TypeError(f"log renderer returned {type(line).__name__}, not str")
        return redact(line)

    return render


def configure_logging(level: str, as_json: bool) -> None:
    """Every log line of the process to stderr, one JSON object a line (or readable
    text), with API keys and Authorization credentials redacted.

    structlog's events and the standard library's records (aiohttp's server and
    access logs, asyncio's) go through one ``logging`` handler whose
    ``ProcessorFormatter`` stamps and renders both alike. Python warnings and
    uncaught exceptions are logged too, so nothing reaches stderr as plain text.
    """
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    stamp: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    render: list[Processor] = [ProcessorFormatter.remove_processors_meta, _redact_fields]
    if as_json:
        json = structlog.processors.JSONRenderer()
        render += [structlog.processors.format_exc_info, _redacted(json)]
    else:  # plain tracebacks: rich ones print local variables, secrets among them
        console = structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
        render.append(_redacted(console))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ProcessorFormatter(processors=render, foreign_pre_chain=stamp))
    logging.basicConfig(level=numeric, handlers=[handler], force=True)
    logging.captureWarnings(True)
    structlog.configure(
        processors=[*stamp, ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        # Not cached: a cached module-level logger would ignore any later
        # reconfiguration (and structlog.testing.capture_logs) for the life of
        # the process; nothing logs on the matching hot path, so it costs little.
        cache_logger_on_first_use=False,
    )
    sys.excepthook = _log_uncaught


def _log_uncaught(
    kind: type[BaseException], value: BaseException, traceback: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, traceback)
        return
    log = structlog.get_logger("gateway")
    log.critical("unhandled_exception", exc_info=(kind, value, traceback))


def use_event_loop(choice: str) -> str:
    """Install uvloop's event loop when asked (or on ``auto``, when installed)."""
    if choice == "asyncio":
        return "asyncio"
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        if choice == "uvloop":
            raise
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def demo_config(base: GatewayConfig, data_dir: str) -> GatewayConfig:
    """The demo's keys added; keys issued at run time kept beside a durable store,
    so they outlive a restart as its market does."""
    keys = [BootstrapKey(account_id=a, key=demo.demo_key(a)) for a in demo.demo_accounts()]
    keys_file = base.keys_file or (str(Path(data_dir) / DEMO_KEYS_FILE) if data_dir else "")
    return msgspec.structs.replace(
        base, demo=True, data_dir=data_dir, keys_file=keys_file, api_keys=[*base.api_keys, *keys]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, help="TOML or JSON configuration file")
    parser.add_argument("--demo", action="store_true", help="seed and serve the demo market")
    parser.add_argument("--host", help="override the configured host")
    parser.add_argument("--port", type=int, help="override the configured port")
    parser.add_argument(
        "--data-dir", help=f"durable store directory (demo default: {DEMO_DATA_DIR}; '' = memory)"
    )
    parser.add_argument(
        "--demo-flow",
        type=float,
        metavar="RATE",
        help="demo only: orders a second from the demo's own traders (default 1; 0: none)",
    )
    parser.add_argument("--schema", action="store_true", help="print the protocol JSON schema")
    args = parser.parse_args(argv)
    if args.schema:
        sys.stdout.write(json_schema_text())
        return 0
    configure_logging("info", as_json=True)  # until the configuration says otherwise
    config = load_config(args.config)
    if args.host:
        config = msgspec.structs.replace(config, host=args.host)
    if args.port is not None:
        config = msgspec.structs.replace(config, port=args.port)
    if args.data_dir is not None:
        config = msgspec.structs.replace(config, data_dir=args.data_dir)
    if args.demo_flow is not None:
        config = msgspec.structs.replace(config, demo_flow=args.demo_flow)
    seed: Seed | None = None
    if args.demo or config.demo:
        data_dir = (
            config.data_dir if args.data_dir is not None or config.data_dir else DEMO_DATA_DIR
        )
        config = demo_config(config, data_dir)
        seed = demo.demo_commands
    configure_logging(config.log_level, config.log_json)
    loop_name = use_event_loop(config.event_loop)
    app = create_app(config, seed=seed)
    url = f"http://{config.host}:{config.port}"

    def announce(_: str) -> None:
        """Once the exchange is open and the port bound (run_app's own message)."""
        lines = [
            f"Suanli gateway on {url}  (WebSocket {url.replace('http', 'ws')}/ws)",
            f"state: {'data dir ' + config.data_dir if config.data_dir else 'in memory only'}"
            f"; event loop: {loop_name}",
        ]
        if seed is not None:
            lines.append("demo API keys (send as {'type': 'auth', 'key': ...}):")
            lines.extend(f"  {a:18} {demo.demo_key(a)}" for a in demo.demo_accounts())
        print("\n".join(lines), flush=True)

    try:
        web.run_app(
            app,
            host=config.host,
            port=config.port,
            shutdown_timeout=config.shutdown_timeout,
            access_log=None,
            print=announce,
            handle_signals=True,
        )
    except StoreError as exc:  # the store is in use, say: no fault, no traceback
        structlog.get_logger("gateway").error("cannot_start", reason=str(exc))
        return 1
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
            raise
        reason = f"{exc} (choose another port with --port or SUANLI_PORT)"
        structlog.get_logger("gateway").error("cannot_start", reason=reason)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
