// Failures: groups of failures with the same signature, live, and the outcome counters; per group,
// bulk re-run and revoke (dry run first) unless the dashboard is read-only.
import { startLive } from "./live.js";
import { el, fmtDateTime, fmtNumber, fmtTime, setText, url } from "./dom.js";
import { bulkAction, controlsEnabled } from "./control.js";

const tbody = document.querySelector("#failure-groups tbody");
const sortSelect = document.getElementById("failure-sort");
const open = new Set(); // ids of groups whose sample traceback is shown
let last = null;
const controls = controlsEnabled();
const bulkResult = document.getElementById("bulk-result");
let bulkBusy = false; // one bulk action at a time (rows are rebuilt on every update)

const finalOnly = document.getElementById("failure-final-only");
const hiddenNote = document.getElementById("failure-hidden");
finalOnly.checked = new URLSearchParams(location.search).get("final") === "1";

// A group's outcomes (dashboard/core/failures.py): failed and gave up are final failures, retried and
// recovered are not; a group with no final failure holds only retries.
const OUTCOMES = [["FAILURE", "failed"], ["RETRY", "retried"], ["RECOVERED", "recovered"], ["GAVE_UP", "gave up"]];
const hasFinalFailure = (g) => Number((g.outcomes || {}).FAILURE) > 0;

function outcomesCell(g) {
  const counts = g.outcomes || {};
  const td = el("td", { class: "outcomes" });
  for (const [key, label] of OUTCOMES) {
    const n = Number(counts[key]) || 0;
    td.append(el("span", { class: "outcome", dataset: n ? { outcome: key } : { outcome: key, zero: "" }, text: `${label} ${fmtNumber(n)}` }));
  }
  if (!hasFinalFailure(g)) {
    td.append(el("span", { class: "no-final", text: "no final failure",
      title: "Every task here retried: it recovered, gave up in another group, or is still retrying" }));
  }
  return td;
}

const SVG = "http://www.w3.org/2000/svg";

/** A tiny inline bar chart of counts per bucket (built with DOM calls: no markup from data). */
function sparkline(counts) {
  const values = Array.isArray(counts) ? counts.map((n) => Number(n) || 0) : [];
  const width = 120, height = 24, max = Math.max(1, ...values);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "sparkline");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${values.reduce((a, b) => a + b, 0)} in the last ${values.length} minutes`);
  const step = values.length ? width / values.length : width;
  values.forEach((n, i) => {
    if (!n) return;
    const h = Math.max(1, (n / max) * height);
    const bar = document.createElementNS(SVG, "rect");
    bar.setAttribute("x", String(i * step));
    bar.setAttribute("y", String(height - h));
    bar.setAttribute("width", String(Math.max(2, step - 0.5)));
    bar.setAttribute("height", String(h));
    svg.append(bar);
  });
  return svg;
}

/** "a.b.c (12), d (3)" for a {key: count} object, biggest first. */
function counted(obj, limit = 3) {
  const entries = Object.entries(obj || {}).sort((a, b) => b[1] - a[1]);
  const shown = entries.slice(0, limit).map(([k, n]) => `${k} (${fmtNumber(n)})`);
  if (entries.length > limit) shown.push(`+${entries.length - limit} more`);
  return shown.join(", ");
}

function groupRows(g) {
  const id = String(g.id);
  const tasksHref = url(`tasks?group=${encodeURIComponent(id)}`);
  const toggle = el("button", { type: "button", class: "small", text: open.has(id) ? "Hide" : "Traceback",
    "aria-expanded": open.has(id) ? "true" : "false" });
  toggle.addEventListener("click", () => {
    if (open.has(id)) open.delete(id); else open.add(id);
    render(last);
  });
  const row = el("tr", { dataset: { group: id, final: hasFinalFailure(g) ? "1" : "0" } },
    el("td", { class: "exception" },
      el("a", { href: tasksHref, class: "mono exc-type", text: String(g.exc_type ?? "") }),
      el("div", { class: "mono exc-message", text: String(g.message ?? "") })),
    el("td", { class: "frame mono", text: g.frame ? String(g.frame) : "—", title: g.frame ? String(g.frame) : "" }),
    el("td", { class: "count num" }, el("a", { href: tasksHref, text: fmtNumber(g.count), title: "List these tasks" })),
    el("td", { class: "spark" }, sparkline(g.sparkline)),
    outcomesCell(g),
    el("td", { class: "mono time", title: fmtDateTime(g.first_seen), text: fmtTime(g.first_seen) }),
    el("td", { class: "mono time", title: fmtDateTime(g.last_seen), text: fmtTime(g.last_seen) }),
    el("td", { class: "names mono", text: counted(g.task_names) }),
    el("td", { class: "workers mono", text: counted(g.workers) }),
    el("td", { class: "group-actions" }, toggle, ...(controls ? bulkButtons(g) : [])));
  if (!open.has(id)) return [row];
  const sample = g.sample || {};
  const detail = el("tr", { class: "group-detail", dataset: { detailFor: id } },
    el("td", { colspan: 10 },
      el("p", { class: "exception mono", text: String(sample.exception ?? "") }),
      el("pre", { class: "traceback", tabindex: "0", text: String(sample.traceback ?? "(no traceback in the events)") })));
  return [row, detail];
}

function bulkButtons(g) {
  const id = String(g.id);
  const what = `failure group ${String(g.exc_type ?? "")}: ${String(g.message ?? "")}`.slice(0, 200);
  return [["rerun", "Re-run…", "Re-run the tasks of this group with their original args (dry run first)"],
    ["revoke", "Revoke…", "Revoke the unfinished tasks of this group (dry run first)"]].map(([action, text, title]) => {
    const button = el("button", { type: "button", class: "small", dataset: { bulk: action }, text, title, disabled: bulkBusy });
    button.addEventListener("click", async () => {
      if (bulkBusy) return;
      bulkBusy = true;
      render(last);
      try {
        await bulkAction({ action, target: { group: id }, what, result: bulkResult });
        bulkResult.scrollIntoView({ block: "nearest" });
      } finally {
        bulkBusy = false;
        render(last);
      }
    });
    return button;
  });
}

function renderOutcomes(outcomes) {
  for (const card of document.querySelectorAll("#outcomes [data-outcome]")) {
    setText(card.querySelector(".count"), fmtNumber((outcomes || {})[card.dataset.outcome] ?? 0));
  }
}

function render(snap) {
  if (!snap) return;
  last = snap;
  renderOutcomes(snap.outcomes);
  let groups = Array.isArray(snap.groups) ? [...snap.groups] : [];
  if (sortSelect.value === "count") groups.sort((a, b) => b.count - a.count || b.last_seen - a.last_seen);
  else groups.sort((a, b) => b.last_seen - a.last_seen);
  const all = groups.length;
  if (finalOnly.checked) groups = groups.filter(hasFinalFailure);
  const hidden = all - groups.length;
  setText(hiddenNote, hidden ? `(${fmtNumber(hidden)} hidden)` : "");
  if (!groups.length) {
    tbody.replaceChildren(el("tr", { class: "empty-row" }, el("td", { colspan: 10,
      text: hidden
        ? `No group with a final failure: the ${fmtNumber(hidden)} hidden hold only retries. Untick “Hide groups with no final failure” to see them.`
        : "No failures yet. Failed and retried tasks are grouped here by exception type, message shape and the line of your code that raised." })));
    return;
  }
  tbody.replaceChildren(...groups.flatMap(groupRows));
}

sortSelect.addEventListener("change", () => render(last));
finalOnly.addEventListener("change", () => {
  const url = new URL(location.href);
  if (finalOnly.checked) url.searchParams.set("final", "1");
  else url.searchParams.delete("final");
  history.replaceState(history.state, "", url); // a copied link keeps the toggle
  render(last);
});

startLive({
  payload: { view: "failures" },
  onSnapshot: render,
  on: { failures: render },
});
