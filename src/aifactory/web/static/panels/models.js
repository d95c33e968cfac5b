// Evaluation and models (docs/evaluation.md): the evaluation history with its parts and per-prompt
// results, growth samples side by side across checkpoints, Run Eval with live progress, and the model
// registry with Promote Best -> Production (the gate's decision and scores), Force (confirmed), Rollback.
// On a factory without the evaluation back end, its 404 reads "not available".
import { api } from "../api.js";
import { clear, el, kv, num, table, when } from "../dom.js";
import { t } from "../i18n.js";
import { store } from "../store.js";

let section = null;
let views = {};
let decision = null;
let polling = null;
let chosenRun = null;

export function show(node) {
  section = node;
  refresh();
}

export function update() {}

async function read(path) {
  try { return await api(path); } catch (err) { return { error: err.message, status: err.status }; }
}

async function refresh() {
  const [evals, status, growth, registry] = await Promise.all([read("/api/evals?limit=50"), read("/api/evals/status"), read("/api/evals/growth"), read("/api/models")]);
  views = { evals, status, growth, registry };
  render();
  const job = status && status.job;
  clearTimeout(polling);
  if (job && job.status === "running" && section && !section.hidden) polling = setTimeout(refresh, 1500); // live progress
}

function unavailable(body) {
  if (!body || !body.error) return null;
  const missing = body.status === 404;
  return el("div", { class: missing ? "muted" : "bad", dataset: { testid: "eval-unavailable" }, text: missing ? t("evaluation_not_available") : body.error });
}

function score(value) {
  return value === null || value === undefined ? "—" : num(value, 3);
}

function runDetail(run) {
  return el("div", { dataset: { testid: "eval-detail" } },
    el("h2", { text: `${t("evaluation")} #${run.id}: ${run.model} (${t("step")} ${num(run.step)})` }),
    table([[t("part"), (p) => p.part], [t("language"), (p) => p.language || t("overall")], [t("value"), (p) => score(p.value), "num"], [t("chance"), (p) => score(p.chance), "num"], [t("items"), (p) => num(p.items), "num"]], run.parts),
    table([[t("prompt"), (p) => p.prompt], [t("output"), (p) => p.output], [t("score"), (p) => score(p.score), "num"], [t("matched"), (p) => p.matched.join(", ")]], run.prompts));
}

function jobLine(job) {
  if (!job) return el("span", { class: "muted", text: t("no_eval_running") });
  const bar = el("div");
  bar.style.width = `${Math.round((job.progress || 0) * 100)}%`;
  return el("div", { dataset: { testid: "eval-job" } },
    el("div", { text: `#${job.id} ${job.model}: ${job.status} — ${job.message || ""} ${job.error || ""}` }),
    el("div", { class: "progress" }, bar));
}

function evalsCard() {
  const body = views.evals;
  const runs = body && body.runs ? body.runs : [];
  const job = views.status && !views.status.error ? views.status.job : null;
  const running = job && job.status === "running";
  return el("div", { class: "card wide" }, el("h2", { text: t("evaluations") }), unavailable(body),
    el("div", { class: "row" },
      el("button", { class: "primary", disabled: running, text: t("run_eval"), onclick: () => store.act(t("run_eval"), () => api("/api/evals/run", { method: "POST", body: {} })).then(refresh) }),
      views.status && !views.status.error ? jobLine(job) : null),
    body && !body.error ? table([
      ["#", (r) => r.id, "num"], [t("model"), (r) => r.model], [t("step"), (r) => num(r.step), "num"], [t("score"), (r) => score(r.score), "num"],
      [t("mc_accuracy"), (r) => score(r.mc_accuracy), "num"], ["bpb", (r) => score(r.bpb), "num"], [t("prompt_score"), (r) => score(r.prompt_score), "num"],
      [t("created"), (r) => when(r.created_at)], ["", (r) => el("button", { text: t("details"), onclick: () => { chosenRun = r.id; render(); } })],
    ], runs, { "data-testid": "evals-table" }) : null,
    runs.filter((r) => r.id === chosenRun).map(runDetail));
}

function growthCard() {
  const body = views.growth;
  const prompts = body && body.prompts ? body.prompts : [];
  return el("div", { class: "card wide" }, el("h2", { text: t("growth_samples") }), unavailable(body),
    body && !body.error && !prompts.length ? el("div", { class: "muted", text: t("none_yet") }) : null,
    prompts.map((p) => el("div", {},
      el("h2", { text: `${p.prompt} (${p.language})` }),
      el("div", { class: "side-by-side" }, ...p.samples.map((s) => el("div", { class: "card" },
        el("div", { class: "muted", text: `${t("step")} ${num(s.step)} — ${when(s.created_at)}` }),
        el("div", { class: "msg assistant", text: s.output })))))));
}

async function promote(force) {
  if (force && !window.confirm(t("confirm_force"))) return;
  const label = force ? t("force_promote") : t("promote_best");
  try {
    decision = await api(`/api/models/promote${force ? "?force=true" : ""}`, { method: "POST", body: {} });
    store.notify(`${label}: ${decision.promoted ? t("promoted", { v: decision.version }) : decision.rule}`, true);
  } catch (err) {
    decision = err.body && err.body.detail && typeof err.body.detail === "object" ? err.body.detail : null;
    store.notify(`${label}: ${t("failed")} — ${err.message}`);
  }
  refresh();
}

function decisionCard() {
  if (!decision) return null;
  const pairs = [
    [t("promoted_q"), decision.promoted ? "✓" : "✗", { dataset: { testid: "gate-promoted" } }],
    [t("rule"), decision.rule], [t("version"), decision.version ?? "—"], [t("forced"), decision.forced ? "✓" : ""],
    [t("candidate_score"), score(decision.candidate_score)], [t("production_score"), score(decision.production_score)],
    [t("min_score"), score(decision.min_score)], [t("tolerance"), score(decision.tolerance)],
  ];
  return el("div", { dataset: { testid: "gate-decision" } }, el("h2", { text: t("gate_decision") }), kv(pairs));
}

function registryCard() {
  const body = views.registry;
  const versions = body && body.versions ? body.versions : [];
  return el("div", { class: "card wide" }, el("h2", { text: t("registry") }), unavailable(body),
    el("div", { class: "row" },
      el("button", { class: "primary", dataset: { testid: "promote" }, text: t("promote_best"), onclick: () => promote(false) }),
      el("button", { class: "danger", dataset: { testid: "force-promote" }, text: t("force_promote"), onclick: () => promote(true) }),
      el("button", { text: t("rollback"), onclick: () => store.act(t("rollback"), () => api("/api/models/rollback", { method: "POST", body: {} })).then(refresh) })),
    decisionCard(),
    body && !body.error ? table([
      [t("version"), (v) => v.name], [t("production"), (v) => (v.production ? "★" : v.version === body.previous ? t("rollback_target") : "")],
      [t("step"), (v) => num(v.step), "num"], [t("score"), (v) => score(v.score), "num"], [t("parameters"), (v) => num(v.parameters), "num"],
      [t("origin"), (v) => v.origin], [t("created"), (v) => when(v.created_at)], [t("checkpoint"), (v) => v.checkpoint + (v.deleted ? ` (${t("deleted")})` : "")],
    ], versions, { "data-testid": "models-table" }) : null);
}

function render() {
  if (!section) return;
  clear(section, el("div", { class: "grid" }, evalsCard(), growthCard(), registryCard()));
}
