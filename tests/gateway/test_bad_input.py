"""Bad input is answered with a code and changes nothing; only abuse closes."""

from __future__ import annotations

import asyncio

import aiohttp
import msgspec

from gateway import protocol as p
from gateway.app import METRICS, SERVICE
from tests.gateway.conftest import H100, Gateway, GatewayFactory
from tests.market import state_digest


def _order(request_id: int, drop: str = "", **fields: object) -> str:
    """A new_order frame, with fields replaced or one dropped."""
    order: dict[str, object] = {
        "type": "new_order",
        "id": request_id,
        "client_order_id": "x",
        "instrument_id": H100,
        "side": "BUY",
        "qty": 8,
        "price": 1000,
    }
    order.update(fields)
    order.pop(drop, None)
    return msgspec.json.encode(order).decode()


BAD_FRAMES: list[tuple[str, p.ErrorCode]] = [
    ("{not json", p.ErrorCode.BAD_JSON),
    ("", p.ErrorCode.BAD_JSON),
    ("[1, 2]", p.ErrorCode.NOT_AN_OBJECT),
    ('"new_order"', p.ErrorCode.NOT_AN_OBJECT),
    ('{"id": 1}', p.ErrorCode.UNKNOWN_MESSAGE),
    ('{"type": "buy_everything", "id": 2}', p.ErrorCode.UNKNOWN_MESSAGE),
    (_order(3, drop="client_order_id"), p.ErrorCode.MISSING_FIELD),
    (_order(4, qty="8"), p.ErrorCode.INVALID_FIELD),
    (_order(5, qty=8.5), p.ErrorCode.INVALID_FIELD),
    (_order(6, side="SIDEWAYS"), p.ErrorCode.INVALID_FIELD),
    (_order(7, price=10**23), p.ErrorCode.INVALID_FIELD),
    (_order(8, leverage=100), p.ErrorCode.UNKNOWN_FIELD),
    ('{"type": "ping", "id": 1.5}', p.ErrorCode.INVALID_FIELD),
    ('{"type": "ping", "id": 120000000000000000000000000000}', p.ErrorCode.INVALID_FIELD),
    ('{"type": "ping", "id": "' + "i" * 65 + '"}', p.ErrorCode.INVALID_FIELD),
    ('{"type": "amend_order", "id": 10, "order_id": 1}', p.ErrorCode.MISSING_FIELD),
    ('{"type": "unsubscribe", "id": 11, "channel": "orders"}', p.ErrorCode.NOT_SUBSCRIBED),
    ('{"type": "mass_status", "id": 12, "instrument_id": "NONE"}', p.ErrorCode.UNKNOWN_INSTRUMENT),
    ('{"type": "subscribe", "id": 9, "channel": "book"}', p.ErrorCode.INSTRUMENT_REQUIRED),
    # Nested deeper than the decoder recurses: refused, not a fault of the gateway.
    ('{"type": "ping", "x": ' + "[" * 1000 + "]" * 1000 + "}", p.ErrorCode.UNKNOWN_FIELD),
    (
        '{"type": "admit_account", "projects": ' + "[" * 1000 + "]" * 1000 + "}",
        p.ErrorCode.INVALID_FIELD,
    ),
]


async def test_every_kind_of_bad_input_gets_a_code_and_changes_nothing(gateway: Gateway) -> None:
    su1 = await gateway.connect("su1")
    core = gateway.app[SERVICE].core
    before = state_digest(core)
    for frame, code in BAD_FRAMES:
        await su1.ws.send_str(frame)
        error = await su1.expect(p.Error)
        assert error.code is code, (frame, error)
        readable = frame.startswith('{"') and "[[[" not in frame  # not too deep to decode here
        request_id = msgspec.json.decode(frame).get("id") if readable else None
        if isinstance(request_id, int) and code is not p.ErrorCode.INVALID_FIELD:
            assert error.id == request_id, frame
        if frame.startswith('{"type": "new_order"') and code is p.ErrorCode.UNKNOWN_FIELD:
            assert error.text.endswith("unknown field `leverage` - at `$`"), error.text
    await su1.ws.send_bytes(b'{"type": "ping"}')
    error = await su1.expect(p.Error)
    assert error.code is p.ErrorCode.BINARY_FRAME
    await su1.ws.send_str('{"type": "ping", "id": "' + "x" * 70_000 + '"}')
    error = await su1.expect(p.Error)
    assert error.code is p.ErrorCode.FRAME_TOO_LARGE
    await su1.ws.send_str('{"type": "ping", "id": 99, "pad": "' + "x" * 70_000 + '"}')
    error = await su1.expect(p.Error, id=99)  # too large to act on, not to answer
    assert error.code is p.ErrorCode.FRAME_TOO_LARGE
    # The limit is in bytes: 30,000 three-byte characters are 90,000 bytes.
    await su1.ws.send_str('{"type": "ping", "id": "' + "算" * 30_000 + '"}')
    error = await su1.expect(p.Error)
    assert error.code is p.ErrorCode.FRAME_TOO_LARGE and "frame of 900" in error.text
    rid = await su1.send("subscribe", channel="book", instrument_id="NO-SUCH")
    error = await su1.expect(p.Error, id=rid)
    assert error.code is p.ErrorCode.UNKNOWN_INSTRUMENT
    assert state_digest(core) == before  # nothing reached the exchange

    # Well-formed but refused by the exchange: a rejected report, still no change.
    # The text names the instrument's limit that was broken (tick 10, lot 8).
    for price, qty, reason, text in (
        (1005, 8, "OFF_TICK", "price 1005 fen is not a whole number of ticks of 10 fen"),
        (1000, 5, "OFF_LOT", "quantity 5 is not a whole number of lots of 8 GPU-hours"),
        (0, 8, "INVALID_PRICE", p.REASON_TEXT["INVALID_PRICE"]),
        (10**12, 8, "INVALID_PRICE", f"price {10**12} fen is outside 1 to 10000000 fen"),
        (1000, 10**9, "INVALID_QUANTITY", "quantity 1000000000 is outside 1 to 10000000 GPU-hours"),
    ):
        rid = await su1.send(
            "new_order",
            client_order_id=f"bad{price}{qty}",
            instrument_id=H100,
            side="BUY",
            qty=qty,
            price=price,
        )
        rejected = await su1.expect(p.ExecutionReport, id=rid)
        assert rejected.exec_type is p.ExecType.REJECTED and rejected.reason == reason
        assert rejected.text == text
    rid = await su1.send(
        "new_order",
        client_order_id="market",
        instrument_id=H100,
        side="BUY",
        qty=8,
        price=1500,
        order_type="MARKET",
        tif="IOC",
    )
    rejected = await su1.expect(p.ExecutionReport, id=rid)
    assert (rejected.reason, rejected.text) == ("INVALID_PRICE", "a MARKET order takes no price")
    rid = await su1.send(
        "new_order", client_order_id="nope", instrument_id="NO-SUCH", side="BUY", qty=8, price=1000
    )
    rejected = await su1.expect(p.ExecutionReport, id=rid)
    assert rejected.reason == "UNKNOWN_INSTRUMENT"
    assert core.accounts["su1"].cash_reserved == 0 and not core.orders
    rid = await su1.send("ping")
    await su1.expect(p.Pong, id=rid)  # still connected after all that


async def test_an_amend_to_no_more_than_was_filled_is_refused_with_the_fill_in_the_text(
    gateway: Gateway,
) -> None:
    su1 = await gateway.connect("su1")
    await su1.order("part", H100, "BUY", 24, 1_000)
    dc1 = await gateway.connect("dc1")
    await dc1.order("hit", H100, "SELL", 16, 1_000)
    await su1.expect(p.ExecutionReport, client_order_id="part", cum_qty=16)
    for qty in (16, 8):
        rid = await su1.send("amend_order", client_order_id="part", qty=qty)
        refused = await su1.expect(p.CancelReject, id=rid)
        assert refused.reason == "INVALID_QUANTITY"
        assert refused.text == f"quantity {qty} is not above the 16 GPU-hours already filled"
    rid = await su1.send("amend_order", client_order_id="part", qty=10**9)
    refused = await su1.expect(p.CancelReject, id=rid)
    assert refused.text == "quantity 1000000000 is outside 1 to 10000000 GPU-hours"


async def test_repeated_abuse_closes_the_connection(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(abuse_limit=5)
    client = await gateway.connect()
    for _ in range(5):
        await client.ws.send_str("garbage")
    code, reason = await client.closed()
    assert code == p.CloseCode.PROTOCOL_ABUSE
    assert "abuse" in reason
    errors = [m for m in client.seen if isinstance(m, p.Error)]
    assert len(errors) == 5  # each refusal was explained before the close


async def test_rate_limit_drops_requests_with_a_clear_error(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(rate_limit=1, rate_burst=3)
    client = await gateway.connect()
    ids = [await client.send("ping") for _ in range(6)]
    answers = [await client.expect((p.Pong, p.Error), id=i) for i in ids]  # type: ignore[arg-type]
    pongs = [a for a in answers if isinstance(a, p.Pong)]
    limited = [a for a in answers if isinstance(a, p.Error)]
    assert len(pongs) >= 3 and limited
    assert all(e.code is p.ErrorCode.RATE_LIMITED for e in limited)


async def test_idle_connection_is_closed_and_heartbeats_flow(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(heartbeat_interval=0.05, idle_timeout=0.3)
    client = await gateway.connect()
    await client.expect(p.Heartbeat)
    code, reason = await client.closed()  # the client never sends anything
    assert code == p.CloseCode.IDLE_TIMEOUT
    assert "idle" in reason


async def test_shutdown_closes_every_websocket(start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway()
    clients = [await gateway.connect("su1"), await gateway.connect()]
    await gateway.server.close()
    for client in clients:
        msg = await client.ws.receive(timeout=10)
        while msg.type is aiohttp.WSMsgType.TEXT:
            msg = await client.ws.receive(timeout=10)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, p.CloseCode.GOING_AWAY), msg


async def test_shutdown_answers_every_command_it_took_before_closing(
    start_gateway: GatewayFactory,
) -> None:
    gateway = await start_gateway(rate_limit=1e6, rate_burst=10**6)
    su1 = await gateway.connect("su1")
    sent = [
        await su1.send(
            "new_order",
            client_order_id=f"late{i}",
            instrument_id=H100,
            side="BUY",
            qty=8,
            price=1_000 + 10 * (i % 20),
        )
        for i in range(300)
    ]
    requests = gateway.app[METRICS].requests
    async with asyncio.timeout(10):
        while requests["new_order"] < len(sent):  # all read; many still queued or unsent
            await asyncio.sleep(0)
    await gateway.server.close()
    msg = await su1.ws.receive(timeout=10)
    answered = set()
    while msg.type is aiohttp.WSMsgType.TEXT:
        message = p.decode_message(msg.data)
        if isinstance(message, p.ExecutionReport) and message.id is not None:
            assert message.exec_type is p.ExecType.NEW
            answered.add(message.id)
        msg = await su1.ws.receive(timeout=10)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, p.CloseCode.GOING_AWAY), msg
    assert answered == set(sent)


async def test_a_frame_above_the_hard_limit_closes_with_1009_and_a_reason(
    gateway: Gateway,
) -> None:
    client = await gateway.connect("su1")
    hard_limit = 256 * 1024  # the transport's: max(4 x max_frame_bytes, 256 KiB)
    await client.ws.send_str('{"type": "ping", "id": "' + "x" * (hard_limit + 1_000) + '"}')
    code, reason = await client.closed()
    assert (code, reason) == (p.CloseCode.MESSAGE_TOO_BIG, "frame too large")
    metrics = gateway.app[METRICS]
    for _ in range(100):  # the server's side of the close finishes after the client's
        if metrics.disconnects["1009"]:
            break
        await asyncio.sleep(0.01)
    assert metrics.disconnects == {"1009": 1}


async def test_an_account_at_its_open_order_limit_is_refused_until_it_cancels(
    start_gateway: GatewayFactory,
) -> None:
    gateway = await start_gateway(max_open_orders_per_account=3, abuse_limit=5)
    su1 = await gateway.connect("su1")
    for i in range(3):
        await su1.order(f"rest{i}", H100, "BUY", 8, 1_000 + 10 * i)
    other = await gateway.connect("su1")  # the limit is the account's, not a connection's
    for _ in range(6):  # a limit any busy account may meet: not abuse, however often
        rid = await other.send(
            "new_order", client_order_id="more", instrument_id=H100, side="BUY", qty=8, price=900
        )
        refused = await other.expect(p.Error, id=rid)
        assert refused.code is p.ErrorCode.TOO_MANY_OPEN_ORDERS
        assert refused.text == "3 orders open; the limit is 3 an account"
    assert len(gateway.app[SERVICE].core.orders) == 3  # nothing reached the exchange
    rid = await su1.send("cancel_order", client_order_id="rest0")
    await su1.expect(p.ExecutionReport, id=rid, exec_type=p.ExecType.CANCELLED)
    report = await other.order("more", H100, "BUY", 8, 900)
    assert report.exec_type is p.ExecType.NEW
    rid = await su1.send("ping")
    await su1.expect(p.Pong, id=rid)
