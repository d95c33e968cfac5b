// Building the page: every piece of data goes in as text (textContent), never as HTML, so a crawled page
// carrying <script> or <img onerror> shows as the characters it is.

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  add(node, children);
  return node;
}

function add(node, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(node, ...children) {
  node.replaceChildren();
  add(node, children);
  return node;
}

// A link to a URL from the data: only http(s), so a stored "javascript:" address is never clickable.
export function safeLink(url, text) {
  const ok = /^https?:\/\//i.test(String(url || ""));
  return ok ? el("a", { href: url, target: "_blank", rel: "noopener noreferrer", text: text || url }) : el("span", { text: text || url || "" });
}

export function card(title, ...children) {
  return el("div", { class: "card" }, el("h2", { text: title }), ...children);
}

export function kv(pairs) {
  const list = el("dl", { class: "kv" });
  for (const [key, value, attrs] of pairs) {
    list.append(el("dt", { text: key }), el("dd", { text: value ?? "—", ...(attrs || {}) }));
  }
  return list;
}

// columns: [[header, row => value, "num"?], ...]; value may be a Node.
export function table(columns, rows, attrs = {}) {
  const head = el("tr", {}, columns.map(([name, , kind]) => el("th", { class: kind || null, text: name })));
  if (!rows.length) rows = null;
  const empty = el("tr", {}, el("td", { class: "muted", colspan: columns.length, text: "—" }));
  const body = rows === null ? [empty] : rows.map((row) =>
    el("tr", {}, columns.map(([, get, kind]) => {
      const value = get(row);
      return value instanceof Node ? el("td", { class: kind || null }, value) : el("td", { class: kind || null, text: value ?? "" });
    })),
  );
  return el("div", { class: "table-wrap" }, el("table", attrs, el("thead", {}, head), el("tbody", {}, body)));
}

export function num(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  return Number(value).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

export function compact(value) {
  if (value === null || value === undefined) return "—";
  const abs = Math.abs(value);
  if (abs >= 1e9) return (value / 1e9).toFixed(2) + "G";
  if (abs >= 1e6) return (value / 1e6).toFixed(2) + "M";
  if (abs >= 1e4) return (value / 1e3).toFixed(1) + "k";
  return num(value, Number.isInteger(value) ? 0 : 3);
}

export function when(ts) {
  if (!ts) return "—";
  return new Date(ts * 1000).toLocaleString();
}

export function ago(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}
