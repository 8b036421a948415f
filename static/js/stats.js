// Task types: per-name counts, failure rate, runtime and worker-wait percentiles (queue wait on hover), live.
import { startLive } from "./live.js";
import { el, fmtDuration, fmtNumber, url } from "./dom.js";

const tbody = document.querySelector("#stats-table tbody");
const windowSelect = document.getElementById("stats-window");
let last = null;

const secs = (v) => (typeof v === "number" ? fmtDuration(v) : "–");
const pct = (v) => (typeof v === "number" ? `${(v * 100).toFixed(v > 0 && v < 0.01 ? 2 : 1)} %` : "–");

function row(r) {
  const name = String(r.name ?? "");
  const runtime = r.runtime || {}, wait = r.queue_wait || {}, sent = r.queue_wait_sent || {};
  const waitTitle = typeof sent.p50 === "number" ? `Queue wait (sent → started): p50 ${secs(sent.p50)}, p95 ${secs(sent.p95)}` : "";
  return el("tr", { dataset: { name } },
    el("td", { class: "mono" }, el("a", { href: url(`tasks?name=${encodeURIComponent(name)}`), text: name })),
    el("td", { class: "num", text: fmtNumber(r.count) }),
    el("td", { class: "num" }, el("a", { href: url(`tasks?name=${encodeURIComponent(name)}&state=FAILURE`), text: fmtNumber(r.failed) })),
    el("td", { class: "num", text: fmtNumber(r.retried) }),
    el("td", { class: "num failure-rate", dataset: { high: r.failure_rate > 0.05 ? "1" : "0" }, text: pct(r.failure_rate) }),
    el("td", { class: "num mono", text: secs(runtime.p50) }),
    el("td", { class: "num mono", text: secs(runtime.p95) }),
    el("td", { class: "num mono", text: secs(runtime.p99) }),
    el("td", { class: "num mono", title: waitTitle, text: secs(wait.p50) }),
    el("td", { class: "num mono", title: waitTitle, text: secs(wait.p95) }));
}

function render(snap) {
  if (!snap) return;
  last = snap;
  const recent = windowSelect.options[1];
  if (typeof snap.window_seconds === "number") recent.textContent = `last ${Math.round(snap.window_seconds / 60)} minutes`;
  const rows = Array.isArray(snap[windowSelect.value]) ? snap[windowSelect.value] : [];
  if (!rows.length) {
    tbody.replaceChildren(el("tr", { class: "empty-row" }, el("td", { colspan: 10,
      text: "No finished tasks in this window yet. Each task type gets a row once one of its tasks succeeds or fails." })));
    return;
  }
  tbody.replaceChildren(...rows.map(row));
}

windowSelect.addEventListener("change", () => render(last));

startLive({ payload: { view: "stats" }, onSnapshot: render, on: { stats: render } });
