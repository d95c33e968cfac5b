// Nodes: role, status, CPU, RAM, fetchers, last seen, offline marking; start/stop, all workers, cleanup.
import { api } from "../api.js";
import { ago, card, clear, el, num, table } from "../dom.js";
import { t } from "../i18n.js";
import { store } from "../store.js";

let section = null;
let nodes = [];
let error = "";

export function show(node) {
  section = node;
  refresh();
}

export function update(kind) {
  if (kind === "state") refresh();
}

async function refresh() {
  try { nodes = (await api("/api/nodes")).nodes; error = ""; } catch (err) { error = err.message; }
  render();
}

function post(label, path, body) {
  return store.act(label, () => api(path, { method: "POST", body })).then(refresh);
}

// Fetches in flight on the node's collector, and its fetch rate over its last crawl cycle.
function fetchers(node) {
  const collector = node.engines.find((e) => e.name === "collector");
  const active = collector && collector.counters.active_fetchers;
  const rate = collector && collector.counters.pages_per_sec;
  if (active === undefined) return "—";
  return rate === undefined ? num(active) : `${num(active)} (${num(rate, 1)} ${t("pages_per_sec")})`;
}

function render() {
  if (!section) return;
  const rows = table([
    [t("node"), (n) => n.node_id + (n.is_self ? ` (${t("this_node")})` : "")],
    [t("role"), (n) => t(`role_${n.role}`)],
    [t("status"), (n) => el("span", { class: n.online ? "good" : "bad", text: n.online ? n.status : t("offline") })],
    ["CPU %", (n) => num(n.cpu_percent), "num"],
    ["RAM %", (n) => num(n.ram_percent), "num"],
    [t("fetchers"), fetchers, "num"],
    [t("last_seen"), (n) => ago(n.heartbeat_age_sec)],
    [t("engines"), (n) => n.engines.map((e) => `${e.name}: ${e.phase}`).join(", ")],
    ["", (n) => el("span", {},
      el("button", { text: t("start"), onclick: () => post(t("start"), `/api/nodes/${encodeURIComponent(n.node_id)}/control`, { action: "start" }) }),
      " ",
      el("button", { text: t("stop"), onclick: () => post(t("stop"), `/api/nodes/${encodeURIComponent(n.node_id)}/control`, { action: "stop" }) }))],
  ], nodes, { "data-testid": "nodes-table" });
  clear(section, el("div", { class: "grid" }, el("div", { class: "card wide" },
    el("h2", { text: t("tab_nodes") }),
    error ? el("div", { class: "bad", text: error }) : null,
    el("div", { class: "row" },
      el("button", { text: t("start_all_workers"), onclick: () => post(t("start_all_workers"), "/api/nodes/control-all", { action: "start", role: "worker" }) }),
      el("button", { text: t("stop_all_workers"), onclick: () => post(t("stop_all_workers"), "/api/nodes/control-all", { action: "stop", role: "worker" }) }),
      el("button", { class: "danger", text: t("cleanup_stale"), onclick: () => post(t("cleanup_stale"), "/api/nodes/cleanup-stale", { older_than_sec: 3600, role: "worker" }) })),
    rows)));
}
