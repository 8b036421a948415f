// Audit log: newest first, re-read every 3 s; each entry expands to its parameters and every
// worker's reply (a launch or a bulk re-run: links to the tasks it sent). /audit#entry-<id> highlights
// one entry. Everything in an entry is shown as text.
import { startLive } from "./live.js";
import { el, fmtDateTime, fmtTime, hashId, setText, shortUuid, taskLink, url } from "./dom.js";
import { getJSON, repliesList } from "./control.js";

const REFRESH_MS = 3000;
const tbody = document.querySelector("#audit-table tbody");
const emptyRow = document.getElementById("audit-empty");
const status = document.getElementById("audit-status");
const open = new Set(); // ids of expanded entries
let lastKey = null;
let entries = [];
let scrolledTo = null; // the hash we already scrolled to (refreshes must not scroll again)

const targetId = () => hashId();

/** "14:03:07" today, "2024-05-01 14:03:07" on another day (the log outlives a restart with AUDIT_LOG). */
function fmtWhen(ts) {
  if (typeof ts !== "number") return "";
  return new Date(ts * 1000).toDateString() === new Date().toDateString() ? fmtTime(ts) : fmtDateTime(ts, { ms: false });
}

function paramsText(params) {
  if (!params || typeof params !== "object" || !Object.keys(params).length) return "";
  try {
    return JSON.stringify(params);
  } catch {
    return String(params);
  }
}

/** The ids of the tasks an entry sent (launch, re-run, bulk re-run): each a string, or none. */
function sentIds(params) {
  const ids = params && typeof params === "object" ? params.task_ids ?? params.task_id : null;
  const list = Array.isArray(ids) ? ids : ids != null ? [ids] : [];
  return list.filter((id) => typeof id === "string");
}

/** The parameters without the task ids (listed as links instead). */
function otherParams(params) {
  if (!params || typeof params !== "object" || Array.isArray(params)) return params;
  const { task_ids: _ids, task_id: _id, ...rest } = params;
  return rest;
}

function sentList(ids) {
  return el("p", { class: "audit-sent" }, el("span", { class: "muted", text: `Tasks sent (${ids.length}): ` }),
    ...ids.flatMap((id, i) => [i ? " " : null, taskLink(id, shortUuid(id), { class: "mono" })]));
}

/** A target is a hostname, a uuid, a task name, or for bulk actions {group} / {filters}. */
function targetText(target) {
  if (target == null) return "";
  if (typeof target !== "object") return String(target);
  if (typeof target.group === "string") return `failure group ${target.group}`;
  if (target.filters && typeof target.filters === "object") {
    const parts = Object.entries(target.filters).map(([k, v]) => `${k}=${v}`);
    return parts.length ? `tasks where ${parts.join(", ")}` : "every retained task";
  }
  return paramsText(target);
}

function entryRows(e) {
  const id = String(e.id);
  const expanded = open.has(id);
  const hasReplies = Boolean(e.replies && typeof e.replies === "object" && Object.keys(e.replies).length);
  const toggle = el("button", { type: "button", class: "small", text: expanded ? "Hide" : hasReplies ? "Replies" : "Details",
    "aria-expanded": expanded ? "true" : "false", "aria-controls": `entry-${id}-detail` });
  toggle.addEventListener("click", () => {
    if (open.has(id)) open.delete(id); else open.add(id);
    render(true);
  });
  const ok = e.ok === true;
  const row = el("tr", { id: `entry-${id}`, class: targetId() === `entry-${id}` ? "targeted" : null, dataset: { id, ok: ok ? "true" : "false" } },
    el("td", { class: "mono time", text: fmtWhen(e.time), title: fmtDateTime(e.time) }),
    el("td", { class: "user", text: e.user == null || e.user === "" ? "anonymous" : String(e.user) }),
    el("td", { class: "mono remote", text: String(e.remote_addr ?? "") }),
    el("td", { class: "mono action", text: String(e.action ?? "") }),
    el("td", { class: "mono target", text: targetText(e.target), title: targetText(e.target) }),
    el("td", { class: "result" }, el("span", { class: "badge", dataset: { state: ok ? "SUCCESS" : "FAILURE" }, text: ok ? "ok" : "failed" })),
    el("td", { class: "message", text: String(e.message ?? ""), title: String(e.message ?? "") }),
    el("td", { class: "toggle" }, toggle));
  if (!expanded) return [row];
  const sent = sentIds(e.params);
  const params = paramsText(sent.length ? otherParams(e.params) : e.params);
  const detail = el("tr", { id: `entry-${id}-detail`, class: "audit-detail" },
    el("td", { colspan: 8 },
      params ? el("p", {}, el("span", { class: "muted", text: "Parameters: " }), el("code", { text: params })) : null,
      sent.length ? sentList(sent) : null,
      el("p", { class: "muted", text: `At ${fmtDateTime(e.time)}` }),
      // A launch (and beat's Run now) talks to the broker, not to workers: no replies to wait for.
      e.action === "launch" || e.action === "beat_run" ? null : repliesList(e.replies, "No worker replies recorded for this action.")));
  return [row, detail];
}

function render(force = false) {
  const key = JSON.stringify(entries);
  if (!force && key === lastKey) return;
  lastKey = key;
  if (!entries.length) {
    setText(emptyRow.firstElementChild, "No actions yet. Every launch, revoke, re-run, bulk action and worker control taken from this dashboard is listed here.");
    tbody.replaceChildren(emptyRow);
    return;
  }
  tbody.replaceChildren(...entries.flatMap(entryRows));
  const id = targetId();
  if (id && scrolledTo !== id) {
    const row = document.getElementById(id);
    if (row) {
      scrolledTo = id;
      open.add(id.replace(/^entry-/, ""));
      render(true);
      document.getElementById(id).scrollIntoView({ block: "center" });
    }
  }
}

let loading = false;

async function load() {
  if (loading) return; // a slow answer: never pile requests up behind it
  loading = true;
  try {
    const res = await getJSON(url("api/audit?limit=100"));
    if (res.status !== 200 || !res.body || !Array.isArray(res.body.entries)) {
      setText(status, `could not load the audit log: ${(res.body && res.body.error) || res.status}`);
      if (!entries.length) setText(emptyRow.firstElementChild, "The audit log could not be loaded; retrying every 3 s.");
      return;
    }
    entries = res.body.entries;
    // A live region: say it once, not every 3 s (the table shows the entries' own times).
    setText(status, "re-read every 3 s");
    render();
  } finally {
    loading = false;
  }
}

window.addEventListener("hashchange", () => {
  scrolledTo = null;
  render(true);
});

load();
setInterval(() => {
  if (document.visibilityState === "visible") load();
}, REFRESH_MS);
startLive(); // the connection indicator and the broker banner
