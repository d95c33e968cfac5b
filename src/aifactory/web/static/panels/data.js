// Data: crawl counters, dropped pages by domain and reason (with any page's explanation), the frontier,
// dataset versions and source policies (list and edit form).
import { api } from "../api.js";
import { card, clear, compact, el, kv, num, safeLink, table, when } from "../dom.js";
import { t } from "../i18n.js";
import { store } from "../store.js";

let section = null;
let data = {};
let explained = null;
let lastRead = 0;

export function show(node) {
  section = node;
  refresh();
}

export function update(kind) {
  if (kind === "state" && Date.now() - lastRead > 5000) refresh();
}

async function read(path) {
  try { return await api(path); } catch (err) { return { error: err.message }; }
}

async function refresh() {
  lastRead = Date.now();
  const [rejections, frontier, datasets, policies] = await Promise.all([
    read("/api/documents/rejections?limit=50"), read("/api/frontier?limit=30"), read("/api/datasets?limit=20"), read("/api/policies"),
  ]);
  data = { rejections, frontier, datasets, policies };
  render();
}

async function explain(url) {
  explained = { url, pending: true };
  render();
  explained = await read(`/api/documents/explain?url=${encodeURIComponent(url)}`);
  explained.url ||= url;
  render();
}

function failed(part) {
  return part && part.error ? el("div", { class: "bad", text: part.error }) : null;
}

function crawlCard() {
  const counters = (store.state && store.state.counters) || {};
  const rows = Object.entries(counters).filter(([k]) => k.startsWith("crawl.") || k.startsWith("docs.filtered.") || k.startsWith("docs.duplicate.") || k.startsWith("docs.blocked.")).sort();
  return card(t("crawl_counters"), rows.length ? kv(rows.map(([k, v]) => [k, num(v)])) : el("div", { class: "muted", text: t("none_yet") }));
}

function rejectionsCard() {
  const r = data.rejections || {};
  const node = el("div", { class: "card wide" }, el("h2", { text: t("rejections") }), failed(r));
  if (!r.error && r.counts) {
    node.append(el("div", { class: "muted", text: t("rejections_total", { n: num(r.total) }) }),
      table([[t("domain"), (c) => c.domain], [t("reason"), (c) => c.reason], [t("count"), (c) => num(c.count), "num"]], r.counts.slice(0, 30)),
      table([
        [t("page"), (x) => safeLink(x.url)],
        [t("reason"), (x) => `${x.reason} ${x.detail}`],
        [t("value"), (x) => `${num(x.value, 3)} / ${num(x.threshold, 3)}`, "num"],
        [t("language"), (x) => x.language],
        ["", (x) => el("button", { text: t("explain"), onclick: () => explain(x.url) })],
      ], r.rejections, { "data-testid": "rejections-table" }));
  }
  const form = el("form", { class: "row", onsubmit: (e) => { e.preventDefault(); explain(form.elements.url.value.trim()); } },
    el("input", { name: "url", type: "url", placeholder: "https://…", size: 50 }), el("button", { text: t("explain") }));
  node.append(form);
  if (explained) node.append(explanation(explained));
  return node;
}

function explanation(x) {
  if (x.pending) return el("div", { class: "muted", text: "…" });
  if (x.error) return el("div", { class: "bad", text: x.error });
  const parts = (x.parts || []).map((p) => el("div", {},
    el("div", { class: p.accepted ? "good" : "bad", text: `${p.url}: ${p.accepted ? t("kept") : t("dropped")} ${p.reason || ""} (${p.language}, ${num(p.chars)} ${t("characters")})` }),
    table([[t("rule"), (c) => `${c.rule} ${c.part || ""} ${c.variant || ""}`], [t("value"), (c) => num(c.value, 3), "num"], [t("threshold"), (c) => `${c.bound || ""} ${num(c.threshold, 3)}`, "num"], ["", (c) => (c.passed ? "✓" : "✗")]], p.checks || [])));
  const recorded = (x.recorded || []).map((r) => el("div", { class: "bad", text: `${when(r.created_at)}: ${t("dropped")} ${r.reason} ${r.detail || ""} (${num(r.value, 3)} / ${num(r.threshold, 3)})` }));
  return el("div", { dataset: { testid: "explanation" } },
    el("h2", { text: `${t("explain")}: ${x.url}` }),
    ...recorded,
    el("div", { class: "muted", text: [x.source, x.source_note, x.fetch_error, x.extraction_failed].filter(Boolean).join(" — ") || (x.known ? "" : t("unknown_page")) }),
    ...parts);
}

function frontierCard() {
  const f = data.frontier || {};
  return el("div", { class: "card wide" }, el("h2", { text: t("frontier") }), failed(f),
    f.hosts ? table([[t("host"), (h) => h.origin], [t("source"), (h) => h.source], [t("queued"), (h) => (h.has_work ? "✓" : "")], [t("pages"), (h) => num(h.pages_fetched), "num"], [t("urls_known"), (h) => num(h.urls_known), "num"]], f.hosts) : null,
    f.queued ? table([[t("next_urls"), (u) => safeLink(u.url)], [t("depth"), (u) => u.depth, "num"], [t("due"), (u) => when(u.next_fetch_at)]], f.queued) : null);
}

function datasetsCard() {
  const d = data.datasets || {};
  return el("div", { class: "card wide" }, el("h2", { text: t("dataset_versions") }), failed(d),
    d.versions ? (d.versions.length ? table([
      [t("version"), (v) => v.tag], [t("documents"), (v) => num(v.documents), "num"], [t("new_documents"), (v) => num(v.new_documents), "num"],
      [t("train_tokens"), (v) => compact(v.train_tokens), "num"], [t("val_tokens"), (v) => compact(v.val_tokens), "num"], [t("created"), (v) => when(v.created_at)],
    ], d.versions, { "data-testid": "datasets-table" }) : el("div", { class: "muted", text: t("none_yet") })) : null,
    d.tokenizers && d.tokenizers.length ? table([[t("tokenizer"), (k) => `g${k.generation} ${k.model_type} ${k.vocab_size}`], [t("languages"), (k) => k.languages], [t("note"), (k) => k.note]], d.tokenizers) : null);
}

function policiesCard() {
  const p = data.policies || {};
  const form = el("form", { class: "row", dataset: { testid: "policy-form" }, onsubmit: (e) => { e.preventDefault(); savePolicy(form); } },
    el("input", { name: "domain_pattern", placeholder: "example.com", required: true }),
    el("input", { name: "license_tag", placeholder: "license", value: "unknown" }),
    el("input", { name: "base_weight", type: "number", step: "0.1", min: "0", max: "100", value: "1" }),
    el("label", {}, el("input", { name: "allow_training", type: "checkbox", checked: true }), t("allow_training")),
    el("input", { name: "notes", placeholder: t("notes") }),
    el("button", { text: t("save") }));
  const edit = (row) => {
    for (const key of ["domain_pattern", "license_tag", "base_weight", "notes"]) form.elements[key].value = row[key];
    form.elements.allow_training.checked = row.allow_training;
  };
  return el("div", { class: "card wide" }, el("h2", { text: t("policies") }), failed(p),
    p.policies ? table([[t("domain"), (r) => r.domain_pattern], [t("source"), (r) => r.source_type], [t("license"), (r) => r.license_tag], [t("allow_training"), (r) => (r.allow_training ? "✓" : "✗")], [t("weight"), (r) => r.base_weight, "num"], [t("notes"), (r) => r.notes], ["", (r) => el("button", { text: t("edit"), onclick: () => edit(r) })]], p.policies) : null,
    form);
}

async function savePolicy(form) {
  const body = {
    domain_pattern: form.elements.domain_pattern.value.trim(),
    license_tag: form.elements.license_tag.value.trim() || "unknown",
    base_weight: Number(form.elements.base_weight.value || 1),
    allow_training: form.elements.allow_training.checked,
    notes: form.elements.notes.value,
  };
  await store.act(t("policies"), () => api("/api/policies", { method: "POST", body }));
  refresh();
}

function render() {
  if (!section) return;
  clear(section, el("div", { class: "grid" }, crawlCard(), rejectionsCard(), frontierCard(), datasetsCard(), policiesCard()));
}
