// Task list: find any task among the retained ones.
//
// The filters and the sort live in the URL (a plain GET form), so a copied link reproduces the view.
// The table shows one page: cursor paging in the default order (newest first seen), offset paging
// when sorted. It stays put while tasks arrive: rows already shown update in place, and new tasks
// are inserted at the top only when the reader is at the top of the newest page, in the default
// order, and not pointing at, focusing or selecting in the table. Otherwise they are counted in a
// "12 new tasks — Show" bar. Task data is untrusted: every cell is written with textContent.
import { page, startLive } from "./live.js";
import {
  DERIVED_RUNTIME_TITLE, el, fmtDateTime, fmtDuration, fmtNumber, fmtRuntime, fmtTime, fmtValue, progressBar,
  progressOf, setAttr, setBadge, setText, shortUuid, show, taskHref, url,
} from "./dom.js";
import { bulkAction, controlsEnabled } from "./control.js";

const LIMIT = Number.parseInt(page.dataset.limit, 10) || 100;
const FILTER_KEYS = ["state", "name", "worker", "queue", "q", "since", "until", "group", "outcome"];
const SORTS = ["received", "started", "runtime"];
const COLUMNS = ["uuid", "name", "state", "args", "worker", "queue", "received", "runtime", "info"];
const HIDDEN_COLUMNS_KEY = "celery-dashboard:tasks:hidden-columns";
const TOP_SLACK = 40; // px of scrolling that still count as "at the top"

// -- the view, as the URL says ---------------------------------------------------------------------

const params = new URLSearchParams(window.location.search);
const filters = {};
for (const key of FILTER_KEYS) {
  const value = (params.get(key) || "").trim();
  if (value) filters[key] = value;
}
const filtered = Object.keys(filters).length > 0;
const sort = SORTS.includes(params.get("sort")) ? params.get("sort") : "";
const order = sort && params.get("order") === "asc" ? "asc" : "desc";

const table = document.getElementById("task-table");
const tbody = table.tBodies[0];
const emptyRow = document.getElementById("task-empty");
const totalEl = document.getElementById("task-total");
const shownEl = document.getElementById("task-shown");
const listPanel = document.getElementById("task-list");
const newBar = document.getElementById("new-tasks");
const newText = document.getElementById("new-tasks-text");
const pagers = [...document.querySelectorAll("#task-list .pager")];
const form = document.getElementById("task-filters");
const columnsMenu = document.getElementById("columns-menu");

const rows = new Map(); // uuid -> {tr, cells, task, infoKey}, in table order
const nav = { cursor: null, stack: [], offset: 0 }; // cursor paging (default order) or offset paging
let total = null; // tasks matching the filters, as the server last said
let newestSeq = -Infinity; // the newest matching task the reader has been shown (or offered)
const pending = new Map(); // uuid -> task: new matching tasks announced, not shown
const launchedHere = new Set(); // tasks the reader launched from this page: always shown when possible
let problem = null; // why the list cannot be shown (bad filter, failed request)
let loading = false; // a page is being fetched: diffs wait in `buffered`
let buffered = [];
let generation = 0; // the latest fetch; answers of older ones are dropped
let pointerInTable = false;
let hasQueue = false;

const onNewest = () => (sort ? nav.offset === 0 : nav.cursor === null);
const firstIndex = () => (sort ? nav.offset : nav.stack.length * LIMIT);
/** The bottom row of the table (the map's order is not the table's once rows are inserted). */
function lastRow() {
  for (let tr = tbody.lastElementChild; tr; tr = tr.previousElementSibling) {
    const row = tr.dataset.uuid && rows.get(tr.dataset.uuid);
    if (row) return row;
  }
  return null;
}

// -- one row ---------------------------------------------------------------------------------------

function newRow(uuid) {
  const cells = {};
  const tr = el("tr", { dataset: { uuid } });
  for (const col of COLUMNS) tr.append(cells[col] = el("td", { class: col }));
  cells.uuid.classList.add("mono");
  cells.uuid.append(el("a", { href: taskHref(uuid), title: uuid, text: shortUuid(uuid) }));
  cells.name.append(el("a", { class: "name-link", href: taskHref(uuid) }));
  cells.state.append(el("span", { class: "badge" }));
  for (const col of ["args", "worker", "queue", "received"]) cells[col].classList.add("mono");
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
  const known = fmtRuntime(task);
  if (known) return known;
  if (task.state === "STARTED" && typeof task.started === "number") {
    const elapsed = Math.max(0, Date.now() / 1000 - task.started);
    return `running ${elapsed < 60 ? `${Math.floor(elapsed)} s` : fmtDuration(elapsed)}`;
  }
  return "";
}

/** "14:03:07" today, "01-05 14:03" on another day (a time range can reach back a week). */
function fmtWhen(ts) {
  if (typeof ts !== "number" || !Number.isFinite(ts)) return "";
  const d = new Date(ts * 1000);
  if (d.toDateString() === new Date().toDateString()) return fmtTime(ts);
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
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
  const link = cells.name.firstChild;
  setText(link, task.name || "");
  setAttr(cells.name, "title", task.name || null);
  setBadge(cells.state.firstChild, task.state);
  const args = argsText(task);
  setText(cells.args, args);
  setAttr(cells.args, "title", args || null);
  setText(cells.worker, task.hostname || "");
  setAttr(cells.worker, "title", task.hostname || null);
  if (!hasQueue && Object.prototype.hasOwnProperty.call(task, "queue")) revealQueue();
  setText(cells.queue, task.queue == null ? "" : String(task.queue));
  const when = sort === "started" ? task.started : task.received ?? task.sent ?? task.timestamp;
  setText(cells.received, fmtWhen(when));
  setAttr(cells.received, "title", when != null ? fmtDateTime(when) : null);
  setText(cells.runtime, runtimeText(task));
  setAttr(cells.runtime, "title", typeof task.runtime !== "number" && typeof task.runtime_derived === "number" ? DERIVED_RUNTIME_TITLE : null);
  renderInfo(row, task);
  setAttr(row.tr, "data-state", task.state);
}

/** A row that stopped matching the filters stays (the page must not shift) but says so. */
function markLeft(row, left) {
  if (row.tr.classList.contains("left") === left) return;
  row.tr.classList.toggle("left", left);
  setAttr(row.tr, "title", left ? "No longer matches the filters" : null);
}

// -- the table -------------------------------------------------------------------------------------

function addRow(task, before = null) {
  const row = newRow(task.uuid);
  renderRow(row, task);
  rows.set(task.uuid, row);
  tbody.insertBefore(row.tr, before);
  return row;
}

function drop(uuid) {
  const row = rows.get(uuid);
  if (row) {
    row.tr.remove();
    rows.delete(uuid);
  }
}

/** Re-render the whole page from a list of tasks (a snapshot or a fetched page). */
function render(tasks, newTotal) {
  rows.clear();
  tbody.replaceChildren();
  for (const task of tasks.slice(0, LIMIT)) {
    if (task && typeof task.uuid === "string" && !rows.has(task.uuid)) addRow(task);
  }
  if (typeof newTotal === "number") total = newTotal;
  for (const uuid of rows.keys()) pending.delete(uuid);
  refresh();
}

/** Insert new tasks where they belong in the default order (by seq, newest first); keep one page. */
function insert(tasks) {
  const order = [...tbody.rows].map((tr) => rows.get(tr.dataset.uuid)).filter(Boolean);
  for (const task of tasks) {
    if (rows.has(task.uuid)) continue;
    const next = order.find((row) => row.task && row.task.seq < task.seq);
    const row = addRow(task, next ? next.tr : null);
    row.tr.classList.add("fresh");
    order.splice(next ? order.indexOf(next) : order.length, 0, row);
    pending.delete(task.uuid);
  }
  while (rows.size > LIMIT) drop(lastRow().task.uuid);
  newestSeq = Math.max(newestSeq, ...tasks.map((t) => t.seq));
}

/** Whether a task the page does not show is new to the reader (and belongs above what they see). */
function isNew(task) {
  if (typeof task.seq !== "number") return false;
  if (!sort && onNewest()) {
    const last = lastRow();
    return rows.size < LIMIT || !last || !last.task || task.seq > last.task.seq;
  }
  return task.seq > newestSeq;
}

function selectingInTable() {
  const sel = document.getSelection();
  return Boolean(sel && !sel.isCollapsed && sel.rangeCount && table.contains(sel.getRangeAt(0).commonAncestorContainer));
}

/** New rows may appear at the top only when that moves nothing the reader is looking at. */
function canInsertLive() {
  return !sort && onNewest() && !loading && !problem && window.scrollY <= TOP_SLACK && !pointerInTable
    && !selectingInTable() && !table.contains(document.activeElement);
}

function applyDiff(diff, replay = false) {
  if (!diff || typeof diff !== "object") return;
  if (loading) {
    buffered.push(diff);
    return;
  }
  if (typeof diff.total === "number") total = diff.total;
  const live = canInsertLive();
  for (const uuid of diff.removed || []) {
    pending.delete(uuid);
    const row = rows.get(uuid);
    if (row && live) drop(uuid);
    else if (row) markLeft(row, true);
  }
  const fresh = [];
  for (const task of diff.tasks || []) { // newest first
    if (!task || typeof task.uuid !== "string") continue;
    const row = rows.get(task.uuid);
    if (row) {
      // A diff sent before the page was fetched may be older than the row: never step back.
      if (!(replay && row.task && task.timestamp < row.task.timestamp)) renderRow(row, task);
      markLeft(row, false);
    } else if (pending.has(task.uuid)) {
      pending.set(task.uuid, task);
    } else if (isNew(task)) {
      const mine = launchedHere.has(task.uuid) && !sort && onNewest();
      if ((live && !pending.size) || mine) fresh.push(task);
      else pending.set(task.uuid, task);
    }
  }
  if (fresh.length) insert(fresh);
  refresh();
  // Back at the top with tasks announced: catch up from a fresh page rather than leave a gap.
  if (live && pending.size) showNew();
}

// -- fetching pages --------------------------------------------------------------------------------

function pageQuery() {
  const query = new URLSearchParams(filters);
  if (sort) {
    query.set("sort", sort);
    query.set("order", order);
    if (nav.offset) query.set("offset", String(nav.offset));
  } else if (nav.cursor !== null) {
    query.set("cursor", nav.cursor);
  }
  query.set("limit", String(LIMIT));
  return query;
}

async function fetchPage() {
  const response = await fetch(url(`api/tasks?${pageQuery()}`), { headers: { Accept: "application/json" } });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok || !body || !Array.isArray(body.tasks)) {
    throw new Error((body && body.error) || `the server answered ${response.status}`);
  }
  return body;
}

/** Fetch the current page and re-render it; live diffs that arrive meanwhile are applied after. */
async function reload({ top = false, toList = false, absorb = false } = {}) {
  const gen = ++generation;
  loading = true;
  buffered = [];
  setBusy(true);
  let body = null;
  let error = null;
  try {
    body = await fetchPage();
  } catch (err) {
    error = (err && err.message) || String(err);
  }
  if (gen !== generation) return; // a newer fetch or a snapshot superseded this one
  loading = false;
  const queued = buffered;
  buffered = [];
  setBusy(false);
  if (error) {
    problem = `Could not load the tasks: ${error}`;
    render([], total);
  } else {
    problem = null;
    if (absorb || (!sort && onNewest())) absorbPending(body.tasks);
    render(body.tasks, body.total);
  }
  if (top) window.scrollTo({ top: 0 });
  else if (toList && listPanel.getBoundingClientRect().top < 0) listPanel.scrollIntoView({ block: "start" });
  for (const diff of queued) applyDiff(diff, true);
}

/** The reader is now shown everything up to the newest task: nothing is new any more. */
function absorbPending(tasks) {
  for (const task of pending.values()) newestSeq = Math.max(newestSeq, task.seq);
  for (const task of tasks) if (typeof task.seq === "number") newestSeq = Math.max(newestSeq, task.seq);
  pending.clear();
}

function showNew() {
  nav.cursor = null;
  nav.stack = [];
  nav.offset = 0;
  reload({ top: true, absorb: true });
}

function go(where) {
  if (loading) return;
  if (where === "older") {
    const last = lastRow();
    if (!last || !last.task) return;
    if (sort) nav.offset += LIMIT;
    else {
      nav.stack.push(nav.cursor);
      nav.cursor = String(last.task.seq);
    }
  } else if (where === "newer") {
    if (sort) nav.offset = Math.max(0, nav.offset - LIMIT);
    else nav.cursor = nav.stack.length ? nav.stack.pop() : null;
  } else {
    nav.cursor = null;
    nav.stack = [];
    nav.offset = 0;
  }
  reload({ toList: true });
}

function onSnapshot(snap) {
  problem = null;
  const tasks = Array.isArray(snap.tasks) ? snap.tasks : [];
  if (!sort && onNewest()) {
    // The snapshot is the newest page itself (and supersedes any fetch in flight).
    generation += 1;
    loading = false;
    buffered = [];
    setBusy(false);
    absorbPending(tasks);
    render(tasks, snap.total);
    return;
  }
  if (tasks.length && typeof tasks[0].seq === "number") newestSeq = Math.max(newestSeq, tasks[0].seq);
  if (typeof snap.total === "number") total = snap.total;
  reload();
}

function onError(error) {
  problem = `These filters cannot be applied: ${error || "the server refused them"}.`;
  render([], null);
}

// -- what the reader sees around the table ---------------------------------------------------------

function setBusy(busy) {
  setAttr(table, "aria-busy", busy ? "true" : null);
  for (const button of document.querySelectorAll("#task-list .pager button")) button.disabled = busy || button.dataset.off === "1";
}

function refresh() {
  const first = firstIndex();
  const range = rows.size ? `${fmtNumber(first + 1)}–${fmtNumber(first + rows.size)}` : "0";
  setText(shownEl, range);
  setText(totalEl, fmtNumber(total));
  const newer = !onNewest();
  const older = rows.size > 0 && typeof total === "number" && first + rows.size < total;
  for (const pager of pagers) {
    show(pager, newer || older);
    for (const button of pager.querySelectorAll("button")) {
      const off = button.dataset.page === "older" ? !older : !newer;
      button.dataset.off = off ? "1" : "0";
      button.disabled = off || loading;
      if (button.dataset.page === "newest") show(button, first > LIMIT);
    }
    const label = pager.querySelector(".pager-range");
    if (label) setText(label, rows.size ? `${range} of ${fmtNumber(total)}` : "");
  }
  if (bulkCount) setText(bulkCount, fmtNumber(total));
  const count = pending.size;
  show(newBar, count > 0);
  if (count) setText(newText, `${fmtNumber(count)} new task${count === 1 ? "" : "s"} —`);
  updateEmpty();
}

function emptyMessage() {
  if (problem) {
    return [el("strong", { text: problem }), " ", filtered ? el("a", { href: url("tasks"), text: "Clear the filters" }) : null];
  }
  if (total === null) return ["Loading…"];
  if (!onNewest()) {
    return ["No tasks on this page (older tasks may have been evicted). ",
      el("button", { type: "button", class: "small", dataset: { page: "newest" }, text: "Back to the newest" })];
  }
  if (filtered) {
    const hints = ["Matching tasks appear here as soon as their events arrive."];
    if (filters.since || filters.until) hints.push("Only tasks first seen in the chosen time range count: try a longer one.");
    if (filters.worker || filters.queue) hints.push("Worker and queue must match exactly.");
    return [el("strong", { text: "No task matches these filters yet." }), ` ${hints.join(" ")} `,
      el("a", { href: url("tasks"), text: "Clear the filters" })];
  }
  return [el("strong", { text: "No tasks seen yet." }), " Launch one above, or start a worker with events enabled: ",
    el("code", { text: "celery -A yourapp worker -E" })];
}

function updateEmpty() {
  const empty = rows.size === 0;
  if (empty && !emptyRow.isConnected) tbody.append(emptyRow);
  if (!empty && emptyRow.isConnected) emptyRow.remove();
  if (empty) {
    const cell = emptyRow.firstElementChild;
    // Span the columns shown, or the header and the message would not line up.
    const shown = [...table.tHead.rows[0].cells].filter((th) => getComputedStyle(th).display !== "none").length;
    cell.colSpan = shown || 1;
    cell.replaceChildren(...emptyMessage());
  }
}

function revealQueue() {
  hasQueue = true;
  table.dataset.hasQueue = "";
  const label = columnsMenu && columnsMenu.querySelector('label[data-column="queue"]');
  if (label) show(label, true);
}

// -- columns ---------------------------------------------------------------------------------------

function loadHidden() {
  try {
    const saved = JSON.parse(window.localStorage.getItem(HIDDEN_COLUMNS_KEY) || "[]");
    return Array.isArray(saved) ? saved.filter((col) => COLUMNS.includes(col)) : [];
  } catch {
    return []; // storage disabled or garbage: show every column
  }
}

function applyHidden(hidden) {
  setAttr(table, "data-hide", hidden.length ? hidden.join(" ") : null);
  for (const box of columnsMenu.querySelectorAll('input[name="column"]')) box.checked = !hidden.includes(box.value);
  updateEmpty();
}

if (columnsMenu) {
  applyHidden(loadHidden());
  show(columnsMenu, true);
  columnsMenu.addEventListener("change", (event) => {
    const boxes = [...columnsMenu.querySelectorAll('input[name="column"]')];
    if (!boxes.some((box) => box.checked && !box.closest("label").hidden)) event.target.checked = true; // keep one
    const hidden = boxes.filter((box) => !box.checked).map((box) => box.value);
    applyHidden(hidden);
    try {
      window.localStorage.setItem(HIDDEN_COLUMNS_KEY, JSON.stringify(hidden));
    } catch {
      // not remembered, still applied
    }
  });
  document.addEventListener("click", (event) => {
    if (columnsMenu.open && !columnsMenu.contains(event.target)) columnsMenu.open = false;
  });
  columnsMenu.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && columnsMenu.open) {
      columnsMenu.open = false;
      columnsMenu.querySelector("summary").focus();
    }
  });
}

// -- wiring ----------------------------------------------------------------------------------------

table.addEventListener("pointerenter", () => { pointerInTable = true; });
table.addEventListener("pointerleave", () => { pointerInTable = false; });

document.getElementById("new-tasks-show").addEventListener("click", showNew);
listPanel.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-page]");
  if (button && !button.disabled) go(button.dataset.page);
});

// Tasks launched from the form on this page are shown even when the reader is not at the top.
const launchResult = document.getElementById("launch-result");
if (launchResult) {
  new MutationObserver(() => {
    const mine = [];
    const prefix = url("tasks/");
    for (const link of launchResult.querySelectorAll("a[href]")) {
      const href = link.getAttribute("href");
      if (!href.startsWith(prefix)) continue;
      const uuid = decodeURIComponent(href.slice(prefix.length));
      if (!launchedHere.has(uuid)) launchedHere.add(uuid);
      if (pending.has(uuid)) mine.push(pending.get(uuid));
    }
    if (mine.length && !sort && onNewest() && !loading) {
      insert(mine);
      refresh();
    }
  }).observe(launchResult, { childList: true, subtree: true });
}

// Runtimes of running tasks tick client-side.
setInterval(() => {
  for (const row of rows.values()) {
    if (row.task && row.task.state === "STARTED" && row.task.runtime == null) setText(row.cells.runtime, runtimeText(row.task));
  }
}, 1000);

// The filters form is a plain GET; without empty fields (and the default order) the URL stays short.
if (form) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    for (const [key, value] of new FormData(form)) {
      const text = String(value).trim();
      if (!text || (key === "order" && (!form.elements.sort.value || text === "desc"))) continue;
      query.append(key, text);
    }
    const qs = query.toString();
    window.location.assign(qs ? `${form.getAttribute("action")}?${qs}` : form.getAttribute("action"));
  });
  // A choice in a select applies at once.
  for (const id of ["filter-state", "filter-since", "filter-sort", "filter-order"]) {
    const select = document.getElementById(id);
    if (select) select.addEventListener("change", () => form.requestSubmit());
  }
}

// Bulk: re-run or revoke every task matching the filters (the same parameters as /api/tasks).
const bulkOpen = controlsEnabled() ? document.getElementById("bulk-open") : null;
const bulkCount = bulkOpen ? document.getElementById("bulk-count") : null;
if (bulkOpen) {
  const panel = document.getElementById("bulk-panel");
  const toggle = (open) => {
    show(panel, open);
    bulkOpen.setAttribute("aria-expanded", open ? "true" : "false");
  };
  bulkOpen.addEventListener("click", () => toggle(panel.hidden));
  document.getElementById("bulk-close").addEventListener("click", () => toggle(false));
  panel.addEventListener("submit", async (event) => {
    event.preventDefault();
    const action = new FormData(panel).get("bulk-action") === "revoke" ? "revoke" : "rerun";
    const what = Object.keys(filters).length
      ? `filtered by ${Object.entries(filters).map(([k, v]) => `${k}=${v}`).join(", ")}` : "every retained task";
    await bulkAction({ action, target: { filters: { ...filters } }, what, result: document.getElementById("bulk-result"),
      busy: [...panel.querySelectorAll("button"), bulkOpen] });
  });
}

refresh();
startLive({
  payload: { view: "tasks", ...filters, limit: LIMIT },
  onSnapshot,
  onError,
  on: { tasks: applyDiff },
});
