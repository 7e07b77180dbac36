// Client-side copies of public market data: the L2 book (kept in step with
// the gateway's sequence numbers and checksums) and candles built from trades.
// Pure functions and small classes; no DOM, no sockets.

// --- the book ----------------------------------------------------------------------

// One instrument's published book. `apply` returns "ok", or "gap" / "checksum"
// when the copy can no longer be trusted and a fresh snapshot is needed.
export class L2Book {
  constructor(instrumentId, checksumDepth = 10) {
    this.instrumentId = instrumentId;
    this.checksumDepth = checksumDepth;
    this.seq = -1;
    this.bids = new Map(); // price (fen) -> qty (GPU-hours)
    this.asks = new Map();
    this.synced = false;
  }

  apply(msg) {
    if (msg.type === "book_snapshot") {
      this.bids = new Map(msg.bids);
      this.asks = new Map(msg.asks);
      this.seq = msg.seq;
    } else {
      if (!this.synced || msg.seq !== this.seq + 1) {
        this.synced = false;
        return "gap";
      }
      for (const [price, qty] of msg.bids) setLevel(this.bids, price, qty);
      for (const [price, qty] of msg.asks) setLevel(this.asks, price, qty);
      this.seq = msg.seq;
    }
    this.synced = checksum(this.levels("bids"), this.levels("asks"), this.checksumDepth) === msg.checksum;
    return this.synced ? "ok" : "checksum";
  }

  // Levels as [price, qty], best first.
  levels(side) {
    const m = side === "bids" ? this.bids : this.asks;
    const out = [...m.entries()];
    out.sort(side === "bids" ? (a, b) => b[0] - a[0] : (a, b) => a[0] - b[0]);
    return out;
  }
}

function setLevel(map, price, qty) {
  if (qty === 0) map.delete(price);
  else map.set(price, qty);
}

// CRC32 (IEEE) of "<bid price>:<qty>,...|<ask price>:<qty>,...", as the gateway computes it.
export function checksum(bids, asks, depth) {
  const text =
    bids.slice(0, depth).map(([p, q]) => `${p}:${q}`).join(",") +
    "|" +
    asks.slice(0, depth).map(([p, q]) => `${p}:${q}`).join(",");
  return crc32(text);
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(ascii) {
  let c = 0xffffffff;
  for (let i = 0; i < ascii.length; i++) c = CRC_TABLE[(c ^ ascii.charCodeAt(i)) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// Cumulative depth for a depth chart: x = price in CNY, value = GPU-hours at that price or better.
// Both series come out in ascending price order, as the chart needs.
export function depthSeries(bids, asks) {
  const bidPts = [];
  let cum = 0;
  for (const [p, q] of bids) {
    cum += q;
    bidPts.push({ time: p / 100, value: cum });
  }
  bidPts.reverse();
  const askPts = [];
  cum = 0;
  for (const [p, q] of asks) {
    cum += q;
    askPts.push({ time: p / 100, value: cum });
  }
  return { bids: bidPts, asks: askPts };
}

// --- candles -----------------------------------------------------------------------

// OHLC and volume per time bucket, from trades. Prices stay in fen until drawn.
export class Candles {
  constructor(intervalSec) {
    this.interval = intervalSec;
    this.bars = new Map(); // bucket start (s) -> {time, open, high, low, close, volume}
    this.seen = new Set(); // trade ids already counted
  }

  // Add a trade; returns the bar it changed, or null if the trade was seen already.
  add(trade) {
    if (trade.trade_id && this.seen.has(trade.trade_id)) return null;
    if (trade.trade_id) this.seen.add(trade.trade_id);
    const sec = Math.floor(trade.ts / 1e9);
    const time = sec - (sec % this.interval);
    let bar = this.bars.get(time);
    if (!bar) {
      bar = { time, open: trade.price, high: trade.price, low: trade.price, close: trade.price, volume: 0 };
      this.bars.set(time, bar);
    }
    bar.high = Math.max(bar.high, trade.price);
    bar.low = Math.min(bar.low, trade.price);
    bar.close = trade.price;
    bar.volume += trade.qty;
    return bar;
  }

  sorted() {
    return [...this.bars.values()].sort((a, b) => a.time - b.time);
  }
}
