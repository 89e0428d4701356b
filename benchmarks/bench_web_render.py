"""Does the chat page stay smooth while a long answer streams in? Frame times in Chromium.

A real server (the fake backend, answering a ~4,000-token markdown answer: prose, lists,
tables, formulas and long code blocks, one word per token) streams to the real page in
headless Chromium (Debian's /usr/bin/chromium, driven by Playwright). Two measurements,
one run:

1. Live: the answer streams at --token-ms per token through SSE into the page, which
   re-renders it as tokens arrive (at most once per animation frame). Reported: the
   page's own render times (its "inferd:render" User Timing measures), frame intervals
   seen by a requestAnimationFrame loop, frames over 50 ms, and the browser's long
   animation frames (which include style and layout) -- beside the same page left idle
   for as long, whose late frames are the machine's, not the renderer's.
2. Re-rendering on every token, synthetically: the answer is fed to the page's renderer
   one token at a time, 4,000 updates, with MarkdownView (what the page uses: only
   changed blocks are redone) and, interleaved every --full-every tokens, with a full
   re-render of the whole text (what a naive page does). Reported: per-update times
   near the end of the answer (the largest text), and their ratio.

    .venv/bin/python benchmarks/bench_web_render.py [--tokens 4000] [--token-ms 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from playwright.async_api import Route, async_playwright

from inferd.backends.base import SamplingParams
from inferd.testing.fakes import EOS, FakeBackend, make_app
from inferd.testing.live import live_server

CHUNK_BASE = 0x110000  # token ids past Unicode: one per word of the answer


def long_answer(tokens: int) -> str:
    """Markdown of about `tokens` words, mixing everything the page renders."""
    sections = []
    number = 0
    while sum(len(s.split()) for s in sections) < tokens:
        number += 1
        code = "\n".join(f"    total += weights[{i}] * values[{i}]  # term {i}" for i in range(25))
        sections.append(
            f"## Part {number}: a worked example\n\n"
            f"The **weighted sum** of part {number} adds each value times its weight, "
            "so its cost grows linearly with the input. Some *emphasis*, ~~a mistake~~, "
            "`inline code` and a link to https://example.com/docs keep it realistic.\n\n"
            "- first, read the inputs\n- then, check them:\n  - lengths match\n"
            "  - weights are finite\n- finally, add up\n\n"
            "| step | cost | note |\n|:--|--:|:--|\n"
            + "".join(f"| {i} | $O(n^{i})$ | row {i} |\n" for i in range(1, 5))
            + f"\nIn symbols, $S_{number} = \\sum_i w_i x_i$ and\n\n"
            "$$\\operatorname{cost}(n) = \\sum_{k=1}^{n} O(1) = O(n)$$\n\n"
            f"```python\ndef weighted_sum_{number}(weights, values):\n    total = 0.0\n"
            f"{code}\n    return total\n```\n\n"
            "> Note: the loop above is unrolled for illustration.\n"
        )
    return "\n".join(sections)


class ChunkBackend(FakeBackend):
    """The fake backend, with one token per word (and its leading space) of `reply`."""

    def __init__(self, reply: str, token_ms: float) -> None:
        super().__init__(reply=reply, context_length=1 << 20, step_delay=token_ms / 1000)
        self.chunks = re.findall(r"\s*\S+", reply)

    def decode(self, token_ids: Sequence[int]) -> str:
        return "".join(
            self.chunks[t - CHUNK_BASE] if t >= CHUNK_BASE else chr(t)
            for t in token_ids
            if t != EOS
        )

    def start(self, prompt_ids: Sequence[int], params: SamplingParams) -> ChunkDecoding:
        return ChunkDecoding(len(self.chunks), self.step_delay)


class ChunkDecoding:
    """Yields the answer's word tokens in order, then end-of-sequence."""

    def __init__(self, count: int, delay: float) -> None:
        self.count = count
        self.delay = delay
        self.position = 0

    def step(self) -> int:
        time.sleep(self.delay)
        self.position += 1
        return CHUNK_BASE + self.position - 1 if self.position <= self.count else EOS

    def close(self) -> None:
        pass


# In the page: watch frames and long animation frames until stopped.
WATCH = """() => {
  window.__frames = [];
  window.__loaf = [];
  const watch = (window.__watch ?? 0) + 1; // a new watch ends the loop of the last one
  window.__watch = watch;
  const tick = (now) => {
    if (window.__watch !== watch) return;
    window.__frames.push(now);
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  if (PerformanceObserver.supportedEntryTypes.includes('long-animation-frame')) {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) window.__loaf.push([e.duration, e.blockingDuration]);
    }).observe({ type: 'long-animation-frame', buffered: false });
  }
}"""
COLLECT = """async () => {
  window.__watch += 1;
  const { RENDER_MEASURE } = await import('/static/app.js');
  const renders = performance.getEntriesByName(RENDER_MEASURE).map((e) => e.duration);
  const frames = window.__frames;
  const gaps = frames.slice(1).map((t, i) => t - frames[i]);
  // Where the long frames fell, as a fraction of the watched time (0: start, 1: end).
  const span = frames.at(-1) - frames[0];
  const late = gaps.map((gap, i) => [gap, (frames[i] - frames[0]) / span])
    .filter(([gap]) => gap > 50).map(([, at]) => Math.round(at * 100) / 100);
  return { renders, gaps, late, loaf: window.__loaf,
           supported: PerformanceObserver.supportedEntryTypes.includes('long-animation-frame') };
}"""
# In the page: update a MarkdownView token by token; every `every` tokens, also time a
# full re-render of the same text. Returns [[length, incremental ms, full ms or null]].
SYNTHETIC = """async ([chunks, every]) => {
  const { MarkdownView, renderFresh } = await import('/static/app.js');
  const live = document.createElement('div');
  live.className = 'msg-content';
  const naive = document.createElement('div');
  naive.className = 'msg-content';
  document.querySelector('#messages').append(live, naive);
  const view = new MarkdownView(live);
  const rows = [];
  let text = '';
  for (let i = 0; i < chunks.length; i++) {
    text += chunks[i];
    let start = performance.now();
    view.update(text);
    live.getBoundingClientRect(); // include the layout the update causes
    const incremental = performance.now() - start;
    let full = null;
    if (i % every === every - 1 || i === chunks.length - 1) {
      start = performance.now();
      naive.replaceChildren(renderFresh(text));
      naive.getBoundingClientRect();
      full = performance.now() - start;
    }
    rows.push([text.length, incremental, full]);
  }
  live.remove();
  naive.remove();
  return rows;
}"""


def describe(values: list[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return (
        f"median {statistics.median(ordered):6.2f} ms  p95 {p95:6.2f} ms  "
        f"max {ordered[-1]:6.2f} ms  (n={len(ordered)})"
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    answer = long_answer(args.tokens)
    backend = ChunkBackend(answer, args.token_ms)
    tokens = len(backend.chunks)
    app = make_app(Path(tempfile.mkdtemp()), backend)
    async with live_server(app) as base, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=args.chromium)
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        await page.goto(f"{base}/")
        await page.wait_for_selector("body.ready")

        # The page's max-token slider stops at 2048 (API.md's range): ask for more here.
        async def more_tokens(route: Route) -> None:
            body = json.loads(route.request.post_data or "{}")
            body["max-token"] = tokens + 16
            await route.continue_(post_data=json.dumps(body))

        await page.route("**/chat/completions", more_tokens)
        # A control: the same page, idle, for as long as the stream will take. On a busy
        # machine frames are late without any work from the page; this counts those.
        await page.evaluate(WATCH)
        await page.wait_for_timeout(tokens * args.token_ms)
        idle = await page.evaluate(COLLECT)
        await page.evaluate(WATCH)
        await page.fill("#prompt", "Write the long answer")
        await page.press("#prompt", "Enter")
        await page.wait_for_function(
            "() => document.querySelector('.msg.assistant:last-child:not(.streaming)')",
            timeout=600_000,
        )
        live = await page.evaluate(COLLECT)
        shown = await page.inner_text("#counter-tokens")

        rows = await page.evaluate(SYNTHETIC, [backend.chunks, args.full_every])
        await browser.close()
    return {
        "tokens": tokens,
        "chars": len(answer),
        "counter": shown,
        "idle": idle,
        "live": live,
        "rows": rows,
    }


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    live, rows = result["live"], result["rows"]
    print(
        f"answer: {result['tokens']} tokens, {result['chars']} characters; "
        f"the page's counter said {result['counter']!r}"
    )
    print(f"\n1. live stream at {args.token_ms} ms/token through SSE into the page")
    renders = live["renders"]
    print(
        f"   renders: {len(renders)} "
        f"({result['tokens'] / max(1, len(renders)):.1f} tokens per render on average)"
    )
    print(f"   render time:    {describe(renders)}")
    gaps = live["gaps"]
    print(f"   frame interval: {describe(gaps)}")
    idle = result["idle"]["gaps"]
    print(
        f"   frames over 50 ms: {sum(g > 50 for g in gaps)} of {len(gaps)}, "
        f"at {live['late']} of the stream"
    )
    print(
        f"   control, the idle page for as long: frame interval {describe(idle)}; "
        f"frames over 50 ms: {sum(g > 50 for g in idle)} of {len(idle)}"
    )
    if live["supported"]:
        loaf = live["loaf"]
        worst = max((blocking for _, blocking in loaf), default=0.0)
        print(
            f"   long animation frames (>50 ms, style and layout included): {len(loaf)}, "
            f"worst blocking {worst:.1f} ms"
        )
    tail = [r for r in rows if r[0] >= 0.9 * rows[-1][0]]
    incremental = [r[1] for r in tail]
    full = [r[2] for r in tail if r[2] is not None]
    print("\n2. re-rendering on every token (last 10% of the answer: the largest texts)")
    print(f"   MarkdownView (the page): {describe(incremental)}")
    print(f"   full re-render (naive):  {describe(full)}")
    ratio = statistics.median(full) / statistics.median(incremental)
    print(f"   median ratio full / incremental: {ratio:.1f}x")
    every_token = [r[1] for r in rows]
    print(f"   MarkdownView over all {len(rows)} updates: {describe(every_token)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=4000, help="answer length in tokens")
    parser.add_argument("--token-ms", type=float, default=2.0, help="ms per streamed token")
    parser.add_argument("--full-every", type=int, default=20, help="tokens between full renders")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    report(result, args)
    if args.json:
        args.json.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
