"""Counters and gauges, rendered in the Prometheus text format at ``/metrics``.

Counting is a dict increment on the serving path; rendering happens only when
``/metrics`` is scraped. Gauges that mirror live state (connections, queue
depths) are read at scrape time through callbacks, so they are never stale.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from exchange.service import Journal

# Journal append latency buckets, seconds.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)


class Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1


class Metrics:
    """Everything ``/metrics`` reports."""

    def __init__(self) -> None:
        # By request type: a plain dict whose keys the dispatcher seeds with every
        # type at 0 (a Counter's += costs more than twice as much, once a request).
        self.requests: dict[str, int] = {}
        self.orders_accepted = 0
        self.trades = 0
        self.traded_gpu_hours = 0
        self.rejections: Counter[str] = Counter()  # by Reason
        self.protocol_errors: Counter[str] = Counter()  # by ErrorCode
        self.connections_total = 0
        self.disconnects: Counter[str] = Counter()  # by close code
        self.messages_sent = 0  # added to by each connection's writes
        self.book_conflations = 0  # added up by the router after each batch
        self.journal_latency = Histogram(LATENCY_BUCKETS)
        self.gauges: dict[str, tuple[str, str, Callable[[], Any]]] = {}

    def gauge(self, name: str, help_text: str, read: Callable[[], Any], label: str = "") -> None:
        """Report ``read()`` at each scrape: a number, or with ``label`` a dict of numbers."""
        self.gauges[name] = (help_text, label, read)

    def render(self) -> str:
        lines: list[str] = []

        def counter(name: str, help_text: str, value: float) -> None:
            lines.extend(
                (f"# HELP {name} {help_text}", f"# TYPE {name} counter", f"{name} {value}")
            )

        def labelled(name: str, kind: str, help_text: str, label: str, values: Any) -> None:
            lines.extend((f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"))
            for key, value in sorted(values.items()):
                lines.append(f'{name}{{{label}="{key}"}} {value}')

        labelled(
            "suanli_requests_total", "counter", "Requests received, by type", "type", self.requests
        )
        counter("suanli_orders_accepted_total", "Orders accepted", self.orders_accepted)
        counter("suanli_trades_total", "Fills (compute contracts)", self.trades)
        counter("suanli_traded_gpu_hours_total", "GPU-hours traded", self.traded_gpu_hours)
        labelled(
            "suanli_rejections_total",
            "counter",
            "Commands rejected by the exchange, by reason",
            "reason",
            self.rejections,
        )
        labelled(
            "suanli_protocol_errors_total",
            "counter",
            "Frames refused by the gateway, by error code",
            "code",
            self.protocol_errors,
        )
        counter("suanli_connections_total", "WebSocket connections opened", self.connections_total)
        counter(
            "suanli_messages_sent_total",
            "Messages written to WebSocket connections",
            self.messages_sent,
        )
        labelled(
            "suanli_disconnects_total",
            "counter",
            "Connections closed by the server, by close code",
            "code",
            self.disconnects,
        )
        counter(
            "suanli_book_conflations_total",
            "Book updates conflated for lagging connections (replaced by a fresh snapshot)",
            self.book_conflations,
        )
        hist = self.journal_latency
        name = "suanli_journal_append_seconds"
        lines.extend((f"# HELP {name} Journal append latency", f"# TYPE {name} histogram"))
        cumulative = 0
        for bound, count in zip(hist.buckets, hist.counts, strict=False):
            cumulative += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {hist.count}')
        lines.append(f"{name}_sum {hist.total}")
        lines.append(f"{name}_count {hist.count}")
        for gauge_name, (help_text, label, read) in sorted(self.gauges.items()):
            value = read()
            if label:
                labelled(gauge_name, "gauge", help_text, label, value)
            else:
                lines.extend((f"# HELP {gauge_name} {help_text}", f"# TYPE {gauge_name} gauge"))
                lines.append(f"{gauge_name} {value}")
        return "\n".join(lines) + "\n"


class TimedJournal:
    """A journal that records how long each append takes."""

    def __init__(self, journal: Journal, metrics: Metrics) -> None:
        self.journal = journal
        self.metrics = metrics

    def append(self, first_seq: int, commands: Sequence[Any]) -> None:
        start = time.perf_counter()
        try:
            self.journal.append(first_seq, commands)
        finally:
            self.metrics.journal_latency.observe(time.perf_counter() - start)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.journal, name)
