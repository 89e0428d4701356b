// How the conversation looks. Pure view functions: they read no page state and call back
// through `hooks`: {onEdit(index), onRegenerate(), onSave(index, text), onCancel(),
// onSwitch(sessionId)}.

import { renderMarkdown } from "./markdown/view.js";
import { statsText } from "./stats.js";
import { copyButton, el, icon } from "./ui.js";

// view: {index, last, editing, stats, variants} - where the message sits and what applies.
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

function userView(message, { index, variants }, hooks) {
  return el("article", { class: "msg user", dataset: { index } }, [
    el("div", { class: "bubble", text: message.content }),
    el("div", { class: "msg-actions" }, [
      variants && switcher(variants, hooks),
      action("edit", "Edit", () => hooks.onEdit(index), "Edit and send as a new branch"),
      copyButton(() => message.content),
    ]),
  ]);
}

// ‹ 2/3 ›: this turn exists in several versions (edits, regenerations), each a session.
function switcher({ position, total, targets }, hooks) {
  const go = (to) => () => hooks.onSwitch(targets[to]);
  return el("span", { class: "switcher", role: "group", "aria-label": "Versions of this turn" }, [
    el("button", { class: "mini", type: "button", title: "Previous version",
      disabled: position === 0, onclick: go(position - 1) }, icon("left")),
    el("span", { class: "switcher-count", text: `${position + 1}/${total}` }),
    el("button", { class: "mini", type: "button", title: "Next version",
      disabled: position === total - 1, onclick: go(position + 1) }, icon("right")),
  ]);
}

// An answer. A streamed one starts empty: its Turn fills `.msg-content` as text arrives.
export function assistantView(text, { streaming = false, last = false, stats = null }, hooks) {
  const actions = streaming ? [] : [copyButton(() => text)];
  if (last) {
    actions.push(action("refresh", "Regenerate", hooks.onRegenerate,
      "Ask again: the new answer becomes another version of this turn"));
  }
  if (last && stats) actions.push(el("span", { class: "msg-meta", text: statsText(stats) }));
  return el("article", { class: streaming ? "msg assistant streaming" : "msg assistant" }, [
    el("div", { class: "avatar", "aria-hidden": "true" }),
    el("div", { class: "msg-body" }, [
      el("div", { class: "msg-content" }, streaming ? [] : renderMarkdown(text)),
      el("div", { class: "msg-actions" }, actions),
    ]),
  ]);
}

// Editing a sent message in place: Enter sends it as a new branch, Esc cancels.
function editView(message, { index }, hooks) {
  const area = el("textarea", { rows: Math.min(10, message.content.split("\n").length + 1),
    "aria-label": "Edited message" });
  area.value = message.content;
  const save = () => area.value.trim() && hooks.onSave(index, area.value);
  area.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      save();
    } else if (event.key === "Escape") hooks.onCancel();
  });
  return el("article", { class: "msg user edit" }, [
    area,
    el("div", { class: "edit-bar" }, [
      el("span", { class: "edit-hint",
        text: "Sends as a new version of this turn; the current one stays." }),
      el("button", { class: "btn ghost", type: "button", onclick: hooks.onCancel,
        text: "Cancel" }),
      el("button", { class: "btn primary", type: "button", onclick: save, text: "Send" }),
    ]),
  ]);
}

function action(iconName, label, onclick, title) {
  return el("button", { class: "mini", type: "button", title, onclick },
    [icon(iconName), el("span", { text: label })]);
}
