"""A seeded stream of commands for durability tests and the journal benchmark.

``prelude()`` sets up ``tests.market.Market``'s accounts, instruments and
voucher, and funds them for a long run. ``orders(seed, n)`` then gives ``n``
commands in a realistic mix: limit orders around a drifting mid price (some
crossing), IOC and market orders, GTD orders, voucher-paid buys, cancels,
amends, cancel-alls, claim settlements, deposits, halts and call auctions,
and clock ticks. The same seed always gives the same commands. Commands carry
``ts=0``; the service stamps them, or ``stamped`` does for a bare core.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator

import msgspec

from exchange import commands as c
from exchange.reference import InstrumentStatus, OrderType, Side, TimeInForce
from tests.market import ASCEND, COMMERCIAL, H100, SYSTEM, T0, Market

BUYERS = ("su1", "su2")
SELLERS = {H100: ("dc1", "dc2"), ASCEND: ("dc1", "dc2"), COMMERCIAL: ("dc3",)}
INSTRUMENTS = (H100, ASCEND, COMMERCIAL)
_NEXT_STATUS = {
    InstrumentStatus.HALTED: InstrumentStatus.AUCTION,
    InstrumentStatus.AUCTION: InstrumentStatus.OPEN,
}


def prelude() -> list[c.Command]:
    """Market's set-up, plus deep pockets and capacity for long runs (ts=0)."""
    commands = [msgspec.structs.replace(command, ts=0) for command in Market().log]
    for buyer in BUYERS:
        commands.append(c.Deposit(actor="ops", account_id=buyer, amount=10**14))
    for instrument_id, sellers in SELLERS.items():
        for seller in sellers:
            commands.append(
                c.RegisterCapacity(
                    actor=seller, provider=seller, instrument_id=instrument_id, gpu_hours=8 * 10**12
                )
            )
    return commands


def orders(seed: int, n: int) -> Iterator[c.Command]:
    """``n`` trading commands, the same for the same seed."""
    rng = random.Random(seed)
    rand = rng.random
    randint = rng.randint
    mids = dict.fromkeys(INSTRUMENTS, 1_000)
    status = dict.fromkeys(INSTRUMENTS, InstrumentStatus.OPEN)
    coids: dict[str, list[str]] = {account: [] for account in (*BUYERS, "dc1", "dc2", "dc3")}
    for i in range(n):
        halted = [iid for iid, now in status.items() if now is not InstrumentStatus.OPEN]
        if halted and rand() < 0.05:  # a halt lasts a few dozen commands, then a call
            instrument_id = halted[0]
            status[instrument_id] = _NEXT_STATUS[status[instrument_id]]
            yield c.SetInstrumentStatus(
                actor="ops", instrument_id=instrument_id, status=status[instrument_id]
            )
            continue
        r = rand()
        instrument_id = INSTRUMENTS[randint(0, 2)] if r < 0.97 else INSTRUMENTS[0]
        mid = mids[instrument_id]
        if r < 0.60:
            buy = rand() < 0.5
            who = (
                BUYERS[randint(0, 1)]
                if buy
                else SELLERS[instrument_id][randint(0, 1) % len(SELLERS[instrument_id])]
            )
            offset = randint(-8, 8) * 10 - (20 if buy else -20)
            coid = f"{seed}-{i}"
            coids[who].append(coid)
            kind = rand()
            tif = TimeInForce.GTC
            order_type = OrderType.LIMIT
            price = mid + offset
            expire_at = 0
            if kind < 0.06:
                tif = TimeInForce.IOC
                price = mid + (40 if buy else -40)
            elif kind < 0.08:
                tif = TimeInForce.FOK
            elif kind < 0.10 and status[instrument_id] is InstrumentStatus.OPEN:
                order_type, tif, price = OrderType.MARKET, TimeInForce.IOC, 0
            elif kind < 0.13:
                tif, expire_at = TimeInForce.GTD, T0 + randint(1, 2_000) * 1_000_000
            yield c.NewOrder(
                actor=who,
                client_order_id=coid,
                instrument_id=instrument_id,
                side=Side.BUY if buy else Side.SELL,
                qty=8 * randint(1, 6),
                price=price,
                order_type=order_type,
                tif=tif,
                expire_at=expire_at,
                min_qty=8 if kind > 0.97 else 0,
                voucher_id=1 if buy and who == "su1" and kind > 0.9 else 0,
            )
            mids[instrument_id] = max(200, mid + 10 * randint(-1, 1))
        elif r < 0.80:
            who, coid = _recent(rng, coids)
            yield c.CancelOrder(actor=who, client_order_id=coid)
        elif r < 0.90:
            who, coid = _recent(rng, coids)
            if rand() < 0.5:
                yield c.AmendOrder(actor=who, client_order_id=coid, qty=8 * randint(1, 3))
            else:
                yield c.AmendOrder(actor=who, client_order_id=coid, price=mid + randint(-5, 5) * 10)
        elif r < 0.92:
            who = (*BUYERS, "dc1", "dc2", "dc3")[randint(0, 4)]
            yield c.CancelAll(actor=who, instrument_id=instrument_id if rand() < 0.7 else "")
        elif r < 0.94:
            yield c.SettleClaim(actor="city", claim_id=randint(1, 1 + i // 50))
        elif r < 0.95:
            yield c.Deposit(actor="ops", account_id=BUYERS[randint(0, 1)], amount=randint(1, 10**6))
        elif r < 0.955:
            yield c.IssueVoucher(actor="city", programme_id="sz", holder="su2", amount=10_000)
        elif r < 0.9555 and status[instrument_id] is InstrumentStatus.OPEN:
            status[instrument_id] = InstrumentStatus.HALTED
            yield c.SetInstrumentStatus(
                actor="ops", instrument_id=instrument_id, status=InstrumentStatus.HALTED
            )
        else:
            yield c.AdvanceClock(actor=SYSTEM)


def _recent(rng: random.Random, coids: dict[str, list[str]]) -> tuple[str, str]:
    who = list(coids)[rng.randint(0, len(coids) - 1)]
    mine = coids[who]
    if not mine:
        return who, "none"
    return who, mine[max(0, len(mine) - 1 - rng.randint(0, 10))]


def stamped(commands: Iterable[c.Command], start: int = T0, step: int = 1_000) -> list[c.Command]:
    """The commands with increasing times, as the service would stamp them one by one."""
    return [
        msgspec.structs.replace(command, ts=start + i * step) for i, command in enumerate(commands)
    ]


def stream(seed: int, n: int) -> list[c.Command]:
    """The prelude then ``n`` trading commands, stamped."""
    return stamped([*prelude(), *orders(seed, n)])
