// Markdown to DOM, fast enough to redo on every streamed token.
//
// An answer is split into its top-level blocks (paragraphs, lists, code blocks, tables,
// formulas...), each keyed by its own source lines. While an answer streams, only the
// blocks whose source changed -- in practice the last one -- are rendered again; the
// others keep their DOM nodes. Finished blocks are cached, so re-rendering a whole
// conversation clones them instead of parsing, highlighting and typesetting again.

import { decorate } from "./decorate.js";
import { md } from "./parser.js";
import { sanitize } from "./sanitize.js";

const CACHE_LIMIT = 500; // blocks; least recently used go first
const cache = new Map(); // key -> rendered nodes, never inserted (clones are)

// The top-level blocks of `text` as [{key, tokens}].
export function splitBlocks(text) {
  const source = text.replace(/\r\n?/g, "\n"); // as markdown-it normalises it
  const env = {};
  const tokens = md.parse(source, env);
  const lines = source.split("\n");
  // A link may use a reference defined in another block: such blocks depend on them all.
  const references = env.references ? JSON.stringify(env.references) : "";
  const blocks = [];
  let depth = 0;
  let first = 0;
  for (let index = 0; index < tokens.length; index++) {
    if (depth === 0) first = index;
    depth += tokens[index].nesting;
    if (depth !== 0) continue;
    const opening = tokens[first];
    const own = tokens.slice(first, index + 1);
    const text = opening.map
      ? lines.slice(opening.map[0], opening.map[1]).join("\n")
      : own.map((token) => token.content).join("\u0001");
    blocks.push({ key: `${opening.type}\u0000${text}\u0000${references}`, tokens: own });
  }
  return blocks;
}

function renderBlock(block, cacheable) {
  const cached = cache.get(block.key);
  if (cached) {
    cache.delete(block.key); // re-insert: most recently used last
    cache.set(block.key, cached);
    return cached.map((node) => node.cloneNode(true));
  }
  const fragment = sanitize(md.renderer.render(block.tokens, md.options, {}));
  decorate(fragment);
  const nodes = [...fragment.childNodes];
  if (cacheable) remember(block.key, nodes);
  return nodes;
}

function remember(key, nodes) {
  cache.set(key, nodes.map((node) => node.cloneNode(true)));
  if (cache.size > CACHE_LIMIT) cache.delete(cache.keys().next().value);
}

// A finished text, rendered once (from the cache where possible).
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  for (const block of splitBlocks(text)) fragment.append(...renderBlock(block, true));
  return fragment;
}

// The whole text rendered from scratch, no cache: what a page that re-renders everything
// on every token does (benchmarks/bench_web_render.py compares MarkdownView with it).
export function renderFresh(text) {
  const fragment = sanitize(md.render(text.replace(/\r\n?/g, "\n")));
  decorate(fragment);
  return fragment;
}

// A text that grows: update() re-renders only the blocks that changed.
export class MarkdownView {
  constructor(element) {
    this.element = element;
    this.blocks = []; // [{key, nodes, cached}] in document order
  }

  // `final`: the text is complete, so its last block may be cached too.
  update(text, { final = false } = {}) {
    const blocks = splitBlocks(text);
    let same = 0;
    while (same < blocks.length && same < this.blocks.length
      && blocks[same].key === this.blocks[same].key) same++;
    for (const old of this.blocks.slice(same)) for (const node of old.nodes) node.remove();
    const fresh = blocks.slice(same).map((block, offset) => {
      const growing = !final && same + offset === blocks.length - 1;
      const nodes = renderBlock(block, !growing);
      this.element.append(...nodes);
      return { key: block.key, nodes, cached: !growing };
    });
    this.blocks = [...this.blocks.slice(0, same), ...fresh];
    // A block rendered while it was still growing is finished once another follows it
    // (or the text is final): cache it now, so re-rendering the whole answer is cheap.
    const finished = final ? this.blocks.length : this.blocks.length - 1;
    for (const block of this.blocks.slice(0, finished)) {
      if (block.cached) continue;
      remember(block.key, block.nodes);
      block.cached = true;
    }
  }
}
