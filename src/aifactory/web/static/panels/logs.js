// Logs: recent events of all nodes, filtered by level, engine (source) and text, with auto-scroll.
import { api } from "../api.js";
import { clear, el } from "../dom.js";
import { t } from "../i18n.js";
import { store } from "../store.js";

const LEVELS = ["debug", "info", "warning", "error"];
let section = null;
let filters = { level: "debug", source: "", text: "", follow: true };
let list = null;

export function show(node) {
  section = node;
  if (!store.events.length && store.state) store.addEvents([...store.state.events].reverse());
  render();
}

export function update(kind) {
  if (kind === "log" || kind === "state") fill();
}

function visible(event) {
  if (LEVELS.indexOf(event.level) < LEVELS.indexOf(filters.level)) return false;
  if (filters.source && event.source !== filters.source) return false;
  const text = filters.text.toLowerCase();
  return !text || `${event.message} ${event.node_id} ${event.source}`.toLowerCase().includes(text);
}

function fill() {
  if (!list) return;
  const rows = store.events.filter(visible);
  list.replaceChildren(...rows.map((e) => el("div", { class: `line level-${e.level}` },
    el("span", { class: "muted", text: `${new Date(e.ts * 1000).toLocaleTimeString()} ${e.level} ${e.node_id} ${e.source} ` }), e.message)));
  list.dataset.count = String(rows.length);
  if (filters.follow) list.scrollTop = list.scrollHeight;
}

async function reload() {
  try {
    const body = await api("/api/status");
    store.addEvents([...body.events].reverse());
    fill();
  } catch (err) { store.notify(`${t("read_failed")} — ${err.message}`); }
}

function render() {
  if (!section) return;
  const sources = [...new Set(store.events.map((e) => e.source))].sort();
  const level = el("select", { onchange: (e) => { filters.level = e.target.value; fill(); } }, ...LEVELS.map((l) => el("option", { value: l, text: l, selected: l === filters.level })));
  const source = el("select", { onchange: (e) => { filters.source = e.target.value; fill(); } }, el("option", { value: "", text: t("all_engines") }), ...sources.map((s) => el("option", { value: s, text: s, selected: s === filters.source })));
  const text = el("input", { type: "search", placeholder: t("filter_text"), value: filters.text, oninput: (e) => { filters.text = e.target.value; fill(); } });
  const follow = el("input", { type: "checkbox", checked: filters.follow, onchange: (e) => { filters.follow = e.target.checked; } });
  list = el("div", { id: "log-list", dataset: { testid: "log-list" } });
  clear(section, el("div", { class: "card" }, el("h2", { text: t("tab_logs") }),
    el("div", { class: "row" }, t("level"), level, t("engine"), source, text, el("label", {}, follow, t("auto_scroll")), el("button", { text: t("reload"), onclick: reload })),
    list));
  fill();
}
