"""Invariants of the core's state, checked from the outside.

``problems(core)`` reads an ``ExchangeCore`` and lists every rule of
``exchange.core`` and ``exchange.book`` that its state breaks; an empty list is
a sound state. It never changes the core. The journal tools run it while they
replay, recovery runs it on a loaded snapshot, and tests run it after restarts.

What it checks:

* Books: levels hold live orders of their own price, side and instrument in
  strictly increasing priority; a level's count and total match its orders;
  the price lists and cached best prices match the levels; a book in
  continuous trading is not crossed and a closed one is empty; the open
  orders are exactly the orders on the books.
* Ledger: no balance, reservation or capacity is negative; each account's
  reserved cash and each provider's reserved capacity equal what its open
  orders hold; each voucher's amount is its free, reserved and spent parts,
  its reservation is what open orders hold, its spent part is its claims;
  cash + voucher value + open claims equals deposits minus withdrawals;
  capacity sold equals the buyers' holdings on each instrument.
* Vouchers and claims: programmes have issued what their vouchers add up to
  and no more than their budget; each claim belongs to its contract.
* Counters and heaps: every id and priority is below its counter; the expiry
  and closing lists keep the heap property and hold every pending deadline.
* Contracts (``contracts=True``, O(contracts)): cash and voucher parts add up
  to price times quantity, buyer and seller differ, instrument statistics
  match.

The cost is O(state); call it every so many commands on long replays.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from exchange.core import NEVER, ExchangeCore
from exchange.reference import InstrumentStatus, Role, Side

_Bad = Callable[[str], None]  # reports one broken invariant


def problems(core: ExchangeCore, *, contracts: bool = True, limit: int = 50) -> list[str]:
    """Every broken invariant of ``core``'s state (at most ``limit``); empty if sound."""
    found: list[str] = []

    def bad(message: str) -> None:
        if len(found) < limit:
            found.append(message)

    _check_books(core, bad)
    _check_ledger(core, bad)
    _check_counters(core, bad)
    if contracts:
        _check_contracts(core, bad)
    return found


def _check_books(core: ExchangeCore, bad: _Bad) -> None:
    if core.books.keys() != core.instruments.keys():
        bad("books and instruments name different instruments")
    on_books = 0
    for iid, book in core.books.items():
        inst = core.instruments.get(iid)
        for side, levels, prices in (
            (Side.BUY, book.bids, book.bid_prices),
            (Side.SELL, book.asks, book.ask_prices),
        ):
            if set(prices) != levels.keys() or len(prices) != len(levels):
                bad(f"{iid} {side}: price list {list(prices)} != levels {sorted(levels)}")
            for price, level in levels.items():
                live = list(level.live_orders())
                if level.price != price:
                    bad(f"{iid} {side} {price}: level says price {level.price}")
                if not live or level.count != len(live):
                    bad(f"{iid} {side} {price}: count {level.count}, live orders {len(live)}")
                if level.total != sum(o.leaves for o in live):
                    bad(f"{iid} {side} {price}: total {level.total} != leaves of its orders")
                last_priority = 0
                for order in live:
                    on_books += 1
                    if core.orders.get(order.order_id) is not order:
                        bad(f"order {order.order_id} is on the {iid} book but not open")
                    if order.price != price or order.side is not side or order.instrument_id != iid:
                        bad(f"order {order.order_id} sits at {iid} {side} {price}")
                    if not 0 < order.leaves <= order.qty:
                        bad(f"order {order.order_id}: leaves {order.leaves} of {order.qty}")
                    if order.priority <= last_priority:
                        bad(f"order {order.order_id}: priority out of queue order")
                    last_priority = order.priority
        best_bid = book.bid_prices[-1] if book.bid_prices else 0
        best_ask = book.ask_prices[0] if book.ask_prices else 0
        if (book.best_bid, book.best_ask) != (best_bid, best_ask):
            bad(f"{iid}: cached best {book.best_bid}/{book.best_ask}, levels {best_bid}/{best_ask}")
        if inst is not None:
            if inst.status is InstrumentStatus.OPEN and book.crossed():
                bad(f"{iid}: crossed in continuous trading ({book.best_bid} >= {book.best_ask})")
            if inst.status is InstrumentStatus.CLOSED and (book.bids or book.asks):
                bad(f"{iid}: closed with orders on the book")
    if on_books != len(core.orders):
        bad(f"{len(core.orders)} open orders, {on_books} on the books")


def _check_ledger(core: ExchangeCore, bad: _Bad) -> None:
    cash_held: Counter[str] = Counter()
    capacity_held: Counter[tuple[str, str]] = Counter()
    voucher_held: Counter[int] = Counter()
    for order in core.orders.values():
        account = core.accounts.get(order.account)
        if account is None:
            bad(f"order {order.order_id}: unknown account {order.account}")
            continue
        if order.cash_reserved < 0 or order.voucher_reserved < 0:
            bad(f"order {order.order_id}: negative reservation")
        if order.side is Side.BUY:
            if account.role is not Role.STARTUP:
                bad(f"order {order.order_id}: a buy by {account.role} {account.account_id}")
            cash_held[order.account] += order.cash_reserved
            if order.voucher_id:
                voucher_held[order.voucher_id] += order.voucher_reserved
            elif order.voucher_reserved:
                bad(f"order {order.order_id}: voucher reserved without a voucher")
        else:
            if account.role is not Role.PROVIDER:
                bad(f"order {order.order_id}: a sell by {account.role} {account.account_id}")
            if order.cash_reserved or order.voucher_reserved:
                bad(f"order {order.order_id}: a sell holding money")
            capacity_held[order.account, order.instrument_id] += order.leaves

    total = 0
    sold: Counter[str] = Counter()
    held: Counter[str] = Counter()
    for aid, account in core.accounts.items():
        if account.account_id != aid:
            bad(f"account {aid} is filed as {account.account_id}")
        if account.cash < 0 or account.cash_reserved < 0:
            bad(f"{aid}: negative cash {account.cash}/{account.cash_reserved}")
        if account.cash_reserved != cash_held[aid]:
            bad(f"{aid}: cash reserved {account.cash_reserved}, open buys hold {cash_held[aid]}")
        total += account.cash + account.cash_reserved
        for iid, reserved in account.capacity_reserved.items():
            if reserved != capacity_held[aid, iid]:
                held_by_sells = capacity_held[aid, iid]
                bad(f"{aid} {iid}: capacity reserved {reserved}, open sells hold {held_by_sells}")
        for name, amounts in (
            ("capacity", account.capacity),
            ("capacity reserved", account.capacity_reserved),
            ("capacity sold", account.capacity_sold),
            ("holdings", account.holdings),
        ):
            for iid, amount in amounts.items():
                if amount < 0:
                    bad(f"{aid} {iid}: negative {name} {amount}")
        sold.update(account.capacity_sold)
        held.update(account.holdings)
    for (aid, iid), amount in capacity_held.items():
        account = core.accounts.get(aid)
        if account is not None and iid not in account.capacity_reserved and amount:
            bad(f"{aid} {iid}: open sells hold {amount} with no capacity reserved")
    for iid in sold.keys() | held.keys():
        if sold[iid] != held[iid]:
            bad(f"{iid}: capacity sold {sold[iid]}, holdings {held[iid]}")

    spent_by_claims: Counter[int] = Counter()
    for cid, claim in core.claims.items():
        if claim.claim_id != cid or claim.amount <= 0:
            bad(f"claim {cid}: id {claim.claim_id}, amount {claim.amount}")
        spent_by_claims[claim.voucher_id] += claim.amount
        if not claim.settled:
            total += claim.amount
        if claim.settled_at and not claim.settled:
            bad(f"claim {cid}: unsettled, with a settlement time")
        contract = core.contracts.get(claim.contract_id)
        if contract is None or contract.claim_id != cid or contract.voucher != claim.amount:
            bad(f"claim {cid}: does not match contract {claim.contract_id}")
        if claim.voucher_id not in core.vouchers:
            bad(f"claim {cid}: unknown voucher {claim.voucher_id}")
    issued: Counter[str] = Counter()
    for vid, voucher in core.vouchers.items():
        if voucher.voucher_id != vid:
            bad(f"voucher {vid} is filed as {voucher.voucher_id}")
        if min(voucher.balance, voucher.reserved, voucher.spent) < 0:
            bad(f"voucher {vid}: negative part")
        if voucher.amount != voucher.balance + voucher.reserved + voucher.spent:
            bad(f"voucher {vid}: amount {voucher.amount} != balance + reserved + spent")
        if voucher.reserved != voucher_held[vid]:
            bad(f"voucher {vid}: reserved {voucher.reserved}, open buys hold {voucher_held[vid]}")
        if voucher.spent != spent_by_claims[vid]:
            bad(f"voucher {vid}: spent {voucher.spent}, claims {spent_by_claims[vid]}")
        total += voucher.balance + voucher.reserved
        issued[voucher.programme_id] += voucher.amount
    for pid, programme in core.programmes.items():
        if programme.issued != issued[pid] or programme.issued > programme.budget:
            bad(
                f"programme {pid}: issued {programme.issued}, "
                f"vouchers {issued[pid]}, budget {programme.budget}"
            )
    if total != core.deposited:
        bad(f"money not conserved: cash + vouchers + open claims {total} != {core.deposited}")


def _check_counters(core: ExchangeCore, bad: _Bad) -> None:
    for order in core.orders.values():
        if not 0 < order.order_id < core.next_order_id:
            bad(f"order {order.order_id}: id not below the counter {core.next_order_id}")
        if not 0 < order.priority < core.next_priority:
            bad(f"order {order.order_id}: priority {order.priority} not below {core.next_priority}")
    if len(core.contracts) != core.next_trade_id - 1:
        bad(f"{len(core.contracts)} contracts, trade counter at {core.next_trade_id}")
    if len(core.claims) != core.next_claim_id - 1:
        bad(f"{len(core.claims)} claims, claim counter at {core.next_claim_id}")
    if len(core.vouchers) != core.next_voucher_id - 1:
        bad(f"{len(core.vouchers)} vouchers, voucher counter at {core.next_voucher_id}")
    for name, broken in (
        ("expiries", _heap_break(core.expiries)),
        ("closings", _heap_break(core.closings)),
    ):
        if broken:
            bad(f"{name}: not a heap at index {broken}")
    pending = set(core.expiries)
    for order in core.orders.values():
        if order.expire_at != NEVER and (order.expire_at, order.order_id) not in pending:
            bad(f"order {order.order_id}: expiry {order.expire_at} not scheduled")
    closings = {iid for _, iid in core.closings}
    for iid, inst in core.instruments.items():
        if inst.status is not InstrumentStatus.CLOSED and iid not in closings:
            bad(f"{iid}: open with no closing scheduled")


def _heap_break(heap: Sequence[Any]) -> int:
    """The first index that breaks the heap property; 0 if none does."""
    for i in range(1, len(heap)):
        if heap[(i - 1) // 2] > heap[i]:
            return i
    return 0


def _check_contracts(core: ExchangeCore, bad: _Bad) -> None:
    volume: Counter[str] = Counter()
    trades: Counter[str] = Counter()
    for tid, trade in core.contracts.items():
        if trade.trade_id != tid:
            bad(f"contract {tid} is filed as {trade.trade_id}")
        if (
            trade.cash + trade.voucher != trade.price * trade.qty
            or trade.cash < 0
            or trade.voucher < 0
        ):
            bad(f"contract {tid}: cash {trade.cash} + voucher {trade.voucher} != price x qty")
        if trade.buyer == trade.seller or trade.qty <= 0:
            bad(f"contract {tid}: {trade.buyer} trades {trade.qty} with {trade.seller}")
        if bool(trade.claim_id) != bool(trade.voucher):
            bad(f"contract {tid}: voucher part {trade.voucher} with claim {trade.claim_id}")
        volume[trade.instrument_id] += trade.qty
        trades[trade.instrument_id] += 1
    for iid, inst in core.instruments.items():
        if inst.volume != volume[iid] or inst.trades != trades[iid]:
            bad(
                f"{iid}: {inst.trades} trades of {inst.volume} GPU-hours, "
                f"contracts say {trades[iid]} of {volume[iid]}"
            )


def balances_digest(core: ExchangeCore) -> str:
    """SHA-256 of every balance: cash, capacity, holdings, vouchers and claims, sorted."""
    accounts = [
        (
            a.account_id,
            a.cash,
            a.cash_reserved,
            sorted(a.capacity.items()),
            sorted(a.capacity_reserved.items()),
            sorted(a.capacity_sold.items()),
            sorted(a.holdings.items()),
        )
        for a in sorted(core.accounts.values(), key=lambda a: a.account_id)
    ]
    vouchers = sorted(
        (v.voucher_id, v.balance, v.reserved, v.spent) for v in core.vouchers.values()
    )
    claims = sorted((c.claim_id, c.amount, c.settled) for c in core.claims.values())
    payload = msgspec.msgpack.encode([accounts, vouchers, claims, core.deposited])
    return hashlib.sha256(payload).hexdigest()


__all__ = ["balances_digest", "problems"]
