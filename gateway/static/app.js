// The operator dashboard: sign-in, routing, and the four views.
//
// Everything live comes from the gateway's WebSocket (feed.js): instrument
// status, tickers (with open interest), books, trades, for operators every
// account's balances and orders, and for operators and issuers every voucher
// and claim they may see. The HTTP API gives what the socket has no snapshot
// for (trade history, voucher reports); it is read when a view opens, after
// every reconnect, and again when a live message says those figures changed,
// never on a timer.

import { Feed, api } from "./feed.js";
import { Candles, L2Book, depthSeries } from "./market.js";
import * as F from "./format.js";
import * as LWC from "./vendor/lightweight-charts/lightweight-charts.standalone.production.mjs";

const { h } = F;
const $ = (sel, root = document) => root.querySelector(sel);

const KEY_STORE = "suanli.apiKey";
const COLORS = {
  bid: "#22c08a", ask: "#f0616d", grid: "rgba(140,160,180,0.08)", text: "#8b98a9",
  border: "#253040", accent: "#4c8dff",
  series: ["#4c8dff", "#f5b942", "#22c08a", "#c77dff", "#f0616d", "#39c5cf"],
};

const TRANSITIONS = {
  PRE_OPEN: ["AUCTION", "OPEN", "CLOSED"],
  AUCTION: ["OPEN", "HALTED", "CLOSED"],
  OPEN: ["HALTED", "CLOSED"],
  HALTED: ["OPEN", "AUCTION", "CLOSED"],
  CLOSED: [],
};

const ACTIONS = {
  HALTED: {
    label: "Halt", kind: "danger",
    text: (id) => `Halt ${id}? New orders and amends are refused until it resumes; resting orders stay and may be cancelled.`,
  },
  OPEN: {
    label: (from) => (from === "HALTED" ? "Resume" : from === "AUCTION" ? "Uncross & open" : "Open"),
    kind: "primary",
    text: (id, from) => from === "AUCTION"
      ? `Uncross the call auction of ${id} and open continuous trading?`
      : `${from === "HALTED" ? "Resume" : "Open"} continuous trading in ${id}?`,
  },
  AUCTION: {
    label: (from) => (from === "HALTED" ? "Resume via auction" : "Open auction"), kind: "primary",
    text: (id) => `Start a call auction in ${id}? Orders rest and nothing matches until it opens.`,
  },
  CLOSED: {
    label: "Close", kind: "danger",
    text: (id) => `Close ${id} for good? Every resting order is cancelled. This cannot be undone.`,
  },
};

// --- state ---------------------------------------------------------------------------

const state = {
  key: "",
  feed: null,
  principal: null, // {account_id, role}
  welcome: null,
  instruments: new Map(), // id -> {spec, status, volume, turnover, trades, last_price}
  tickers: new Map(), // id -> last ticker message
  view: null,
  everOpened: false,
  connLog: [], // connection states seen, oldest first (for the console and the tests)
};

const isOperator = () => state.principal?.role === "OPERATOR";

// --- start ---------------------------------------------------------------------------

function start() {
  $("#signin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("#api-key").value.trim();
    if (!key) return;
    signIn(key, $("#remember").checked);
  });
  $("#sign-out").addEventListener("click", signOut);
  window.addEventListener("hashchange", route);
  const saved = sessionStorage.getItem(KEY_STORE) || localStorage.getItem(KEY_STORE);
  if (saved) signIn(saved, Boolean(localStorage.getItem(KEY_STORE)));
  else showSignIn();
}

function showSignIn(error = "") {
  $("#signin").hidden = false;
  $("#signin-error").textContent = error;
  $("#signin-button").disabled = false;
  $("#main").replaceChildren();
  $("#api-key").focus();
}

function signIn(key, remember) {
  state.key = key;
  $("#signin-button").disabled = true;
  $("#signin-error").textContent = "";
  state.feed?.stop();
  state.everOpened = false;
  state.feed = new Feed({ key, onMessage, onState });
  state.feed.subscribe("status");
  state.feed.start();
  sessionStorage.setItem(KEY_STORE, key);
  if (remember) localStorage.setItem(KEY_STORE, key);
}

function signOut() {
  sessionStorage.removeItem(KEY_STORE);
  localStorage.removeItem(KEY_STORE);
  state.view?.unmount();
  state.view = null;
  state.feed?.stop();
  state.feed = null;
  state.principal = null;
  state.instruments.clear();
  state.tickers.clear();
  setConn("idle", "Not connected");
  $("#who").hidden = true;
  $("#sign-out").hidden = true;
  $("#banner").hidden = true;
  $("#api-key").value = "";
  showSignIn();
}

// --- the connection ---------------------------------------------------------------

function onState(s, detail) {
  const banner = $("#banner");
  state.connLog.push(s);
  if (state.connLog.length > 50) state.connLog.shift();
  switch (s) {
    case "connecting":
      setConn("connecting", detail.attempt ? "Reconnecting…" : "Connecting…");
      break;
    case "open": {
      const first = !state.everOpened;
      state.everOpened = true;
      state.principal = detail.principal;
      state.welcome = detail.welcome;
      setConn("live", "Live");
      banner.hidden = true;
      document.body.classList.remove("stale");
      $("#signin").hidden = true;
      $("#who").hidden = false;
      $("#sign-out").hidden = false;
      F.setText($("#who-account"), state.principal.account_id);
      F.setText($("#who-role"), F.ROLE_LABEL[state.principal.role] || state.principal.role);
      $("#who-role").dataset.role = state.principal.role;
      for (const a of document.querySelectorAll("#tabs [data-role]")) {
        a.hidden = a.dataset.role !== state.principal.role;
      }
      loadInstruments().then(() => {
        if (first) route();
        else {
          state.view?.resync?.();
          toast("Reconnected: the market view is back in sync.", "ok");
        }
      });
      break;
    }
    case "lost": {
      const secs = Math.max(1, Math.round(detail.retryIn / 1000));
      setConn("lost", "Offline");
      if (!state.everOpened) {
        // Never got in: the gateway is down or unreachable.
        showSignIn(`Cannot reach the gateway (${detail.reason}). Retrying in ${secs} s…`);
        $("#signin-button").disabled = true;
        break;
      }
      banner.hidden = false;
      banner.textContent = `Connection to the gateway lost (${detail.reason}). Reconnecting in ${secs} s; figures below may be stale.`;
      document.body.classList.add("stale");
      state.view?.disconnected?.();
      break;
    }
    case "denied":
      sessionStorage.removeItem(KEY_STORE);
      localStorage.removeItem(KEY_STORE);
      setConn("idle", "Not connected");
      showSignIn("That API key was refused. Check it and try again.");
      break;
    default:
      break;
  }
}

function setConn(s, text) {
  const el = $("#conn");
  el.dataset.state = s;
  F.setText($(".conn-text", el), text);
}

function onMessage(msg) {
  switch (msg.type) {
    case "instrument": {
      const known = state.instruments.get(msg.spec.instrument_id);
      state.instruments.set(msg.spec.instrument_id, { ...(known || emptyStats()), spec: msg.spec, status: msg.status });
      break;
    }
    case "instrument_status": {
      const inst = state.instruments.get(msg.instrument_id);
      if (inst) inst.status = msg.status;
      if (msg.status === "HALTED" || msg.previous === "HALTED" || msg.status === "CLOSED") {
        toast(`${msg.instrument_id}: ${F.STATUS_LABEL[msg.previous]} → ${F.STATUS_LABEL[msg.status]}`,
          msg.status === "OPEN" ? "ok" : "warn");
      }
      break;
    }
    case "ticker": {
      state.tickers.set(msg.instrument_id, msg);
      const inst = state.instruments.get(msg.instrument_id);
      if (inst) inst.status = msg.status;
      break;
    }
    case "error":
      if (msg.id == null || !String(msg.id).startsWith("r")) toast(`${msg.code}: ${msg.text}`, "error");
      break;
    default:
      break;
  }
  state.view?.onMessage?.(msg);
}

const emptyStats = () => ({ volume: 0, turnover: 0, trades: 0, last_price: 0 });

async function loadInstruments() {
  try {
    const rows = await api("/api/v1/instruments", state.key);
    for (const r of rows) state.instruments.set(r.spec.instrument_id, r);
  } catch (err) {
    toast(`Could not load instruments: ${err.message}`, "error");
  }
}

// Call `fn` once, `ms` after the last of a burst of calls.
function debounce(fn, ms) {
  let t = 0;
  const d = () => {
    clearTimeout(t);
    t = setTimeout(fn, ms);
  };
  d.cancel = () => clearTimeout(t);
  return d;
}

// --- routing -------------------------------------------------------------------------

function route() {
  if (!state.feed || !state.principal) return;
  const hash = location.hash || "#/";
  let view;
  let tab = "markets";
  if (hash.startsWith("#/i/")) {
    view = new InstrumentView(decodeURIComponent(hash.slice(4)));
  } else if (hash === "#/vouchers") {
    view = new VoucherView();
    tab = "vouchers";
  } else if (hash === "#/participants") {
    tab = "participants";
    view = isOperator() ? new ParticipantsView() : new NotPermittedView("Participants");
  } else {
    view = new OverviewView();
  }
  for (const a of document.querySelectorAll("#tabs a")) {
    a.classList.toggle("active", a.dataset.view === tab);
  }
  state.view?.unmount();
  state.view = view;
  const main = $("#main");
  main.replaceChildren();
  main.dataset.view = tab === "markets" && hash.startsWith("#/i/") ? "instrument" : tab;
  view.mount(main);
}

class NotPermittedView {
  constructor(what) { this.what = what; }
  mount(main) {
    main.append(h("section", { class: "panel empty" },
      h("h2", null, this.what),
      h("p", { class: "muted" }, "Operators only. Your key's role does not show this view.")));
  }
  unmount() {}
}

// --- operator controls ------------------------------------------------------------------

// Ask, then send set_instrument_status. Resolves with the gateway's answer (or null if cancelled).
async function setStatus(instrumentId, target, { confirm = true } = {}) {
  const inst = state.instruments.get(instrumentId);
  const from = inst?.status;
  const action = ACTIONS[target];
  if (confirm) {
    const label = typeof action.label === "function" ? action.label(from) : action.label;
    const ok = await confirmDialog(`${label}: ${instrumentId}`, action.text(instrumentId, from), label, action.kind);
    if (!ok) return null;
  }
  let answer;
  try {
    answer = await state.feed.request({ type: "set_instrument_status", instrument_id: instrumentId, status: target });
  } catch (err) {
    toast(`Not sent: ${err.message}`, "error");
    return { type: "error", code: "NOT_SENT", text: err.message };
  }
  if (answer.type === "ack") {
    toast(`${instrumentId} is now ${F.STATUS_LABEL[answer.result.status] || answer.result.status}.`, "ok");
  } else if (answer.type === "error" && answer.code === "NOT_PERMITTED") {
    toast(`Refused: only operators may change an instrument's status.`, "error");
  } else {
    toast(`Refused: ${answer.text || answer.reason || answer.code}`, "error");
  }
  return answer;
}

function controlButtons(instrumentId, status) {
  if (!isOperator()) return [];
  return (TRANSITIONS[status] || []).map((target) => {
    const action = ACTIONS[target];
    const label = typeof action.label === "function" ? action.label(status) : action.label;
    return h("button", {
      type: "button", class: `btn ${action.kind === "danger" ? "danger" : "primary"} small`,
      dataset: { action: target },
      onclick: () => setStatus(instrumentId, target),
    }, label);
  });
}

function confirmDialog(title, text, okLabel, kind) {
  const dlg = $("#confirm");
  F.setText($("#confirm-title"), title);
  F.setText($("#confirm-text"), text);
  const ok = $("#confirm-ok");
  F.setText(ok, okLabel);
  ok.className = `btn ${kind === "danger" ? "danger" : "primary"}`;
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => resolve(dlg.returnValue === "ok"), { once: true });
    dlg.returnValue = "";
    dlg.showModal();
    $("#confirm-cancel").focus();
  });
}

function toast(text, kind = "info") {
  const el = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
  $("#toasts").append(el);
  setTimeout(() => el.classList.add("gone"), 5000);
  setTimeout(() => el.remove(), 5600);
}

// --- charts ------------------------------------------------------------------------

function chartOptions(extra = {}) {
  return {
    autoSize: true,
    layout: {
      background: { type: "solid", color: "transparent" }, textColor: COLORS.text,
      fontFamily: "Inter, system-ui, -apple-system, 'Segoe UI', sans-serif", fontSize: 11,
    },
    grid: { vertLines: { color: COLORS.grid }, horzLines: { color: COLORS.grid } },
    rightPriceScale: { borderColor: COLORS.border },
    timeScale: { borderColor: COLORS.border, timeVisible: true, secondsVisible: false },
    crosshair: { mode: LWC.CrosshairMode.Normal },
    ...extra,
  };
}

// --- overview ---------------------------------------------------------------------------

class OverviewView {
  constructor() {
    this.filters = { gpu: "", hub: "", tier: "", window: "", q: "" };
    this.subscribed = new Set();
    this.refreshStats = debounce(() => this.loadStats(), 800);
  }

  mount(main) {
    this.cards = h("div", { class: "cards" });
    this.filterBar = h("div", { class: "filters", role: "search" });
    this.tbody = h("tbody");
    this.count = h("span", { class: "muted" });
    main.append(
      h("section", { class: "overview" },
        this.cards,
        h("div", { class: "panel" },
          h("div", { class: "panel-head" }, h("h2", null, "Instruments"), this.count),
          this.filterBar,
          h("div", { class: "table-wrap" },
            h("table", { class: "grid instruments", id: "instruments" },
              h("thead", null, h("tr", null,
                h("th", null, "Instrument"), h("th", null, "GPU"), h("th", { class: "hide-s" }, "Hub"),
                h("th", { class: "hide-s" }, "Tier"), h("th", { class: "hide-s" }, "Delivery"),
                h("th", null, "Status"), h("th", { class: "num" }, "Bid"), h("th", { class: "num" }, "Ask"),
                h("th", { class: "num" }, "Last"), h("th", { class: "num hide-s" }, "Vol 24h"),
                h("th", { class: "num hide-s" }, "Open int."))),
              this.tbody)),
          h("p", { class: "footnote" }, "Prices in CNY per GPU-hour; volumes and open interest in GPU-hours. ",
            "Open interest: GPU-hours contracted and not yet delivered.")),
        this.indexPanel = h("div", { class: "panel" })));
    this.buildFilters();
    this.syncSubscriptions();
    this.loadStats();
    this.render();
  }

  unmount() {
    for (const id of this.subscribed) state.feed?.unsubscribe("ticker", id);
    this.subscribed.clear();
    this.refreshStats.cancel();
  }

  resync() {
    this.buildFilters();
    this.syncSubscriptions();
    this.loadStats();
    this.render();
  }

  syncSubscriptions() {
    for (const id of state.instruments.keys()) {
      if (!this.subscribed.has(id)) {
        this.subscribed.add(id);
        state.feed.subscribe("ticker", id);
      }
    }
  }

  async loadStats() {
    await loadInstruments();
    api("/api/v1/reports/price-index?days=7", state.key).then((rows) => this.renderIndex(rows), () => {});
    this.render();
  }

  onMessage(msg) {
    if (msg.type === "instrument") {
      this.syncSubscriptions();
      this.buildFilters();
      this.render();
    } else if (msg.type === "instrument_status") {
      this.render();
    } else if (msg.type === "ticker") {
      const inst = state.instruments.get(msg.instrument_id);
      if (inst && msg.last_price && (msg.trades_24h !== inst._trades24 || msg.last_price !== inst.last_price)) {
        if (inst._trades24 !== undefined) this.refreshStats();
        inst._trades24 = msg.trades_24h;
      }
      this.renderRow(msg.instrument_id);
      this.renderCards();
    }
  }

  buildFilters() {
    const specs = [...state.instruments.values()].map((i) => i.spec);
    const uniq = (f) => [...new Set(specs.map(f))].sort();
    const windows = [...new Map(specs.map((s) => [s.delivery_start, F.windowLabel(s)])).entries()]
      .sort((a, b) => a[0] - b[0]);
    const select = (name, label, options) => {
      const sel = h("select", {
        id: `filter-${name}`, "aria-label": label,
        onchange: (ev) => { this.filters[name] = ev.target.value; this.render(); },
      }, h("option", { value: "" }, `All ${label.replace(/^[A-Z][a-z]/, (m) => m.toLowerCase())}`),
      options.map(([v, text]) => h("option", { value: v, selected: this.filters[name] === String(v) }, text)));
      return h("label", { class: "filter" }, h("span", null, label), sel);
    };
    const search = h("input", {
      type: "search", placeholder: "Search instrument", value: this.filters.q, "aria-label": "Search",
      oninput: (ev) => { this.filters.q = ev.target.value.trim().toUpperCase(); this.render(); },
    });
    this.filterBar.replaceChildren(
      select("gpu", "GPU models", uniq((s) => s.gpu_model).map((v) => [v, v])),
      select("hub", "Hubs", uniq((s) => s.hub).map((v) => [v, cap(v)])),
      select("tier", "Tiers", uniq((s) => s.tier).map((v) => [v, tierLabel(v)])),
      select("window", "Delivery windows", windows.map(([v, text]) => [String(v), text])),
      h("label", { class: "filter grow" }, h("span", null, "Search"), search),
    );
  }

  visible() {
    const f = this.filters;
    return [...state.instruments.values()]
      .filter(({ spec }) => (!f.gpu || spec.gpu_model === f.gpu) && (!f.hub || spec.hub === f.hub)
        && (!f.tier || spec.tier === f.tier) && (!f.window || String(spec.delivery_start) === f.window)
        && (!f.q || spec.instrument_id.includes(f.q)))
      .sort((a, b) => a.spec.delivery_start - b.spec.delivery_start
        || a.spec.instrument_id.localeCompare(b.spec.instrument_id));
  }

  render() {
    if (!this.tbody) return;
    const rows = this.visible();
    this.rows = new Map();
    this.tbody.replaceChildren(...rows.map((inst) => this.row(inst)));
    if (!rows.length) {
      this.tbody.append(h("tr", null, h("td", { colspan: 11, class: "empty" }, "No instrument matches these filters.")));
    }
    F.setText(this.count, `${rows.length} of ${state.instruments.size}`);
    for (const inst of rows) this.renderRow(inst.spec.instrument_id);
    this.renderCards();
  }

  row(inst) {
    const { spec } = inst;
    const id = spec.instrument_id;
    const cells = {
      status: h("td", { class: "c-status" }),
      bid: h("td", { class: "num c-bid" }), ask: h("td", { class: "num c-ask" }),
      last: h("td", { class: "num c-last" }), vol: h("td", { class: "num hide-s c-vol" }),
      oi: h("td", { class: "num hide-s c-oi" }),
    };
    const tr = h("tr", {
      class: "link", tabindex: 0, dataset: { instrument: id },
      onclick: () => { location.hash = `#/i/${encodeURIComponent(id)}`; },
      onkeydown: (ev) => { if (ev.key === "Enter") location.hash = `#/i/${encodeURIComponent(id)}`; },
    },
    h("td", { class: "c-id" }, h("a", { href: `#/i/${encodeURIComponent(id)}` }, id)),
    h("td", null, spec.gpu_model, spec.domestic ? h("span", { class: "tag dom", title: "Domestic chip" }, "CN") : null),
    h("td", { class: "hide-s" }, cap(spec.hub)),
    h("td", { class: "hide-s" }, tierLabel(spec.tier)),
    h("td", { class: "hide-s nowrap" }, F.windowLabel(spec)),
    cells.status, cells.bid, cells.ask, cells.last, cells.vol, cells.oi);
    this.rows.set(id, cells);
    return tr;
  }

  renderRow(id) {
    const cells = this.rows?.get(id);
    const inst = state.instruments.get(id);
    if (!cells || !inst) return;
    const t = state.tickers.get(id);
    cells.status.replaceChildren(statusPill(inst.status));
    flashText(cells.bid, F.price(t ? t.best_bid : inst.best_bid));
    flashText(cells.ask, F.price(t ? t.best_ask : inst.best_ask));
    flashText(cells.last, F.price(t?.last_price || inst.last_price));
    F.setText(cells.vol, t ? F.qty(t.volume_24h) : "—");
    F.setText(cells.oi, t ? F.qty(t.open_interest) : "—");
  }

  renderIndex(rows) {
    const latest = new Map(); // gpu model -> its latest day
    for (const r of rows) latest.set(r.gpu_model, r);
    const prev = new Map();
    for (const r of rows) if (r !== latest.get(r.gpu_model)) prev.set(r.gpu_model, r);
    const list = [...latest.values()].sort((a, b) => a.gpu_model.localeCompare(b.gpu_model));
    const change = (r) => {
      const p = prev.get(r.gpu_model);
      if (!p) return h("td", { class: "num hide-s muted" }, "—");
      const d = r.vwap - p.vwap;
      return h("td", { class: `num hide-s ${d > 0 ? "bid" : d < 0 ? "ask" : ""}` }, `${d > 0 ? "+" : ""}${F.fen(d)}`);
    };
    this.indexPanel.replaceChildren(
      h("div", { class: "panel-head" }, h("h2", null, "GPU-hour price index"),
        h("span", { class: "muted" }, "daily VWAP per GPU model, from executed trades (UTC days)")),
      h("div", { class: "table-wrap" }, h("table", { class: "grid", id: "price-index" },
        h("thead", null, h("tr", null, h("th", null, "GPU model"), h("th", null, "Day"),
          h("th", { class: "num" }, "Index (VWAP)"), h("th", { class: "num hide-s" }, "vs previous day"),
          h("th", { class: "num hide-s" }, "Open"), h("th", { class: "num" }, "High"), h("th", { class: "num" }, "Low"),
          h("th", { class: "num hide-s" }, "Close"), h("th", { class: "num" }, "GPU-h"), h("th", { class: "num hide-s" }, "Trades"))),
        h("tbody", null, list.length ? list.map((r) => h("tr", null, h("td", { class: "c-id" }, r.gpu_model),
          h("td", { class: "nowrap" }, r.date), h("td", { class: "num" }, h("strong", null, F.fen(r.vwap))), change(r),
          h("td", { class: "num hide-s" }, F.fen(r.open)), h("td", { class: "num" }, F.fen(r.high)),
          h("td", { class: "num" }, F.fen(r.low)), h("td", { class: "num hide-s" }, F.fen(r.close)),
          h("td", { class: "num" }, F.qty(r.volume_gpu_hours)), h("td", { class: "num hide-s" }, F.qty(r.trades))))
          : h("tr", null, h("td", { colspan: 10, class: "empty" }, "No trades in the last 7 days."))))));
  }

  renderCards() {
    if (!this.cards) return;
    const all = [...state.instruments.values()];
    const by = (s) => all.filter((i) => i.status === s).length;
    let vol = 0;
    let turnover = 0;
    let trades = 0;
    let oi = 0;
    for (const t of state.tickers.values()) {
      vol += t.volume_24h;
      turnover += t.turnover_24h;
      trades += t.trades_24h;
      oi += t.open_interest;
    }
    const card = (label, value, sub, cls = "") => h("div", { class: `card ${cls}` },
      h("div", { class: "card-label" }, label), h("div", { class: "card-value" }, value),
      h("div", { class: "card-sub muted" }, sub));
    this.cards.replaceChildren(
      card("Instruments open", `${by("OPEN")} / ${all.length}`,
        `${by("AUCTION")} in auction · ${by("HALTED")} halted · ${by("CLOSED")} closed`, by("HALTED") ? "warn" : ""),
      card("Volume, 24 h", `${F.qty(vol)} GPU-h`, plural(trades, "trade")),
      card("Turnover, 24 h", F.cnyShort(turnover), vol ? `VWAP ¥${F.fen(Math.floor(turnover / vol))} / GPU-h` : "no trades yet"),
      card("Open interest", `${F.qty(oi)} GPU-h`, "contracted, not yet delivered"),
    );
  }
}

function statusPill(status) {
  return h("span", { class: `pill s-${(status || "").toLowerCase()}` }, F.STATUS_LABEL[status] || status || "—");
}

function flashText(el, text) {
  if (el.textContent === text) return;
  const had = el.textContent !== "";
  el.textContent = text;
  if (had) {
    el.classList.remove("flash");
    void el.offsetWidth; // restart the animation
    el.classList.add("flash");
  }
}

const plural = (n, word) => `${F.qty(n)} ${word}${n === 1 ? "" : "s"}`;
const cap = (s) => (s ? s[0].toUpperCase() + s.slice(1) : s);
const tierLabel = (t) => (t === "STATE" ? "State-run" : t === "COMMERCIAL" ? "Commercial" : t);

// --- one instrument -------------------------------------------------------------------------

const INTERVALS = [["5s", 5], ["1m", 60], ["5m", 300], ["15m", 900], ["1h", 3600], ["1d", 86400]];
const LADDER_ROW_PX = 21; // .lvl height in style.css
const NARROW = window.matchMedia("(max-width: 760px)");
const TAPE_ROWS = 60;
const HISTORY_TRADES = 1000; // the most GET /api/v1/trades gives in one page

class InstrumentView {
  constructor(id) {
    this.id = id;
    this.book = new L2Book(id, state.welcome?.checksum_depth ?? 10);
    this.trades = new Map(); // trade id -> trade
    this.interval = 60;
    this.candles = new Candles(this.interval);
    this.charts = [];
    this.drawDepth = throttle(() => this.renderDepth(), 150);
  }

  mount(main) {
    const inst = state.instruments.get(this.id);
    if (!inst) {
      main.append(h("section", { class: "panel empty" }, h("h2", null, "No such instrument"),
        h("p", null, h("a", { href: "#/" }, "Back to the markets"))));
      return;
    }
    const spec = inst.spec;
    this.statusEl = h("span", { id: "inst-status" });
    this.controls = h("div", { class: "controls", id: "controls" });
    this.tickerEl = h("div", { class: "ticker", id: "ticker" });
    this.ladder = h("div", { class: "ladder", id: "ladder" });
    this.bookInfo = h("span", { class: "muted book-info", id: "book-info" });
    this.tape = h("tbody");
    this.tapeNote = h("p", { class: "footnote" });
    this.candleBox = h("div", { class: "chart", id: "price-chart" });
    this.depthBox = h("div", { class: "chart depth", id: "depth-chart" });
    const intervalBar = h("div", { class: "seg", role: "group", "aria-label": "Candle interval" },
      INTERVALS.map(([label, sec]) => h("button", {
        type: "button", class: sec === this.interval ? "on" : "", dataset: { sec },
        onclick: (ev) => this.setInterval(sec, ev.target),
      }, label)));
    main.append(h("section", { class: "instrument" },
      h("div", { class: "inst-head" },
        h("a", { class: "back", href: "#/", "aria-label": "Back to the markets" }, "←"),
        h("div", { class: "inst-title" },
          h("h1", null, spec.instrument_id, " ", this.statusEl),
          h("p", { class: "muted" },
            `${spec.gpu_model}${spec.domestic ? " (domestic chip)" : ""} · ${cap(spec.hub)} · ${tierLabel(spec.tier)} · `,
            `delivery ${F.dateTime(spec.delivery_start)} – ${F.dateTime(spec.delivery_end)} · `,
            `tick ¥${F.fen(spec.tick)} · lot ${F.qty(spec.lot)} GPU-h`)),
        this.controls),
      this.tickerEl,
      h("div", { class: "inst-grid" },
        h("div", { class: "panel p-chart" },
          h("div", { class: "panel-head" }, h("h2", null, "Price"), intervalBar), this.candleBox),
        h("div", { class: "panel p-book" },
          h("div", { class: "panel-head" }, h("h2", null, "Order book"), this.bookInfo),
          h("div", { class: "ladder-head" }, h("span", null, "Price"), h("span", null, "GPU-h"), h("span", null, "Total")),
          this.ladder),
        h("div", { class: "panel p-depth" },
          h("div", { class: "panel-head" }, h("h2", null, "Depth"), h("span", { class: "muted" }, "cumulative GPU-h by price")),
          this.depthBox),
        h("div", { class: "panel p-tape" },
          h("div", { class: "panel-head" }, h("h2", null, "Trades")),
          h("div", { class: "tape-wrap" },
            h("table", { class: "grid tape", id: "tape" },
              h("thead", null, h("tr", null, h("th", null, "Time"), h("th", { class: "num" }, "Price"),
                h("th", { class: "num" }, "GPU-h"))),
              this.tape)),
          this.tapeNote))));
    this.makeCharts(spec);
    this.resize = new ResizeObserver(() => {
      if (this.book.seq >= 0 && String(this.ladderLevels()) !== this.ladder.dataset.levels) this.renderLadder();
    });
    this.resize.observe(this.ladder);
    this.renderHead();
    this.renderTicker();
    for (const ch of ["book", "trades", "ticker"]) state.feed.subscribe(ch, this.id);
    this.loadHistory();
  }

  unmount() {
    this.gone = true;
    for (const ch of ["book", "trades", "ticker"]) state.feed?.unsubscribe(ch, this.id);
    this.resize?.disconnect();
    for (const c of this.charts) c.remove();
    this.charts = [];
  }

  resync() {
    // The feed has already resubscribed (fresh book snapshot and ticker on their way).
    this.loadHistory();
    this.renderHead();
  }

  disconnected() {
    this.book.synced = false;
    this.renderBookInfo();
  }

  makeCharts(spec) {
    const minMove = spec.tick / 100;
    const precision = Math.max(0, Math.min(2, String(minMove).split(".")[1]?.length ?? 0));
    const chart = LWC.createChart(this.candleBox, chartOptions());
    this.candleSeries = chart.addSeries(LWC.CandlestickSeries, {
      upColor: COLORS.bid, downColor: COLORS.ask, borderVisible: false,
      wickUpColor: COLORS.bid, wickDownColor: COLORS.ask,
      priceFormat: { type: "price", precision, minMove },
    });
    this.volumeSeries = chart.addSeries(LWC.HistogramSeries, {
      priceScaleId: "vol", priceFormat: { type: "volume" }, color: "rgba(76,141,255,0.35)",
      lastValueVisible: false, priceLineVisible: false,
    });
    chart.priceScale("vol").applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
    chart.priceScale("right").applyOptions({ scaleMargins: { top: 0.1, bottom: 0.25 } });
    const depth = LWC.createOptionsChart(this.depthBox, chartOptions({
      timeScale: { borderColor: COLORS.border },
      localization: { precision: 2 },
      handleScroll: false, handleScale: false,
    }));
    const area = (color, fill) => depth.addSeries(LWC.AreaSeries, {
      lineType: LWC.LineType.WithSteps, lineColor: color, lineWidth: 2, topColor: fill, bottomColor: "rgba(0,0,0,0)",
      priceFormat: { type: "volume" }, lastValueVisible: false, priceLineVisible: false,
      crosshairMarkerVisible: true,
    });
    this.bidArea = area(COLORS.bid, "rgba(34,192,138,0.28)");
    this.askArea = area(COLORS.ask, "rgba(240,97,109,0.28)");
    this.candleChart = chart;
    this.depthChart = depth;
    this.charts = [chart, depth];
  }

  setInterval(sec, button) {
    this.interval = sec;
    this.candleChart.applyOptions({ timeScale: { secondsVisible: sec < 60 } });
    for (const b of button.parentElement.children) b.classList.toggle("on", b === button);
    this.rebuildCandles();
  }

  rebuildCandles() {
    this.candles = new Candles(this.interval);
    const trades = [...this.trades.values()].sort((a, b) => a.ts - b.ts || a.trade_id - b.trade_id);
    for (const t of trades) this.candles.add(t);
    const bars = this.candles.sorted();
    this.candleSeries.setData(bars.map(toCandle));
    this.volumeSeries.setData(bars.map(toVolume));
    this.lastBarTime = bars.length ? bars[bars.length - 1].time : 0;
    this.candleBox.dataset.bars = String(bars.length);
    this.candleChart.timeScale().fitContent();
  }

  async loadHistory() {
    // The public trade history, newest first; live trades arriving meanwhile are
    // kept too (both are keyed by trade id).
    try {
      const rows = await api(`/api/v1/trades/${encodeURIComponent(this.id)}?limit=${HISTORY_TRADES}`, state.key);
      for (const t of rows) this.trades.set(t.trade_id, t);
      this.tapeNote.textContent = rows.length === HISTORY_TRADES
        ? `Chart from the last ${F.qty(HISTORY_TRADES)} trades, then live.` : "";
      this.tapeNote.dataset.history = String(rows.length);
    } catch (err) {
      this.tapeNote.textContent = `History unavailable: ${err.message}`;
    }
    if (this.gone) return; // left the view while loading
    this.rebuildCandles();
    this.renderTape();
  }

  onMessage(msg) {
    if (msg.instrument_id !== this.id && msg.type !== "instrument") return;
    switch (msg.type) {
      case "book_snapshot":
      case "book_update": {
        const result = this.book.apply(msg);
        if (result !== "ok") {
          // A gap or a checksum mismatch: our copy is wrong; ask for a fresh snapshot.
          this.renderBookInfo(result);
          state.feed.resubscribe("book", this.id);
          return;
        }
        this.renderLadder();
        this.renderBookInfo();
        this.drawDepth();
        break;
      }
      case "trade": {
        this.trades.set(msg.trade_id, msg);
        this.renderTape(msg.trade_id);
        const bar = this.candles.add(msg);
        if (bar) {
          if (bar.time < (this.lastBarTime || 0)) this.rebuildCandles();
          else {
            this.candleSeries.update(toCandle(bar));
            this.volumeSeries.update(toVolume(bar));
            this.lastBarTime = bar.time;
          }
        }
        break;
      }
      case "ticker":
        this.renderTicker();
        this.renderHead();
        break;
      case "instrument_status":
      case "instrument":
        this.renderHead();
        this.renderTicker();
        break;
      default:
        break;
    }
  }

  renderHead() {
    const inst = state.instruments.get(this.id);
    if (!inst || !this.statusEl) return;
    this.statusEl.replaceChildren(statusPill(inst.status));
    this.statusEl.dataset.status = inst.status;
    if (this.controls.dataset.for !== inst.status) {
      this.controls.dataset.for = inst.status;
      this.controls.replaceChildren(...controlButtons(this.id, inst.status));
    }
  }

  renderTicker() {
    const t = state.tickers.get(this.id);
    const inst = state.instruments.get(this.id);
    const bid = t?.best_bid || 0;
    const ask = t?.best_ask || 0;
    const item = (label, value, cls = "", sub = "") => h("div", { class: `tk ${cls}` },
      h("span", { class: "tk-label" }, label), h("span", { class: "tk-value" }, value),
      sub ? h("span", { class: "tk-sub" }, sub) : null);
    this.tickerEl.replaceChildren(
      item("Last", F.price(t?.last_price || inst?.last_price), "big", t?.last_qty ? `${F.qty(t.last_qty)} GPU-h` : ""),
      item("Best bid", F.price(bid), "bid", bid ? `${F.qty(t.best_bid_qty)} GPU-h` : ""),
      item("Best ask", F.price(ask), "ask", ask ? `${F.qty(t.best_ask_qty)} GPU-h` : ""),
      item("Spread", bid && ask ? F.fen(ask - bid) : "—", "", bid && ask ? `${Math.round(((ask - bid) * 10000) / ask)} bp` : ""),
      item("Volume 24 h", t ? `${F.qty(t.volume_24h)}` : "—", "", "GPU-h"),
      item("VWAP 24 h", F.price(t?.vwap_24h), "", t ? plural(t.trades_24h, "trade") : ""),
      item("Turnover 24 h", t ? F.cnyShort(t.turnover_24h) : "—"),
    );
    this.tickerEl.dataset.bid = String(bid);
    this.tickerEl.dataset.ask = String(ask);
    this.tickerEl.dataset.last = String(t?.last_price || 0);
  }

  // Levels a side that fit the panel without clipping (a fixed few on a phone, where the page scrolls).
  ladderLevels() {
    if (NARROW.matches) return 8;
    const room = this.ladder.clientHeight - 52; // less the spread row and its margins
    return Math.max(5, Math.min(20, Math.floor(room / 2 / LADDER_ROW_PX)));
  }

  renderLadder() {
    const n = this.ladderLevels();
    this.ladder.dataset.levels = String(n);
    const bids = this.book.levels("bids").slice(0, n);
    const asks = this.book.levels("asks").slice(0, n);
    const cum = (levels) => {
      let s = 0;
      return levels.map(([p, q]) => [p, q, (s += q)]);
    };
    const b = cum(bids);
    const a = cum(asks);
    const max = Math.max(b.length ? b[b.length - 1][2] : 0, a.length ? a[a.length - 1][2] : 0, 1);
    const row = (side, [p, q, c]) => h("div", {
      class: `lvl ${side}`, dataset: { price: p, qty: q },
      style: `--depth:${((c * 100) / max).toFixed(1)}%`,
    }, h("span", { class: "px" }, F.fen(p)), h("span", { class: "q" }, F.qty(q)), h("span", { class: "cum" }, F.qty(c)));
    const spread = bids.length && asks.length ? asks[0][0] - bids[0][0] : null;
    this.ladder.replaceChildren(
      h("div", { class: "side asks" }, a.slice().reverse().map((l) => row("ask", l))),
      h("div", { class: "spread-row" },
        spread == null ? (bids.length || asks.length ? "one-sided book" : "empty book")
          : `spread ${F.fen(spread)} · mid ${F.fen(Math.floor((asks[0][0] + bids[0][0]) / 2))}`),
      h("div", { class: "side bids" }, b.map((l) => row("bid", l))),
    );
  }

  renderBookInfo(problem) {
    if (!this.bookInfo) return;
    this.bookInfo.dataset.seq = String(this.book.seq);
    this.bookInfo.dataset.synced = String(this.book.synced && !problem);
    if (problem) F.setText(this.bookInfo, problem === "gap" ? "gap: resyncing…" : "checksum mismatch: resyncing…");
    else if (!this.book.synced) F.setText(this.bookInfo, "stale");
    else F.setText(this.bookInfo, `seq ${this.book.seq} · checksum ✓`);
  }

  renderDepth() {
    const { bids, asks } = depthSeries(this.book.levels("bids"), this.book.levels("asks"));
    this.bidArea.setData(bids);
    this.askArea.setData(asks);
    this.depthChart.timeScale().fitContent();
  }

  renderTape(newId) {
    const all = [...this.trades.values()].sort((a, b) => a.ts - b.ts || a.trade_id - b.trade_id);
    // Colour by aggressor; where it is unknown (history), by the tick rule: up or down from the
    // last different price.
    const dirs = new Map();
    let tick = "";
    for (let i = 0; i < all.length; i++) {
      const t = all[i];
      const before = all[i - 1];
      if (before && t.price !== before.price) tick = t.price > before.price ? "up" : "down";
      dirs.set(t.trade_id, t.aggressor === "BUY" ? "up" : t.aggressor === "SELL" ? "down" : tick);
    }
    const trades = all.slice(-TAPE_ROWS).reverse();
    this.tape.replaceChildren(...trades.map((t) => {
      const dir = dirs.get(t.trade_id);
      return h("tr", { class: `${dir} ${t.trade_id === newId ? "new" : ""}`, dataset: { trade: t.trade_id, price: t.price, qty: t.qty } },
        h("td", { class: "muted" }, F.clock(t.ts)), h("td", { class: "num px" }, F.fen(t.price)),
        h("td", { class: "num" }, F.qty(t.qty)));
    }));
    if (!trades.length) this.tape.append(h("tr", null, h("td", { colspan: 3, class: "empty" }, "No trades yet.")));
  }
}

const toCandle = (b) => ({ time: F.chartTime(b.time), open: b.open / 100, high: b.high / 100, low: b.low / 100, close: b.close / 100 });
const toVolume = (b) => ({
  time: F.chartTime(b.time), value: b.volume,
  color: b.close >= b.open ? "rgba(34,192,138,0.4)" : "rgba(240,97,109,0.4)",
});

function throttle(fn, ms) {
  let t = 0;
  return () => {
    if (t) return;
    t = setTimeout(() => { t = 0; fn(); }, ms);
  };
}

// --- vouchers ------------------------------------------------------------------------------

class VoucherView {
  constructor() {
    this.reload = debounce(() => this.load(), 600);
    // Operators and issuers follow every voucher and claim they may see on the
    // `vouchers` channel (a snapshot, then each change); others read their own
    // over HTTP and reload when their private updates say something changed.
    this.live = false;
    this.vouchers = new Map(); // voucher id -> latest `voucher` message (live roles)
    this.claims = new Map(); // claim id -> latest `claim` message (live roles)
  }

  mount(main) {
    this.root = h("section", { class: "vouchers" });
    main.append(this.root);
    const role = state.principal.role;
    this.live = role === "OPERATOR" || role === "ISSUER";
    if (this.live) state.feed.subscribe("vouchers");
    this.load();
  }

  unmount() {
    if (this.live) state.feed?.unsubscribe("vouchers");
    this.reload.cancel();
    this.chart?.remove();
    this.chart2?.remove();
  }

  resync() { this.load(); }

  onMessage(msg) {
    if (!this.live) {
      if (msg.type === "voucher" || msg.type === "claim" || msg.type === "contract"
        || (msg.type === "execution_report" && msg.voucher > 0)) this.reload();
      return;
    }
    if (msg.type === "subscribed" && msg.channel === "vouchers") {
      // A (re)subscription: its snapshot follows and replaces what we hold.
      this.vouchers.clear();
      this.claims.clear();
    } else if (msg.type === "voucher") {
      this.vouchers.set(msg.voucher_id, msg);
      this.reload();
    } else if (msg.type === "claim") {
      this.claims.set(msg.claim_id, msg);
      this.reload();
    }
  }

  async load() {
    const live = this.live;
    try {
      const [usage, byIssuer, claims, vouchers] = await Promise.all([
        live ? api("/api/v1/reports/voucher-usage", state.key) : [],
        live ? api("/api/v1/reports/claims", state.key) : [],
        live ? null : api("/api/v1/claims", state.key),
        live ? null : api("/api/v1/vouchers", state.key),
      ]);
      // Live roles: the channel's copies as they are now, once the reports are in.
      const byId = (m, key) => [...m.values()].sort((x, y) => x[key] - y[key]);
      this.render({
        usage, byIssuer, reports: live,
        claims: live ? byId(this.claims, "claim_id") : claims,
        vouchers: live ? byId(this.vouchers, "voucher_id") : vouchers,
      });
    } catch (err) {
      this.root.replaceChildren(h("div", { class: "panel empty" }, `Could not load vouchers: ${err.message}`));
    }
  }

  render({ usage, byIssuer, claims, vouchers, reports }) {
    this.chart?.remove();
    this.chart2?.remove();
    this.chart = this.chart2 = null;
    const sum = (rows, f) => rows.reduce((s, r) => s + f(r), 0);
    const outstanding = sum(claims.filter((c) => !c.settled), (c) => c.amount);
    const card = (label, value, sub) => h("div", { class: "card" }, h("div", { class: "card-label" }, label),
      h("div", { class: "card-value" }, value), h("div", { class: "card-sub muted" }, sub));
    const cards = reports
      ? [
        card("Programme budgets", F.cnyShort(sum(usage, (u) => u.budget)), `${usage.length} programmes`),
        card("Vouchers issued", F.cnyShort(sum(usage, (u) => u.issued)), `${sum(usage, (u) => u.vouchers)} vouchers · ${sum(usage, (u) => u.holders)} holders`),
        card("Spent on compute", F.cnyShort(sum(usage, (u) => u.spent)), `${F.cnyShort(sum(usage, (u) => u.reserved))} reserved by open bids`),
        card("Claims outstanding", F.cnyShort(outstanding), `${claims.filter((c) => !c.settled).length} claims to settle`),
      ]
      : [
        card("Vouchers", String(vouchers.length), `${F.cnyShort(sum(vouchers, (v) => v.balance))} unspent`),
        card("Claims outstanding", F.cnyShort(outstanding), `${claims.filter((c) => !c.settled).length} claims`),
      ];
    this.spendBox = h("div", { class: "chart", id: "voucher-chart" });
    this.outBox = h("div", { class: "chart", id: "claims-chart" });
    const money = (v) => h("td", { class: "num" }, F.fen(v));
    const programmeTable = reports ? h("div", { class: "panel" },
      h("div", { class: "panel-head" }, h("h2", null, "Programmes")),
      h("div", { class: "table-wrap" }, h("table", { class: "grid", id: "programmes" },
        h("thead", null, h("tr", null, h("th", null, "Issuer"), h("th", null, "Programme"),
          h("th", { class: "num" }, "Budget ¥"), h("th", { class: "num" }, "Issued ¥"), h("th", { class: "num" }, "Spent ¥"),
          h("th", { class: "num hide-s" }, "Reserved ¥"), h("th", { class: "num hide-s" }, "Unspent ¥"),
          h("th", { class: "num hide-s" }, "Holders"), h("th", null, "Used of issued"))),
        h("tbody", null, usage.map((u) => h("tr", { dataset: { programme: u.programme_id } },
          h("td", null, u.issuer), h("td", null, h("div", null, u.name), h("div", { class: "muted small" }, u.programme_id)),
          money(u.budget), money(u.issued), money(u.spent),
          h("td", { class: "num hide-s" }, F.fen(u.reserved)), h("td", { class: "num hide-s" }, F.fen(u.balance)),
          h("td", { class: "num hide-s" }, F.qty(u.holders)),
          h("td", null, meter(u.spent, u.reserved, u.issued)))))))) : null;
    const issuerTable = reports ? h("div", { class: "panel" },
      h("div", { class: "panel-head" }, h("h2", null, "Claims by issuer")),
      h("div", { class: "table-wrap" }, h("table", { class: "grid", id: "claims-by-issuer" },
        h("thead", null, h("tr", null, h("th", null, "Issuer"), h("th", { class: "num" }, "Outstanding"),
          h("th", { class: "num" }, "Outstanding ¥"), h("th", { class: "num" }, "Settled"), h("th", { class: "num" }, "Settled ¥"))),
        h("tbody", null, byIssuer.length ? byIssuer.map((r) => h("tr", { dataset: { issuer: r.issuer } }, h("td", null, r.issuer),
          h("td", { class: "num" }, F.qty(r.outstanding)), money(r.outstanding_amount),
          h("td", { class: "num" }, F.qty(r.settled)), money(r.settled_amount)))
          : h("tr", null, h("td", { colspan: 5, class: "empty" }, "No claims yet.")))))) : null;
    const voucherTable = h("div", { class: "panel" },
      h("div", { class: "panel-head" }, h("h2", null, "Vouchers"), h("span", { class: "muted" }, `${vouchers.length}`)),
      h("div", { class: "table-wrap" }, h("table", { class: "grid", id: "vouchers" },
        h("thead", null, h("tr", null, h("th", { class: "num" }, "#"), h("th", null, "Programme"), h("th", null, "Holder"),
          h("th", { class: "num" }, "Amount ¥"), h("th", { class: "num" }, "Spent ¥"), h("th", { class: "num hide-s" }, "Reserved ¥"),
          h("th", { class: "num" }, "Unspent ¥"), h("th", { class: "hide-s" }, "Expires"))),
        h("tbody", null, vouchers.length ? vouchers.map((v) => h("tr", { dataset: { voucher: v.voucher_id } }, h("td", { class: "num" }, v.voucher_id),
          h("td", null, v.programme_id), h("td", null, v.holder), money(v.amount), money(v.spent),
          h("td", { class: "num hide-s" }, F.fen(v.reserved)), money(v.balance), h("td", { class: "hide-s nowrap" }, F.date(v.expires_at))))
          : h("tr", null, h("td", { colspan: 8, class: "empty" }, "No vouchers."))))));
    this.root.replaceChildren(
      h("div", { class: "cards" }, cards),
      h("div", { class: "two" },
        h("div", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", null, "Voucher spend by programme"),
          h("span", { class: "muted" }, "cumulative ¥, from claims")), this.spendBox),
        h("div", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", null, "Claims outstanding by issuer"),
          h("span", { class: "muted" }, "¥ awaiting settlement")), this.outBox)),
      programmeTable, issuerTable, voucherTable,
    );
    this.drawCharts(claims);
  }

  drawCharts(claims) {
    const nowSec = Math.floor(Date.now() / 1000);
    const lines = (box, groups) => {
      const chart = LWC.createChart(box, chartOptions({ localization: { priceFormatter: (v) => F.cnyShort(Math.round(v * 100)) } }));
      let i = 0;
      for (const [name, points] of groups) {
        const series = chart.addSeries(LWC.LineSeries, {
          color: COLORS.series[i++ % COLORS.series.length], lineWidth: 2, title: name,
          lineType: LWC.LineType.WithSteps, priceLineVisible: false,
        });
        series.setData(points);
      }
      const span = Math.max(0, ...groups.flatMap(([, pts]) => pts.map((p) => p.time)))
        - Math.min(...groups.flatMap(([, pts]) => pts.map((p) => p.time)));
      chart.applyOptions({ timeScale: { secondsVisible: span < 600 } });
      chart.timeScale().fitContent();
      return chart;
    };
    // Events per group, as (second, +amount) steps; a point at "now" carries each line to today.
    const cumulative = (events) => {
      const bySec = new Map();
      for (const [sec, delta] of events) bySec.set(sec, (bySec.get(sec) || 0) + delta);
      bySec.set(nowSec, bySec.get(nowSec) || 0);
      let total = 0;
      return [...bySec.entries()].sort((a, b) => a[0] - b[0])
        .map(([sec, d]) => ({ time: F.chartTime(sec), value: (total += d) / 100 }));
    };
    const group = (key, eventsOf) => {
      const m = new Map();
      for (const c of claims) {
        const k = key(c);
        if (!m.has(k)) m.set(k, []);
        m.get(k).push(...eventsOf(c));
      }
      return [...m.entries()].sort().map(([k, ev]) => [k, cumulative(ev)]);
    };
    const sec = (ns) => Math.floor(ns / 1e9);
    if (claims.length) {
      this.chart = lines(this.spendBox, group((c) => c.programme_id, (c) => [[sec(c.created_at), c.amount]]));
      this.chart2 = lines(this.outBox, group((c) => c.issuer, (c) => (c.settled
        ? [[sec(c.created_at), c.amount], [sec(c.settled_at), -c.amount]] : [[sec(c.created_at), c.amount]])));
    } else {
      for (const box of [this.spendBox, this.outBox]) box.replaceChildren(h("p", { class: "empty" }, "No voucher has been spent yet."));
    }
  }
}

function meter(spent, reserved, whole) {
  const w = (x) => (whole ? Math.min(100, (x * 100) / whole).toFixed(1) : 0);
  return h("div", { class: "meter", title: `${F.pct(spent, whole)} spent, ${F.pct(reserved, whole)} reserved` },
    h("span", { class: "m-spent", style: `width:${w(spent)}%` }),
    h("span", { class: "m-res", style: `width:${w(reserved)}%` }),
    h("em", null, F.pct(spent, whole)));
}

// --- participants (operators) -----------------------------------------------------------------

class ParticipantsView {
  constructor() {
    this.balances = new Map(); // account -> balance message
    this.orders = new Map(); // order id -> execution report (open orders only)
    this.role = "";
    this.selected = "";
    this.draw = throttle(() => this.render(), 200);
  }

  mount(main) {
    this.tbody = h("tbody");
    this.detail = h("div", { class: "panel", id: "account-detail", hidden: true });
    const roles = ["", "STARTUP", "PROVIDER", "ISSUER", "OPERATOR"];
    this.count = h("span", { class: "muted" });
    main.append(h("section", { class: "participants" },
      h("div", { class: "panel" },
        h("div", { class: "panel-head" }, h("h2", null, "Participants"), this.count),
        h("div", { class: "filters" }, h("label", { class: "filter" }, h("span", null, "Role"),
          h("select", { id: "filter-role", onchange: (ev) => { this.role = ev.target.value; this.render(); } },
            roles.map((r) => h("option", { value: r }, r ? F.ROLE_LABEL[r] : "All roles"))))),
        h("div", { class: "table-wrap" }, h("table", { class: "grid", id: "participants" },
          h("thead", null, h("tr", null, h("th", null, "Account"), h("th", null, "Role"),
            h("th", { class: "num" }, "Cash ¥"), h("th", { class: "num" }, "Reserved ¥"),
            h("th", { class: "num" }, "Open orders"), h("th", { class: "num hide-s" }, "Bids GPU-h"),
            h("th", { class: "num hide-s" }, "Offers GPU-h"), h("th", { class: "num" }, "Exposure ¥"),
            h("th", { class: "num hide-s" }, "Capacity free / sold"), h("th", { class: "num hide-s" }, "Holdings GPU-h"))),
          this.tbody)),
        h("p", { class: "footnote" }, "Exposure: the value of open orders (buys at their limit, offers at their ask). ",
          "Updated live from the accounts and orders channels.")),
      this.detail));
    state.feed.subscribe("accounts");
    state.feed.subscribe("orders");
  }

  unmount() {
    state.feed?.unsubscribe("accounts");
    state.feed?.unsubscribe("orders");
  }

  disconnected() {
    // After the reconnect both channels send their snapshots again: start afresh then.
    this.reset = true;
  }

  onMessage(msg) {
    if (this.reset && (msg.type === "balance" || msg.type === "execution_report")) {
      this.reset = false;
      this.balances.clear();
      this.orders.clear();
    }
    if (msg.type === "balance") {
      this.balances.set(msg.account_id, msg);
      this.draw();
    } else if (msg.type === "execution_report") {
      if (["NEW", "PARTIALLY_FILLED"].includes(msg.ord_status) && msg.leaves_qty > 0) this.orders.set(msg.order_id, msg);
      else this.orders.delete(msg.order_id);
      this.draw();
    }
  }

  exposure(account) {
    const x = { n: 0, bidQty: 0, askQty: 0, value: 0 };
    for (const o of this.orders.values()) {
      if (o.account !== account) continue;
      x.n += 1;
      if (o.side === "BUY") x.bidQty += o.leaves_qty;
      else x.askQty += o.leaves_qty;
      x.value += o.price * o.leaves_qty;
    }
    return x;
  }

  render() {
    const rows = [...this.balances.values()].filter((b) => !this.role || b.role === this.role)
      .sort((a, b) => a.role.localeCompare(b.role) || a.account_id.localeCompare(b.account_id));
    const total = (m) => Object.values(m || {}).reduce((s, v) => s + v, 0);
    this.tbody.replaceChildren(...rows.map((b) => {
      const x = this.exposure(b.account_id);
      const provider = b.role === "PROVIDER";
      return h("tr", {
        class: `link ${this.selected === b.account_id ? "selected" : ""}`, dataset: { account: b.account_id }, tabindex: 0,
        onclick: () => { this.selected = b.account_id; this.render(); },
      },
      h("td", null, b.account_id), h("td", null, h("span", { class: "role-badge", dataset: { role: b.role } }, F.ROLE_LABEL[b.role])),
      h("td", { class: "num" }, F.fen(b.cash)), h("td", { class: "num" }, F.fen(b.cash_reserved)),
      h("td", { class: "num c-open" }, F.qty(x.n)), h("td", { class: "num hide-s" }, x.bidQty ? F.qty(x.bidQty) : "—"),
      h("td", { class: "num hide-s" }, x.askQty ? F.qty(x.askQty) : "—"), h("td", { class: "num" }, x.value ? F.fen(x.value) : "—"),
      h("td", { class: "num hide-s" }, provider ? `${F.qty(total(b.capacity))} / ${F.qty(total(b.capacity_sold))}` : "—"),
      h("td", { class: "num hide-s" }, total(b.holdings) ? F.qty(total(b.holdings)) : "—"));
    }));
    F.setText(this.count, `${rows.length} accounts · ${this.orders.size} open orders`);
    this.renderDetail();
  }

  renderDetail() {
    const id = this.selected;
    if (!id) return;
    const orders = [...this.orders.values()].filter((o) => o.account === id).sort((a, b) => a.instrument_id.localeCompare(b.instrument_id) || b.price - a.price);
    this.detail.hidden = false;
    this.detail.replaceChildren(
      h("div", { class: "panel-head" }, h("h2", null, `Open orders of ${id}`), h("span", { class: "muted" }, String(orders.length))),
      h("div", { class: "table-wrap" }, h("table", { class: "grid" },
        h("thead", null, h("tr", null, h("th", { class: "num" }, "Order"), h("th", null, "Instrument"), h("th", null, "Side"),
          h("th", { class: "num" }, "Price"), h("th", { class: "num" }, "Open GPU-h"), h("th", { class: "num" }, "Filled"), h("th", null, "TIF"))),
        h("tbody", null, orders.length ? orders.map((o) => h("tr", null, h("td", { class: "num" }, o.order_id),
          h("td", null, h("a", { href: `#/i/${encodeURIComponent(o.instrument_id)}` }, o.instrument_id)),
          h("td", { class: o.side === "BUY" ? "bid" : "ask" }, o.side), h("td", { class: "num" }, F.price(o.price)),
          h("td", { class: "num" }, F.qty(o.leaves_qty)), h("td", { class: "num" }, F.qty(o.cum_qty)), h("td", null, o.tif || "")))
          : h("tr", null, h("td", { colspan: 7, class: "empty" }, "No open orders."))))));
  }
}

// For tests and the browser console: the live state and the operator action, without the dialog.
window.suanli = { state, setStatus: (id, status) => setStatus(id, status, { confirm: false }) };

start();
