// Talking to the factory: JSON calls with the admin token (kept in this browser, sent as x-admin-token),
// and the one live stream, read with fetch so the token travels in a header and never in the URL.
import { t } from "./i18n.js";

const TOKEN_KEY = "aifactory.token";

export function getToken() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) localStorage.setItem(TOKEN_KEY, value);
  else localStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, message, body = null) {
    super(message);
    this.status = status;
    this.body = body; // the parsed answer (a refused promotion's 409 carries the gate's scores and rule)
  }
}

function headers(extra = {}) {
  const out = { Accept: "application/json", ...extra };
  const token = getToken();
  if (token) out["x-admin-token"] = token;
  return out;
}

function detailOf(body, fallback) {
  if (!body) return fallback;
  const detail = body.detail ?? body.error ?? body.message;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  if (detail && typeof detail === "object") return detail.message || detail.rule || JSON.stringify(detail);
  return fallback;
}

export async function api(path, { method = "GET", body, signal } = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }), signal };
  if (body !== undefined) init.body = JSON.stringify(body);
  let reply;
  try {
    reply = await fetch(path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, t("unreachable"));
  }
  const text = await reply.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!reply.ok) throw new ApiError(reply.status, `${reply.status}: ${detailOf(data, text.slice(0, 300) || reply.statusText)}`, data);
  return data;
}

// Reads a text/event-stream response and calls onEvent(kind, data) per message.
export async function readEvents(reply, onEvent, signal) {
  const reader = reply.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  while (true) {
    if (signal && signal.aborted) { reader.cancel().catch(() => {}); return; }
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let kind = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) kind = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (!data.length) continue;
      const raw = data.join("\n");
      let parsed = raw;
      try { parsed = JSON.parse(raw); } catch { /* e.g. [DONE] */ }
      onEvent(kind, parsed);
    }
  }
}

// The live feed: reconnects by itself (1 s, then up to 15 s apart) and reports whether it is connected.
export function liveStream(onEvent, onStatus) {
  let delay = 1000;
  let stopped = false;
  let controller = null;
  async function connect() {
    while (!stopped) {
      controller = new AbortController();
      try {
        const reply = await fetch("/api/events/stream", { headers: headers({ Accept: "text/event-stream" }), signal: controller.signal, cache: "no-store" });
        if (!reply.ok) {
          const text = await reply.text();
          let data = null;
          try { data = JSON.parse(text); } catch { data = null; }
          onStatus(false, `${reply.status}: ${detailOf(data, reply.statusText)}`);
        } else {
          onStatus(true, "");
          delay = 1000;
          await readEvents(reply, onEvent, controller.signal);
          onStatus(false, "");
        }
      } catch (err) {
        onStatus(false, err.name === "AbortError" ? "" : t("unreachable"));
      }
      if (stopped) return;
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 15000);
    }
  }
  connect();
  return {
    restart() { if (controller) controller.abort(); delay = 200; },
    stop() { stopped = true; if (controller) controller.abort(); },
  };
}
