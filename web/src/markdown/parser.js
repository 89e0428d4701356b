// The markdown dialect of model answers: CommonMark + GFM tables and strikethrough,
// bare links, single newlines as line breaks, $…$ / $$…$$ / \(…\) / \[…\] math and
// highlighted code.
//
// Raw HTML in the text is shown as text (`html: false`), and markdown-it already refuses
// javascript:/vbscript:/file: links; sanitize.js checks the result once more. The HTML
// made here only holds placeholders for math and code headers: KaTeX builds its
// formulas as DOM nodes later (decorate.js), because the strings it renders carry
// inline styles that the page's Content-Security-Policy forbids.

import hljs from "highlight.js/lib/common";
import MarkdownIt from "markdown-it";
import texmath from "markdown-it-texmath";

export const md = new MarkdownIt({ html: false, linkify: true, breaks: true, typographer: false });
// Only links with a scheme or "www.": otherwise "main.py" would link to http://main.py.
md.linkify.set({ fuzzyLink: false, fuzzyEmail: false });

// texmath finds the formulas; its renderer is replaced below (see the note above).
md.use(texmath, { engine: { renderToString: () => "" }, delimiters: ["dollars", "brackets"] });
const escape = md.utils.escapeHtml;
const inlineMath = (tokens, index) =>
  `<span class="math" data-display="inline">${escape(tokens[index].content)}</span>`;
const blockMath = (tokens, index) =>
  `<div class="math" data-display="block">${escape(tokens[index].content)}</div>\n`;
for (const rule of ["math_inline", "math_inline_double"]) md.renderer.rules[rule] = inlineMath;
for (const rule of ["math_block", "math_block_eqno"]) md.renderer.rules[rule] = blockMath;

// Code: highlighted when the fence names a language highlight.js knows, plain otherwise
// (guessing the language on every streamed token would cost far more than it shows).
md.renderer.rules.fence = (tokens, index) => {
  const token = tokens[index];
  const lang = token.info.trim().split(/\s+/)[0].toLowerCase();
  const known = lang && hljs.getLanguage(lang);
  const body = known
    ? hljs.highlight(token.content, { language: lang, ignoreIllegals: true }).value
    : escape(token.content);
  return `<div class="code" data-lang="${escape(lang)}"><pre><code class="hljs">${body}</code></pre></div>\n`;
};
md.renderer.rules.code_block = (tokens, index) =>
  `<div class="code" data-lang=""><pre><code class="hljs">${escape(tokens[index].content)}</code></pre></div>\n`;

// Images are shown as links: the page loads nothing from elsewhere (no tracking pixels,
// and the CSP would block them anyway).
md.renderer.rules.image = (tokens, index, options, env, self) => {
  const token = tokens[index];
  const alt = self.renderInlineAsText(token.children, options, env);
  const src = token.attrGet("src");
  return `<a href="${escape(src)}">${escape(alt || src)}</a>`;
};

// Tables scroll sideways inside a wrapper; cell alignment becomes a class, not a style.
md.renderer.rules.table_open = () => '<div class="table-wrap"><table>\n';
md.renderer.rules.table_close = () => "</table></div>\n";
md.core.ruler.push("align_classes", (state) => {
  for (const token of state.tokens) {
    if (token.type !== "th_open" && token.type !== "td_open") continue;
    const align = /text-align:(left|center|right)/.exec(token.attrGet("style") ?? "");
    token.attrs = align ? [["class", `align-${align[1]}`]] : null;
  }
});
