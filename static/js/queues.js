// Queues: polls /api/queues every QUEUE_POLL_INTERVAL (lengths are polled from the broker anyway)
// and updates one row per queue in place. Queue names, hostnames and uuids are written as text only.
import { page, startLive } from "./live.js";
import { el, fmtDuration, fmtNumber, fmtTime, setAttr, setText, shortUuid, show, taskHref, url } from "./dom.js";

const interval = Math.max(0.5, Number.parseFloat(page.dataset.queuePollInterval) || 2);
const tbody = document.querySelector("#queue-table tbody");
const emptyRow = document.getElementById("queue-empty");
const summary = document.getElementById("queues-summary");
const stale = document.getElementById("queues-stale");
const notRedis = document.getElementById("queues-not-redis");
const sentHint = document.getElementById("queues-sent-hint");
const recentHead = document.getElementById("queue-recent-head");
const rows = new Map(); // queue name -> {tr, cells}

const COLUMNS = ["name", "length", "priorities", "consumers", "oldest", "p50", "p95", "p99", "count", "recent"];
const NUMERIC = new Set(["length", "p50", "p95", "p99", "count", "recent"]);
const secs = (v) => (typeof v === "number" ? fmtDuration(v) : "–");

function newRow(name) {
  const cells = {};
  const tr = el("tr", { dataset: { queue: name } });
  for (const col of COLUMNS) tr.append(cells[col] = el("td", { class: NUMERIC.has(col) ? `${col} num` : col }));
  cells.name.classList.add("mono");
  cells.name.append(el("a", { class: "queue-link", href: url(`tasks?queue=${encodeURIComponent(name)}`), text: name,
    title: `Tasks sent to ${name}` }));
  return { tr, cells, key: "" };
}

/** Replace a cell's children only when what it shows changed (keeps hover and selection stable). */
function fill(cell, key, build) {
  if (cell.dataset.key === key) return;
  cell.dataset.key = key;
  cell.replaceChildren(...build());
}

function renderRow(row, q, now) {
  const { cells } = row;
  setText(cells.length, typeof q.length === "number" ? fmtNumber(q.length) : "–");
  setAttr(cells.length, "data-busy", q.length > 0 ? "1" : null);
  const prio = q.priorities && typeof q.priorities === "object" ? Object.entries(q.priorities) : [];
  fill(cells.priorities, JSON.stringify(prio), () => (prio.length
    ? prio.map(([step, n]) => el("span", { class: "prio", dataset: { step, empty: n ? "0" : "1" },
      title: `${fmtNumber(n)} waiting at priority step ${step}` },
      el("span", { class: "prio-step", text: step }), el("span", { class: "prio-n", text: fmtNumber(n) })))
    : ["–"]));
  const consumers = Array.isArray(q.consumers) ? q.consumers : [];
  fill(cells.consumers, JSON.stringify(consumers), () => (consumers.length
    ? consumers.map((h) => el("a", { class: "consumer mono", href: url(`workers/${encodeURIComponent(h)}`), text: String(h) }))
    : [el("span", { class: "no-consumer", text: "none", title: "No online worker consumes this queue" })]));
  const old = q.oldest_waiting;
  fill(cells.oldest, old ? `${old.uuid}` : "", () => (old
    ? [el("a", { href: taskHref(old.uuid), title: old.uuid, class: "mono", text: shortUuid(old.uuid) }), " ",
      el("span", { class: "age" })]
    : ["–"]));
  if (old) {
    const age = cells.oldest.querySelector(".age");
    setText(age, `waiting ${fmtDuration(Math.max(0, now - old.sent))}`);
    setAttr(age, "title", `sent at ${fmtTime(old.sent)}`);
  }
  const wait = q.wait || {};
  setText(cells.p50, secs(wait.p50));
  setText(cells.p95, secs(wait.p95));
  setText(cells.p99, secs(wait.p99));
  setText(cells.count, typeof wait.count === "number" ? fmtNumber(wait.count) : "–");
  setText(cells.recent, secs(q.wait_recent && q.wait_recent.p95));
}

function render(body) {
  const now = Date.now() / 1000;
  const queues = Array.isArray(body.queues) ? body.queues : [];
  const seen = new Set();
  queues.forEach((q, i) => {
    const name = String(q.name);
    seen.add(name);
    let row = rows.get(name);
    if (!row) rows.set(name, row = newRow(name));
    renderRow(row, q, now);
    if (tbody.children[i] !== row.tr) tbody.insertBefore(row.tr, tbody.children[i] || null);
  });
  for (const [name, row] of rows) {
    if (!seen.has(name)) {
      row.tr.remove();
      rows.delete(name);
    }
  }
  show(emptyRow, queues.length === 0);
  if (!queues.length) setText(emptyRow.firstElementChild, "No queues known yet.");
  if (typeof body.window_seconds === "number") setText(recentHead, `Last ${Math.round(body.window_seconds / 60)} min p95`);

  const redis = body.broker === "redis";
  show(notRedis, !redis);
  show(sentHint, body.sent_events_seen === false);
  const polled = typeof body.polled_at === "number" ? fmtTime(body.polled_at) : null;
  const staleText = `Queue lengths could not be read${polled ? ` since ${polled}` : ""}: the lengths shown are the last known ones.`;
  if (redis && body.stale && stale.dataset.text !== staleText + body.error) {
    // An alert region: rewrite it only when what it says changes, or it is announced at every poll.
    stale.dataset.text = staleText + body.error;
    stale.replaceChildren(document.createTextNode(staleText), " ",
      el("span", { class: "banner-detail", text: String(body.error || "") }));
  }
  show(stale, Boolean(redis && body.stale));
  setText(summary, redis
    ? `${queues.length} queue${queues.length === 1 ? "" : "s"} · lengths read every ${interval} s${polled ? `, last at ${polled}` : ""}`
    : `${queues.length} queue${queues.length === 1 ? "" : "s"} · lengths unknown for this broker`);
}

async function refresh() {
  try {
    const response = await fetch(url("api/queues"), { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
  } catch (err) {
    setText(summary, `Could not reach the dashboard (${err.message}); retrying every ${interval} s.`);
  } finally {
    setTimeout(refresh, interval * 1000);
  }
}

startLive(); // connection indicator and broker banner
refresh();
