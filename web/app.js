// The inferd chat page: sessions, streaming chat turns, regeneration and editing.
//
// `state.messages` mirrors the session's history exactly as the server stores it
// (system message included), so a rollback amount can be computed locally: editing
// message i rolls back `messages.length - i` messages and sends the new text.

import { Api } from "./api.js";
import { renderMarkdown } from "./markdown.js";
import { Settings } from "./settings.js";
import { download, el, icon, loadJson, saveJson } from "./ui.js";
import { assistantView, messageView, sessionItems, showStatus } from "./views.js";

const $ = (selector) => document.querySelector(selector);
const TITLES = "inferd.titles";
const MODEL = "inferd.model";
const POLL_MS = 10000;

const state = {
  sessionId: null,
  messages: [], // [{role, content}] as GET /chat/history returns them
  sessions: [], // ids, newest first
  titles: loadJson(TITLES, {}), // id -> first prompt; the API only lists ids
  turn: null, // the answer being streamed (see startTurn)
  editing: null, // index of the user message being edited
  branching: false, // a rollback is in flight
  armedDelete: null, // session id whose delete button awaits its confirming click
  lastStats: null, // {tokens, rate, ttft} of the last answer
  status: null,
};

const settings = new Settings($("#settings"), () => refreshAll());
const api = new Api(() => settings.apiKey());

// ---- errors ------------------------------------------------------------------------

function showError(message) {
  $("#banner-text").textContent = message;
  $("#banner").hidden = false;
}

function clearError() {
  $("#banner").hidden = true;
}

function report(error) {
  if (error.name === "AbortError") return;
  showError(error.status === 401
    ? `${error.message} - enter an API key in Settings.`
    : error.message);
}

// ---- sessions ----------------------------------------------------------------------

function titleOf(id) {
  return state.titles[id] || `Session ${id.slice(0, 8)}`;
}

function rememberTitle(id, prompt) {
  if (state.titles[id]) return;
  state.titles[id] = prompt.replace(/\s+/g, " ").trim().slice(0, 60);
  saveJson(TITLES, state.titles);
}

async function refreshSessions() {
  state.sessions = (await api.sessions()).reverse();
  renderSessions();
}

async function openSession(id) {
  if (state.turn) return;
  try {
    const messages = await api.history(id);
    Object.assign(state, { sessionId: id, messages, editing: null, lastStats: null });
    const first = messages.find((m) => m.role === "user");
    if (first) rememberTitle(id, first.content);
    history.replaceState(null, "", `#${encodeURIComponent(id)}`);
    clearError();
  } catch (error) {
    report(error);
    if (error.status === 404) newChat();
  }
  render();
  scrollToBottom();
}

function newChat() {
  if (state.turn) return;
  Object.assign(state, { sessionId: null, messages: [], editing: null, lastStats: null });
  history.replaceState(null, "", location.pathname);
  render();
  $("#prompt").focus();
}

async function deleteSession(id) {
  try {
    await api.deleteSession(id);
  } catch (error) {
    if (error.status !== 404) return report(error);
  }
  delete state.titles[id];
  saveJson(TITLES, state.titles);
  if (id === state.sessionId) newChat();
  await refreshSessions().catch(report);
}

function renderSessions() {
  const view = { activeId: state.sessionId, armedId: state.armedDelete, titleOf };
  $("#sessions").replaceChildren(...sessionItems(state.sessions, view,
    { onOpen: openSession, onDelete: armOrDelete }));
}

// The first click arms a session's delete button for 3 s, the second deletes. The armed
// id lives in the state, so a re-render in between (a poll, a stream) keeps it armed.
function armOrDelete(id) {
  if (state.armedDelete === id) {
    state.armedDelete = null;
    return deleteSession(id);
  }
  state.armedDelete = id;
  renderSessions();
  setTimeout(() => {
    if (state.armedDelete !== id) return;
    state.armedDelete = null;
    renderSessions();
  }, 3000);
}

// ---- chat turns --------------------------------------------------------------------

async function send(prompt) {
  const model = $("#model").value;
  if (!model) return showError("No model to send to: check the connection and API key.");
  clearError();
  const body = { "model-name": model, prompt, ...settings.chatFields() };
  if (state.sessionId) body["session-id"] = state.sessionId;
  const turn = startTurn(prompt, body["system-prompt"]);
  try {
    await api.streamChat(body, {
      signal: turn.controller.signal,
      onSession: (id) => adoptSession(id, prompt),
      onToken: (text) => addToken(turn, text),
      onError: (message) => { turn.failure = message; },
    });
  } catch (error) {
    turn.error = error;
  }
  finishTurn(turn);
}

function startTurn(prompt, systemPrompt) {
  const before = state.messages;
  const messages = [...before];
  // The server puts a given system prompt first, replacing any earlier one.
  if (systemPrompt !== undefined) {
    if (messages[0]?.role === "system") messages.shift();
    messages.unshift({ role: "system", content: systemPrompt });
  }
  messages.push({ role: "user", content: prompt });
  const turn = { prompt, before, text: "", tokens: 0, startedAt: performance.now(),
    firstAt: null, lastAt: null, controller: new AbortController(), frame: 0,
    failure: null, error: null, view: null };
  Object.assign(state, { messages, turn, editing: null, lastStats: null });
  render();
  scrollToBottom();
  return turn;
}

function adoptSession(id, prompt) {
  if (!id || id === state.sessionId) return;
  state.sessionId = id;
  rememberTitle(id, prompt);
  history.replaceState(null, "", `#${encodeURIComponent(id)}`);
  refreshSessions().catch(report);
}

function addToken(turn, text) {
  const now = performance.now();
  turn.text += text;
  turn.tokens += 1;
  turn.firstAt ??= now;
  turn.lastAt = now;
  // Re-render at most once per frame, however fast tokens arrive.
  turn.frame ||= requestAnimationFrame(() => {
    turn.frame = 0;
    updateTurnView(turn);
  });
}

function turnStats(turn) {
  // Decoding speed: tokens after the first, over the time since the first arrived. An
  // answer that arrived in one network read has no such span: use the whole request.
  const decoding = (turn.lastAt - turn.firstAt) / 1000;
  const total = (turn.lastAt - turn.startedAt) / 1000;
  let rate = null;
  if (turn.tokens > 1 && decoding > 0) rate = (turn.tokens - 1) / decoding;
  else if (turn.tokens > 0 && total > 0) rate = turn.tokens / total;
  return {
    tokens: turn.tokens,
    rate,
    ttft: turn.firstAt === null ? null : turn.firstAt - turn.startedAt,
  };
}

function finishTurn(turn) {
  cancelAnimationFrame(turn.frame);
  state.turn = null;
  const aborted = turn.error?.name === "AbortError";
  if (turn.error && !aborted) {
    // Refused before streaming (bad field, unknown model, auth...): nothing was recorded,
    // so restore the conversation and hand the text back for another try.
    state.messages = turn.before;
    if (!$("#prompt").value) $("#prompt").value = turn.prompt;
    autosize();
    report(turn.error);
  } else if (turn.text || (!aborted && !turn.failure)) {
    // The server records an exchange that finished or produced any text.
    state.messages.push({ role: "assistant", content: turn.text });
  } else {
    state.messages.pop();
  }
  if (turn.failure) showError(`Generation failed: ${turn.failure}`);
  if (turn.tokens) state.lastStats = turnStats(turn);
  // After a stop or a failure the server records in its own time: re-read its history.
  if ((aborted || turn.failure) && state.sessionId) setTimeout(resync, 300, state.sessionId);
  render();
}

// Quietly replace the mirror with the server's history (no banner changes: an error
// shown meanwhile must stay visible). The server records a stopped answer only once it
// notices the disconnect, with every token sent by then; until it has (fewer messages
// than shown here), try again a little later.
async function resync(id, attempts = 5) {
  if (state.turn || state.editing !== null || state.sessionId !== id) return;
  let messages;
  try {
    messages = await api.history(id);
  } catch {
    return; // the next request reports whatever is wrong
  }
  if (state.turn || state.editing !== null || state.sessionId !== id) return;
  if (messages.length < state.messages.length && attempts > 1) {
    setTimeout(resync, 700, id, attempts - 1);
    return;
  }
  state.messages = messages;
  render();
}

function stop() {
  state.turn?.controller.abort();
}

// Roll the server's history back to just before message `index` and ask `prompt`
// there: the conversation continues on a new branch from that point.
async function branchFrom(index, prompt) {
  // A second click while the rollback is in flight would roll back twice as far.
  if (state.turn || state.branching) return;
  state.editing = null;
  if (state.sessionId) {
    state.branching = true;
    try {
      const result = await api.rollback(state.sessionId, state.messages.length - index);
      if (typeof result?.remaining === "number" && result.remaining !== index) {
        await openSession(state.sessionId);
        return showError("This conversation had changed elsewhere; it is reloaded now.");
      }
    } catch (error) {
      return report(error);
    } finally {
      state.branching = false;
    }
  }
  state.messages = state.messages.slice(0, index);
  await send(prompt);
}

function regenerate() {
  const index = state.messages.length - 2;
  if (state.messages[index]?.role === "user") branchFrom(index, state.messages[index].content);
}

// ---- rendering ---------------------------------------------------------------------

function render() {
  const streaming = Boolean(state.turn);
  document.body.classList.toggle("streaming", streaming);
  const views = state.messages.map((message, index) => messageView(message, {
    index,
    last: index === state.messages.length - 1 && !streaming,
    editing: state.editing === index,
    later: state.messages.length - index - 1,
    stats: state.lastStats,
  }, hooks));
  if (state.turn) {
    state.turn.view = assistantView(state.turn.text, { streaming: true }, hooks);
    views.push(state.turn.view);
  }
  $("#messages").replaceChildren(...views);
  $("#empty").hidden = views.length > 0;
  const button = $("#send");
  button.replaceChildren(icon(streaming ? "stop" : "send"));
  button.title = streaming ? "Stop (Esc)" : "Send (Enter)";
  button.classList.toggle("stop", streaming);
  renderCounter(state.turn ? turnStats(state.turn) : state.lastStats);
  renderSessions();
  const title = state.sessionId ? titleOf(state.sessionId) : "New chat";
  document.title = `${title} · inferd`;
}

const hooks = {
  onEdit: startEdit,
  onRegenerate: regenerate,
  onSave: branchFrom,
  onCancel: () => {
    state.editing = null;
    render();
  },
};

function updateTurnView(turn) {
  if (!turn.view) return;
  const stick = nearBottom();
  turn.view.querySelector(".msg-content").replaceChildren(renderMarkdown(turn.text));
  renderCounter(turnStats(turn));
  if (stick) scrollToBottom();
}

function startEdit(index) {
  if (state.turn) return;
  state.editing = index;
  render();
  const area = $(".edit textarea");
  area.focus();
  area.setSelectionRange(area.value.length, area.value.length);
}

function renderCounter(stats) {
  $("#counter-tokens").textContent = `${stats?.tokens ?? 0} tokens`;
  $("#counter-rate").textContent = stats?.rate ? `${stats.rate.toFixed(1)} tok/s` : "– tok/s";
}

function nearBottom() {
  const chat = $("#chat");
  return chat.scrollHeight - chat.scrollTop - chat.clientHeight < 80;
}

function scrollToBottom() {
  $("#chat").scrollTop = $("#chat").scrollHeight;
}

// ---- models, connection status, export ---------------------------------------------

async function refreshModels() {
  const models = await api.models();
  const select = $("#model");
  const wanted = select.value || localStorage.getItem(MODEL);
  select.replaceChildren(...models.map((name) => el("option", { value: name, text: name })));
  if (!models.length) select.append(el("option", { value: "", text: "No models configured" }));
  if (models.includes(wanted)) select.value = wanted;
}

async function pollStatus() {
  const readiness = await api.readiness();
  showStatus($("#status"), readiness);
  // Back from an outage (e.g. a server restart): the model list may have changed.
  if (state.status === "offline" && readiness.status !== "offline") refreshAll();
  state.status = readiness.status;
}

async function refreshAll() {
  const results = await Promise.allSettled([refreshModels(), refreshSessions(), pollStatus()]);
  const failed = results.find((result) => result.status === "rejected");
  if (failed) report(failed.reason);
  else if (!$("#banner").hidden && state.status === "ready") clearError();
}

function exportConversation() {
  if (!state.messages.length) return showError("Nothing to export: this conversation is empty.");
  const data = {
    session_id: state.sessionId,
    model: $("#model").value,
    exported_at: new Date().toISOString(),
    settings: settings.chatFields(),
    messages: state.messages,
  };
  const stamp = data.exported_at.slice(0, 19).replace(/[:T]/g, "-");
  const name = `inferd-${(state.sessionId || "chat").slice(0, 8)}-${stamp}.json`;
  download(name, JSON.stringify(data, null, 2), "application/json");
}

// ---- wiring ------------------------------------------------------------------------

function autosize() {
  const area = $("#prompt");
  area.style.height = "auto";
  area.style.height = `${Math.min(area.scrollHeight, 240)}px`;
}

function submitPrompt() {
  if (state.turn) return stop();
  const prompt = $("#prompt").value;
  if (!prompt.trim()) return;
  $("#prompt").value = "";
  autosize();
  send(prompt);
}

function toggleSettings(open = !document.body.classList.contains("settings-open")) {
  document.body.classList.toggle("settings-open", open);
  $("#toggle-settings").setAttribute("aria-expanded", String(open));
}

function closeSidebar() {
  document.body.classList.remove("sidebar-open");
}

function wire() {
  $("#toggle-settings").prepend(icon("sliders"));
  $("#export").prepend(icon("download"));
  $("#new-chat").prepend(icon("plus"));
  $("#menu").append(icon("menu"));
  $("#banner-close").append(icon("x"));
  $("#close-settings").append(icon("x"));

  $("#composer").addEventListener("submit", (event) => {
    event.preventDefault();
    submitPrompt();
  });
  $("#prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (!state.turn) submitPrompt();
    }
  });
  $("#prompt").addEventListener("input", autosize);
  document.addEventListener("keydown", (event) => { if (event.key === "Escape") stop(); });
  $("#new-chat").addEventListener("click", newChat);
  $("#export").addEventListener("click", exportConversation);
  $("#toggle-settings").addEventListener("click", () => toggleSettings());
  $("#close-settings").addEventListener("click", () => toggleSettings(false));
  $("#menu").addEventListener("click", () => document.body.classList.toggle("sidebar-open"));
  // On narrow screens the sidebar is an overlay: any choice in it, or a tap beside it, closes it.
  $("#sessions").addEventListener("click", closeSidebar);
  $("#new-chat").addEventListener("click", closeSidebar);
  $(".main").addEventListener("click", (event) => {
    if (!event.target.closest("#menu")) closeSidebar();
  });
  $("#banner-close").addEventListener("click", clearError);
  $("#model").addEventListener("change", () => localStorage.setItem(MODEL, $("#model").value));
  $("#suggestions").addEventListener("click", (event) => {
    if (!event.target.matches(".chip")) return;
    $("#prompt").value = event.target.textContent;
    autosize();
    $("#prompt").focus();
  });
  // Poll only while the tab is visible: a rate limit counts these requests too.
  setInterval(() => { if (!document.hidden) pollStatus(); }, POLL_MS);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) pollStatus(); });
}

async function main() {
  wire();
  render();
  await refreshAll();
  const id = decodeURIComponent(location.hash.slice(1));
  if (id) await openSession(id);
  document.body.classList.add("ready"); // for tests: the first load has finished
  $("#prompt").focus();
}

main();
