// Export chats as Markdown or JSON (the one shown, or all of them), and import the JSON.
//
// The JSON format: {"format": "inferd-chats", "version": 1, "exported_at": ISO time,
// "chats": [{id, title, created, updated, parent, fork_point, messages: [{role, content}]}]}.
// Import also takes one chat object with "messages" or a bare message array (what
// GET /chat/history/<id> returns). Imported chats get new ids and stand alone: a
// branch's link to its parent is not restored.

import { download } from "./ui.js";

export const FORMAT = "inferd-chats";
const ROLES = { system: "System", user: "User", assistant: "Assistant" };

function stamp(date) {
  return date.toISOString().slice(0, 19).replace(/[:T]/g, "-");
}

// chats: [{id, title, created, updated, parent, fork_point, messages}]
export function toJson(chats, now = new Date()) {
  return JSON.stringify({ format: FORMAT, version: 1, exported_at: now.toISOString(), chats },
    null, 2);
}

export function toMarkdown(chats) {
  return chats.map((chat) => {
    const head = [`# ${chat.title || "Untitled chat"}`, "",
      `_inferd chat ${chat.id} · ${chat.updated ?? ""} · ${chat.messages.length} messages_`];
    const body = chat.messages.map((m) => `## ${ROLES[m.role] ?? m.role}\n\n${m.content}`);
    return [head.join("\n"), ...body].join("\n\n");
  }).join("\n\n---\n\n") + "\n";
}

// Download `chats` as `format` ("md" or "json"); `label` names the file.
export function save(chats, format, label) {
  const name = `inferd-${label}-${stamp(new Date())}.${format}`;
  if (format === "md") download(name, toMarkdown(chats), "text/markdown");
  else download(name, toJson(chats), "application/json");
}

// The chats in an imported file's text, as [{title, messages}]; throws Error saying what
// is wrong with the file.
export function parseImport(text) {
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    throw new Error("this file is not JSON");
  }
  let chats;
  if (Array.isArray(data)) chats = [{ messages: data }];
  else if (data?.format === FORMAT && Array.isArray(data.chats)) chats = data.chats;
  else if (Array.isArray(data?.messages)) chats = [data];
  else throw new Error("no chats found: expected an inferd export (JSON)");
  return chats.map((chat, index) => {
    const messages = chat.messages;
    const valid = Array.isArray(messages) && messages.every((m) =>
      m && typeof m.content === "string" && Object.hasOwn(ROLES, m.role));
    if (!valid) throw new Error(`chat ${index + 1} has malformed messages`);
    const title = typeof chat.title === "string" ? chat.title : null;
    return { title, messages: messages.map(({ role, content }) => ({ role, content })) };
  });
}
