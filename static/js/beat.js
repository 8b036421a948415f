// Beat: polls /api/beat every few seconds and draws one row per periodic entry (schedule in words, next run,
// the last run seen, missed runs), with Run now confirmed and audited like every control. Entry and task
// names, arguments and options are untrusted: text only.
import { startLive } from "./live.js";
import { el, fmtDateTime, fmtTime, relTime, setText, show, stateBadge, taskLink, url } from "./dom.js";
import { controlsEnabled, runAction } from "./control.js";

const POLL_MS = 5000;
const tbody = document.querySelector("#beat-table tbody");
const emptyRow = document.getElementById("beat-empty");
const summary = document.getElementById("beat-summary");
const down = document.getElementById("beat-down");
const note = document.getElementById("beat-note");
const result = document.getElementById("beat-result");
const rows = new Map(); // entry name -> {tr, cells}
const COLUMNS = ["name", "task", "args", "schedule", "next", "last", "missed", "run"];

function untilText(ts) {
  if (typeof ts !== "number") return "–";
  const s = ts - Date.now() / 1000;
  if (s <= 0) return `${fmtTime(ts)} (due now)`;
  if (s < 60) return `${fmtTime(ts)} (in ${Math.ceil(s)} s)`;
  if (s < 3600) return `${fmtTime(ts)} (in ${Math.round(s / 60)} min)`;
  return fmtDateTime(ts, { ms: false });
}

function argsText(entry) {
  const parts = [];
  if (entry.args && entry.args !== "[]" && entry.args !== "()") parts.push(`args ${entry.args}`);
  if (entry.kwargs && entry.kwargs !== "{}") parts.push(`kwargs ${entry.kwargs}`);
  const opts = entry.options && typeof entry.options === "object" ? entry.options : {};
  if (Object.keys(opts).length) parts.push(`options ${JSON.stringify(opts)}`);
  return parts.join(" · ") || "none";
}

function runNow(entry, button) {
  return runAction({
    url: url(`api/beat/${encodeURIComponent(entry.name)}/run`),
    body: {},
    confirm: {
      title: `Run ${entry.name} now?`,
      lines: [`Sends ${entry.task} once, now, outside its schedule.`, `Arguments: ${argsText(entry)}`,
        "Beat's own schedule is unchanged."],
      confirmLabel: "Run now",
    },
    result,
    busy: [button],
    onDone: (res) => (res.body && res.body.task_id
      ? [el("p", {}, "New task: ", taskLink(res.body.task_id, res.body.task_id))] : []),
  });
}

function newRow(entry) {
  const cells = {};
  const tr = el("tr", { dataset: { entry: entry.name } });
  for (const col of COLUMNS) tr.append(cells[col] = el("td", { class: col }));
  cells.name.classList.add("mono");
  cells.task.classList.add("mono");
  cells.args.classList.add("mono");
  return { tr, cells, entry };
}

/** Replace a cell's children only when what it shows changed (keeps focus and selection stable). */
function fill(cell, key, build) {
  if (cell.dataset.key === key) return;
  cell.dataset.key = key;
  cell.replaceChildren(...build());
}

function renderRow(row, entry) {
  const { cells } = row;
  row.entry = entry;
  setText(cells.name, entry.source === "redbeat" ? `${entry.name} (RedBeat)` : entry.name);
  fill(cells.task, entry.task, () => [el("a", { href: url(`tasks?name=${encodeURIComponent(entry.task)}`),
    text: entry.task, title: `Tasks named ${entry.task}` })]);
  setText(cells.args, argsText(entry));
  const sched = entry.schedule || {};
  setText(cells.schedule, sched.error ? `${sched.text} (${sched.error})` : sched.text);
  setText(cells.next, untilText(entry.next_run));
  const last = entry.last_run;
  fill(cells.last, last ? `${last.uuid} ${last.state} ${Math.floor(Date.now() / 10000)}` : "", () => (last
    ? [stateBadge(last.state), " ", taskLink(last.uuid, fmtTime(last.at), { title: `${last.uuid} · ${fmtDateTime(last.at)}` }),
      el("span", { class: "muted", text: ` ${relTime(last.at)}` })]
    : [el("span", { class: "muted", text: "none seen" })]));
  const missed = Array.isArray(entry.missed) ? entry.missed : [];
  row.tr.dataset.missed = missed.length ? "1" : "0";
  fill(cells.missed, JSON.stringify(missed), () => (missed.length
    ? [el("strong", { class: "beat-missed", text: `${missed.length} missed` }), " ",
      el("span", { class: "muted", text: `last due ${fmtTime(missed[missed.length - 1])}`,
        title: missed.map((t) => fmtDateTime(t, { ms: false })).join("\n") })]
    : [el("span", { class: "muted", text: "none" })]));
  if (controlsEnabled() && !cells.run.firstChild) {
    const button = el("button", { type: "button", class: "beat-run", text: "Run now…" });
    button.addEventListener("click", () => runNow(row.entry, button));
    cells.run.append(button);
  }
}

function render(body) {
  const entries = Array.isArray(body.entries) ? body.entries : [];
  const seen = new Set();
  entries.forEach((entry, i) => {
    const name = String(entry.name);
    seen.add(name);
    let row = rows.get(name);
    if (!row) rows.set(name, row = newRow(entry));
    renderRow(row, entry);
    if (tbody.children[i] !== row.tr) tbody.insertBefore(row.tr, tbody.children[i] || null);
  });
  for (const [name, row] of rows) {
    if (!seen.has(name)) {
      row.tr.remove();
      rows.delete(name);
    }
  }
  show(emptyRow, entries.length === 0);
  if (!entries.length) setText(emptyRow.firstElementChild, body.note || "No periodic entries.");
  show(note, Boolean(body.note && entries.length));
  if (body.note) setText(note, body.note);
  show(down, Boolean(body.beat_down));
  const missed = entries.filter((e) => Array.isArray(e.missed) && e.missed.length).length;
  setText(summary, `${entries.length} periodic entr${entries.length === 1 ? "y" : "ies"}`
    + (missed ? ` · ${missed} with missed runs` : "") + ` · read at ${fmtTime(Date.now() / 1000)}`);
}

async function refresh() {
  try {
    const response = await fetch(url("api/beat"), { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
  } catch (err) {
    setText(summary, `Could not reach the dashboard (${err.message}); retrying.`);
  } finally {
    setTimeout(refresh, POLL_MS);
  }
}

startLive(); // connection indicator and broker banner
refresh();
