"""The gateway: the exchange served over WebSocket and HTTP with aiohttp.

Modules, from the wire inwards:

``protocol``      every wire message (frozen msgspec Structs), one decoder, one encoder
``protocol_doc``  generates docs/protocol.schema.json and the reference in docs/protocol.md
``auth``          hashed API keys; which role may send which request
``session``       one connection: outbound queue, conflation, rate limit, strikes
``dispatch``      one frame in: decode, check, act (``match`` on the request type)
``router``        the service listener: events out to the right connections, in order
``orders``        every order's life as FIX-style execution reports
``marketdata``    L2 books with sequence numbers and CRC32 checksums, trades, tickers
``reports``       the HTTP API
``metrics``       Prometheus counters and gauges
``app``           the aiohttp application and its life cycle
``config``        configuration file and environment
``demo``          the seeded demo market
``__main__``      ``python -m gateway --demo`` / ``--config FILE``
"""
