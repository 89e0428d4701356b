// One answer being streamed: the text so far, when it arrived, and its live view.
//
// Tokens may arrive far faster than the screen refreshes: the view is re-rendered at
// most once per animation frame, and MarkdownView only redoes the blocks that changed.
// Each render is timed as a User Timing measure named "inferd:render" (visible in the
// browser's performance tools; benchmarks/bench_web_render.py reads them).

import { MarkdownView } from "./markdown/view.js";

export const RENDER_MEASURE = "inferd:render";

export class Turn {
  // before: the conversation to restore if the server refuses the request;
  // forkedFrom: the session this turn's new branch was forked from, if it is one.
  constructor(prompt, { before, forkedFrom = null, onPaint = () => {} }) {
    Object.assign(this, { prompt, before, forkedFrom, onPaint });
    this.text = "";
    this.pieces = 0; // SSE text events: about one per token
    this.usage = null; // the server's own count, when the stream ends
    this.startedAt = performance.now();
    this.firstAt = null;
    this.lastAt = null;
    this.controller = new AbortController();
    this.started = false; // the server accepted the request and began streaming
    this.failure = null; // an `event: error` midway
    this.error = null; // the request itself failed
    this.view = null;
    this.frame = 0;
    performance.clearMeasures(RENDER_MEASURE);
  }

  // Show the answer in `element` (the streaming message's .msg-content).
  attach(element) {
    this.view = new MarkdownView(element);
    this.view.update(this.text);
  }

  add(text) {
    const now = performance.now();
    this.text += text;
    this.pieces += 1;
    this.firstAt ??= now;
    this.lastAt = now;
    this.frame ||= requestAnimationFrame(() => {
      this.frame = 0;
      this.paint();
    });
  }

  paint() {
    if (!this.view) return;
    const start = performance.now();
    this.view.update(this.text);
    performance.measure(RENDER_MEASURE, { start, detail: { length: this.text.length } });
    this.onPaint(this);
  }

  stop() {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
  }
}
