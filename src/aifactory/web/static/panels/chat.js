// AI Chat: multi-turn, streamed token by token (OpenAI-compatible chat API), with the sampling settings,
// RAG on/off and its sources as links, a stop button, and which model answered how fast.
import { getToken, readEvents } from "../api.js";
import { clear, el, num, safeLink } from "../dom.js";
import { t } from "../i18n.js";
import { store } from "../store.js";

let section = null;
const turns = []; // {role, content, meta?, sources?}
let controller = null;
let logBox = null;
const params = { max_tokens: 64, temperature: 0.8, top_p: 0.95, top_k: 50, repetition_penalty: 1.08, rag: true };

export function show(node) {
  section = node;
  render();
}

export function update() {}

function message(turn) {
  const node = el("div", { class: `msg ${turn.role}`, dataset: { testid: `msg-${turn.role}` } });
  node.append(el("span", { class: "content", text: turn.content }));
  if (turn.sources && turn.sources.length) {
    const cited = turn.sources.map((s) => el("div", {}, safeLink(s.url, s.title || s.url), s.passage ? el("div", { class: "muted", text: s.passage }) : null));
    node.append(el("details", { class: "sources", open: true }, el("summary", { class: "muted", text: `${t("sources")} ${turn.sources.length}` }), ...cited));
  }
  if (turn.meta) node.append(el("div", { class: "meta", dataset: { testid: "chat-meta" }, text: turn.meta }));
  return node;
}

function drawTurns() {
  if (!logBox) return;
  logBox.replaceChildren(...turns.map(message));
  logBox.scrollTop = logBox.scrollHeight;
}

async function send(text) {
  if (!text || controller) return;
  turns.push({ role: "user", content: text });
  const answer = { role: "assistant", content: "", meta: t("thinking") };
  turns.push(answer);
  drawTurns();
  render();
  const node = logBox.lastChild;
  const content = node.querySelector(".content");
  const meta = () => node.querySelector(".meta");
  controller = new AbortController();
  const started = performance.now();
  let first = null;
  let pieces = 0;
  let model = "";
  let usage = null;
  try {
    const headers = { "Content-Type": "application/json", Accept: "text/event-stream" };
    if (getToken()) headers["x-admin-token"] = getToken();
    const body = {
      messages: turns.slice(0, -1).map(({ role, content: c }) => ({ role, content: c })),
      stream: true, stream_options: { include_usage: true },
      max_tokens: params.max_tokens, temperature: params.temperature, top_p: params.top_p, top_k: params.top_k,
      repetition_penalty: params.repetition_penalty, rag: params.rag,
    };
    const reply = await fetch("/v1/chat/completions", { method: "POST", headers, body: JSON.stringify(body), signal: controller.signal });
    if (!reply.ok) {
      const raw = await reply.text();
      let detail = raw;
      try { const parsed = JSON.parse(raw); detail = (parsed.error && parsed.error.message) || parsed.detail || raw; } catch { /* keep text */ }
      throw new Error(`${reply.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
    }
    await readEvents(reply, (_kind, data) => {
      if (data === "[DONE]" || typeof data !== "object") return;
      if (data.error) throw new Error(data.error.message || JSON.stringify(data.error));
      model = data.model || model;
      if (data.sources) answer.sources = data.sources;
      if (data.usage) usage = data.usage;
      for (const choice of data.choices || []) {
        const piece = choice.delta && choice.delta.content;
        if (piece) {
          if (first === null) first = performance.now();
          pieces++;
          answer.content += piece;
          content.textContent = answer.content;
        }
      }
    }, controller.signal);
    const seconds = (performance.now() - started) / 1000;
    const tokens = usage ? usage.completion_tokens : pieces;
    answer.meta = t("answered_by", { model, tokens, speed: num(tokens / Math.max(seconds, 1e-3), 1), ttft: first === null ? "—" : num((first - started) / 1000, 2) });
  } catch (err) {
    answer.meta = err.name === "AbortError" ? t("stopped") : `${t("failed")} — ${err.message}`;
    if (err.name !== "AbortError") store.notify(`${t("tab_chat")}: ${answer.meta}`);
  } finally {
    controller = null;
    drawTurns();
    render();
    if (meta()) meta().textContent = answer.meta;
  }
}

function field(label, key, attrs) {
  const input = el("input", { ...attrs, value: params[key], onchange: (e) => { params[key] = Number(e.target.value); } });
  return el("label", { class: "field" }, label, input);
}

function render() {
  if (!section) return;
  const limit = (store.config && store.config.max_generate_tokens) || 256;
  params.max_tokens = Math.min(params.max_tokens, limit);
  if (!logBox) logBox = el("div", { id: "chat-log", dataset: { testid: "chat-log" } });
  const input = el("textarea", { dataset: { testid: "chat-input" }, placeholder: t("chat_placeholder") });
  input.addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send(input.value.trim()); input.value = ""; } });
  const busy = controller !== null;
  const controls = el("div", { class: "card" }, el("h2", { text: t("parameters") }),
    field(t("max_tokens_capped", { n: limit }), "max_tokens", { type: "number", min: 1, max: limit }),
    field(t("temperature"), "temperature", { type: "number", min: 0, max: 2, step: 0.05 }),
    field("top-p", "top_p", { type: "number", min: 0.01, max: 1, step: 0.01 }),
    field("top-k", "top_k", { type: "number", min: 0, max: 1000 }),
    field(t("repetition_penalty"), "repetition_penalty", { type: "number", min: 1, max: 2, step: 0.01 }),
    el("label", { class: "field" }, el("span", {}, el("input", { type: "checkbox", checked: params.rag, dataset: { testid: "rag" }, onchange: (e) => { params.rag = e.target.checked; } }), " RAG")),
    el("button", { text: t("clear_chat"), onclick: () => { turns.length = 0; drawTurns(); } }));
  clear(section, el("div", { class: "chat" },
    el("div", { class: "card" }, el("h2", { text: t("tab_chat") }), logBox,
      input,
      el("div", { class: "row" },
        el("button", { class: "primary", dataset: { testid: "chat-send" }, disabled: busy, text: t("send"), onclick: () => { send(input.value.trim()); input.value = ""; } }),
        el("button", { class: "danger", dataset: { testid: "chat-stop" }, disabled: !busy, text: t("stop_generation"), onclick: () => controller && controller.abort() }))),
    controls));
  drawTurns();
}
