// Task list: a live table patched row by row (update in place, insert at the top, drop removed).
import { page, startLive } from "./live.js";
import {
  el, fmtDateTime, fmtDuration, fmtNumber, fmtTime, fmtValue, progressBar, progressOf, setAttr, setBadge,
  setText, shortUuid, taskHref,
} from "./dom.js";

const filters = {
  state: page.dataset.stateFilter || "",
  name: page.dataset.nameFilter || "",
  worker: page.dataset.workerFilter || "",
  q: page.dataset.textFilter || "",
};
const filtered = Object.values(filters).some(Boolean);
const limit = Number.parseInt(page.dataset.limit, 10) || 100;

const tbody = document.querySelector("#task-table tbody");
const emptyRow = document.getElementById("task-empty");
const totalEl = document.getElementById("task-total");
const shownEl = document.getElementById("task-shown");
const rows = new Map(); // uuid -> {tr, cells, task}

const COLUMNS = ["uuid", "name", "state", "args", "worker", "received", "runtime", "info"];

// -- one row ---------------------------------------------------------------------------------------

function newRow(uuid) {
  const cells = {};
  const tr = el("tr", { dataset: { uuid } });
  for (const col of COLUMNS) tr.append(cells[col] = el("td", { class: col }));
  cells.uuid.classList.add("mono");
  cells.uuid.append(el("a", { href: taskHref(uuid), title: uuid, text: shortUuid(uuid) }));
  cells.state.append(el("span", { class: "badge" }));
  cells.args.classList.add("mono");
  cells.worker.classList.add("mono");
  cells.received.classList.add("mono");
  cells.runtime.classList.add("num");
  return { tr, cells, task: null, infoKey: null };
}

function argsText(task) {
  const args = fmtValue(task.args);
  const kwargs = fmtValue(task.kwargs);
  if (kwargs && kwargs !== "{}") return args && args !== "()" && args !== "[]" ? `${args} ${kwargs}` : kwargs;
  return args;
}

function runtimeText(task) {
  if (typeof task.runtime === "number") return fmtDuration(task.runtime);
  if (task.state === "FAILURE" && typeof task.started === "number" && typeof task.timestamp === "number") {
    return fmtDuration(Math.max(0, task.timestamp - task.started)); // task-failed carries no runtime
  }
  if (task.state === "STARTED" && typeof task.started === "number") {
    const elapsed = Math.max(0, Date.now() / 1000 - task.started);
    return `running ${elapsed < 60 ? `${Math.floor(elapsed)} s` : fmtDuration(elapsed)}`;
  }
  return "";
}

/** What the info cell shows: exception for failures/retries, result for success, else progress. */
function info(task) {
  if ((task.state === "FAILURE" || task.state === "RETRY") && task.exception) {
    return { kind: "exception", text: fmtValue(task.exception) };
  }
  if (task.state === "SUCCESS" && task.result != null) return { kind: "result", text: fmtValue(task.result) };
  if (progressOf(task.progress)) return { kind: "progress", progress: task.progress };
  if (task.progress) return { kind: "extra", text: fmtValue(task.progress) };
  if (task.exception) return { kind: "exception", text: fmtValue(task.exception) };
  return { kind: "none", text: "" };
}

function renderInfo(row, task) {
  const data = info(task);
  const key = JSON.stringify(data);
  if (key === row.infoKey) return;
  row.infoKey = key;
  const cell = row.cells.info;
  cell.dataset.kind = data.kind;
  if (data.kind === "progress") {
    cell.replaceChildren(progressBar(data.progress));
    cell.removeAttribute("title");
  } else {
    cell.textContent = data.text;
    setAttr(cell, "title", data.text || null);
  }
}

function renderRow(row, task) {
  const { cells } = row;
  row.task = task;
  setText(cells.name, task.name || "");
  setAttr(cells.name, "title", task.name || null);
  setBadge(cells.state.firstChild, task.state);
  const args = argsText(task);
  setText(cells.args, args);
  setAttr(cells.args, "title", args || null);
  setText(cells.worker, task.hostname || "");
  const when = task.received ?? task.sent ?? task.timestamp;
  setText(cells.received, fmtTime(when));
  setAttr(cells.received, "title", when != null ? fmtDateTime(when) : null);
  setText(cells.runtime, runtimeText(task));
  renderInfo(row, task);
  setAttr(row.tr, "data-state", task.state);
}

// -- the table -------------------------------------------------------------------------------------

function updateEmpty() {
  const empty = rows.size === 0;
  if (empty && !emptyRow.isConnected) tbody.append(emptyRow);
  if (!empty && emptyRow.isConnected) emptyRow.remove();
  if (empty) {
    setText(emptyRow.firstElementChild, filtered
      ? "No task matches these filters (yet). Matching tasks appear here as their events arrive."
      : "No tasks seen yet. Launch one above, or start a worker with events enabled (celery -A yourapp worker -E).");
  }
  setText(shownEl, fmtNumber(rows.size));
}

function drop(uuid) {
  const row = rows.get(uuid);
  if (row) {
    row.tr.remove();
    rows.delete(uuid);
  }
}

function trim() {
  while (rows.size > limit) {
    const last = tbody.lastElementChild;
    if (!last || !last.dataset.uuid) break;
    drop(last.dataset.uuid);
  }
}

function setTotal(total) {
  if (typeof total === "number") setText(totalEl, fmtNumber(total));
}

function renderSnapshot(snap) {
  rows.clear();
  const fragment = document.createDocumentFragment();
  for (const task of (snap.tasks || []).slice(0, limit)) {
    if (rows.has(task.uuid)) continue;
    const row = newRow(task.uuid);
    renderRow(row, task);
    rows.set(task.uuid, row);
    fragment.append(row.tr);
  }
  tbody.replaceChildren(fragment);
  setTotal(snap.total);
  updateEmpty();
}

function applyDiff(diff) {
  for (const uuid of diff.removed || []) drop(uuid);
  const fresh = [];
  for (const task of diff.tasks || []) { // newest first
    const row = rows.get(task.uuid);
    if (row) renderRow(row, task);
    else if (!fresh.some((t) => t.uuid === task.uuid)) fresh.push(task);
  }
  if (fresh.length) {
    const fragment = document.createDocumentFragment();
    for (const task of fresh.slice(0, limit)) {
      const row = newRow(task.uuid);
      renderRow(row, task);
      row.tr.classList.add("fresh");
      rows.set(task.uuid, row);
      fragment.append(row.tr);
    }
    tbody.prepend(fragment);
    trim();
  }
  setTotal(diff.total);
  updateEmpty();
}

// Runtimes of running tasks tick client-side.
setInterval(() => {
  for (const row of rows.values()) {
    if (row.task && row.task.state === "STARTED" && row.task.runtime == null) setText(row.cells.runtime, runtimeText(row.task));
  }
}, 1000);

// A state choice filters at once (a plain GET, so the URL stays shareable).
document.getElementById("filter-state").addEventListener("change", (e) => e.target.form.requestSubmit());

startLive({
  payload: { view: "tasks", ...filters, limit },
  onSnapshot: renderSnapshot,
  on: { tasks: applyDiff },
});
