// What the sanitised HTML of a block still needs: formulas typeset by KaTeX and a header
// (language, copy button) on each code block. Both are built as DOM nodes, never parsed
// from strings: KaTeX sets its inline styles through the CSSOM, which the CSP allows.

import katex from "katex";
import { copyText, el, icon } from "../ui.js";

// trust: false turns off \href, \url, \includegraphics and \html*: a formula is text.
// Errors are shown here rather than by KaTeX, whose error span has an inline style
// attribute (the CSP refuses it).
const KATEX = { throwOnError: true, trust: false, strict: "ignore", maxSize: 50, maxExpand: 1000 };

export function decorate(root) {
  // A link whose address the sanitiser refused is just its text.
  for (const link of root.querySelectorAll("a:not([href])")) link.replaceWith(...link.childNodes);
  for (const node of root.querySelectorAll(".math")) typeset(node);
  for (const block of root.querySelectorAll(".code")) addCodeHeader(block);
}

function typeset(node) {
  const tex = node.textContent;
  try {
    katex.render(tex, node, { ...KATEX, displayMode: node.dataset.display === "block" });
  } catch (error) {
    // Unfinished or invalid TeX (common while an answer streams): show the source.
    node.replaceChildren(el("code", { class: "math-error", title: String(error.message ?? error),
      text: tex }));
  }
}

function addCodeHeader(block) {
  const lang = block.dataset.lang;
  block.prepend(el("div", { class: "code-head" }, [
    el("span", { class: "code-lang", text: lang || "text" }),
    el("button", { class: "mini copy-code", type: "button", title: "Copy code" },
      [icon("copy"), el("span", { text: "Copy" })]),
  ]));
}

// One listener for every code block's copy button, so rendered blocks can be cloned
// from the cache without re-attaching handlers.
export function wireCopyButtons(container) {
  container.addEventListener("click", async (event) => {
    const button = event.target.closest(".copy-code");
    if (!button) return;
    const code = button.closest(".code").querySelector("code").textContent;
    const label = button.querySelector("span");
    const ok = await copyText(code);
    label.textContent = ok ? "Copied" : "Copy failed";
    button.classList.toggle("done", ok);
    setTimeout(() => {
      label.textContent = "Copy";
      button.classList.remove("done");
    }, 1500);
  });
}
