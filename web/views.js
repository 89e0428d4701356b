// How the conversation, the session list and the status box look. Pure view functions:
// they read no page state and call back through `hooks`.

import { renderMarkdown } from "./markdown.js";
import { copyButton, el, icon } from "./ui.js";

// view: {index, last, editing, stats, later} - where the message sits and what applies;
// hooks: {onEdit(index), onRegenerate(), onSave(index, text), onCancel()}.
export function messageView(message, view, hooks) {
  if (message.role === "system") {
    return el("div", { class: "system-note" },
      [el("span", { class: "system-tag", text: "System" }), message.content]);
  }
  if (message.role === "user") {
    return view.editing ? editView(message, view, hooks) : userView(message, view, hooks);
  }
  return assistantView(message.content, view, hooks);
}

function userView(message, { index }, hooks) {
  return el("article", { class: "msg user", dataset: { index } }, [
    el("div", { class: "bubble", text: message.content }),
    el("div", { class: "msg-actions" }, [
      action("edit", "Edit", () => hooks.onEdit(index), "Edit and resend from here"),
      copyButton(() => message.content),
    ]),
  ]);
}

// An answer; `streaming` while it is still arriving (no actions yet, a typing cursor).
export function assistantView(text, { streaming = false, last = false, stats = null }, hooks) {
  const actions = streaming ? [] : [copyButton(() => text)];
  if (last) {
    actions.push(action("refresh", "Regenerate", hooks.onRegenerate, "Ask again for a new answer"));
  }
  if (last && stats) actions.push(el("span", { class: "msg-meta", text: statsText(stats) }));
  return el("article", { class: streaming ? "msg assistant streaming" : "msg assistant" }, [
    el("div", { class: "avatar", "aria-hidden": "true" }),
    el("div", { class: "msg-body" }, [
      el("div", { class: "msg-content" }, renderMarkdown(text)),
      el("div", { class: "msg-actions" }, actions),
    ]),
  ]);
}

// Editing a sent message in place: Enter resends from here, Esc cancels.
function editView(message, { index, later }, hooks) {
  const area = el("textarea", { rows: Math.min(10, message.content.split("\n").length + 1) });
  area.value = message.content;
  const save = () => area.value.trim() && hooks.onSave(index, area.value);
  area.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      save();
    } else if (event.key === "Escape") hooks.onCancel();
  });
  const hint = later
    ? `Resending replaces the ${later} message${later > 1 ? "s" : ""} after this one.`
    : "";
  return el("article", { class: "msg user edit" }, [
    area,
    el("div", { class: "edit-bar" }, [
      el("span", { class: "edit-hint", text: hint }),
      el("button", { class: "btn ghost", type: "button", onclick: hooks.onCancel,
        text: "Cancel" }),
      el("button", { class: "btn primary", type: "button", onclick: save, text: "Save & send" }),
    ]),
  ]);
}

function action(iconName, label, onclick, title) {
  return el("button", { class: "mini", type: "button", title, onclick },
    [icon(iconName), el("span", { text: label })]);
}

export function statsText({ tokens, rate, ttft }) {
  const parts = [`${tokens} tokens`];
  if (rate !== null) parts.push(`${rate.toFixed(1)} tok/s`);
  if (ttft !== null) parts.push(`first token ${Math.round(ttft)} ms`);
  return parts.join(" · ");
}

// ---- the sidebar -------------------------------------------------------------------------

// The session list's items, newest first. `armedId`: the session whose delete button
// was clicked once (a second click deletes: no blocking confirm() dialog).
// hooks: {onOpen(id), onDelete(id)}.
export function sessionItems(ids, { activeId, armedId, titleOf }, hooks) {
  const items = ids.map((id) => el("li", {
    class: id === activeId ? "session active" : "session",
    dataset: { sessionId: id },
  }, [
    el("button", { class: "session-open", type: "button", title: id,
      onclick: () => hooks.onOpen(id) },
    [icon("chat"), el("span", { class: "session-title", text: titleOf(id) })]),
    el("button", { class: id === armedId ? "session-delete armed" : "session-delete",
      type: "button", title: id === armedId ? "Click again to delete" : "Delete session",
      onclick: () => hooks.onDelete(id) }, icon("trash")),
  ]));
  if (!items.length) items.push(el("li", { class: "sessions-empty", text: "No sessions yet" }));
  return items;
}

// ---- the connection indicator ----------------------------------------------------------

const STATUS_VIEWS = {
  ready: ["ok", "Connected"],
  loading: ["warn", "Loading models…"],
  failed: ["bad", "Model failed to load"],
  unauthorized: ["warn", "API key required"],
  offline: ["bad", "Disconnected"],
};

// Show a readiness result ({status, detail} from Api.readiness) in the status box.
export function showStatus(box, { status, detail }) {
  const [tone, text] = STATUS_VIEWS[status] ?? ["warn", `Server: ${status}`];
  box.dataset.tone = tone;
  box.querySelector(".status-text").textContent = text;
  box.title = statusDetail(status, detail);
}

function statusDetail(status, detail) {
  if (status === "ready") return `${detail.models_available} model(s) loaded`;
  if (status === "loading") return `Loading: ${(detail.loading || []).join(", ")}`;
  if (status === "failed") {
    return Object.entries(detail.errors || {}).map(([model, error]) => `${model}: ${error}`)
      .join("\n");
  }
  return detail?.error || "";
}
