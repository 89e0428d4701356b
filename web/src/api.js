// The inferd HTTP API as the page uses it (same origin, so plain relative URLs): API.md's
// routes plus inferd's session extensions (detail listing, fork, rename, import).

import { SseParser } from "./sse.js";

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

// inferd answers errors as {"error": "..."}; a proxy or rate limiter may send plain text.
async function errorFrom(response) {
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const text = (await response.text()).trim();
    try {
      const body = JSON.parse(text);
      if (typeof body?.error === "string") message = body.error;
      else if (text) message = text.slice(0, 300);
    } catch {
      if (text) message = text.slice(0, 300);
    }
  } catch {
    // body unreadable: the status line is all there is
  }
  return new ApiError(message, response.status);
}

const session = (id) => `/chat/history/${encodeURIComponent(id)}`;

export class Api {
  // apiKey(): the key to send, read per request so a new key applies at once.
  // onAuth(ok, message): every answer from a route that needs a key says whether the
  // key worked (false: a 401), so the page can ask for one and show "Unauthorized".
  constructor(apiKey, onAuth = () => {}) {
    this.apiKey = apiKey;
    this.onAuth = onAuth;
  }

  headers(extra = {}) {
    const key = this.apiKey();
    return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
  }

  async send(path, init) {
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      if (error.name === "AbortError" || error.name === "TimeoutError") throw error;
      throw new ApiError("cannot reach the server", 0);
    }
    if (!response.ok) {
      const error = await errorFrom(response);
      if (response.status === 401) this.onAuth(false, error.message);
      throw error;
    }
    this.onAuth(true);
    return response;
  }

  async request(method, path, body) {
    const init = { method, headers: this.headers() };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await this.send(path, init);
    return response.status === 204 ? null : response.json();
  }

  models() {
    return this.request("GET", "/models").then((body) => body.models);
  }

  // [{id, title, created, updated, message_count, parent, fork_point}], oldest first.
  sessions() {
    return this.request("GET", "/sessions?detail=true");
  }

  history(id) {
    return this.request("GET", session(id));
  }

  deleteSession(id) {
    return this.request("DELETE", session(id));
  }

  rollback(id, amount) {
    return this.request("POST", `${session(id)}/rollback`, { amount });
  }

  // A new session holding the first `keep` messages of `id`; resolves to its details.
  fork(id, keep) {
    return this.request("POST", `${session(id)}/fork`, { keep });
  }

  rename(id, title) {
    return this.request("PATCH", session(id), { title });
  }

  importSession(messages, title) {
    return this.request("POST", "/chat/history", { messages, title });
  }

  // Readiness as {status, detail}; never throws, it feeds the connection indicator.
  // /readiness is public, so it says nothing about the key: see onAuth.
  async readiness() {
    try {
      const response = await fetch("/readiness", { signal: AbortSignal.timeout(5000) });
      const body = await response.json().catch(() => ({}));
      if (response.ok) return { status: "ready", detail: body };
      return { status: body.status || `http ${response.status}`, detail: body };
    } catch {
      return { status: "offline" };
    }
  }

  // POST /chat/completions and stream its SSE answer.
  // handlers: onSession(id) once the headers arrive, onToken(text) per piece of text,
  // onError(message) for an `event: error`, onUsage({prompt_tokens, completion_tokens,
  // first_token_seconds, decode_seconds}) from the closing `: usage` comment that
  // X-Include-Usage asks for. Resolves when the stream ends; rejects with ApiError for
  // an error status, or AbortError when `signal` aborts.
  async streamChat(body, { signal, onSession, onToken, onError, onUsage }) {
    const response = await this.send("/chat/completions", {
      method: "POST",
      headers: this.headers({ "Content-Type": "application/json",
        Accept: "text/event-stream", "X-Include-Usage": "true" }),
      body: JSON.stringify(body),
      signal,
    });
    onSession(response.headers.get("X-Session-Id"));
    const parser = new SseParser();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      for (const item of parser.feed(value)) {
        if (item.comment?.startsWith("usage ")) onUsage(parseUsage(item.comment));
        else if (item.event === "error") onError(item.data);
        else if (item.event === "message") onToken(item.data);
      }
    }
  }
}

function parseUsage(comment) {
  try {
    return JSON.parse(comment.slice("usage ".length));
  } catch {
    return null;
  }
}
