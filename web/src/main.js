// The inferd chat page: wiring only. Each concern lives in its own module:
// api.js (HTTP + SSE), auth.js (the API key), chat.js (the conversation), sessions.js
// (the sidebar), branches.js (versions of a turn), settings.js, status.js, theme.js,
// transfer.js (export/import), markdown/ (rendering).

import { Api } from "./api.js";
import { KeyControls, KeyStore } from "./auth.js";
import { Chat } from "./chat.js";
import { wireCopyButtons } from "./markdown/decorate.js";
import { Sidebar } from "./sessions.js";
import { Settings } from "./settings.js";
import { Status } from "./status.js";
import { Theme } from "./theme.js";
import { parseImport, save } from "./transfer.js";
import { el, icon } from "./ui.js";

// The shipped renderer, for the browser tests and benchmarks/bench_web_render.py.
export { MarkdownView, renderFresh, renderMarkdown, splitBlocks } from "./markdown/view.js";
export { RENDER_MEASURE } from "./turn.js";
export { SseParser } from "./sse.js";

const $ = (selector) => document.querySelector(selector);
const MODEL = "inferd.model";
const POLL_MS = 10000;
const SIDEBAR_REFRESH_MS = 60000; // "3 min ago" stays true

const banner = {
  show(message, tone = "error") {
    $("#banner-text").textContent = message;
    $("#banner").dataset.tone = tone;
    $("#banner").hidden = false;
  },
  clear() {
    $("#banner").hidden = true;
  },
};

function report(error) {
  if (error.name === "AbortError") return;
  banner.show(error.status === 401
    ? `${error.message} - enter an API key (click "Unauthorized", or in Settings).`
    : error.message);
}

function main() {
  const keys = new KeyStore();
  const status = new Status([$("#status"), $("#status-pill")], () => keyControls.open());
  const api = new Api(() => keys.get(), (ok, message) => {
    status.setAuth(ok, message);
    if (!ok) keyControls.prompt(message);
  });
  const keyControls = new KeyControls(
    { dialog: $("#key-dialog"), field: $("#api-key"), remember: $("#key-remember") },
    keys, () => refreshAll());
  const settings = new Settings($("#settings"));
  const sidebar = new Sidebar({ list: $("#sessions"), search: $("#search") }, {
    onOpen: (id) => chat.open(id),
    onDelete: (ids) => chat.remove(ids),
    onRename: (id, title) => chat.rename(id, title),
  });
  const chat = new Chat({ api, settings, sidebar, banner, report });
  new Theme($("#theme"));

  async function refreshModels() {
    const models = await api.models();
    const select = $("#model");
    const wanted = select.value || localStorage.getItem(MODEL);
    select.replaceChildren(...models.map((name) => el("option", { value: name, text: name })));
    if (!models.length) select.append(el("option", { value: "", text: "No models configured" }));
    if (models.includes(wanted)) select.value = wanted;
  }

  let lastReadiness = null;
  async function pollStatus() {
    const readiness = await api.readiness();
    status.setReadiness(readiness);
    // Back from an outage (e.g. a server restart): the model list may have changed.
    if (lastReadiness === "offline" && readiness.status !== "offline") refreshAll();
    lastReadiness = readiness.status;
  }

  async function refreshAll() {
    const results = await Promise.allSettled(
      [refreshModels(), chat.refreshSessions(), pollStatus()]);
    const failed = results.find((result) => result.status === "rejected");
    if (failed) report(failed.reason);
    else if ($("#banner").dataset.tone === "error") banner.clear();
  }

  async function exportChats(scope, format) {
    const pick = ({ id, title, created, updated, parent, fork_point }) =>
      ({ id, title, created, updated, parent, fork_point });
    if (scope === "chat") {
      if (!chat.messages.length) return banner.show("Nothing to export: this chat is empty.");
      const meta = chat.details.find((s) => s.id === chat.sessionId) ?? { id: chat.sessionId };
      return save([{ ...pick(meta), messages: chat.messages }], format,
        (chat.sessionId ?? "chat").slice(0, 8));
    }
    const details = await api.sessions();
    if (!details.length) return banner.show("Nothing to export: there are no chats.");
    const chats = [];
    for (const meta of details) chats.push({ ...pick(meta), messages: await api.history(meta.id) });
    save(chats, format, "all");
  }

  async function importChats(file) {
    const chats = parseImport(await file.text());
    let last = null;
    for (const { title, messages } of chats) last = await api.importSession(messages, title);
    await chat.refreshSessions();
    if (last) await chat.open(last.id);
    banner.show(`Imported ${chats.length} chat${chats.length === 1 ? "" : "s"}.`, "info");
  }

  wire({ chat, refreshAll, exportChats, importChats });
  // Poll only while the tab is visible: a rate limit counts these requests too.
  setInterval(() => { if (!document.hidden) pollStatus(); }, POLL_MS);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) pollStatus(); });
  setInterval(() => sidebar.render(), SIDEBAR_REFRESH_MS);
  start(chat, refreshAll);
}

async function start(chat, refreshAll) {
  chat.render();
  await refreshAll();
  const id = decodeURIComponent(location.hash.slice(1));
  if (id) await chat.open(id);
  document.body.classList.add("ready"); // for tests: the first load has finished
  $("#prompt").focus();
}

function autosize() {
  const area = $("#prompt");
  area.style.height = "auto";
  area.style.height = `${Math.min(area.scrollHeight, 240)}px`;
}

function closeOverlays() {
  document.body.classList.remove("sidebar-open", "settings-open");
  $("#menu").setAttribute("aria-expanded", "false");
  $("#toggle-settings").setAttribute("aria-expanded", "false");
}

function toggle(name, button) {
  const open = !document.body.classList.contains(name);
  closeOverlays();
  document.body.classList.toggle(name, open);
  button.setAttribute("aria-expanded", String(open));
}

// The export menu is a popover (light-dismissed by the browser), placed under its button.
function placeMenu(menu, button) {
  menu.addEventListener("toggle", (event) => {
    if (event.newState !== "open") return;
    const box = button.getBoundingClientRect();
    menu.style.top = `${box.bottom + 6}px`;
    menu.style.left = `${Math.max(8, box.right - menu.offsetWidth)}px`;
  });
}

function wire({ chat, refreshAll, exportChats, importChats }) {
  $("#toggle-settings").prepend(icon("sliders"));
  $("#export").prepend(icon("download"));
  $("#import").prepend(icon("upload"));
  $("#new-chat").prepend(icon("plus"));
  $("#menu").append(icon("menu"));
  $("#search-icon").append(icon("search"));
  for (const button of document.querySelectorAll(".close-icon")) button.append(icon("x"));
  wireCopyButtons($("#messages"));

  const submit = () => {
    if (chat.turn) return chat.stop();
    const prompt = $("#prompt").value;
    if (!prompt.trim() || !chat.idle) return;
    $("#prompt").value = "";
    autosize();
    chat.send(prompt);
  };
  $("#composer").addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  $("#prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (!chat.turn) submit();
    }
  });
  $("#prompt").addEventListener("input", autosize);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !document.querySelector("dialog[open]")) chat.stop();
  });

  $("#new-chat").addEventListener("click", () => {
    closeOverlays();
    chat.newChat();
  });
  $("#menu").addEventListener("click", () => toggle("sidebar-open", $("#menu")));
  $("#toggle-settings").addEventListener("click", () => toggle("settings-open", $("#toggle-settings")));
  $("#close-settings").addEventListener("click", closeOverlays);
  $("#close-sidebar").addEventListener("click", closeOverlays);
  $("#scrim").addEventListener("click", closeOverlays);
  // On narrow screens the sidebar is an overlay: opening a chat closes it.
  $("#sessions").addEventListener("click", (event) => {
    if (event.target.closest(".session-open")) closeOverlays();
  });
  $("#banner-close").addEventListener("click", () => { $("#banner").hidden = true; });
  $("#model").addEventListener("change", () => localStorage.setItem(MODEL, $("#model").value));
  $("#suggestions").addEventListener("click", (event) => {
    if (!event.target.matches(".chip")) return;
    $("#prompt").value = event.target.textContent;
    autosize();
    $("#prompt").focus();
  });

  placeMenu($("#export-menu"), $("#export"));
  $("#export-menu").addEventListener("click", (event) => {
    const item = event.target.closest("[data-export]");
    if (!item) return;
    $("#export-menu").hidePopover();
    const [scope, format] = item.dataset.export.split("-");
    exportChats(scope, format).catch(report);
  });
  $("#import").addEventListener("click", () => $("#import-file").click());
  $("#import-file").addEventListener("change", () => {
    const [file] = $("#import-file").files;
    $("#import-file").value = "";
    if (file) importChats(file).catch(report);
  });
  window.addEventListener("online", refreshAll);
}

main();
