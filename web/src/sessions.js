// The sidebar: conversations, most recently used first, with search, rename and delete.
// A conversation and its branches (forks made by editing or regenerating) are one entry,
// titled after the conversation's first session; opening it opens the branch used last.

import { families } from "./branches.js";
import { ago, el, icon } from "./ui.js";

const ARM_MS = 3000;

export class Sidebar {
  // hooks: {onOpen(id), onDelete(ids), onRename(id, title)}
  constructor({ list, search }, hooks) {
    Object.assign(this, { list, hooks });
    this.details = []; // GET /sessions?detail=true
    this.activeId = null;
    this.query = "";
    this.armed = null; // the head id whose delete button awaits its confirming click
    this.renaming = null; // the head id being renamed
    search.addEventListener("input", () => {
      this.query = search.value;
      this.render();
    });
  }

  show(details, activeId) {
    this.details = details;
    this.activeId = activeId;
    if (this.renaming === null || !this.list.contains(document.activeElement)) this.render();
  }

  render() {
    const query = this.query.trim().toLowerCase();
    const matches = (family) => !query
      || family.members.some((session) => (session.title ?? "").toLowerCase().includes(query));
    const items = families(this.details).filter(matches).map((family) => this.item(family));
    if (!items.length) {
      items.push(el("li", { class: "sessions-empty", text: query ? "No chats match" : "No chats yet" }));
    }
    this.list.replaceChildren(...items);
  }

  item({ head, members, latest }) {
    const title = head.title ?? latest.title ?? "New chat";
    if (this.renaming === head.id) return this.renameItem(head.id, title);
    const active = members.some((session) => session.id === this.activeId);
    const meta = [`${latest.message_count} message${latest.message_count === 1 ? "" : "s"}`,
      ago(latest.updated)];
    if (members.length > 1) meta.push(`${members.length} branches`);
    const armed = this.armed === head.id;
    return el("li", { class: active ? "session active" : "session", dataset: { sessionId: head.id } }, [
      el("button", { class: "session-open", type: "button", title,
        onclick: () => this.hooks.onOpen(latest.id) }, [
        el("span", { class: "session-title", text: title }),
        el("span", { class: "session-meta", text: meta.join(" · ") }),
      ]),
      el("button", { class: "session-action session-rename", type: "button", title: "Rename",
        "aria-label": `Rename ${title}`, onclick: () => this.startRename(head.id) }, icon("edit")),
      el("button", { class: armed ? "session-action session-delete armed" : "session-action session-delete",
        type: "button", title: armed ? "Click again to delete" : "Delete chat",
        "aria-label": armed ? "Confirm delete" : `Delete ${title}`,
        onclick: () => this.armOrDelete(head.id, members) }, icon("trash")),
    ]);
  }

  renameItem(id, title) {
    const input = el("input", { class: "rename-input", type: "text", maxlength: 200,
      "aria-label": "Chat title" });
    input.value = title;
    const save = () => {
      this.renaming = null;
      this.hooks.onRename(id, input.value.trim() || null);
    };
    const cancel = () => {
      this.renaming = null;
      this.render();
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.isComposing) save();
      else if (event.key === "Escape") cancel();
    });
    queueMicrotask(() => {
      input.focus();
      input.select();
    });
    return el("li", { class: "session renaming", dataset: { sessionId: id } }, [
      input,
      el("button", { class: "session-action", type: "button", title: "Save title",
        onclick: save }, icon("check")),
      el("button", { class: "session-action", type: "button", title: "Cancel",
        onclick: cancel }, icon("x")),
    ]);
  }

  startRename(id) {
    this.renaming = id;
    this.armed = null;
    this.render();
  }

  // The first click arms the button for a few seconds, the second deletes the
  // conversation with all its branches (no blocking confirm() dialog).
  armOrDelete(id, members) {
    if (this.armed === id) {
      this.armed = null;
      this.hooks.onDelete(members.map((session) => session.id));
      return;
    }
    this.armed = id;
    this.render();
    setTimeout(() => {
      if (this.armed !== id) return;
      this.armed = null;
      this.render();
    }, ARM_MS);
  }
}
