// Controls shared by the worker, task, failures, tasks and audit pages: JSON requests with the CSRF
// token, a confirmation dialog, the result of an action with every worker's reply, and the bulk
// flow (dry run -> confirm -> run). Replies, hostnames and task names are untrusted: text only.
import { el, fmtNumber, taskLink, url } from "./dom.js";

const main = document.getElementById("page");
const REQUEST_TIMEOUT_MS = 30_000;

/** Whether control buttons may be shown (false in read-only mode: nothing is rendered then). */
export function controlsEnabled() {
  return Boolean(main) && main.dataset.controls === "on";
}

async function parse(response) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    const snippet = text.replace(/\s+/g, " ").trim().slice(0, 160);
    const reason = `${response.status} ${response.statusText}`.trim();
    return { error: `The server answered ${reason} without JSON${snippet ? `: ${snippet}` : ""}` };
  }
}

async function request(url, options) {
  let response;
  try {
    // A hung server must not leave requests (and the polls behind them) waiting forever.
    response = await fetch(url, { credentials: "same-origin", signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS), ...options });
  } catch (err) {
    return { status: 0, body: { error: `Could not reach the dashboard (${(err && err.message) || err}); is it running?` } };
  }
  return { status: response.status, body: await parse(response) };
}

/** POST a JSON body to a same-origin endpoint -> {status, body}; status 0 when the network failed. */
export function postJSON(url, body = {}) {
  return request(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json",
      "X-CSRFToken": (main && main.dataset.csrfToken) || "" },
    body: JSON.stringify(body),
  });
}

/** GET a JSON endpoint -> {status, body}, with the same error handling as postJSON. */
export function getJSON(url) {
  return request(url, { headers: { Accept: "application/json" } });
}

/** Whether a {status, body} answer is a success (2xx and not {ok: false}). */
export const succeeded = (res) => res.status >= 200 && res.status < 300 && res.body && res.body.ok !== false;

// -- confirmation ----------------------------------------------------------------------------------

/**
 * Ask before acting: a modal <dialog> that says exactly what will happen. Resolves true on confirm,
 * false on Cancel or Escape. Dangerous actions get a red button and the focus starts on Cancel.
 * `lines` are strings or nodes; `extra` nodes (e.g. an option checkbox) go below them.
 */
export function confirmAction({ title, lines = [], confirmLabel = "Confirm", danger = false, extra = [] }) {
  const cancel = el("button", { type: "submit", value: "cancel", class: "confirm-cancel", text: "Cancel" });
  const ok = el("button", { type: "submit", value: "confirm", class: `confirm-ok ${danger ? "danger" : "primary"}`,
    text: confirmLabel });
  const dialog = el("dialog", { id: "confirm-dialog", class: "confirm-dialog", "aria-labelledby": "confirm-title" },
    el("form", { method: "dialog" },
      el("h2", { id: "confirm-title", text: title }),
      el("ul", { class: "confirm-lines" }, ...lines.filter((l) => l != null).map((line) => el("li", {}, line))),
      ...extra,
      el("div", { class: "confirm-buttons" }, cancel, ok)));
  if (danger) dialog.dataset.danger = "1";
  document.getElementById("confirm-dialog")?.remove();
  document.body.append(dialog);
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "confirm");
      dialog.remove();
    }, { once: true });
    dialog.showModal(); // Escape fires "cancel" and closes with an empty returnValue
    (danger ? cancel : ok).focus();
  });
}

// -- results ---------------------------------------------------------------------------------------

/** One worker's reply as text: {"ok": "..."} -> its text, {"error": ...} -> "error: ...", else JSON. */
export function replyText(reply) {
  if (reply == null) return "no reply";
  if (typeof reply === "string") return reply;
  if (typeof reply === "object" && !Array.isArray(reply)) {
    const keys = Object.keys(reply);
    if (keys.length === 1 && keys[0] === "ok") return typeof reply.ok === "string" ? reply.ok : JSON.stringify(reply.ok);
    if (keys.length === 1 && keys[0] === "error") return `error: ${typeof reply.error === "string" ? reply.error : JSON.stringify(reply.error)}`;
  }
  try {
    return JSON.stringify(reply);
  } catch {
    return String(reply);
  }
}

const isErrorReply = (reply) => reply == null || (typeof reply === "object" && !Array.isArray(reply) && "error" in reply);

/** hostname -> reply as a list (every worker that answered), or a line saying nobody did. */
export function repliesList(replies, emptyText = "No worker replied.") {
  const entries = replies && typeof replies === "object" ? Object.entries(replies) : [];
  if (!entries.length) return el("p", { class: "replies-empty muted", text: emptyText });
  return el("ul", { class: "replies" }, ...entries.map(([host, reply]) => el("li", {
    dataset: { hostname: host, ok: isErrorReply(reply) ? "false" : "true" } },
  el("span", { class: "reply-host mono", text: host }), " ",
  el("span", { class: "reply-text mono", text: replyText(reply) }))));
}

export const auditLink = (id) => el("a", { class: "audit-link", href: url(`audit#entry-${encodeURIComponent(id)}`),
  text: `audit entry #${id}` });

/**
 * Show the answer of an action: ok/failed, its message, every worker's reply and a link to its
 * audit entry. `extra` nodes (a new task's link, counts) go after the message.
 */
export function renderResult(container, response, { extra = [], emptyReplies } = {}) {
  const res = response || { status: 0, body: { error: "no answer" } };
  const body = res.body && typeof res.body === "object" ? res.body : {};
  const ok = succeeded(res);
  const message = body.message || body.error || (ok ? "Done." : `The request failed (${res.status || "network"}).`);
  const replies = "replies" in body ? repliesList(body.replies, emptyReplies) : null;
  container.replaceChildren(
    el("div", { class: "result-head" },
      el("span", { class: "badge result-badge", dataset: { state: ok ? "SUCCESS" : "FAILURE" }, text: ok ? "ok" : "failed" }), " ",
      el("span", { class: "result-message", text: message }),
      body.audit_id != null ? el("span", { class: "muted" }, " · ", auditLink(body.audit_id)) : null),
    ...extra.filter(Boolean), ...(replies ? [replies] : []));
  container.dataset.ok = ok ? "true" : "false";
  container.hidden = false;
  return ok;
}

/** A "working…" line in a result box while a request is in flight. */
export function renderPending(container, text) {
  container.replaceChildren(el("p", { class: "muted result-pending", text }));
  delete container.dataset.ok;
  container.hidden = false;
}

/**
 * Confirm, post and show the result. Buttons in `busy` are disabled while it runs.
 * Returns the response, or null when the user cancelled.
 */
export async function runAction({ url, body, confirm, result, busy = [], pendingText = "Sending…", onDone, emptyReplies }) {
  if (!(await confirmAction(confirm))) return null;
  const restore = hold(busy);
  renderPending(result, pendingText);
  try {
    const res = await postJSON(url, body);
    const extra = onDone ? onDone(res) || [] : [];
    renderResult(result, res, { extra, emptyReplies });
    return res;
  } finally {
    restore();
  }
}

/** Disable buttons while a request runs; the returned function puts back how each one was (a button
 * disabled for a reason, such as an impossible re-run, stays disabled). */
function hold(buttons) {
  const was = buttons.map((b) => b.disabled);
  for (const b of buttons) b.disabled = true;
  return () => buttons.forEach((b, i) => { b.disabled = was[i]; });
}

// -- bulk actions ----------------------------------------------------------------------------------

/** "1 task", "3 tasks" (or the given plural): counts in dialogs and results. */
export const plural = (n, one, many = `${one}s`) => `${fmtNumber(n)} ${n === 1 ? one : many}`;

/**
 * Re-run or revoke many tasks: a dry run counts them, the dialog says how many will be acted on and
 * why others are skipped, and the run is limited to exactly the count the user confirmed.
 * `target` is {group} or {filters}; `what` describes it ("failure group ValueError…").
 */
export async function bulkAction({ action, target, what, result, busy = [] }) {
  const verb = action === "rerun" ? "Re-run" : "Revoke";
  const restore = hold(busy);
  renderPending(result, "Counting the tasks (dry run)…");
  try {
    const dry = await postJSON(url("api/bulk"), { action, ...target, dry_run: true });
    if (dry.status !== 200 || !dry.body || typeof dry.body.will_act_on !== "number") {
      renderResult(result, dry);
      return null;
    }
    const d = dry.body;
    const skipped = Object.entries(d.skipped || {}).filter(([, n]) => n > 0)
      .map(([reason, n]) => `${plural(n, "task")} skipped: ${reason}`);
    const counts = [
      `Matched: ${plural(d.matched, "task")} (${what}).`,
      `Eligible: ${fmtNumber(d.eligible)} — ${action === "rerun" ? "their args and kwargs can be recovered exactly" : "not finished yet"}.`,
      d.eligible > d.cap ? `Cap: at most ${fmtNumber(d.cap)} tasks per bulk action.` : `Cap: ${fmtNumber(d.cap)} per bulk action.`,
    ];
    if (d.will_act_on === 0) {
      result.replaceChildren(el("div", { class: "result-head" },
        el("span", { class: "badge result-badge", dataset: { state: "PENDING" }, text: "nothing to do" }), " ",
        el("span", { class: "result-message", text: `No task can be ${action === "rerun" ? "re-run" : "revoked"}.` })),
      el("ul", { class: "bulk-counts" }, ...[...counts, ...skipped].map((t) => el("li", { text: t }))));
      result.dataset.ok = "false";
      return null;
    }
    renderPending(result, `Dry run: ${fmtNumber(d.will_act_on)} of ${plural(d.matched, "matching task")} can be acted on; waiting for your confirmation…`);
    let terminate = null;
    const extra = [];
    if (action === "revoke") {
      terminate = el("input", { type: "checkbox", id: "bulk-terminate" });
      extra.push(el("label", { class: "confirm-option" }, terminate, " Also terminate the ones already running (SIGTERM)"));
    }
    const confirmed = await confirmAction({
      title: `${verb} ${plural(d.will_act_on, "task")}?`,
      lines: [...counts, ...skipped,
        el("strong", { text: action === "rerun"
          ? `${plural(d.will_act_on, "new task")} will be sent with the same args and kwargs (newest first).`
          : `${plural(d.will_act_on, "task")} will be revoked (newest first): workers will not run them.` })],
      confirmLabel: `${verb} ${fmtNumber(d.will_act_on)}`,
      danger: action === "revoke",
      extra,
    });
    if (!confirmed) {
      renderPending(result, "Cancelled: nothing was sent.");
      return null;
    }
    renderPending(result, `${verb === "Re-run" ? "Re-running" : "Revoking"} ${plural(d.will_act_on, "task")}…`);
    // The cursor keeps the run to the tasks the dry run counted (newer matches are left alone).
    const body = { action, ...target, dry_run: false, limit: d.will_act_on, cursor: d.cursor };
    if (terminate) body.terminate = terminate.checked;
    const res = await postJSON(url("api/bulk"), body);
    renderResult(result, res, { extra: bulkDetails(action, res.body || {}) });
    return res;
  } finally {
    restore();
  }
}

function bulkDetails(action, body) {
  if (typeof body.acted_on !== "number") return [];
  const nodes = [el("p", { class: "bulk-acted", text: action === "rerun"
    ? `${plural(body.acted_on, "task")} re-run.` : `${plural(body.acted_on, "task")} revoked.` })];
  const ids = action === "rerun" ? body.task_ids : body.revoked;
  if (Array.isArray(ids) && ids.length) {
    nodes.push(el("details", { class: "bulk-ids", open: action === "rerun" && ids.length <= 20 },
      el("summary", { text: action === "rerun" ? "New tasks" : "Revoked tasks" }),
      el("ul", { class: "plain-list mono" }, ...ids.map((id) => el("li", {}, taskLink(String(id)))))));
  }
  if (Array.isArray(body.failed) && body.failed.length) {
    nodes.push(el("ul", { class: "bulk-errors" }, ...body.failed.map((e) => el("li", { text: typeof e === "string" ? e : JSON.stringify(e) }))));
  }
  return nodes;
}

// -- worker facts shared by the workers list and the worker page -----------------------------------

/** "celery.concurrency.prefork:TaskPool" -> "prefork"; a short name stays as it is. */
export function poolName(impl) {
  if (typeof impl !== "string" || !impl) return "?";
  const mod = impl.split(":")[0];
  const last = mod.split(".").pop();
  return last || impl;
}

/** The pool's size: live processes when known (prefork shrinks them), else its max concurrency. */
export function poolSize(pool) {
  if (!pool || typeof pool !== "object") return null;
  if (typeof pool.processes === "number") return pool.processes;
  if (Array.isArray(pool.processes)) return pool.processes.length; // raw stats: the pids
  return typeof pool.max_concurrency === "number" ? pool.max_concurrency : null;
}

/** "prefork · 4", "prefork · 3 (autoscale 2–6)", or "–" when inspect has not answered yet. */
export function fmtPool(pool) {
  if (!pool || typeof pool !== "object") return "–";
  const size = poolSize(pool);
  const auto = pool.autoscaler && typeof pool.autoscaler === "object" ? pool.autoscaler : null;
  return [poolName(pool.implementation), size != null ? String(size) : null].filter(Boolean).join(" · ")
    + (auto ? ` (autoscale ${auto.min ?? "?"}–${auto.max ?? "?"})` : "");
}

/** Seconds -> "45 s", "12 min", "3 h 05 min", "2 d 4 h". */
export function fmtUptime(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "–";
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** Uptime now: the uptime inspect reported plus the time since, for an online worker. */
export function uptimeNow(w) {
  if (!w || typeof w.uptime !== "number") return null;
  const since = w.online && typeof w.inspect_at === "number" ? Math.max(0, Date.now() / 1000 - w.inspect_at) : 0;
  return w.uptime + since;
}

export const workerHref = (hostname) => url(`workers/${encodeURIComponent(hostname)}`);
