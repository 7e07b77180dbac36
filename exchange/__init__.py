"""The exchange: a deterministic matching core, its ledger, and the service around it."""

from exchange import native as _native  # before any hot module: picks compiled or source

__all__ = ["_native"]
