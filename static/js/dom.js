// Tiny element helpers and formatters shared by every page.
// Task data is untrusted: everything here writes text nodes and attributes, never HTML.

/** Where the dashboard is served from, with a trailing slash: "/" or "/celery/" behind a reverse proxy
 * (templates/base.html puts it in <html data-base>, from the request's script root). */
export const BASE = document.documentElement.dataset.base || "/";

/** The URL of a dashboard path: url("api/tasks") -> "/celery/api/tasks". Every URL a script requests or
 * links to is built here (a path with a leading slash is still taken under the base). */
export const url = (path = "") => BASE + String(path).replace(/^\/+/, "");

export const STATES = ["PENDING", "RECEIVED", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED", "REJECTED", "LOST",
  "UNREPORTED"];
// The dashboard's own states, said in words where a badge shows them.
const STATE_TITLES = {
  LOST: "its worker died before the task finished",
  UNREPORTED: "finished, outcome not reported: its worker no longer holds it and no final event came",
};

/** el("a", {href, class, text, title, dataset: {...}}, ...children): children may be strings (text nodes). */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child != null && child !== false) node.append(child); // a string becomes a text node
  }
  return node;
}

/** Set text only when it changed, so live updates do not touch an unchanged DOM. */
export function setText(node, value) {
  const text = value == null ? "" : String(value);
  if (node.textContent !== text) node.textContent = text;
}

/** Set (or remove, for null/undefined) an attribute only when it changed. */
export function setAttr(node, name, value) {
  if (value == null) {
    if (node.hasAttribute(name)) node.removeAttribute(name);
  } else if (node.getAttribute(name) !== String(value)) {
    node.setAttribute(name, String(value));
  }
}

export function show(node, visible) {
  if (node.hidden === visible) node.hidden = !visible;
}

// -- formatters ----------------------------------------------------------------------------------

const pad = (n, width = 2) => String(n).padStart(width, "0");

/** Unix seconds -> "HH:MM:SS" in local time ("" for null). */
export function fmtTime(ts) {
  if (typeof ts !== "number" || !Number.isFinite(ts)) return "";
  const d = new Date(ts * 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Unix seconds -> "YYYY-MM-DD HH:MM:SS.mmm" in local time. */
export function fmtDateTime(ts, { ms = true } = {}) {
  if (typeof ts !== "number" || !Number.isFinite(ts)) return "";
  const d = new Date(ts * 1000);
  const date = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  return `${date} ${fmtTime(ts)}${ms ? "." + pad(d.getMilliseconds(), 3) : ""}`;
}

/** Seconds -> "3 s ago", "5 min ago", "2 h ago", "3 d ago". */
export function fmtAge(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, seconds);
  if (s < 60) return `${Math.floor(s)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export const relTime = (ts) => (typeof ts === "number" ? fmtAge(Date.now() / 1000 - ts) : "");

/** Seconds -> "850 ms", "1.24 s", "2 min 03 s", "1 h 02 min". */
export function fmtDuration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, seconds);
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 10) return `${s.toFixed(2)} s`;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${pad(Math.floor(s % 60))} s`;
  return `${Math.floor(s / 3600)} h ${pad(Math.floor((s % 3600) / 60))} min`;
}

/** A task's runtime as its worker reported it or, for a failed task (Celery's task-failed event carries
 * none), the server's `runtime_derived` (started → failed), labelled so; "" when neither is known. */
export function fmtRuntime(task) {
  if (typeof task.runtime === "number") return fmtDuration(task.runtime);
  if (typeof task.runtime_derived === "number") return `${fmtDuration(task.runtime_derived)} (started → failed)`;
  return "";
}

export const DERIVED_RUNTIME_TITLE = "Derived: from started to failed (Celery's task-failed event carries no runtime)";

/** "+1.234 s" offsets on the task timeline. */
export function fmtDelta(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "";
  return seconds < 60 ? `+${seconds.toFixed(3)} s` : `+${fmtDuration(seconds)}`;
}

/** Celery sends args/kwargs/result as repr strings; anything else is shown as JSON. */
export function fmtValue(value) {
  if (value == null) return "";
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

export const fmtNumber = (n) => (typeof n === "number" ? n.toLocaleString() : "–");

export const shortUuid = (uuid) => (typeof uuid === "string" ? uuid.slice(0, 8) : "");

export const taskHref = (uuid) => url(`tasks/${encodeURIComponent(uuid)}`);

export function taskLink(uuid, label, props = {}) {
  return el("a", { href: taskHref(uuid), title: uuid, ...props }, label ?? uuid);
}

// -- state badges and progress ---------------------------------------------------------------------

/** A badge: CSS colours it by data-state; unknown (custom) states fall back to neutral. */
export function stateBadge(state, props = {}) {
  const badge = el("span", { class: "badge", ...props });
  setBadge(badge, state);
  return badge;
}

export function setBadge(node, state) {
  const text = state == null ? "" : String(state);
  setText(node, text);
  setAttr(node, "data-state", text);
  setAttr(node, "data-known", STATES.includes(text) ? "1" : "0");
  setAttr(node, "title", STATE_TITLES[text] ?? null);
}

/** {current, total} -> {current, total, ratio} when both are numbers, else null. */
export function progressOf(progress) {
  if (!progress || typeof progress !== "object") return null;
  const { current, total } = progress;
  if (typeof current !== "number" || typeof total !== "number" || total <= 0) return null;
  return { current, total, ratio: Math.min(1, Math.max(0, current / total)) };
}

/** A small bar plus "3/10", or null when the task reports no numeric progress. */
export function progressBar(progress, { label = true } = {}) {
  const p = progressOf(progress);
  if (!p) return null;
  const fill = el("span", { class: "bar-fill" });
  fill.style.width = `${(p.ratio * 100).toFixed(1)}%`;
  const bar = el("span", {
    class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": p.total, "aria-valuenow": p.current,
  }, fill);
  return el("span", { class: "progress" }, bar, label ? el("span", { class: "bar-label", text: `${p.current}/${p.total}` }) : null);
}

/** The element id named by the URL's #hash, or "" (a malformed escape such as "#%E0" is not an id). */
export function hashId() {
  try {
    return decodeURIComponent(location.hash.slice(1));
  } catch {
    return "";
  }
}
