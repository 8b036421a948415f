// One worker: its live heartbeat (the workers socket room), what `inspect` last answered (cached by
// the server, refreshed on demand) and its controls. Hostnames, task names, queues and replies are
// untrusted: all written as text.
import { page, startLive } from "./live.js";
import { el, fmtAge, fmtDateTime, fmtNumber, fmtValue, setAttr, setBadge, setText, show, taskLink, url } from "./dom.js";
import {
  controlsEnabled, fmtPool, fmtUptime, getJSON, plural, poolSize, renderResult, runAction, uptimeNow,
} from "./control.js";

const hostname = page.dataset.hostname;
const apiUrl = url(`api/workers/${encodeURIComponent(hostname)}`);
const $ = (id) => document.getElementById(id);
const fact = (name) => document.querySelector(`#worker-facts [data-field="${name}"]`);
const controls = controlsEnabled() ? $("worker-controls") : null;
const result = $("control-result");
const status = $("inspect-status");
const refreshButton = $("inspect-refresh");

const POLL_MS = 5000; // re-read the cached inspect answers (cheap: the server never blocks on workers)
const REFRESH_POLL_MS = 1000;
const REFRESH_MAX_MS = 10000;

let summary = null; // the latest worker summary (socket or API)
let summaryAt = 0; // performance.now() when it arrived: heartbeat ages tick from there
let inspect = {}; // method -> {reply, fetched_at, error, status}
let refreshing = false;
const renderedKeys = {}; // method -> key of what its body shows

// -- heartbeat summary -----------------------------------------------------------------------------

/** Take a summary, but never step back to an older inspect (the socket and the API race). */
function applySummary(w) {
  if (!w || w.hostname !== hostname) return;
  if (summary && typeof summary.inspect_at === "number" && !(typeof w.inspect_at === "number" && w.inspect_at >= summary.inspect_at)) {
    w = { ...w, pool: summary.pool, uptime: summary.uptime, inspect_at: summary.inspect_at };
  }
  summary = w;
  summaryAt = performance.now();
  show($("worker-unknown"), false);
  show($("worker-body"), true);
  renderSummary();
}

function setFact(name, text) {
  const dd = fact(name);
  const value = text == null || text === "" ? "—" : String(text);
  setText(dd, value);
  dd.classList.toggle("empty", value === "—");
}

function renderSummary() {
  const w = summary;
  if (!w) return;
  const badge = $("worker-status");
  setBadge(badge, w.online ? "online" : "offline");
  show(badge, true);
  const dd = fact("status");
  if (!dd.firstChild || dd.firstChild.nodeType !== 1) dd.replaceChildren(el("span", { class: "badge" }));
  setBadge(dd.firstChild, w.online ? "online" : "offline");
  renderTicking();
  setFact("pool", fmtPool(w.pool));
  setAttr(fact("pool"), "title", w.pool ? `${w.pool.implementation ?? "?"}: max concurrency ${w.pool.max_concurrency ?? "?"}, `
    + `${w.pool.processes ?? "?"} processes (as of ${fmtDateTime(w.inspect_at, { ms: false })})` : "inspect has not answered yet");
  for (const key of ["processed", "active", "succeeded", "failed"]) setFact(key, fmtNumber(w[key]));
  setFact("loadavg", Array.isArray(w.loadavg) ? w.loadavg.map((n) => (typeof n === "number" ? n.toFixed(2) : String(n))).join("  ") : null);
  setFact("version", [w.sw_ident, w.sw_ver, w.sw_sys ? `(${w.sw_sys})` : null].filter(Boolean).join(" "));
  setFact("pid", w.pid);
  setFact("first_seen", fmtDateTime(w.first_seen, { ms: false }));
  document.title = `${hostname} · ${w.online ? "online" : "offline"} · Celery Live Dashboard`;
}

function renderTicking() {
  const w = summary;
  if (!w) return;
  const age = typeof w.heartbeat_age === "number" ? w.heartbeat_age + (performance.now() - summaryAt) / 1000 : null;
  let text = age == null ? "never" : fmtAge(age);
  if (!w.online && typeof w.offline_at === "number") text += ` (offline since ${fmtDateTime(w.offline_at, { ms: false })})`;
  setFact("heartbeat", text);
  setFact("uptime", w.uptime == null ? null : fmtUptime(uptimeNow(w)));
}

// -- inspect sections ------------------------------------------------------------------------------

// The task lists first (full width), then the smaller answers side by side.
const SECTIONS = [
  ["active", "Active tasks"], ["reserved", "Reserved (prefetched, waiting for a process)"],
  ["scheduled", "Scheduled (ETA / countdown)"], ["stats", "Stats"], ["registered", "Registered tasks"],
  ["active_queues", "Active queues"], ["revoked", "Revoked task ids"], ["conf", "Configuration"],
];

const sectionsBox = $("inspect-sections");
const sections = {};
for (const [method, title] of SECTIONS) {
  const age = el("span", { class: "inspect-age muted" });
  const body = el("div", { class: "inspect-body" });
  const node = el("section", { class: "inspect-section", id: `inspect-${method}`, dataset: { method } },
    el("h3", { class: "subhead" }, title, " ", age), body);
  sections[method] = { node, age, body };
  sectionsBox.append(node);
}

/** This worker's answer: the API gives it directly; tolerate {hostname: answer} as well. */
function replyOf(entry) {
  const reply = entry ? entry.reply : null;
  if (reply && typeof reply === "object" && !Array.isArray(reply) && Object.keys(reply).length === 1 && hostname in reply) {
    return reply[hostname];
  }
  return reply;
}

function ageText(entry) {
  if (!entry) return "pending";
  const fetched = typeof entry.fetched_at === "number" ? `fetched ${fmtAge(Date.now() / 1000 - entry.fetched_at)}` : null;
  if (entry.status === "ok") return fetched || "fetched";
  if (entry.status === "no reply") return fetched && entry.reply != null ? `no reply (last answer ${fetched.slice(8)})` : "no reply";
  if (entry.status === "error") return `error: ${entry.error || "unknown"}`;
  return "pending";
}

function renderAges() {
  for (const [method] of SECTIONS) {
    const entry = inspect[method];
    setText(sections[method].age, `· ${ageText(entry)}`);
    setAttr(sections[method].node, "data-status", entry ? entry.status : "pending");
  }
}

const empty = (text) => el("p", { class: "muted inspect-empty", text });

function pre(value) {
  let text;
  try {
    text = JSON.stringify(value, null, 2);
  } catch {
    text = String(value);
  }
  return el("pre", { class: "inspect-json", tabindex: "0", text });
}

function factsList(pairs) {
  return el("dl", { class: "fields compact" }, ...pairs.filter(([, v]) => v != null && v !== "")
    .map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", { class: "mono", text: String(v) }))));
}

function renderStats(stats) {
  const pool = stats.pool && typeof stats.pool === "object" ? stats.pool : {};
  const processes = Array.isArray(pool.processes) ? pool.processes : null;
  const totals = stats.total && typeof stats.total === "object" ? Object.entries(stats.total) : [];
  return [
    factsList([
      ["Pool", pool.implementation], ["Max concurrency", pool["max-concurrency"]],
      ["Processes", processes ? `${processes.length} (pids ${processes.join(", ")})` : null],
      ["Autoscaler", stats.autoscaler && Object.keys(stats.autoscaler).length ? fmtValue(stats.autoscaler) : null],
      ["Pid", stats.pid], ["Uptime", typeof stats.uptime === "number" ? fmtUptime(stats.uptime) : null],
      ["Prefetch count", stats.prefetch_count],
      ["Broker", stats.broker ? `${stats.broker.transport ?? ""}://${stats.broker.hostname ?? ""}:${stats.broker.port ?? ""}` : null],
      ["Max RSS", stats.rusage && typeof stats.rusage.maxrss === "number" ? `${fmtNumber(stats.rusage.maxrss)} kB` : null],
    ]),
    totals.length ? el("table", { class: "data inspect-table" },
      el("thead", {}, el("tr", {}, el("th", { text: "Task" }), el("th", { class: "num", text: "Run by this worker" }))),
      el("tbody", {}, ...totals.sort((a, b) => b[1] - a[1]).map(([name, n]) => el("tr", {},
        el("td", { class: "mono", text: name }), el("td", { class: "num", text: fmtNumber(n) }))))) : null,
    el("details", {}, el("summary", { text: "Everything stats returned" }), pre(stats)),
  ];
}

/** active / reserved / scheduled: one row per task, linking to its page. */
function renderRequests(method, list) {
  if (!Array.isArray(list) || !list.length) return [empty(`No ${method} tasks.`)];
  const rows = list.map((item) => {
    const req = method === "scheduled" && item && item.request ? item.request : item || {};
    const id = String(req.id ?? "");
    const when = method === "scheduled" ? item.eta : method === "active" ? req.time_start : null;
    return el("tr", { dataset: { uuid: id } },
      el("td", { class: "mono" }, id ? taskLink(id) : "—"),
      el("td", { class: "mono", text: String(req.name ?? req.type ?? "") }),
      el("td", { class: "mono", text: `${fmtValue(req.args)} ${fmtValue(req.kwargs)}`.trim(),
        title: `${fmtValue(req.args)} ${fmtValue(req.kwargs)}`.trim() }),
      el("td", { class: "mono", text: typeof when === "number" ? fmtDateTime(when) : fmtValue(when) }));
  });
  const whenLabel = { active: "Started", scheduled: "ETA", reserved: "" }[method];
  return [el("table", { class: "data inspect-table tasks-table" },
    el("thead", {}, el("tr", {}, el("th", { text: "Task id" }), el("th", { text: "Name" }), el("th", { text: "Args / kwargs" }),
      el("th", { text: whenLabel }))),
    el("tbody", {}, ...rows))];
}

function renderRevoked(list) {
  if (!Array.isArray(list) || !list.length) return [empty("No revoked task ids.")];
  const shown = list.slice(0, 200);
  return [el("ul", { class: "plain-list mono revoked-list" }, ...shown.map((id) => el("li", {}, taskLink(String(id))))),
    list.length > shown.length ? empty(`… and ${fmtNumber(list.length - shown.length)} more.`) : null];
}

function renderRegistered(list) {
  if (!Array.isArray(list) || !list.length) return [empty("No registered tasks.")];
  return [el("ul", { class: "registered-list" }, ...list.map((entry) => {
    const text = String(entry);
    const name = text.split(" ")[0]; // "name [rate_limit=…]" when inspect was asked for attributes
    const li = el("li", { dataset: { task: name } }, el("span", { class: "mono task-type", text }));
    if (controls) {
      const rate = el("button", { type: "button", class: "small", dataset: { form: "rate" }, text: "Rate limit…" });
      const limits = el("button", { type: "button", class: "small", dataset: { form: "time" }, text: "Time limits…" });
      rate.addEventListener("click", () => toggleTypeForm(li, name, "rate"));
      limits.addEventListener("click", () => toggleTypeForm(li, name, "time"));
      li.append(" ", el("span", { class: "type-actions" }, rate, " ", limits));
    }
    return li;
  }))];
}

function renderQueues(list) {
  renderConsumers(Array.isArray(list) ? list : []);
  if (!Array.isArray(list) || !list.length) return [empty("Not consuming from any queue.")];
  return [el("table", { class: "data inspect-table" },
    el("thead", {}, el("tr", {}, el("th", { text: "Queue" }), el("th", { text: "Exchange" }), el("th", { text: "Routing key" }))),
    el("tbody", {}, ...list.map((q) => el("tr", { dataset: { queue: String(q.name ?? "") } },
      el("td", { class: "mono", text: String(q.name ?? "") }),
      el("td", { class: "mono", text: q.exchange ? `${q.exchange.name ?? ""} (${q.exchange.type ?? "?"})` : "" }),
      el("td", { class: "mono", text: String(q.routing_key ?? "") })))))];
}

function renderConf(conf) {
  if (!conf || typeof conf !== "object" || !Object.keys(conf).length) return [empty("No configuration returned.")];
  return [el("table", { class: "data inspect-table conf-table" },
    el("tbody", {}, ...Object.entries(conf).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => el("tr", {},
      el("td", { class: "mono", text: k, title: k }), el("td", { class: "mono", text: fmtValue(v), title: fmtValue(v) })))))];
}

function renderSection(method) {
  const entry = inspect[method];
  const reply = replyOf(entry);
  const key = JSON.stringify([entry ? entry.status : "pending", reply]);
  if (renderedKeys[method] === key) return;
  renderedKeys[method] = key;
  let nodes;
  if (reply == null) {
    const why = !entry || entry.status === "pending" ? "Not fetched yet: the first answer comes with the next background refresh."
      : entry.status === "error" ? `The request failed: ${entry.error || "unknown error"}.`
        : "The worker did not answer in time (busy, blocked, or gone).";
    nodes = [empty(why)];
    if (method === "active_queues") renderConsumers(null);
  } else if (method === "stats") nodes = renderStats(reply);
  else if (["active", "reserved", "scheduled"].includes(method)) nodes = renderRequests(method, reply);
  else if (method === "revoked") nodes = renderRevoked(reply);
  else if (method === "registered") nodes = renderRegistered(reply);
  else if (method === "active_queues") nodes = renderQueues(reply);
  else if (method === "conf") nodes = renderConf(reply);
  else nodes = [pre(reply)];
  sections[method].body.replaceChildren(...nodes.filter(Boolean));
}

function renderInspect(data) {
  inspect = data && typeof data === "object" ? data : {};
  for (const [method] of SECTIONS) renderSection(method);
  renderAges();
}

// -- loading and refreshing ------------------------------------------------------------------------

function showUnknown() {
  show($("worker-unknown"), !summary);
  show($("worker-body"), Boolean(summary));
  setText(status, summary ? "the server no longer knows this worker" : "");
}

/** GET the worker (with ?refresh=1 to ask the workers again) -> the body, or null. */
let loadSeq = 0; // answers are shown in the order they were asked: a late one never undoes a newer one
let shownSeq = 0;

async function load(refresh = false) {
  const seq = ++loadSeq;
  const res = await getJSON(refresh ? `${apiUrl}?refresh=1` : apiUrl);
  if (seq < shownSeq) return null;
  shownSeq = seq;
  if (res.status === 404) {
    showUnknown();
    return null;
  }
  if (res.status !== 200 || !res.body || typeof res.body !== "object") {
    setText(status, `Could not load the inspect answers: ${(res.body && res.body.error) || res.status}`);
    return null;
  }
  if (res.body.worker) applySummary(res.body.worker);
  renderInspect(res.body.inspect);
  return res.body;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Ask the workers again (never blocks the server), then poll until the refresh is over (10 s at most). */
async function refresh() {
  if (refreshing) return;
  refreshing = true;
  refreshButton.disabled = true;
  setText(status, "refreshing…");
  try {
    let body = await load(true);
    const deadline = performance.now() + REFRESH_MAX_MS;
    while (body && body.refreshing && performance.now() < deadline) {
      await sleep(REFRESH_POLL_MS);
      body = await load();
    }
    if (body) setText(status, body.refreshing ? "still refreshing after 10 s: slow sections show their last answer" : "refreshed");
  } finally {
    refreshing = false;
    refreshButton.disabled = false;
  }
}

refreshButton.addEventListener("click", refresh);

// -- controls --------------------------------------------------------------------------------------

const sizeNow = () => poolSize(summary && summary.pool);

/** What the confirmation says for each action: exactly what the worker will do. */
function describe(action, p) {
  const size = sizeNow();
  const who = `Worker ${hostname}`;
  switch (action) {
    case "pool_grow":
      return { title: `Grow the pool of ${hostname}?`, confirmLabel: `Grow by ${p.n}`, lines: [
        `${who} will start ${plural(p.n, "new pool process", "new pool processes")}${size != null ? `: from ${size} to ${size + p.n}` : ""}.`] };
    case "pool_shrink":
      return { title: `Shrink the pool of ${hostname}?`, confirmLabel: `Shrink by ${p.n}`, lines: [
        `${who} will stop ${plural(p.n, "idle pool process", "idle pool processes")}${size != null ? `: from ${size} to ${Math.max(0, size - p.n)}` : ""}.`,
        "Processes busy with a task are not stopped; the worker replies with an error if every process is busy."] };
    case "autoscale":
      return { title: `Autoscale ${hostname}?`, confirmLabel: "Set autoscale", lines: [
        `${who} will keep between ${p.min} and ${p.max} pool processes, growing and shrinking with the load.`,
        "Only a worker started with --autoscale can do this; others reply with an error."] };
    case "add_consumer":
      return { title: `Consume from ${p.queue}?`, confirmLabel: "Add consumer", lines: [
        `${who} will start consuming tasks from queue “${p.queue}” (declared if it does not exist).`] };
    case "cancel_consumer":
      return { title: `Stop consuming from ${p.queue}?`, confirmLabel: "Stop consuming", danger: true, lines: [
        `${who} will stop taking tasks from queue “${p.queue}”.`,
        "Tasks already in the queue stay there until some worker consumes from it."] };
    case "pool_restart":
      return { title: `Restart the pool of ${hostname}?`, confirmLabel: "Restart pool", danger: true, lines: [
        `${who} will replace every pool process with a new one (running tasks are finished first).`,
        "Celery refuses unless the worker runs with worker_pool_restarts enabled: the reply says so."] };
    case "shutdown":
      return { title: `Shut down ${hostname}?`, confirmLabel: "Shut down", danger: true, lines: [
        `${who} will shut down: it stops taking tasks, finishes the ones it is running, and exits.`,
        "It does not come back unless something restarts it (systemd, supervisor, Kubernetes…)."] };
    default:
      return { title: action, lines: [] };
  }
}

const ACTIONS_THAT_CHANGE_INSPECT = new Set(["pool_grow", "pool_shrink", "autoscale", "add_consumer", "cancel_consumer", "pool_restart"]);

function whole(value) {
  const text = String(value ?? "").trim();
  return /^\d+$/.test(text) ? Number.parseInt(text, 10) : null;
}

/** Read and check a control form's fields -> {params} or {error}. */
function readForm(action, form) {
  const field = (name) => form.elements.namedItem(name);
  if (action === "pool_grow" || action === "pool_shrink") {
    const n = whole(field("n").value);
    return n != null && n >= 1 && n <= 64 ? { params: { n } } : { error: "The number of processes must be a whole number from 1 to 64." };
  }
  if (action === "autoscale") {
    const max = whole(field("max").value);
    const min = whole(field("min").value);
    if (max == null || min == null) return { error: "Autoscale needs a whole number for both max and min." };
    if (min > max) return { error: "Autoscale min must not be larger than max." };
    return { params: { max, min } };
  }
  if (action === "add_consumer") {
    const queue = field("queue").value.trim();
    return queue ? { params: { queue } } : { error: "Name the queue to consume from." };
  }
  return { params: {} };
}

async function control(action, params) {
  const busy = controls ? [...controls.querySelectorAll("button")] : [];
  const res = await runAction({
    url: `${apiUrl}/control`, body: { action, ...params }, confirm: describe(action, params), result, busy,
    pendingText: `Sent to ${hostname}; waiting for its reply…`,
  });
  if (res && res.status === 200 && ACTIONS_THAT_CHANGE_INSPECT.has(action)) refresh(); // show the new pool / queues
}

/** The consumed queues (from active_queues), each with its own "stop consuming" button. */
function renderConsumers(queues) {
  const box = $("consumer-list");
  if (!controls || !box) return;
  if (queues == null) {
    box.replaceChildren(el("span", { class: "muted", text: "(unknown: active_queues has no answer)" }));
    return;
  }
  if (!queues.length) {
    box.replaceChildren(el("span", { class: "muted", text: "(no queue)" }));
    return;
  }
  box.replaceChildren(...queues.map((q) => {
    const name = String(q.name ?? "");
    const button = el("button", { type: "button", class: "small", dataset: { queue: name }, text: `${name} ×`,
      title: `Stop consuming from ${name}…`, "aria-label": `Stop consuming from ${name}` });
    button.addEventListener("click", () => control("cancel_consumer", { queue: name }));
    return button;
  }));
}

if (controls) {
  for (const form of controls.querySelectorAll("form[data-action]")) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const action = form.dataset.action;
      const { params, error } = readForm(action, form);
      if (error) {
        renderResult(result, { status: 400, body: { error } });
        return;
      }
      control(action, params);
    });
  }
}

// -- rate and time limits of one task type -----------------------------------------------------------

function toggleTypeForm(li, name, kind) {
  const existing = li.querySelector(".type-form");
  if (existing) {
    const same = existing.dataset.kind === kind;
    existing.remove();
    if (same) return;
  }
  const scope = el("select", { name: "scope", "aria-label": "Apply to" },
    el("option", { value: "this", text: "on this worker" }), el("option", { value: "all", text: "on every worker" }));
  const inputs = kind === "rate"
    ? [el("label", {}, "Rate ", el("input", { name: "rate", type: "text", placeholder: "10/m, 5/s, 0 = none", required: true, size: 12 }))]
    : [el("label", {}, "Soft ", el("input", { name: "soft", type: "number", min: "0.001", step: "any", placeholder: "none", size: 6 }), " s"),
      el("label", {}, "Hard ", el("input", { name: "hard", type: "number", min: "0.001", step: "any", placeholder: "none", size: 6 }), " s")];
  const form = el("form", { class: "type-form", dataset: { kind } }, ...inputs, scope,
    el("button", { type: "submit", class: "small", text: "Apply…" }));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    typeLimit(name, kind, form);
  });
  li.append(form);
  form.querySelector("input").focus();
}

function seconds(input) {
  const text = input.value.trim();
  if (!text) return { value: null };
  const n = Number(text);
  return Number.isFinite(n) && n > 0 ? { value: n } : { error: "Time limits are seconds (more than 0), or empty for none." };
}

async function typeLimit(name, kind, form) {
  const all = form.elements.namedItem("scope").value === "all";
  const where = all ? "on every worker" : `on ${hostname}`;
  const body = { task: name };
  let lines;
  if (kind === "rate") {
    const rate = form.elements.namedItem("rate").value.trim();
    if (!/^(\d+(\.\d+)?(\/[smh])?)$/.test(rate)) {
      renderResult(result, { status: 400, body: { error: "A rate is a number of tasks per s, m or h, like 10/m; 0 removes the limit." } });
      return;
    }
    Object.assign(body, { action: "rate_limit", rate });
    lines = [Number.parseFloat(rate) === 0 ? `Task ${name} will run without a rate limit ${where}.`
      : `Task ${name} will start at most ${rate} ${where} (each worker counts its own).`];
  } else {
    const soft = seconds(form.elements.namedItem("soft"));
    const hard = seconds(form.elements.namedItem("hard"));
    const error = soft.error || hard.error;
    if (error) {
      renderResult(result, { status: 400, body: { error } });
      return;
    }
    Object.assign(body, { action: "time_limit", soft: soft.value, hard: hard.value });
    const fmt = (v) => (v == null ? "none" : `${v} s`);
    lines = [`Task ${name} ${where}: soft time limit ${fmt(soft.value)}, hard time limit ${fmt(hard.value)}.`,
      "Applies to tasks started from now on; empty means no limit."];
  }
  if (!all) body.workers = [hostname];
  await runAction({
    url: url("api/task-types/control"), body, result,
    confirm: { title: `${kind === "rate" ? "Rate limit" : "Time limits"} for ${name}?`, lines, confirmLabel: "Apply" },
    busy: [...form.querySelectorAll("button")], pendingText: "Sent; waiting for the replies…",
  });
  result.scrollIntoView({ block: "nearest" });
}

// -- wiring ----------------------------------------------------------------------------------------

renderInspect({});
setInterval(() => {
  renderTicking();
  renderAges();
}, 1000);
let polling = false;
setInterval(() => {
  if (refreshing || polling || document.visibilityState !== "visible") return; // never pile polls up
  polling = true;
  load().finally(() => { polling = false; });
}, POLL_MS);
// The background loop keeps only stats and active_queues fresh: opening the page asks for everything.
load().then((body) => {
  if (body) refresh();
});

startLive({
  payload: { view: "workers" },
  onSnapshot(snap) {
    const w = (snap.workers || []).find((x) => x && x.hostname === hostname);
    if (w) applySummary(w);
  },
  on: {
    workers(diff) {
      for (const w of diff.workers || []) if (w && w.hostname === hostname) applySummary(w);
    },
  },
});
