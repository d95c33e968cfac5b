// The dashboard's frame: header (role, state, Ignite/Stop, token, DB console, language), tabs, the
// live stream, and the notice where every failed admin action says why.
import { api, getToken, liveStream, setToken } from "./api.js";
import { applyStatic, lang, onLangChange, setLang, t } from "./i18n.js";
import { store } from "./store.js";
import * as overview from "./panels/overview.js";
import * as nodes from "./panels/nodes.js";
import * as data from "./panels/data.js";
import * as models from "./panels/models.js";
import * as ops from "./panels/ops.js";
import * as logs from "./panels/logs.js";
import * as chat from "./panels/chat.js";
import * as profile from "./panels/profile.js";

const PANELS = { overview, nodes, data, models, ops, logs, chat, profile };
const TAB_KEY = "aifactory.tab";
const $ = (id) => document.getElementById(id);
let active = "overview";
let stream = null;

export function notify(message, ok = false) {
  const box = $("notice");
  box.textContent = message;
  box.className = ok ? "ok" : "";
  box.hidden = !message;
  box.dataset.kind = ok ? "ok" : "error";
  box.dataset.read = "0";
  clearTimeout(notify.timer);
  if (ok) notify.timer = setTimeout(() => { box.hidden = true; }, 4000);
}
store.notify = notify;

// Runs an admin action; its failure (a missing or wrong token included) is shown with the reason.
export async function act(label, call) {
  try {
    const result = await call();
    notify(`${label}: ${result && result.message ? result.message : t("done")}`, true);
    return result;
  } catch (err) {
    notify(`${label}: ${t("failed")} — ${err.message}`);
    return null;
  }
}
store.act = act;

function showTab(name) {
  if (!PANELS[name]) name = "overview";
  active = name;
  localStorage.setItem(TAB_KEY, name);
  for (const button of document.querySelectorAll("#tabs button")) button.classList.toggle("active", button.dataset.tab === name);
  for (const section of document.querySelectorAll("main > section")) section.hidden = section.id !== `tab-${name}`;
  PANELS[name].show($(`tab-${name}`));
}

function renderHeader() {
  const state = store.state;
  const config = store.config;
  $("role").textContent = config ? t("role_is", { role: t(`role_${config.system_role}`) }) : "…";
  // Overall state: how many engines are asked to run (the inference engine always is), and any error.
  const engines = state ? state.engines : [];
  const running = engines.filter((e) => e.desired === "running").length;
  const failing = engines.some((e) => e.last_error);
  $("state").textContent = state ? t("engines_running", { n: running, m: engines.length }) + (failing ? ` · ${t("phase_error")}` : "") : "…";
  $("state").className = `pill ${state ? (failing ? "bad" : running > 1 ? "good" : "warn") : ""}`;
  $("state").dataset.running = String(running);
  $("live").textContent = store.live ? t("live_on") : t("live_off");
  $("live").className = `pill ${store.live ? "good" : "bad"}`;
  $("live").title = store.liveError || "";
  const link = $("dbui");
  if (config && config.db_ui_url && /^https?:\/\//i.test(config.db_ui_url)) {
    link.href = config.db_ui_url;
    link.hidden = false;
  }
}

async function loadConfig() {
  try {
    store.config = await api("/api/runtime-config");
    store.state = await api("/api/status");
    if ($("notice").dataset.read === "1") notify(""); // a read failure shown before is over
  } catch (err) {
    notify(`${t("read_failed")} — ${err.message}`);
    $("notice").dataset.read = "1";
  }
  renderHeader();
  store.emit("config");
}

function onEvent(kind, message) {
  if (kind === "hello") store.addLoad(message.load || [], true);
  else if (kind === "state") { store.state = message; renderHeader(); }
  else if (kind === "load") store.addLoad([message]);
  else if (kind === "metrics") store.addMetrics(message);
  else if (kind === "log") store.addEvents(message);
  else if (kind === "error") store.liveError = message.message;
  store.emit(kind);
}

function start() {
  applyStatic();
  $("lang").value = lang();
  $("lang").addEventListener("change", (event) => setLang(event.target.value));
  onLangChange(() => { renderHeader(); PANELS[active].show($(`tab-${active}`)); });
  $("token").value = getToken();
  $("token-save").addEventListener("click", () => {
    setToken($("token").value.trim());
    notify(t("token_saved"), true);
    loadConfig();
    if (stream) stream.restart();
  });
  const control = (action) => act(action === "start" ? t("ignite") : t("stop"), () => api("/api/control", { method: "POST", body: { action } }));
  $("ignite").addEventListener("click", () => control("start"));
  $("stop").addEventListener("click", () => control("stop"));
  for (const button of document.querySelectorAll("#tabs button")) button.addEventListener("click", () => showTab(button.dataset.tab));
  store.on((kind) => { if (PANELS[active].update) PANELS[active].update(kind); });
  loadConfig().then(() => showTab(localStorage.getItem(TAB_KEY) || "overview"));
  stream = liveStream(onEvent, (live, error) => {
    store.live = live;
    store.liveError = error;
    renderHeader();
  });
}

start();
