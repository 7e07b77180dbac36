// Display formatting and a tiny DOM helper. Money arrives as integer fen and is
// shown with integer arithmetic, so a displayed amount is exactly the amount held.

const GROUP = new Intl.NumberFormat("en-US");

// 123456 fen -> "1,234.56"
export function fen(amount) {
  if (amount == null || Number.isNaN(amount)) return "—";
  const neg = amount < 0;
  const abs = Math.abs(Math.trunc(amount));
  const yuan = Math.trunc(abs / 100);
  const cents = String(abs % 100).padStart(2, "0");
  return `${neg ? "-" : ""}${GROUP.format(yuan)}.${cents}`;
}

// A price cell: "—" for "no price".
export function price(amount) {
  return amount ? fen(amount) : "—";
}

// Large money amounts for cards: "¥12.4M", exact amount in the title attribute.
export function cnyShort(amount) {
  const yuan = amount / 100;
  const abs = Math.abs(yuan);
  if (abs >= 1e9) return `¥${(yuan / 1e9).toFixed(2)}B`;
  if (abs >= 1e6) return `¥${(yuan / 1e6).toFixed(1)}M`;
  if (abs >= 1e4) return `¥${(yuan / 1e3).toFixed(0)}k`;
  return `¥${fen(amount)}`;
}

export function qty(n) {
  if (n == null) return "—";
  return GROUP.format(n);
}

export function pct(part, whole) {
  if (!whole) return "0%";
  return `${Math.round((part * 1000) / whole) / 10}%`;
}

const DATE = new Intl.DateTimeFormat("en-GB", { day: "2-digit", month: "short" });
const DATE_Y = new Intl.DateTimeFormat("en-GB", { day: "2-digit", month: "short", year: "numeric" });
const DATETIME = new Intl.DateTimeFormat("en-GB", {
  day: "2-digit", month: "short", hour: "2-digit", minute: "2-digit",
});
const CLOCK = new Intl.DateTimeFormat("en-GB", {
  hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
});

export const nsToDate = (ns) => new Date(Math.floor(ns / 1e6));
export const day = (ns) => DATE.format(nsToDate(ns));
export const date = (ns) => DATE_Y.format(nsToDate(ns));
export const dateTime = (ns) => DATETIME.format(nsToDate(ns));
export const clock = (ns) => CLOCK.format(nsToDate(ns));
export const windowLabel = (spec) => `${day(spec.delivery_start)} – ${day(spec.delivery_end)}`;

// Seconds since the epoch, shifted so the charts' UTC axis reads local time.
export function chartTime(sec) {
  return sec - new Date(sec * 1000).getTimezoneOffset() * 60;
}

export const STATUS_LABEL = {
  PRE_OPEN: "Pre-open", AUCTION: "Auction", OPEN: "Open", HALTED: "Halted", CLOSED: "Closed",
};
export const ROLE_LABEL = {
  OPERATOR: "Operator", ISSUER: "Issuer", PROVIDER: "Provider", STARTUP: "Start-up",
};

// h("div", {class: "x", onclick: f}, "text", child) -> element. Strings become text nodes,
// never HTML, so names from the server cannot inject markup.
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v == null || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "class") el.className = v;
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k === "style") el.style.cssText = v;
      else el.setAttribute(k, v === true ? "" : v);
    }
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}
