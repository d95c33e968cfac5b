// Evaluation and models: history with parts and per-prompt details, growth samples side by side, Run Eval
// with live progress, and the registry with Promote Best -> Production, Force (confirmed) and Rollback.
// The back end is the evaluation/registry issue's; until it is installed its 404 reads "not available".
import { api } from "../api.js";
import { clear, el, table } from "../dom.js";
import { t } from "../i18n.js";
import { store } from "../store.js";

let section = null;
let views = {};
let decision = null;
let polling = null;

export function show(node) {
  section = node;
  refresh();
}

export function update() {}

async function read(path) {
  try { return await api(path); } catch (err) { return { error: err.message, status: err.status }; }
}

async function refresh() {
  const [evals, status, growth, registry] = await Promise.all([read("/api/evals"), read("/api/evals/status"), read("/api/evals/growth"), read("/api/models")]);
  views = { evals, status, growth, registry };
  render();
  const running = status && (status.running || status.state === "running" || status.status === "running");
  clearTimeout(polling);
  if (running && section && !section.hidden) polling = setTimeout(refresh, 2000); // live progress of a run
}

// The first list in an answer ({evals: [...]}, {models: [...]} or a bare list).
function listOf(body) {
  if (Array.isArray(body)) return body;
  for (const value of Object.values(body || {})) if (Array.isArray(value)) return value;
  return [];
}

function scalarColumns(rows, limit = 8) {
  const keys = [];
  for (const row of rows.slice(0, 5)) for (const [k, v] of Object.entries(row)) if ((v === null || typeof v !== "object") && !keys.includes(k)) keys.push(k);
  return keys.slice(0, limit).map((k) => [k, (r) => (r[k] === null || r[k] === undefined ? "" : typeof r[k] === "number" ? String(Math.round(r[k] * 1000) / 1000) : String(r[k]))]);
}

function pretty(value) {
  return el("pre", { class: "block", text: JSON.stringify(value, null, 2) });
}

function unavailable(body) {
  if (!body || !body.error) return null;
  return el("div", { class: body.status === 404 ? "muted" : "bad", dataset: { testid: "eval-unavailable" }, text: body.status === 404 ? t("evaluation_not_available") : body.error });
}

function evalsCard() {
  const body = views.evals;
  const detail = el("div");
  const rows = body && !body.error ? listOf(body) : [];
  const columns = [...scalarColumns(rows), ["", (r) => el("button", { text: t("details"), onclick: () => clear(detail, pretty(r)) })]];
  const status = views.status && !views.status.error ? views.status : null;
  const progress = status && typeof status.progress === "number" ? status.progress : null;
  return el("div", { class: "card wide" }, el("h2", { text: t("evaluations") }), unavailable(body),
    el("div", { class: "row" },
      el("button", { class: "primary", text: t("run_eval"), onclick: () => store.act(t("run_eval"), () => api("/api/evals/run", { method: "POST", body: {} })).then(refresh) }),
      status ? el("span", { text: `${status.state || status.status || (status.running ? "running" : "idle")} ${status.message || ""}` }) : null),
    progress !== null ? (() => { const bar = el("div"); bar.style.width = `${Math.round(progress * 100)}%`; return el("div", { class: "progress" }, bar); })() : null,
    rows.length ? table(columns, rows) : body && !body.error ? el("div", { class: "muted", text: t("none_yet") }) : null,
    detail);
}

function growthCard() {
  const body = views.growth;
  const samples = body && !body.error ? listOf(body) : [];
  const columns = samples.map((sample) => {
    const answers = listOf(sample.outputs ? { o: sample.outputs } : sample.samples ? { s: sample.samples } : sample);
    return el("div", { class: "card" },
      el("h2", { text: sample.prompt || sample.name || "" }),
      ...answers.map((a) => el("div", {}, el("div", { class: "muted", text: a.checkpoint || a.model || a.step || "" }), el("div", { class: "msg assistant", text: a.text ?? a.output ?? a.completion ?? JSON.stringify(a) }))));
  });
  return el("div", { class: "card wide" }, el("h2", { text: t("growth_samples") }), unavailable(body),
    columns.length ? el("div", { class: "side-by-side" }, ...columns) : body && !body.error ? el("div", { class: "muted", text: t("none_yet") }) : null);
}

async function promote(force) {
  if (force && !window.confirm(t("confirm_force"))) return;
  decision = await store.act(force ? t("force_promote") : t("promote_best"), () => api("/api/models/promote", { method: "POST", body: force ? { force: true } : {} }));
  refresh();
}

function registryCard() {
  const body = views.registry;
  const rows = body && !body.error ? listOf(body) : [];
  return el("div", { class: "card wide" }, el("h2", { text: t("registry") }), unavailable(body),
    el("div", { class: "row" },
      el("button", { class: "primary", dataset: { testid: "promote" }, text: t("promote_best"), onclick: () => promote(false) }),
      el("button", { class: "danger", dataset: { testid: "force-promote" }, text: t("force_promote"), onclick: () => promote(true) }),
      el("button", { text: t("rollback"), onclick: () => store.act(t("rollback"), () => api("/api/models/rollback", { method: "POST", body: {} })).then(refresh) })),
    decision ? el("div", { dataset: { testid: "gate-decision" } }, el("h2", { text: t("gate_decision") }), pretty(decision)) : null,
    rows.length ? table(scalarColumns(rows, 10), rows, { "data-testid": "models-table" }) : body && !body.error ? el("div", { class: "muted", text: t("none_yet") }) : null);
}

function render() {
  if (!section) return;
  clear(section, el("div", { class: "grid" }, evalsCard(), growthCard(), registryCard()));
}

