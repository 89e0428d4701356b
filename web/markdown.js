// A small, safe renderer for the markdown models actually write: fenced code blocks
// (highlighted, with a copy button), headings, lists, quotes, paragraphs, `code`,
// **bold** and *italic*. It builds DOM nodes from text, so output is never parsed as
// HTML. Rendering runs on every streamed token, so half-written markdown (an unclosed
// fence) must render sensibly too: an open fence is a code block until the text ends.

import { copyButton, el } from "./ui.js";

const FENCE = /^\s*(```|~~~)\s*([\w+#.-]*)[^\n]*$/;
const HEADING = /^(#{1,6})\s+(.*)$/;
const LIST_ITEM = /^\s*([-*+]|\d+[.)])\s+(.*)$/;
const QUOTE = /^\s*>\s?(.*)$/;

export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  for (const block of splitFences(text)) {
    fragment.append(block.code !== undefined ? codeBlock(block.code, block.lang)
      : renderProse(block.text));
  }
  return fragment;
}

// Split text into prose and fenced code, e.g. [{text}, {code, lang}, {text}].
function splitFences(text) {
  const blocks = [];
  let prose = [];
  let fence = null; // {marker, lang, lines} while inside a code block
  for (const line of text.split("\n")) {
    const match = line.match(FENCE);
    if (fence) {
      if (match && match[1] === fence.marker && !match[2]) {
        blocks.push({ code: fence.lines.join("\n"), lang: fence.lang });
        fence = null;
      } else {
        fence.lines.push(line);
      }
    } else if (match) {
      if (prose.length) blocks.push({ text: prose.join("\n") });
      prose = [];
      fence = { marker: match[1], lang: match[2], lines: [] };
    } else {
      prose.push(line);
    }
  }
  if (fence) blocks.push({ code: fence.lines.join("\n"), lang: fence.lang });
  if (prose.length) blocks.push({ text: prose.join("\n") });
  return blocks;
}

// Prose: group lines into headings, lists, quotes and paragraphs.
function renderProse(text) {
  const fragment = document.createDocumentFragment();
  let group = null; // {kind: "p" | "ul" | "ol" | "quote", lines: [...]}
  const flush = () => {
    if (group) fragment.append(renderGroup(group));
    group = null;
  };
  for (const line of text.split("\n")) {
    const heading = line.match(HEADING);
    const item = line.match(LIST_ITEM);
    const quote = line.match(QUOTE);
    if (!line.trim()) {
      flush();
    } else if (heading) {
      flush();
      const level = Math.min(6, heading[1].length + 2); // h3..h6: headings inside a message
      fragment.append(el(`h${level}`, {}, inline(heading[2])));
    } else if (item) {
      const kind = /\d/.test(item[1]) ? "ol" : "ul";
      if (group?.kind !== kind) {
        flush();
        group = { kind, lines: [], start: parseInt(item[1], 10) };
      }
      group.lines.push(item[2]);
    } else if (quote) {
      if (group?.kind !== "quote") flush();
      group ??= { kind: "quote", lines: [] };
      group.lines.push(quote[1]);
    } else if (group && (group.kind === "ul" || group.kind === "ol") && /^\s/.test(line)) {
      group.lines[group.lines.length - 1] += "\n" + line.trim(); // continuation of an item
    } else {
      if (group?.kind !== "p") flush();
      group ??= { kind: "p", lines: [] };
      group.lines.push(line);
    }
  }
  flush();
  return fragment;
}

function renderGroup(group) {
  if (group.kind === "ul" || group.kind === "ol") {
    const start = group.kind === "ol" && group.start !== 1 ? group.start : undefined;
    return el(group.kind, { start }, group.lines.map((line) => el("li", {}, inline(line))));
  }
  if (group.kind === "quote") return el("blockquote", {}, inline(group.lines.join("\n")));
  // Paragraphs keep single newlines (CSS white-space: pre-wrap): models use them as breaks.
  return el("p", {}, inline(group.lines.join("\n")));
}

const INLINE = /`([^`\n]+)`|\*\*(.+?)\*\*|__(.+?)__|(?<![\w*])\*(?![\s*])([^*\n]+?)\*(?![\w*])/g;

// Inline spans -> nodes: `code`, **bold** / __bold__, *italic*.
function inline(text) {
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(INLINE)) {
    if (match.index > last) nodes.push(text.slice(last, match.index));
    if (match[1] !== undefined) nodes.push(el("code", { text: match[1] }));
    else if (match[2] !== undefined || match[3] !== undefined) {
      nodes.push(el("strong", { text: match[2] ?? match[3] }));
    } else nodes.push(el("em", { text: match[4] }));
    last = match.index + match[0].length;
  }
  if (last < text.length) nodes.push(text.slice(last));
  return nodes;
}

function codeBlock(code, lang) {
  return el("figure", { class: "code" }, [
    el("div", { class: "code-head" }, [
      el("span", { class: "code-lang", text: lang || "text" }),
      copyButton(() => code),
    ]),
    el("pre", {}, el("code", {}, highlight(code, lang))),
  ]);
}

// ---- syntax highlighting ------------------------------------------------------------
// A single-pass tokenizer: comments, strings, numbers and words, with the comment
// syntax chosen by the fence's language. Good enough to make code readable; not a parser.

const HASH_COMMENTS = new Set(["python", "py", "bash", "sh", "shell", "zsh", "console",
  "ruby", "rb", "yaml", "yml", "toml", "ini", "r", "perl", "dockerfile", "makefile",
  "nix", "elixir", "julia", "powershell", "ps1"]);
const DASH_COMMENTS = new Set(["sql", "lua", "haskell", "hs"]);
const PLAIN = new Set(["text", "txt", "plain", "markdown", "md", "csv", "diff", "log"]);

const KEYWORDS = new Set(`
  and as assert async await break case catch class const continue def default defer del
  do elif else enum except export extends finally fn for from func function go goto if
  impl import in interface is lambda let loop match mod module mut namespace new not of
  or package pass private protected pub public raise return self static struct super
  switch this throw trait try type typeof use var where while with yield void int long
  float double char bool boolean string str u8 u16 u32 u64 i8 i16 i32 i64 f32 f64 usize
  isize echo then fi done esac local export unsafe crate dyn ref move extern sizeof
  unsigned signed select insert update delete create table where values into join on
`.trim().split(/\s+/));
const LITERALS = new Set(["true", "false", "null", "nil", "None", "True", "False",
  "undefined", "NaN", "Infinity", "Some", "Ok", "Err"]);

const grammars = new Map();

function grammar(lang) {
  const key = (lang || "").toLowerCase();
  if (!grammars.has(key)) {
    const slash = String.raw`\/\/[^\n]*|\/\*[\s\S]*?(?:\*\/|$)`;
    const comment = HASH_COMMENTS.has(key) ? "#[^\\n]*"
      : DASH_COMMENTS.has(key) ? "--[^\\n]*"
      : key ? slash
      : slash + String.raw`|(?<=^|\n|[ \t])#[^\n]*`; // unlabelled: accept both styles
    const string = String.raw`"""[\s\S]*?(?:"""|$)|'''[\s\S]*?(?:'''|$)` +
      String.raw`|"(?:\\.|[^"\\\n])*"?|'(?:\\.|[^'\\\n])*'?|` + "`(?:\\\\.|[^`\\\\])*`?";
    const number = String.raw`\b(?:0[xX][\da-fA-F_]+|\d[\d_]*(?:\.\d+)?(?:[eE][+-]?\d+)?)\b`;
    const word = String.raw`[A-Za-z_$][\w$]*`;
    grammars.set(key, new RegExp(
      `(?<comment>${comment})|(?<string>${string})|(?<number>${number})|(?<word>${word})`, "g"));
  }
  return grammars.get(key);
}

export function highlight(code, lang) {
  if (PLAIN.has((lang || "").toLowerCase())) return [code];
  const nodes = [];
  let last = 0;
  for (const match of code.matchAll(grammar(lang))) {
    const kind = tokenKind(match, code);
    if (!kind) continue; // plain identifiers stay in the surrounding text run
    if (match.index > last) nodes.push(code.slice(last, match.index));
    nodes.push(el("span", { class: `tok-${kind}`, text: match[0] }));
    last = match.index + match[0].length;
  }
  if (last < code.length) nodes.push(code.slice(last));
  return nodes;
}

function tokenKind(match, code) {
  const { comment, string, number, word } = match.groups;
  if (comment !== undefined) return "comment";
  if (string !== undefined) return "string";
  if (number !== undefined) return "number";
  if (LITERALS.has(word)) return "literal";
  if (KEYWORDS.has(word)) return "keyword";
  if (code[match.index + word.length] === "(") return "fn";
  if (/^[A-Z][a-z]/.test(word)) return "type";
  return null;
}
