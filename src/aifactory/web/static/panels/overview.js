// Overview: each engine in words, the corpus, training, the production model, charts and alerts.
import { api } from "../api.js";
import { LineChart } from "../chart.js";
import { card, clear, compact, el, kv, num } from "../dom.js";
import { t } from "../i18n.js";
import { store } from "../store.js";

const COLORS = ["#1f6feb", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7ea4"];
const charts = {
  loss: new LineChart({ time: false, testid: "loss-chart" }),
  bpb: new LineChart({ time: false, testid: "bpb-chart" }),
  corpus: new LineChart({ testid: "corpus-chart" }),
  load: new LineChart({ testid: "load-chart" }),
};
let section = null;
let production = undefined; // undefined: not read yet; null: evaluation not available
let datasets = null;
let storage = null;
let lastRead = 0;

export function show(node) {
  section = node;
  if (!store.trainingLoaded) loadTraining();
  if (Date.now() - lastRead > 10000) readSlow();
  render();
}

export function update(kind) {
  if (kind === "state" || kind === "config") render();
  else if (kind === "load") { drawLoad(); renderCorpusGrowth(); }
  else if (kind === "metrics") { drawTraining(); renderTraining(); if (Date.now() - lastRead > 10000) readSlow(); }
}

// Chart ranges (GET /api/metrics/training), finest first, with the span each covers.
const RANGES = [["10s", 600], ["hour", 3600], ["day", 86400], ["week", 604800], ["month", 2592000], ["year", 31536000], ["all", Infinity]];
let range = "auto";

// The finest range that still covers the whole history, so a young factory's chart is not one point.
async function autoRange() {
  const all = await api("/api/metrics/training?range=all");
  if (!all.series.length) return [all, "all"];
  const age = Date.now() / 1000 - all.series[0].ts;
  const [name] = RANGES.find(([, span]) => span >= age);
  return name === "all" ? [all, name] : [await api(`/api/metrics/training?range=${name}`), name];
}

async function loadTraining() {
  try {
    const [body] = range === "auto" ? await autoRange() : [await api(`/api/metrics/training?range=${range}`)];
    store.setTraining(body.series, body.validation_by_language);
    drawTraining();
    renderTraining();
    markReady();
  } catch (err) {
    store.notify(`${t("read_failed")} — ${err.message}`);
  }
}

let slowRead = false;

// Marks the first full render (state, training history, dataset and model read): the load benchmark
// (benchmarks/dashboard_load.py) and the browser test wait for it.
function markReady() {
  if (document.documentElement.dataset.overview === "ready" || !store.state || !store.trainingLoaded || !slowRead) return;
  document.documentElement.dataset.overview = "ready";
  performance.mark("overview-ready");
}

async function readSlow() {
  lastRead = Date.now();
  try { datasets = await api("/api/datasets?limit=1"); } catch { datasets = null; }
  try { storage = await api("/api/storage"); } catch { storage = null; }
  try {
    const body = await api("/api/models");
    production = (body.versions || []).find((v) => v.production) || { none: true };
  } catch (err) {
    production = err.status === 404 ? null : { error: err.message };
  }
  slowRead = true;
  render();
}

export function phaseWords(engine) {
  const phase = t(`phase_${engine.phase}`) === `phase_${engine.phase}` ? engine.phase : t(`phase_${engine.phase}`);
  return engine.detail ? `${phase}: ${engine.detail}` : phase;
}

function alerts(state) {
  const out = [];
  if (!state) return out;
  if (state.system && state.system.ram_percent >= 90) out.push(["bad", t("alert_memory", { p: num(state.system.ram_percent) })]);
  for (const engine of state.engines) {
    if (engine.last_error) out.push(["bad", t("alert_engine_error", { engine: engine.name, node: engine.node_id, error: engine.last_error })]);
    if (/paus|stall/i.test(engine.phase)) out.push(["warn", t("alert_paused", { engine: engine.name, why: engine.detail || engine.phase })]);
  }
  if (state.cluster && state.cluster.nodes_online < state.cluster.nodes_total) {
    out.push(["warn", t("alert_nodes_offline", { n: state.cluster.nodes_total - state.cluster.nodes_online })]);
  }
  return out;
}

function counterGroup(counters, prefix) {
  return Object.entries(counters).filter(([name]) => name.startsWith(prefix)).map(([name, value]) => [name.slice(prefix.length), value]).sort((a, b) => b[1] - a[1]);
}

function growthPerHour() {
  const points = store.load;
  if (points.length < 2) return null;
  const first = points[0], last = points[points.length - 1];
  const hours = (last.ts - first.ts) / 3600;
  return hours > 0 ? (last["docs.stored"] - first["docs.stored"]) / hours : null;
}

function rate(value) {
  return value === null ? "—" : compact(Math.round(value));
}

function renderCorpusGrowth() {
  const node = section && section.querySelector("[data-testid=growth]");
  if (node) node.textContent = rate(growthPerHour());
}

function corpusCard(state) {
  const counters = state ? state.counters : {};
  const version = datasets && datasets.versions[0];
  const parts = [
    el("div", { class: "big", dataset: { testid: "corpus-documents" }, text: num(counters["docs.stored"] || 0) }),
    el("div", { class: "muted", text: t("documents_stored") }),
    kv([
      [t("characters"), compact(counters["docs.chars"] || 0)],
      [t("megabytes"), storage && storage.database_bytes !== null ? num(storage.database_bytes / 1e6, 1) : "—"],
      [t("growth_per_hour"), rate(growthPerHour()), { dataset: { testid: "growth" } }],
      [t("train_tokens"), version ? compact(version.train_tokens) : "—"],
      [t("dataset_version"), version ? version.tag : t("none_yet"), { dataset: { testid: "overview-dataset" } }],
    ]),
  ];
  const sources = counterGroup(counters, "docs.stored.");
  const languages = counterGroup(counters, "docs.language.");
  if (sources.length) parts.push(el("h2", { text: t("by_source") }), kv(sources.map(([k, v]) => [k, num(v)])));
  if (languages.length) parts.push(el("h2", { text: t("by_language") }), kv(languages.map(([k, v]) => [k, num(v)])));
  return card(t("corpus"), ...parts);
}

function latest(predicate) {
  for (let i = store.training.length - 1; i >= 0; i--) if (predicate(store.training[i])) return store.training[i];
  return null;
}

function renderTraining() {
  const holder = section && section.querySelector("[data-testid=training-card]");
  if (holder) holder.replaceWith(trainingCard());
}

function trainingCard() {
  const row = latest(() => true);
  const evalRow = latest((r) => r.val_loss !== null);
  const pairs = row ? [
    [t("step"), num(row.step), { dataset: { testid: "train-step" } }],
    [t("epoch"), num(row.epoch, 2)],
    [t("tokens_seen"), compact(row.tokens_seen)],
    [t("train_loss"), num(row.train_loss, 3)],
    [t("val_loss"), evalRow ? num(evalRow.val_loss, 3) : "—"],
    [t("val_bpb"), evalRow ? num(evalRow.val_bpb, 3) : "—"],
    [t("best_val_loss"), num(row.best_val_loss, 3)],
    [t("tokens_per_sec"), compact(row.tokens_per_sec)],
    [t("mfu"), row.mfu === null ? "—" : `${num(row.mfu * 100, 2)} %`],
  ] : [[t("step"), t("not_started"), { dataset: { testid: "train-step" } }]];
  for (const [language, points] of Object.entries(store.validation)) {
    const last = points[points.length - 1];
    if (last) pairs.push([t("bpb_of", { lang: language }), num(last.val_bpb, 3)]);
  }
  const node = card(t("training"), kv(pairs));
  node.dataset.testid = "training-card";
  return node;
}

function productionCard() {
  let body;
  if (production === undefined) body = el("div", { class: "muted", text: "…" });
  else if (production === null) body = el("div", { class: "muted", text: t("evaluation_not_available") });
  else if (production.error) body = el("div", { class: "bad", text: production.error });
  else if (production.none) body = el("div", { class: "muted", text: t("no_production_model") });
  else body = kv([
    [t("version"), production.name, { dataset: { testid: "production-version" } }],
    [t("score"), production.score === null ? "—" : num(production.score, 3)],
    [t("step"), num(production.step)],
    [t("parameters"), compact(production.parameters)],
    [t("checkpoint"), production.checkpoint],
  ]);
  return card(t("production_model"), body);
}

function drawTraining() {
  const rows = store.training;
  charts.loss.set([
    { name: t("train_loss"), color: COLORS[0], points: rows.map((r) => [r.step, r.train_loss]) },
    { name: t("val_loss"), color: COLORS[1], points: rows.filter((r) => r.val_loss !== null).map((r) => [r.step, r.val_loss]) },
  ]);
  charts.bpb.set(Object.entries(store.validation).map(([language, points], i) => ({
    name: `bpb ${language}`, color: COLORS[(i + 2) % COLORS.length], points: points.map((p) => [p.step, p.val_bpb]),
  })));
}

function drawLoad() {
  const points = store.load;
  charts.corpus.set([{ name: t("documents_stored"), color: COLORS[2], points: points.map((p) => [p.ts, p["docs.stored"]]) }]);
  charts.load.set([
    { name: "CPU %", color: COLORS[0], points: points.map((p) => [p.ts, p.cpu]) },
    { name: "RAM %", color: COLORS[4], points: points.map((p) => [p.ts, p.ram]) },
  ]);
}

function rangeSelect() {
  const choices = [["auto", t("range_auto")], ...RANGES.map(([name]) => [name, t(`range_${name}`)])];
  return el("select", { "aria-label": t("range"), onchange: (e) => { range = e.target.value; loadTraining(); } },
    ...choices.map(([value, text]) => el("option", { value, text, selected: value === range })));
}

function render() {
  if (!section) return;
  const state = store.state;
  const engines = state ? state.engines : [];
  const engineList = engines.length
    ? engines.map((e) => el("div", { class: `engine ${e.last_error ? "error" : e.phase}`, dataset: { testid: `engine-${e.name}` } },
        el("strong", { text: `${e.name} ` }), el("span", { class: "muted", text: `(${e.node_id}) ` }),
        el("span", { text: phaseWords(e) }),
        e.last_error ? el("div", { class: "bad", text: e.last_error }) : null))
    : [el("div", { class: "muted", text: t("no_engines") })];
  const alertList = alerts(state);
  drawTraining();
  drawLoad();
  clear(section, el("div", { class: "grid" },
    card(t("engines"), ...engineList),
    corpusCard(state),
    trainingCard(),
    productionCard(),
    card(t("alerts"), ...(alertList.length ? alertList.map(([kind, text]) => el("div", { class: `alert ${kind}`, text })) : [el("div", { class: "muted good", text: t("no_alerts") })])),
    card(t("chart_loss"), rangeSelect(), ...charts.loss.nodes()),
    card(t("chart_bpb"), ...charts.bpb.nodes()),
    card(t("chart_corpus"), ...charts.corpus.nodes()),
    card(t("chart_load"), ...charts.load.nodes()),
  ));
  markReady();
}
