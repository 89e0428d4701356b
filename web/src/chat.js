// The conversation: opening sessions, streaming turns, and editing or regenerating a
// turn as a new branch (a server-side fork), never by deleting what was said.
//
// `messages` mirrors the open session's history exactly as the server stores it (system
// message included), so message indexes are the server's: editing message i forks the
// session keeping its first i messages, then sends the new text there.

import { indexSessions, versions } from "./branches.js";
import { assistantView, messageView } from "./conversation.js";
import { rateText, tokensText, turnStats } from "./stats.js";
import { Turn } from "./turn.js";
import { icon } from "./ui.js";

const $ = (selector) => document.querySelector(selector);
const RESYNC_MS = 300;

export class Chat {
  // page: {api, settings, sidebar, banner: {show(message), clear()}, report(error)}
  constructor(page) {
    this.page = page;
    this.sessionId = null;
    this.messages = [];
    this.details = []; // every session's metadata, for the sidebar and the branch switchers
    this.turn = null;
    this.editing = null; // index of the user message being edited
    this.busy = false; // a fork or a session load is in flight
    this.lastStats = null;
    this.shownVariants = null; // what the switchers on screen show, to skip needless redraws
    this.following = true; // the view is at the bottom: keep it there as text arrives
    $("#chat").addEventListener("scroll", () => { this.following = this.nearBottom; });
    this.hooks = {
      onEdit: (index) => this.startEdit(index),
      onRegenerate: () => this.regenerate(),
      onSave: (index, text) => this.branch(index, text),
      onCancel: () => this.cancelEdit(),
      onSwitch: (id) => this.open(id),
    };
  }

  get idle() {
    return !this.turn && !this.busy;
  }

  // ---- sessions --------------------------------------------------------------------

  async refreshSessions() {
    this.details = await this.page.api.sessions();
    this.page.sidebar.show(this.details, this.sessionId);
    this.renderTitle();
    // The branch switchers depend on the list: redraw if they changed (only they can).
    if (!this.turn && JSON.stringify(this.variants()) !== this.shownVariants) this.renderMessages();
  }

  async open(id) {
    if (!this.idle) return;
    this.busy = true;
    try {
      const messages = await this.page.api.history(id);
      this.show(id, messages);
      this.page.banner.clear();
    } catch (error) {
      this.page.report(error);
      if (error.status === 404) this.newChat();
      this.refreshSessions().catch(() => {});
    } finally {
      this.busy = false;
    }
    this.render();
    this.scrollToBottom();
  }

  show(id, messages) {
    Object.assign(this, { sessionId: id, messages, editing: null, lastStats: null });
    history.replaceState(null, "", id ? `#${encodeURIComponent(id)}` : location.pathname);
  }

  newChat() {
    if (!this.idle) return;
    this.show(null, []);
    this.render();
    $("#prompt").focus();
  }

  async rename(id, title) {
    try {
      await this.page.api.rename(id, title);
    } catch (error) {
      this.page.report(error);
    }
    await this.refreshSessions().catch((error) => this.page.report(error));
  }

  // Delete sessions (a conversation and its branches); 404s are already gone.
  async remove(ids) {
    for (const id of ids) {
      try {
        await this.page.api.deleteSession(id);
      } catch (error) {
        if (error.status !== 404) {
          this.page.report(error);
          break;
        }
      }
    }
    if (ids.includes(this.sessionId)) this.newChat();
    await this.refreshSessions().catch((error) => this.page.report(error));
  }

  // ---- turns -----------------------------------------------------------------------

  // fork: {from, messages} when this turn continues a branch just forked from session
  // `from`, whose conversation was `messages`.
  async send(prompt, fork = null) {
    const model = $("#model").value;
    if (!model) return this.page.banner.show("No model to send to: check the connection and API key.");
    this.page.banner.clear();
    const body = { "model-name": model, prompt, ...this.page.settings.chatFields() };
    if (this.sessionId) body["session-id"] = this.sessionId;
    const turn = this.startTurn(prompt, body["system-prompt"], fork);
    try {
      await this.page.api.streamChat(body, {
        signal: turn.controller.signal,
        onSession: (id) => {
          turn.started = true;
          this.adopt(id);
        },
        onToken: (text) => turn.add(text),
        onError: (message) => { turn.failure = message; },
        onUsage: (usage) => { turn.usage = usage; },
      });
    } catch (error) {
      turn.error = error;
    }
    await this.finishTurn(turn);
  }

  startTurn(prompt, systemPrompt, fork) {
    const messages = [...this.messages];
    // The server puts a given system prompt first, replacing any earlier one.
    if (systemPrompt !== undefined) {
      if (messages[0]?.role === "system") messages.shift();
      messages.unshift({ role: "system", content: systemPrompt });
    }
    messages.push({ role: "user", content: prompt });
    const turn = new Turn(prompt, { before: fork?.messages ?? this.messages,
      forkedFrom: fork?.from ?? null, onPaint: () => this.painted() });
    Object.assign(this, { messages, turn, editing: null, lastStats: null });
    this.render();
    this.scrollToBottom();
    return turn;
  }

  adopt(id) {
    if (!id || id === this.sessionId) return;
    this.sessionId = id;
    history.replaceState(null, "", `#${encodeURIComponent(id)}`);
    this.refreshSessions().catch((error) => this.page.report(error));
  }

  painted() {
    this.renderCounter(turnStats(this.turn));
    if (this.following) this.scrollToBottom();
  }

  async finishTurn(turn) {
    turn.stop();
    this.turn = null;
    const aborted = turn.error?.name === "AbortError";
    if (turn.error && !aborted && !turn.started) {
      // Refused before streaming (bad field, unknown model, auth...): nothing was recorded,
      // so restore the conversation and hand the text back for another try. A branch
      // made for this turn would only hold a copy of its parent: drop it.
      if (turn.forkedFrom) await this.dropBranch(turn.forkedFrom);
      this.messages = turn.before;
      if (!$("#prompt").value) $("#prompt").value = turn.prompt;
      $("#prompt").dispatchEvent(new Event("input"));
      this.page.report(turn.error);
    } else {
      // The server records every exchange it started, whatever ended it.
      this.messages.push({ role: "assistant", content: turn.text });
      if (turn.error && !aborted) this.page.report(turn.error); // the connection broke
    }
    if (turn.failure) this.page.banner.show(`Generation failed: ${turn.failure}`);
    if (turn.pieces || turn.usage) this.lastStats = turnStats(turn);
    // After a stop or a broken connection the server records in its own time: re-read it.
    if (turn.error && turn.started && this.sessionId) {
      setTimeout(() => this.resync(this.sessionId), RESYNC_MS);
    }
    this.render();
    await this.refreshSessions().catch(() => {});
  }

  async dropBranch(parentId) {
    const branch = this.sessionId;
    this.sessionId = parentId;
    history.replaceState(null, "", `#${encodeURIComponent(parentId)}`);
    await this.page.api.deleteSession(branch).catch(() => {});
  }

  // Quietly replace the mirror with the server's history (a banner shown meanwhile stays).
  // The server records a stopped answer once it notices the disconnect, with every token
  // sent by then; until it has (fewer messages than shown here), try again a little later.
  async resync(id, attempts = 12) {
    if (!this.idle || this.editing !== null || this.sessionId !== id) return;
    let messages;
    try {
      messages = await this.page.api.history(id);
    } catch {
      return; // the next request reports whatever is wrong
    }
    if (!this.idle || this.editing !== null || this.sessionId !== id) return;
    if (messages.length < this.messages.length) {
      // Not recorded yet (a busy server notices the disconnect late): wait longer each
      // time, and never replace what is shown with a shorter history.
      const delay = Math.min(RESYNC_MS * 2 ** (12 - attempts), 3000);
      if (attempts > 1) setTimeout(() => this.resync(id, attempts - 1), delay);
      return;
    }
    this.messages = messages;
    this.render();
  }

  stop() {
    this.turn?.controller.abort();
  }

  // Ask `prompt` in place of message `index`: fork the session keeping the messages
  // before it, and continue there. The original stays as another version of the turn.
  async branch(index, prompt) {
    if (!this.idle) return;
    this.editing = null;
    let fork = null;
    if (this.sessionId) {
      this.busy = true;
      try {
        const child = await this.page.api.fork(this.sessionId, index);
        fork = { from: this.sessionId, messages: this.messages };
        this.show(child.id, this.messages.slice(0, index));
      } catch (error) {
        this.page.report(error);
        return this.render();
      } finally {
        this.busy = false;
      }
    }
    await this.send(prompt, fork);
  }

  regenerate() {
    const index = this.messages.length - 2;
    if (this.messages[index]?.role === "user") this.branch(index, this.messages[index].content);
  }

  startEdit(index) {
    if (!this.idle) return;
    this.editing = index;
    this.render();
    const area = $(".edit textarea");
    area.focus();
    area.setSelectionRange(area.value.length, area.value.length);
  }

  cancelEdit() {
    this.editing = null;
    this.render();
  }

  // ---- rendering -------------------------------------------------------------------

  render() {
    const streaming = Boolean(this.turn);
    document.body.classList.toggle("streaming", streaming);
    this.renderMessages();
    const button = $("#send");
    button.replaceChildren(icon(streaming ? "stop" : "send"));
    button.title = streaming ? "Stop (Esc)" : "Send (Enter)";
    button.setAttribute("aria-label", button.title);
    button.classList.toggle("stop", streaming);
    this.renderCounter(this.turn ? turnStats(this.turn) : this.lastStats);
    this.page.sidebar.show(this.details, this.sessionId);
    this.renderTitle();
  }

  renderTitle() {
    const title = this.details.find((s) => s.id === this.sessionId)?.title;
    document.title = `${title || "New chat"} · inferd`;
  }

  // The versions of each turn of the open session (null where there is one version).
  variants() {
    const byId = indexSessions(this.details);
    return this.messages.map((message, index) => (message.role === "user" && this.sessionId
      ? versions(byId, this.sessionId, index) : null));
  }

  renderMessages() {
    const variants = this.variants();
    this.shownVariants = JSON.stringify(variants);
    const count = this.messages.length;
    const views = this.messages.map((message, index) => messageView(message, {
      index,
      last: index === count - 1 && !this.turn,
      editing: this.editing === index,
      stats: this.lastStats,
      variants: variants[index],
    }, this.hooks));
    if (this.turn) {
      const view = assistantView("", { streaming: true }, this.hooks);
      this.turn.attach(view.querySelector(".msg-content"));
      views.push(view);
    }
    $("#messages").replaceChildren(...views);
    $("#empty").hidden = views.length > 0;
  }

  renderCounter(stats) {
    $("#counter-tokens").textContent = tokensText(stats);
    $("#counter-rate").textContent = rateText(stats);
  }

  get nearBottom() {
    const chat = $("#chat");
    return chat.scrollHeight - chat.scrollTop - chat.clientHeight < 80;
  }

  scrollToBottom() {
    $("#chat").scrollTop = $("#chat").scrollHeight;
  }
}
