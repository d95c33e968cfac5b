// Migration Ops: export a checkpoint to HF / GGUF / Ollama / LM Studio, or start a LoRA fine-tune; the
// jobs with their progress and download links.
import { api, getToken } from "../api.js";
import { clear, el, table, when } from "../dom.js";
import { t } from "../i18n.js";
import { store } from "../store.js";

let section = null;
let jobs = null;
let timer = null;

export function show(node) {
  section = node;
  refresh();
}

export function update() {}

async function refresh() {
  try { jobs = (await api("/api/exports")).jobs; } catch (err) { jobs = { error: err.message }; }
  render();
  clearTimeout(timer);
  const busy = Array.isArray(jobs) && jobs.some((j) => ["queued", "running", "cancelling"].includes(j.status));
  if (busy && section && !section.hidden) timer = setTimeout(refresh, 2000);
}

// A download that needs the read token: fetched with the header, then saved from a blob URL.
async function download(job) {
  try {
    const headers = getToken() ? { "x-admin-token": getToken() } : {};
    const reply = await fetch(job.download, { headers });
    if (!reply.ok) throw new Error(`${reply.status}: ${(await reply.text()).slice(0, 200)}`);
    const url = URL.createObjectURL(await reply.blob());
    const link = el("a", { href: url, download: `aifactory-export-${job.id}` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (err) {
    store.notify(`${t("download")}: ${t("failed")} — ${err.message}`);
  }
}

function progressBar(job) {
  const bar = el("div");
  bar.style.width = `${Math.round((job.progress || 0) * 100)}%`;
  const words = [job.status, job.message !== job.status ? job.message : "", job.error].filter(Boolean).join(" — ");
  return el("div", {}, el("div", { class: "progress" }, bar), el("span", { class: job.error ? "bad" : "muted", text: words }));
}

let form = null; // made once, so a refresh of the job list keeps what the user typed

function render() {
  if (!section) return;
  form ||= el("form", { class: "row", onsubmit: (e) => { e.preventDefault(); submit(form); } },
    el("select", { name: "target" }, ...["hf", "gguf", "ollama", "lmstudio", "lora"].map((v) => el("option", { value: v, text: t(`target_${v}`) }))),
    el("input", { name: "checkpoint", placeholder: t("checkpoint_hint") }),
    el("input", { name: "name", placeholder: t("name_hint") }),
    el("input", { name: "base", placeholder: t("lora_base_hint") }),
    el("button", { class: "primary", text: t("start_job") }));
  clear(section, el("div", { class: "grid" }, el("div", { class: "card wide" },
    el("h2", { text: t("tab_ops") }), form,
    jobs && jobs.error ? el("div", { class: "bad", text: jobs.error }) : null,
    Array.isArray(jobs) ? table([
      ["#", (j) => j.id, "num"], [t("target"), (j) => j.target], [t("progress"), progressBar], [t("created"), (j) => when(j.created_at)],
      ["", (j) => el("span", {},
        j.download ? el("button", { text: t("download"), onclick: () => download(j) }) : null,
        ["queued", "running"].includes(j.status) ? el("button", { text: t("cancel"), onclick: () => store.act(t("cancel"), () => api(`/api/exports/${j.id}/cancel`, { method: "POST" })).then(refresh) }) : null)],
    ], jobs) : null)));
}

async function submit(form) {
  const body = { target: form.elements.target.value };
  for (const key of ["checkpoint", "name", "base"]) if (form.elements[key].value.trim()) body[key] = form.elements[key].value.trim();
  await store.act(t("start_job"), () => api("/api/exports", { method: "POST", body }));
  refresh();
}
