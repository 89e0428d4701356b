// Server-Sent Events parsing for fetch() streams (EventSource cannot POST or send headers).
//
// Follows the SSE spec where inferd relies on it: events end at a blank line, the
// `data:` lines of one event are joined with "\n" (a token containing a newline arrives
// as several data lines), exactly one space after the colon is stripped (a token's own
// leading space must survive). Comment lines (": keepalive", and the ": usage {...}"
// inferd ends a stream with when asked to) come back as {comment} items, in order.

export class SseParser {
  constructor() {
    this.buffer = "";
    this.reset();
  }

  reset() {
    this.eventName = "";
    this.dataLines = [];
  }

  // Feed decoded text (any chunking); returns the events ({event, data}) and comments
  // ({comment}) completed by it.
  feed(text) {
    this.buffer += text;
    const events = [];
    // A trailing "\r" may be the first half of "\r\n": keep it until more text arrives.
    const lines = this.buffer.split(/\r\n|\r(?!$)|\n/);
    this.buffer = lines.pop();
    for (const line of lines) {
      const event = this.line(line);
      if (event) events.push(event);
    }
    return events;
  }

  // One complete line; returns an event when the line ends one, or a comment.
  line(line) {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return { comment: line.slice(1).replace(/^ /, "") };
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.dataLines.push(value);
    else if (field === "event") this.eventName = value;
    return null; // "id" and "retry" mean nothing for a one-shot POST stream
  }

  dispatch() {
    // Per the spec, an event without data lines (e.g. a lone "event:") is dropped.
    const event = this.dataLines.length
      ? { event: this.eventName || "message", data: this.dataLines.join("\n") }
      : null;
    this.reset();
    return event;
  }
}
