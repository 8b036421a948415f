// One task: fields, exception + traceback, retry attempts, timeline, relatives, progress, and its
// controls (revoke, terminate, re-run) which follow the live state.
import { page, startLive } from "./live.js";
import {
  DERIVED_RUNTIME_TITLE, STATES, el, fmtDateTime, fmtDelta, fmtDuration, fmtRuntime, fmtValue, progressOf, setAttr,
  setBadge, setText, shortUuid, show, stateBadge, taskHref, taskLink, url,
} from "./dom.js";
import { controlsEnabled, getJSON, runAction, workerHref } from "./control.js";

const uuid = page.dataset.uuid;
const $ = (id) => document.getElementById(id);
const field = (name) => document.querySelector(`#task-fields [data-field="${name}"]`);
const body = $("task-body");
const unknown = $("task-unknown");
let rendered = {}; // keys of the last rendered lists, to rebuild them only when they change

const firstNumber = (...values) => values.find((v) => typeof v === "number");

function setField(name, value) {
  const dd = field(name);
  const text = value == null || value === "" ? "—" : String(value);
  setText(dd, text);
  dd.classList.toggle("empty", text === "—");
}

function renderFields(t) {
  setField("uuid", t.uuid);
  setField("name", t.name);
  const stateDd = field("state");
  if (!stateDd.firstChild || stateDd.firstChild.nodeType !== 1) stateDd.replaceChildren(el("span", { class: "badge" }));
  setBadge(stateDd.firstChild, t.state);

  const worker = t.worker ?? t.hostname;
  const workerDd = field("worker");
  if (worker) {
    const href = workerHref(worker);
    const link = workerDd.querySelector("a");
    if (link && link.getAttribute("href") === href) setText(link, worker);
    else workerDd.replaceChildren(el("a", { href, text: worker }));
    workerDd.classList.remove("empty");
  } else {
    setField("worker", null);
  }
  setField("args", fmtValue(t.args));
  setField("kwargs", fmtValue(t.kwargs));
  setField("result", fmtValue(t.result));
  setField("retries", t.retries);
  setField("runtime", fmtRuntime(t));
  field("runtime").title = typeof t.runtime !== "number" && typeof t.runtime_derived === "number" ? DERIVED_RUNTIME_TITLE : "";
  const wait = typeof t.received === "number" && typeof t.started === "number" ? t.started - t.received : null;
  setField("queue_wait", wait != null ? fmtDuration(Math.max(0, wait)) : null); // worker wait: received → started
  const sentWait = typeof t.sent === "number" && typeof t.started === "number" ? t.started - t.sent : null;
  setField("queue_wait_sent", sentWait != null ? fmtDuration(Math.max(0, sentWait)) : null); // queue wait: sent → started
  setField("eta", fmtValue(t.eta));
  setField("expires", fmtValue(t.expires));
  setField("client", t.client);
  setField("routing", t.exchange || t.routing_key ? `${t.exchange || "(default)"} / ${t.routing_key || "—"}` : null);
  setField("queue", t.queue);
  setField("sent", fmtDateTime(t.sent));
  setField("received", fmtDateTime(t.received));
  setField("started", fmtDateTime(t.started));
  setField("finished", fmtDateTime(firstNumber(t.succeeded, t.failed, t.revoked, t.rejected)));
  const extra = t.extra && Object.keys(t.extra).length ? fmtValue(t.extra) : null;
  show($("task-extra-row"), Boolean(extra));
  if (extra) setField("extra", extra);
}

function renderError(t) {
  const failing = t.state === "FAILURE" || t.state === "RETRY";
  const visible = failing || Boolean(t.exception);
  const panel = $("task-error");
  show(panel, visible);
  if (!visible) return;
  // A task that succeeded after retries keeps its last exception: shown, but as history, below.
  const resolved = !failing && t.state === "SUCCESS";
  panel.classList.toggle("resolved", resolved);
  setText(panel.querySelector(".panel-title"), resolved ? "Last exception (before a retry that succeeded)" : "Exception");
  setText($("task-exception"), fmtValue(t.exception) || "(no exception text)");
  const tb = typeof t.traceback === "string" ? t.traceback : "";
  show($("task-traceback-box"), Boolean(tb));
  setText($("task-traceback"), tb); // unchanged text keeps the scroll position
}

/** Copy a node's text; without the clipboard API (plain http on a remote host) select it for Ctrl+C. */
async function copyText(node, status) {
  try {
    await navigator.clipboard.writeText(node.textContent);
    setText(status, "Copied");
  } catch {
    const range = document.createRange();
    range.selectNodeContents(node);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    setText(status, "Selected: press Ctrl+C to copy");
  }
  setTimeout(() => setText(status, ""), 2500);
}

$("copy-traceback").addEventListener("click", () => copyText($("task-traceback"), $("copy-status")));
$("copy-uuid").addEventListener("click", () => copyText(field("uuid"), $("copy-uuid-status")));

function renderProgress(t) {
  const p = progressOf(t.progress ?? t.extra);
  const box = $("task-progress");
  show(box, Boolean(p));
  if (!p) return;
  const bar = box.querySelector(".bar");
  bar.querySelector(".bar-fill").style.width = `${(p.ratio * 100).toFixed(1)}%`;
  setAttr(bar, "aria-valuemin", 0);
  setAttr(bar, "aria-valuemax", p.total);
  setAttr(bar, "aria-valuenow", p.current);
  setText(box.querySelector(".progress-text"), `${p.current} / ${p.total} (${Math.round(p.ratio * 100)} %)`);
}

function renderTimeline(t) {
  // Events of one worker arrive in the order it sent them, but task-sent comes from the client over
  // another connection and may arrive after task-received; its timestamp is no better a guide (the
  // client stamps it after publishing the task, so a fast worker's task-received can be earlier).
  // The client's task-sent is what happened first: it leads, the rest keep their arrival order.
  const events = Array.isArray(t.history) ? t.history : [];
  const lead = events.findIndex((h) => h.event === "sent");
  const history = lead > 0 ? [events[lead], ...events.slice(0, lead), ...events.slice(lead + 1)] : events;
  const key = JSON.stringify(history);
  if (rendered.timeline === key) return;
  rendered.timeline = key;
  const stamps = history.map((h) => h.timestamp).filter((ts) => typeof ts === "number");
  const first = stamps.length ? Math.min(...stamps) : null; // offsets from the earliest: never negative
  $("timeline").replaceChildren(...history.map((h) => el("li", { dataset: { event: String(h.event) } },
    el("span", { class: "tl-event", text: String(h.event) }),
    el("span", { class: "tl-time mono", text: fmtDateTime(h.timestamp) }),
    el("span", { class: "tl-delta mono", text: typeof first === "number" ? fmtDelta(h.timestamp - first) : "" }))));
  if (!history.length) $("timeline").append(el("li", { class: "muted", text: "No events yet." }));
}

function renderAttempts(t) {
  const attempts = Array.isArray(t.attempts) ? t.attempts : [];
  show($("task-attempts"), attempts.length > 0);
  const key = JSON.stringify(attempts);
  if (rendered.attempts === key) return;
  rendered.attempts = key;
  const list = $("task-attempts").querySelector(".attempts");
  list.replaceChildren(...attempts.map((a, i) => el("li", { class: "attempt" },
    el("div", { class: "attempt-head" },
      el("span", { class: "attempt-no", text: `Attempt ${i + 1}` }),
      el("span", { class: "mono muted", text: fmtDateTime(a.timestamp) }),
      a.hostname ? el("span", { class: "mono muted", text: a.hostname }) : null),
    el("p", { class: "exception mono", text: fmtValue(a.exception) || "(no exception text)" }),
    a.traceback ? el("details", {}, el("summary", { text: "Traceback" }),
      el("pre", { class: "traceback", text: fmtValue(a.traceback) })) : null)));
}

function renderRelative(id, rel, value) {
  const link = $(id);
  const has = typeof value === "string" && value !== "" && value !== uuid;
  show(link, has);
  show(document.querySelector(`[data-rel="${rel}"]`), has);
  if (has) {
    setAttr(link, "href", taskHref(value));
    setText(link, value);
  }
}

function renderRelatives(t) {
  renderRelative("task-parent", "parent", t.parent_id);
  renderRelative("task-root", "root", t.root_id);
  const children = Array.isArray(t.children) ? t.children : [];
  const key = children.join(",");
  if (rendered.children !== key) {
    rendered.children = key;
    $("task-children").replaceChildren(...children.map((c) => el("li", {}, el("a", { href: taskHref(c), text: c }))));
  }
  show($("task-no-children"), children.length === 0);
}

/** The task's whole workflow (chain, group, chord) from its root, each node with its live state. */
function renderTree(tree) {
  const nodes = tree && Array.isArray(tree.nodes) ? tree.nodes : [];
  show($("workflow"), nodes.length > 1);
  const key = JSON.stringify(nodes);
  if (rendered.tree === key) return;
  rendered.tree = key;
  const kids = new Map();
  for (const n of nodes) {
    if (!kids.has(n.parent)) kids.set(n.parent, []);
    kids.get(n.parent).push(n);
  }
  const item = (n, depth) => {
    const here = n.uuid === uuid;
    const li = el("li", { dataset: { uuid: String(n.uuid), state: String(n.state ?? "UNKNOWN") } },
      stateBadge(n.state ?? "unseen"), " ",
      here ? el("strong", { class: "mono", text: `${n.name || shortUuid(n.uuid)} (this task)` })
        : el("a", { class: "mono", href: taskHref(n.uuid), title: String(n.uuid), text: n.name || shortUuid(n.uuid) }));
    if (here) li.setAttribute("aria-current", "true");
    const children = depth < 50 ? kids.get(n.uuid) || [] : []; // a malformed cycle cannot recurse forever
    if (children.length) li.append(el("ul", {}, ...children.map((c) => item(c, depth + 1))));
    return li;
  };
  $("workflow-tree").replaceChildren(...(kids.get(null) || []).map((n) => item(n, 0)));
  const done = nodes.filter((n) => ["SUCCESS", "FAILURE", "REVOKED", "REJECTED"].includes(n.state)).length;
  setText($("workflow-summary"), `· ${done} of ${nodes.length} finished`);
  show($("workflow-truncated"), Boolean(tree && tree.truncated));
}

/** Where each long field is shown: a shortened one gets a note and a link to its whole value after it. */
const LONG_FIELDS = {
  args: () => field("args"), kwargs: () => field("kwargs"), result: () => field("result"),
  exception: () => $("task-exception"), traceback: () => $("task-traceback"),
};

function renderTruncated(t) {
  const truncated = t.truncated || {};
  for (const [name, target] of Object.entries(LONG_FIELDS)) {
    const node = target();
    let note = document.getElementById(`whole-${name}`);
    const length = truncated[name];
    if (typeof length !== "number") {
      if (note) note.remove();
      continue;
    }
    if (!note) {
      // Beside a <dd> a second <dd> (valid in its <div>); beside the exception or traceback a <p>.
      note = el(node.tagName === "DD" ? "dd" : "p", { id: `whole-${name}`, class: "muted whole-value" });
      node.after(note);
    }
    note.replaceChildren(`Shortened for display: ${length.toLocaleString()} characters in all — `,
      el("a", { href: url(`api/tasks/${encodeURIComponent(uuid)}/fields/${name}`), target: "_blank", rel: "noopener",
        text: `show the whole ${name}` }));
  }
}

function render(t) {
  show(unknown, !t);
  show(body, Boolean(t));
  if (!t) {
    setText($("task-name"), uuid);
    show($("task-state"), false);
    return;
  }
  setText($("task-name"), t.name || uuid);
  setBadge($("task-state"), t.state);
  show($("task-state"), true);
  document.title = `${t.name || uuid} · ${t.state} · Celery Live Dashboard`;
  renderProgress(t);
  renderError(t);
  renderFields(t);
  renderTruncated(t);
  renderTimeline(t);
  renderAttempts(t);
  renderRelatives(t);
  renderControls(t);
}

// -- controls --------------------------------------------------------------------------------------

const FINISHED = new Set(["SUCCESS", "FAILURE", "REVOKED", "REJECTED"]);
const controls = controlsEnabled() ? $("task-controls") : null;
let current = null; // the task as last rendered
let rerunInfo = null; // GET /api/tasks/<uuid>/rerun
let rerunKey = null; // state + args the re-run answer was asked for
let rerunSeq = 0;

/** STARTED, or a custom state (PROGRESS…) a started task reports while it runs. */
const running = (t) => t.state === "STARTED" || (!STATES.includes(t.state) && typeof t.started === "number");

/** Revoke while unfinished, terminate while running, re-run when its args can be recovered exactly. */
function renderControls(t) {
  current = t;
  if (!controls) return;
  show(controls, Boolean(t));
  if (!t) return;
  show($("task-revoke-box"), !FINISHED.has(t.state));
  show($("task-terminate-box"), running(t));
  const key = JSON.stringify([t.state, t.name, t.args, t.kwargs]);
  if (key !== rerunKey) {
    rerunKey = key;
    loadRerun();
  }
}

async function loadRerun() {
  const seq = ++rerunSeq;
  const res = await getJSON(url(`api/tasks/${encodeURIComponent(uuid)}/rerun`));
  if (seq !== rerunSeq) return; // a newer state asked again
  rerunInfo = res.status === 200 && res.body ? res.body : null;
  rerunError = rerunInfo ? null : `${(res.body && res.body.error) || res.status}`;
  showRerun();
}

let rerunError = null;

/** The re-run button as the last answer says: enabled, or disabled with the reason written next to it. */
function showRerun() {
  const button = $("task-rerun");
  button.disabled = !(rerunInfo && rerunInfo.possible);
  const reason = rerunInfo ? (rerunInfo.possible ? "" : `Cannot re-run: ${rerunInfo.reason || "the args cannot be recovered"}`)
    : `Cannot tell whether it can be re-run: ${rerunError}`;
  setText($("task-rerun-reason"), reason);
  setAttr(button, "title", reason || "Send a new task with the same name, args and kwargs");
}

const label = () => `${(current && current.name) || "this task"} (${shortUuid(uuid)}…)`;

async function revoke(terminate) {
  const t = current || {};
  const signal = $("task-signal").value;
  const lines = terminate
    ? [`The worker process running ${label()}${t.hostname ? ` on ${t.hostname}` : ""} is sent ${signal}.`,
      signal === "SIGKILL" ? "SIGKILL stops it at once: no clean-up runs." : `${signal} lets the task clean up, if it handles the signal.`,
      "The task is also revoked, so it is never run again."]
    : [`${label()} will be revoked: every worker is told not to run it.`,
      running(t) ? "It is running now: revoking alone does not stop it (Terminate does)."
        : "If a worker holds it already (an ETA or countdown), it is discarded when its time comes."];
  await runAction({
    url: url(`api/tasks/${encodeURIComponent(uuid)}/revoke`), body: { terminate, signal: terminate ? signal : undefined },
    result: $("task-control-result"), busy: [...controls.querySelectorAll("button")],
    confirm: { title: terminate ? `Terminate ${label()}?` : `Revoke ${label()}?`, lines, danger: true,
      confirmLabel: terminate ? `Send ${signal}` : "Revoke" },
    emptyReplies: "No reply expected: a revoke is broadcast to every worker.",
    pendingText: "Sending the revoke…",
    onDone: (res) => (res.status === 200 && !terminate && t.eta && !running(t)
      ? [el("p", { class: "muted", text: `A worker holds it until its ETA (${fmtValue(t.eta)}): it is discarded then, `
        + "and the state turns REVOKED at that moment." })]
      : []),
  });
  if (rerunInfo || rerunError) showRerun(); // an answer that came in meanwhile decides, not the old state
}

async function rerun() {
  const info = rerunInfo;
  if (!info || !info.possible) return;
  await runAction({
    url: url(`api/tasks/${encodeURIComponent(uuid)}/rerun`), body: {},
    result: $("task-control-result"), busy: [$("task-rerun")],
    confirm: { title: `Re-run ${info.name || label()}?`, confirmLabel: "Re-run", lines: [
      `A new task ${info.name || ""} is sent${info.queue ? ` to queue ${info.queue}` : ""} with the same arguments:`,
      el("code", { class: "confirm-code", text: `args ${JSON.stringify(info.args ?? [])}` }),
      el("code", { class: "confirm-code", text: `kwargs ${JSON.stringify(info.kwargs ?? {})}` }),
      "This task stays as it is; the new one gets its own id."] },
    pendingText: "Sending the new task…",
    onDone: (res) => (res.status === 200 && res.body && res.body.task_id
      ? [el("p", { class: "rerun-new" }, "New task: ", taskLink(String(res.body.task_id), null, { id: "rerun-link", class: "mono" }))]
      : []),
  });
}

if (controls) {
  $("task-revoke").addEventListener("click", () => revoke(false));
  $("task-terminate").addEventListener("click", () => revoke(true));
  $("task-rerun").addEventListener("click", rerun);
}

startLive({
  payload: { view: "task", uuid },
  onSnapshot(snap) {
    rendered = {};
    render(snap.task || null);
    renderTree(snap.tree);
  },
  on: {
    task(data) {
      if (data && data.task && data.task.uuid === uuid) {
        render(data.task);
        renderTree(data.tree);
      }
    },
  },
});
