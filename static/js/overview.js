// Overview: counts per state, workers online/offline, throughput chart, latest failures.
import uPlot from "../vendor/uPlot.esm.js";
import { startLive } from "./live.js";
import { STATES, el, fmtAge, fmtDateTime, fmtNumber, fmtTime, setText, show, taskLink, url } from "./dom.js";

const WINDOW_SECONDS = 300;

const countsBox = document.getElementById("counts");
const failuresBody = document.querySelector("#latest-failures tbody");
const chartBox = document.getElementById("throughput-chart");
const emptyWorkers = document.getElementById("empty-workers");

// -- counts and workers ----------------------------------------------------------------------------

function stateCard(state) {
  let card = countsBox.querySelector(`[data-state="${CSS.escape(state)}"]`);
  if (!card) { // a custom state (e.g. PROGRESS): a neutral card after the known ones
    card = el("a", { class: "card state-card", href: url(`tasks?state=${encodeURIComponent(state)}`), dataset: { state } },
      el("span", { class: "card-label" }, el("span", { class: "dot", "aria-hidden": "true" }), state),
      el("span", { class: "count", text: "0" }));
    countsBox.append(card);
  }
  return card;
}

function renderCounts(counts) {
  if (!counts) return;
  for (const [state, n] of Object.entries(counts)) {
    setText(stateCard(state).querySelector(".count"), fmtNumber(n));
  }
  // counts is complete but leaves out custom states that dropped to zero: forget their cards.
  for (const card of countsBox.querySelectorAll(".state-card")) {
    if (!(card.dataset.state in counts)) {
      if (STATES.includes(card.dataset.state)) setText(card.querySelector(".count"), "0");
      else card.remove();
    }
  }
}

function renderWorkers(workers) {
  if (!workers) return;
  setText(document.getElementById("workers-online"), fmtNumber(workers.online));
  setText(document.getElementById("workers-offline"), fmtNumber(workers.offline));
  show(emptyWorkers, workers.total === 0);
}

function renderTotals(totals) {
  if (!totals) return;
  setText(document.getElementById("totals-retained"), fmtNumber(totals.retained));
  setText(document.getElementById("totals-events"), fmtNumber(totals.events));
  setText(document.getElementById("totals-evicted"), fmtNumber(totals.evicted ?? 0));
}

// -- latest failures -------------------------------------------------------------------------------

function failureRow(task) {
  const when = task.timestamp;
  return el("tr", { dataset: { uuid: task.uuid } },
    el("td", { class: "time mono", title: fmtDateTime(when), text: fmtTime(when) }),
    el("td", { class: "name" }, taskLink(task.uuid, task.name || task.uuid)),
    el("td", { class: "exception mono", title: task.exception || "", text: task.exception || "" }),
    el("td", { class: "worker mono", text: task.hostname || "" }));
}

function renderFailures(failures) {
  if (!Array.isArray(failures)) return;
  if (failures.length === 0) {
    failuresBody.replaceChildren(el("tr", { class: "empty-row" }, el("td", { colspan: 4, text: "No failures yet" })));
  } else {
    failuresBody.replaceChildren(...failures.map(failureRow));
  }
}

// -- throughput chart ------------------------------------------------------------------------------

const buckets = new Map(); // unix second -> [succeeded, failed]
let chart = null;

function addBuckets(rows) {
  for (const row of rows || []) {
    if (Array.isArray(row) && row.length >= 3) buckets.set(Math.floor(row[0]), [row[1], row[2]]);
  }
}

function chartData() {
  let end = Math.floor(Date.now() / 1000);
  for (const second of buckets.keys()) if (second > end) end = second; // server clock ahead of ours
  const start = end - WINDOW_SECONDS + 1;
  for (const second of buckets.keys()) if (second < start) buckets.delete(second);
  const xs = [], ok = [], failed = [];
  for (let s = start; s <= end; s++) {
    const b = buckets.get(s);
    xs.push(s);
    ok.push(b ? b[0] : 0);
    failed.push(b ? b[1] : 0);
  }
  return [xs, ok, failed];
}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

const stepped = uPlot.paths.stepped({ align: 1 }); // per-second counts: steps, not slopes

function makeChart() {
  if (chart) chart.destroy();
  const ok = cssVar("--st-success"), bad = cssVar("--st-failure");
  const axis = { stroke: cssVar("--muted"), grid: { stroke: cssVar("--grid"), width: 1 }, ticks: { stroke: cssVar("--grid"), width: 1 },
    font: `11px ${cssVar("--font-sans")}` };
  chart = new uPlot({
    width: Math.max(200, chartBox.clientWidth),
    height: 200,
    cursor: { drag: { x: false, y: false } },
    legend: { live: true },
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.15)] } },
    axes: [{ ...axis, values: (u, splits) => splits.map((s) => fmtTime(s)) },
      { ...axis, size: 40, values: (u, splits) => splits.map((s) => (Number.isInteger(s) ? String(s) : "")) }],
    series: [
      { value: (u, v) => (v == null ? "–" : `${fmtTime(v)} (${fmtAge(Date.now() / 1000 - v)})`) },
      { label: "succeeded/s", stroke: ok, fill: ok + "22", width: 1.5, points: { show: false }, paths: stepped },
      { label: "failed/s", stroke: bad, fill: bad + "22", width: 1.5, points: { show: false }, paths: stepped },
    ],
  }, chartData(), chartBox);
}

function redrawChart() {
  if (!chart) return;
  chart.setData(chartData());
}

new ResizeObserver(() => chart && chart.setSize({ width: Math.max(200, chartBox.clientWidth), height: 200 })).observe(chartBox);
window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", makeChart);
// The time axis moves every second even without events, so the chart is redrawn once a second
// (never per event: a busy cluster sends an overview diff every push interval).
setInterval(redrawChart, 1000);

// -- live ------------------------------------------------------------------------------------------

startLive({
  payload: { view: "overview" },
  onSnapshot(snap) {
    renderCounts(snap.counts);
    renderWorkers(snap.workers);
    renderTotals(snap.totals);
    renderFailures(snap.failures || []);
    buckets.clear();
    addBuckets(snap.throughput);
    if (chart) redrawChart(); else makeChart();
  },
  on: {
    overview(diff) {
      renderCounts(diff.counts);
      renderWorkers(diff.workers);
      renderTotals(diff.totals);
      if ("failures" in diff) renderFailures(diff.failures);
      addBuckets(diff.throughput);
    },
  },
});

// -- beat: "beat may be down" (only with the user's app: its beat_schedule, RedBeat) ------------------

const beatDown = document.getElementById("beat-down");
const beatDetail = document.getElementById("beat-down-detail");
const BEAT_POLL_MS = 10_000;

async function pollBeat() {
  try {
    const response = await fetch(url("api/beat"), { headers: { Accept: "application/json" } });
    if (response.ok) {
      const body = await response.json();
      const late = (Array.isArray(body.entries) ? body.entries : []).filter((e) => Array.isArray(e.missed) && e.missed.length);
      show(beatDown, Boolean(body.beat_down));
      if (body.beat_down) {
        setText(beatDetail, `${late.map((e) => e.name).join(", ")} missed ${late.length === 1 ? "its" : "their"} last run`
          + " and no periodic task has been seen since.");
      }
    }
  } catch {
    // the connection badge already says the dashboard is unreachable
  } finally {
    setTimeout(pollBeat, BEAT_POLL_MS);
  }
}

if (document.getElementById("page").dataset.beat === "on") pollBeat();
