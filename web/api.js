// The inferd HTTP API as the page uses it (same origin, so plain relative URLs).

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

export class Api {
  // apiKey: a function, so a key typed into the settings applies to the next request.
  constructor(apiKey) {
    this.apiKey = apiKey;
  }

  headers(extra = {}) {
    const key = this.apiKey();
    return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
  }

  async request(method, path, body, options = {}) {
    const init = { method, headers: this.headers(), ...options };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      if (error.name === "AbortError" || error.name === "TimeoutError") throw error;
      throw new ApiError("cannot reach the server", 0);
    }
    if (!response.ok) throw await errorFrom(response);
    return response.status === 204 ? null : response.json();
  }

  models() {
    return this.request("GET", "/models").then((body) => body.models);
  }

  sessions() {
    return this.request("GET", "/sessions");
  }

  history(id) {
    return this.request("GET", `/chat/history/${encodeURIComponent(id)}`);
  }

  deleteSession(id) {
    return this.request("DELETE", `/chat/history/${encodeURIComponent(id)}`);
  }

  rollback(id, amount) {
    return this.request("POST", `/chat/history/${encodeURIComponent(id)}/rollback`, { amount });
  }

  // Readiness as {status, detail}; never throws, it feeds the connection indicator.
  async readiness() {
    try {
      const response = await fetch("/readiness", {
        headers: this.headers(), signal: AbortSignal.timeout(5000),
      });
      const body = await response.json().catch(() => ({}));
      if (response.status === 401) return { status: "unauthorized", detail: body.error };
      if (response.ok) return { status: "ready", detail: body };
      return { status: body.status || `http ${response.status}`, detail: body };
    } catch {
      return { status: "offline" };
    }
  }

  // POST /chat/completions and stream its SSE answer.
  // handlers: onSession(id) once the headers arrive, onToken(text) per token,
  // onError(message) for an `event: error`. Resolves when the stream ends; rejects with
  // ApiError for an error status, or AbortError when `signal` aborts.
  async streamChat(body, { signal, onSession, onToken, onError }) {
    let response;
    try {
      response = await fetch("/chat/completions", {
        method: "POST",
        headers: this.headers({ "Content-Type": "application/json",
          Accept: "text/event-stream" }),
        body: JSON.stringify(body),
        signal,
      });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError("cannot reach the server", 0);
    }
    if (!response.ok) throw await errorFrom(response);
    onSession(response.headers.get("X-Session-Id"));
    const parser = new SseParser();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      for (const event of parser.feed(value)) {
        if (event.event === "error") onError(event.data);
        else if (event.event === "message") onToken(event.data);
      }
    }
  }
}
