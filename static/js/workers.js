// Workers: one row per hostname, updated in place; heartbeat ages and uptimes tick every second.
import { page, startLive } from "./live.js";
import { el, fmtAge, fmtDateTime, fmtNumber, hashId, setAttr, setText, show, url } from "./dom.js";
import { fmtPool, fmtUptime, uptimeNow, workerHref } from "./control.js";

const tbody = document.querySelector("#worker-table tbody");
const emptyRow = document.getElementById("worker-empty");
const emptyPanel = document.getElementById("empty-workers");
const summary = document.getElementById("workers-summary");
const hiddenNote = document.getElementById("workers-hidden");
const hideAfter = Number.parseFloat(page.dataset.hideOfflineAfter) || 0;
let hiddenOffline = 0;
const rows = new Map(); // hostname -> {tr, cells, worker, ageAt, receivedAt}

const COLUMNS = ["hostname", "online", "heartbeat", "pool", "uptime", "processed", "active", "succeeded", "failed",
  "loadavg", "version", "links"];
const NUMERIC = new Set(["processed", "active", "succeeded", "failed"]);

function newRow(hostname) {
  const cells = {};
  const tr = el("tr", { id: `worker-${hostname}`, dataset: { hostname } });
  for (const col of COLUMNS) tr.append(cells[col] = el("td", { class: NUMERIC.has(col) ? `${col} num` : col }));
  cells.hostname.classList.add("mono");
  // The hostname leads to the worker's page (inspect, controls); "tasks" to the task list filtered on it.
  cells.hostname.append(el("a", { class: "worker-link", href: workerHref(hostname), text: hostname,
    title: `Details and controls of ${hostname}` }));
  cells.links.append(el("a", { class: "tasks-link", href: url(`tasks?worker=${encodeURIComponent(hostname)}`), text: "tasks",
    title: `Tasks run by ${hostname}` }));
  cells.loadavg.classList.add("mono");
  cells.pool.classList.add("mono");
  cells.online.append(el("span", { class: "badge" }));
  return { tr, cells, worker: null };
}

/** Seconds since the last heartbeat: the server's age plus the time since we got it (no clock skew). */
function heartbeatAge(row) {
  if (typeof row.ageAt !== "number") return null;
  return row.ageAt + (performance.now() - row.receivedAt) / 1000;
}

function renderHeartbeat(row) {
  const age = heartbeatAge(row);
  const w = row.worker;
  let text = age == null ? "never" : fmtAge(age);
  if (!w.online && typeof w.offline_at === "number" && age == null) text = `offline since ${fmtDateTime(w.offline_at, { ms: false })}`;
  setText(row.cells.heartbeat, text);
  setAttr(row.cells.heartbeat, "title", typeof w.last_heartbeat === "number"
    ? `${fmtDateTime(w.last_heartbeat)} (every ${w.freq ?? "?"} s expected)` : null);
  setText(row.cells.uptime, fmtUptime(uptimeNow(w)));
}

function renderRow(row, w) {
  const { cells } = row;
  row.worker = w;
  row.ageAt = w.heartbeat_age;
  row.receivedAt = performance.now();
  const badge = cells.online.firstChild;
  setText(badge, w.online ? "online" : "offline");
  setAttr(badge, "data-state", w.online ? "online" : "offline");
  setAttr(row.tr, "data-online", w.online ? "true" : "false");
  renderHeartbeat(row);
  setText(cells.pool, fmtPool(w.pool));
  setAttr(cells.pool, "title", w.pool && typeof w.pool === "object" ? String(w.pool.implementation ?? "") : "not inspected yet");
  for (const col of NUMERIC) setText(cells[col], fmtNumber(w[col]));
  setText(cells.loadavg, Array.isArray(w.loadavg) ? w.loadavg.map((n) => (typeof n === "number" ? n.toFixed(2) : String(n))).join("  ") : "–");
  setText(cells.version, [w.sw_ident, w.sw_ver].filter(Boolean).join(" ") || "–");
  setAttr(cells.version, "title", [w.sw_sys, w.pid != null ? `pid ${w.pid}` : null].filter(Boolean).join(", ") || null);
}

function insertSorted(row) {
  const next = [...rows.values()].map((r) => r.tr)
    .find((tr) => tr !== row.tr && tr.dataset.hostname.localeCompare(row.tr.dataset.hostname) > 0);
  tbody.insertBefore(row.tr, next || null);
}

function upsert(w, { append = false } = {}) {
  if (!w || typeof w.hostname !== "string") return;
  let row = rows.get(w.hostname);
  if (!row) {
    row = newRow(w.hostname);
    rows.set(w.hostname, row);
    renderRow(row, w);
    if (append) tbody.append(row.tr); // the snapshot comes sorted by hostname
    else insertSorted(row);
  } else {
    renderRow(row, w);
  }
}

/** 3600 -> "1 h", 90 -> "90 s": the HIDE_OFFLINE_AFTER setting as a reader would write it. */
function fmtSpan(seconds) {
  if (seconds % 86400 === 0) return `${seconds / 86400} d`;
  if (seconds % 3600 === 0) return `${seconds / 3600} h`;
  if (seconds % 60 === 0) return `${seconds / 60} min`;
  return `${seconds} s`;
}

function updateSummary() {
  const empty = rows.size === 0;
  if (empty && !emptyRow.isConnected) tbody.append(emptyRow);
  if (!empty && emptyRow.isConnected) emptyRow.remove();
  setText(emptyRow.firstElementChild, "No workers yet.");
  show(emptyPanel, empty);
  let online = 0;
  for (const row of rows.values()) if (row.worker.online) online++;
  setText(summary, `${online} online · ${rows.size - online} offline`);
  show(hiddenNote, hiddenOffline > 0);
  if (hiddenOffline > 0) {
    const after = hideAfter > 0 ? ` (offline for more than ${fmtSpan(hideAfter)})` : "";
    setText(hiddenNote, `· ${fmtNumber(hiddenOffline)} offline worker${hiddenOffline === 1 ? "" : "s"} hidden${after}`);
  }
}

function remove(hostname) {
  const row = rows.get(hostname);
  if (row) row.tr.remove();
  rows.delete(hostname);
}

function highlightTarget() {
  const id = hashId();
  const target = id && document.getElementById(id);
  if (target && target.dataset.hostname) {
    target.classList.add("targeted");
    target.scrollIntoView({ block: "center" });
  }
}

setInterval(() => {
  for (const row of rows.values()) renderHeartbeat(row);
}, 1000);

startLive({
  payload: { view: "workers" },
  onSnapshot(snap) {
    rows.clear();
    tbody.replaceChildren();
    for (const w of snap.workers || []) upsert(w, { append: true });
    hiddenOffline = typeof snap.hidden_offline === "number" ? snap.hidden_offline : 0;
    updateSummary();
    highlightTarget();
  },
  on: {
    workers(diff) {
      for (const hostname of diff.removed || []) remove(hostname);
      for (const w of diff.workers || []) upsert(w);
      if (typeof diff.hidden_offline === "number") hiddenOffline = diff.hidden_offline;
      updateSummary();
    },
  },
});
