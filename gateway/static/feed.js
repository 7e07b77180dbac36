// The connection to the gateway: one WebSocket, authenticated with an API key,
// that reconnects and resubscribes by itself.
//
// Contract
// --------
// * `new Feed({key, onMessage, onState})` then `feed.start()`.
// * `onState(state, detail)` is called with "connecting", "open" (welcome
//   received and, with a key, authenticated; every subscription has been sent
//   again), "lost" (the socket closed; `detail.retryIn` ms until the next
//   attempt) and "denied" (the key was refused; no retry).
// * `subscribe(channel, instrumentId)` / `unsubscribe(...)` are remembered and
//   replayed after every reconnect, so the caller never resubscribes by hand.
//   Subscribing twice to the same key is counted; the channel is left when the
//   last holder unsubscribes.
// * `request(message)` sends a request with a fresh `id` and resolves with the
//   answer carrying that id (ack, rejected, error, ...). It rejects when the
//   connection drops first or no answer comes within 10 s.
// * Every server message, answered or not, also goes to `onMessage`.
// * The page pings every few seconds (the gateway closes silent clients) and
//   treats a server silent for 2.5 heartbeats as a dead connection.

const REQUEST_TIMEOUT_MS = 10_000;
const MAX_BACKOFF_MS = 8_000;

export class Feed {
  constructor({ key, onMessage, onState, url }) {
    this.key = key;
    this.onMessage = onMessage;
    this.onState = onState;
    this.url = url || wsUrl();
    this.subs = new Map(); // "channel|instrument" -> holders
    this.pending = new Map(); // request id -> {resolve, reject, timer}
    this.nextId = 1;
    this.ws = null;
    this.welcome = null;
    this.principal = null; // {account_id, role} once authenticated
    this.ready = false;
    this.attempt = 0;
    this.stopped = false;
    this.lastHeard = 0;
    this.timers = { retry: 0, ping: 0, watchdog: 0 };
  }

  start() {
    this.stopped = false;
    this._connect();
  }

  stop() {
    this.stopped = true;
    this._clearTimers();
    if (this.ws) this.ws.close(1000, "signed out");
    this.ws = null;
  }

  // Drop the socket as if the network failed (used by tests and the "reconnect" button).
  drop() {
    if (this.ws) this.ws.close(4000, "dropped by the page");
  }

  subscribe(channel, instrumentId = "") {
    const k = subKey(channel, instrumentId);
    const n = this.subs.get(k) || 0;
    this.subs.set(k, n + 1);
    if (n === 0 && this.ready) this._send({ type: "subscribe", channel, instrument_id: instrumentId });
  }

  unsubscribe(channel, instrumentId = "") {
    const k = subKey(channel, instrumentId);
    const n = this.subs.get(k) || 0;
    if (n <= 1) {
      this.subs.delete(k);
      if (n === 1 && this.ready) this._send({ type: "unsubscribe", channel, instrument_id: instrumentId });
    } else {
      this.subs.set(k, n - 1);
    }
  }

  // Leave and rejoin a channel to get a fresh snapshot (a gap or a bad checksum).
  resubscribe(channel, instrumentId = "") {
    if (!this.ready || !this.subs.has(subKey(channel, instrumentId))) return;
    this._send({ type: "unsubscribe", channel, instrument_id: instrumentId });
    this._send({ type: "subscribe", channel, instrument_id: instrumentId });
  }

  request(message) {
    return new Promise((resolve, reject) => {
      if (!this.ready) {
        reject(new Error("not connected"));
        return;
      }
      const id = `r${this.nextId++}`;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error("no answer from the gateway"));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, timer });
      this._send({ ...message, id });
    });
  }

  // --- internals ---------------------------------------------------------------

  _connect() {
    this._clearTimers();
    this.ready = false;
    this.onState("connecting", { attempt: this.attempt });
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this._lost(String(err));
      return;
    }
    this.ws = ws;
    ws.onmessage = (ev) => this._receive(ev.data);
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.ws = null;
      this._lost(ev.reason || `closed (${ev.code})`);
    };
    ws.onerror = () => {}; // onclose follows
  }

  _lost(reason) {
    const wasReady = this.ready;
    this.ready = false;
    this._clearTimers();
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new Error("connection lost"));
      this.pending.delete(id);
    }
    if (this.stopped || this.denied) return;
    this.attempt += 1;
    const base = Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(this.attempt - 1, 4));
    const retryIn = Math.round(base * (0.75 + Math.random() * 0.5));
    this.onState("lost", { reason, retryIn, wasReady });
    this.timers.retry = setTimeout(() => this._connect(), retryIn);
  }

  _receive(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    this.lastHeard = performance.now();
    switch (msg.type) {
      case "welcome":
        this.welcome = msg;
        this._startTimers(msg);
        if (this.key) {
          this._send({ type: "auth", key: this.key, id: "auth" });
        } else {
          this._opened();
        }
        break;
      case "authenticated":
        if (msg.id === "auth") {
          this.principal = { account_id: msg.account_id, role: msg.role };
          this._opened();
        }
        break;
      case "error":
        if (msg.id === "auth" && msg.code === "AUTH_FAILED") {
          this.denied = true;
          this.onState("denied", { text: msg.text });
          this.stop();
          return;
        }
        break;
      default:
        break;
    }
    if (msg.id != null && this.pending.has(msg.id) && isFinalAnswer(msg)) {
      const p = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      clearTimeout(p.timer);
      p.resolve(msg);
    }
    this.onMessage(msg);
  }

  _opened() {
    this.ready = true;
    this.attempt = 0;
    for (const k of this.subs.keys()) {
      const [channel, instrumentId] = k.split("|");
      this._send({ type: "subscribe", channel, instrument_id: instrumentId });
    }
    this.onState("open", { principal: this.principal, welcome: this.welcome });
  }

  _startTimers(welcome) {
    const beat = Math.max(1000, welcome.heartbeat_interval_ms || 10000);
    const idle = Math.max(3000, welcome.idle_timeout_ms || 30000);
    this.timers.ping = setInterval(() => this._send({ type: "ping" }), Math.min(beat, idle / 3));
    this.timers.watchdog = setInterval(() => {
      if (performance.now() - this.lastHeard > beat * 2.5 && this.ws) this.ws.close(4000, "server silent");
    }, 1000);
  }

  _clearTimers() {
    clearTimeout(this.timers.retry);
    clearInterval(this.timers.ping);
    clearInterval(this.timers.watchdog);
  }

  _send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }
}

// Answers that end a request. An order's execution reports are not used here.
function isFinalAnswer(msg) {
  return ["ack", "rejected", "error", "pong", "subscribed", "unsubscribed", "cancel_reject",
    "cancel_all_done", "mass_status_done", "api_key_issued", "authenticated"].includes(msg.type);
}

function subKey(channel, instrumentId) {
  return `${channel}|${instrumentId || ""}`;
}

function wsUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

// HTTP API with the same key. Resolves with the decoded JSON; throws with the gateway's error code.
export async function api(path, key) {
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  const res = await fetch(path, { headers, cache: "no-store" });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const err = new Error(body.text || body.error || `HTTP ${res.status}`);
    err.code = body.error || String(res.status);
    err.status = res.status;
    throw err;
  }
  return body;
}
