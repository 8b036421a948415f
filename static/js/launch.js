// Launch form: a task's fields (one per parameter, typed) or example args, its "no online worker" warning,
// JSON submit without a reload, errors under their fields. Task names, defaults and hints come from the
// user's app or from workers: they are written as text only. The server validates everything; the checks
// here are only early hints.
import { page, startLive } from "./live.js";
import { el, setText, show, taskHref, url } from "./dom.js";
import { auditLink } from "./control.js";

const form = document.getElementById("launch-form");

if (form) {
  const catalogue = JSON.parse(form.dataset.catalogue || "[]");
  const byName = new Map(catalogue.map((t) => [t.name, t]));
  const fields = form.elements;
  const hint = document.getElementById("launch-hint");
  const result = document.getElementById("launch-result");
  const button = form.querySelector("button[type=submit]");

  const errorBox = (field) => form.querySelector(`.field-error[data-field="${CSS.escape(field)}"]`);

  function setError(field, message) {
    const box = errorBox(field) || errorBox("form");
    if (!box) return;
    setText(box, message || "");
    show(box, Boolean(message));
    const input = fields.namedItem(field);
    if (input && input.setAttribute) {
      if (message) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    }
  }

  function clearErrors() {
    for (const box of form.querySelectorAll(".field-error")) setError(box.dataset.field, "");
  }

  const params = document.getElementById("launch-params");
  const warning = document.getElementById("launch-warning");
  const confirmBox = document.getElementById("launch-confirm");

  function renderHint(task) {
    if (!task) {
      hint.replaceChildren();
      return;
    }
    const workers = task.workers.length;
    hint.replaceChildren(
      el("span", { class: "hint-text", text: task.hint }),
      task.params ? null : el("span", { class: "hint-example" }, "Example: args ", el("code", { text: task.example_args }),
        ", kwargs ", el("code", { text: task.example_kwargs })),
      workers ? el("span", { class: "hint-workers", text: `Registered on ${workers} online worker${workers === 1 ? "" : "s"}.` }) : null);
    setText(warning, task.warning || "");
    show(warning, Boolean(task.warning));
    show(confirmBox, Boolean(task.warning));
    fields.unregistered_ok.checked = false;
  }

  /** One field per parameter, as _launch_form.html draws it: typed input, select for bool, JSON textarea. */
  function paramField(p, index) {
    const id = `launch-param-${index + 1}`;
    const name = `param.${p.name}`;
    const placeholder = p.required ? (p.kind === "json" ? "JSON" : "") : `default: ${p.default}`;
    let input;
    if (p.kind === "bool") {
      input = el("select", { id, name },
        el("option", { value: "", text: p.required ? "choose" : `default (${p.default})` }),
        el("option", { value: "true", text: "true" }), el("option", { value: "false", text: "false" }));
    } else if (p.kind === "json") {
      input = el("textarea", { id, name, class: "mono", rows: "1", spellcheck: "false", placeholder });
    } else {
      const type = p.kind === "str" ? "text" : "number";
      input = el("input", { id, name, type, step: p.kind === "int" ? "1" : p.kind === "float" ? "any" : null, placeholder });
    }
    const label = el("label", { for: id }, p.name,
      p.annotation ? " " : null, p.annotation ? el("span", { class: "muted mono", text: p.annotation }) : null,
      p.required ? " " : null, p.required ? el("span", { class: "muted", text: "(required)" }) : null);
    const error = el("div", { class: "field-error", dataset: { field: name }, hidden: true });
    return el("div", { class: "field field-param", dataset: { param: p.name } }, label, input, error);
  }

  function renderParams(task) {
    const list = task && task.params ? task.params : [];
    params.replaceChildren(...list.map(paramField));
    show(params, list.length > 0);
  }

  fields.task.addEventListener("change", () => {
    const task = byName.get(fields.task.value);
    if (task) {
      fields.args.value = task.params ? "[]" : task.example_args;
      fields.kwargs.value = task.params ? "{}" : task.example_kwargs;
    }
    renderHint(task);
    renderParams(task);
    setError("args", "");
    setError("kwargs", "");
    setError("task", "");
  });

  // Early hint only: the server parses and validates args/kwargs itself.
  function checkJson(field, kind) {
    const raw = fields[field].value.trim();
    if (!raw) return setError(field, "");
    try {
      const value = JSON.parse(raw);
      const ok = kind === "array" ? Array.isArray(value) : value !== null && typeof value === "object" && !Array.isArray(value);
      setError(field, ok ? "" : `must be a JSON ${kind}`);
    } catch (err) {
      setError(field, `not valid JSON (${err.message})`);
    }
  }
  fields.args.addEventListener("blur", () => checkJson("args", "array"));
  fields.kwargs.addEventListener("blur", () => checkJson("kwargs", "object"));

  function renderLaunched(ids, taskName, auditId) {
    if (!ids || ids.length === 0) {
      result.replaceChildren();
      show(result, false);
      return;
    }
    const plural = ids.length === 1 ? "" : "s";
    const summary = el("p", { class: "launch-summary" }, `Launched ${ids.length} task${plural} of `,
      el("code", { text: taskName }), ":");
    const list = el("ul", { class: "launched" },
      ...ids.map((id) => el("li", {}, el("a", { class: "mono", href: taskHref(id), text: id }))));
    // After the list: the first link of the result stays the first task's.
    const audit = auditId != null ? el("p", { class: "launch-audit muted" }, "Recorded as ", auditLink(auditId)) : null;
    result.replaceChildren(...[summary, list, audit].filter(Boolean));
    show(result, true);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    // Every field as the plain form posts it (parameter fields, options, the confirmation box when checked).
    const body = Object.fromEntries(new FormData(form));
    delete body.csrf_token;
    button.disabled = true;
    setText(button, "Launching…");
    try {
      const response = await fetch(form.getAttribute("action") || url("launch"), {
        method: "POST",
        headers: {
          Accept: "application/json",
          "Content-Type": "application/json",
          "X-CSRFToken": fields.csrf_token.value,
        },
        body: JSON.stringify(body),
      });
      let data = {};
      try {
        data = await response.json();
      } catch {
        data = { error: `The server answered ${response.status} ${response.statusText}.` };
      }
      // The error contract: {error, fields?}; each field's message goes under its field, a sentence without
      // fields under the form.
      const fieldErrors = data.fields || {};
      for (const [field, message] of Object.entries(fieldErrors)) setError(field, message);
      if (data.confirm) show(confirmBox, true); // no online worker has the task: the box confirms it
      if (data.error && !Object.keys(fieldErrors).length) setError("form", data.error);
      if (!response.ok && !data.error) setError("form", `Launch failed (${response.status}).`);
      renderLaunched(data.task_ids, body.task, data.audit_id);
    } catch (err) {
      setError("form", `Could not reach the dashboard server: ${err.message}`);
    } finally {
      button.disabled = false;
      setText(button, "Launch");
    }
  });

  // Standalone launch page: no live data, but the connection indicator and broker banner stay live.
  if (page && page.dataset.view === "launch") startLive();
}
