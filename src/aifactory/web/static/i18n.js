// Japanese and English UI text: chosen from the browser's language, switched by the header's selector
// and remembered in this browser.
import { STRINGS } from "./strings.js";

const LANG_KEY = "aifactory.lang";
let current = pick();
const listeners = [];

function pick() {
  const saved = localStorage.getItem(LANG_KEY);
  if (saved && STRINGS[saved]) return saved;
  const wanted = (navigator.languages && navigator.languages[0]) || navigator.language || "en";
  return wanted.toLowerCase().startsWith("ja") ? "ja" : "en";
}

export function lang() {
  return current;
}

// t("rejections_total", {n: 3}) -> the text in the current language, {name} placeholders filled in.
export function t(key, values = {}) {
  const text = STRINGS[current][key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (values[name] ?? `{${name}}`));
}

export function setLang(value) {
  if (!STRINGS[value]) return;
  current = value;
  localStorage.setItem(LANG_KEY, value);
  applyStatic();
  for (const listener of listeners) listener(value);
}

export function onLangChange(listener) {
  listeners.push(listener);
}

// The fixed text of index.html: elements with data-i18n (text) or data-i18n-placeholder.
export function applyStatic() {
  document.documentElement.lang = current;
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
}
