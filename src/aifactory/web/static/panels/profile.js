// Auto profile: the detected hardware profile and the effective key settings of this node.
import { api } from "../api.js";
import { card, clear, el, kv } from "../dom.js";
import { t } from "../i18n.js";
import { store } from "../store.js";

let section = null;

export function show(node) {
  section = node;
  api("/api/runtime-config").then((config) => { store.config = config; render(); }).catch((err) => store.notify(`${t("read_failed")} — ${err.message}`));
  render();
}

export function update(kind) {
  if (kind === "config") render();
}

function text(value) {
  return value === null || value === undefined ? "—" : typeof value === "object" ? JSON.stringify(value) : String(value);
}

function render() {
  if (!section) return;
  const config = store.config;
  if (!config) { clear(section, el("div", { class: "muted", text: "…" })); return; }
  const { auto_profile: profile, ...rest } = config;
  clear(section, el("div", { class: "grid" },
    card(t("profile_detected"), kv(Object.entries(profile || {}).map(([k, v]) => [k, text(v)]))),
    card(t("profile_settings"), kv(Object.entries(rest).map(([k, v]) => [k, text(v)])))));
}
