// The last word on what rendered markdown may contain: DOMPurify with an allow-list of
// the tags and attributes parser.js produces. Whatever slips past markdown-it (a bug, a
// plugin) still cannot add script, event handlers, styles, forms, frames, SVG or links
// other than http(s)/mailto. Links open in a new tab without access to this page.

import DOMPurify from "dompurify";

const TAGS = ["p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "s", "del",
  "code", "pre", "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th",
  "td", "div", "span"];
const ATTRIBUTES = ["href", "class", "start", "data-lang", "data-display"];
const CONFIG = {
  ALLOWED_TAGS: TAGS,
  ALLOWED_ATTR: ATTRIBUTES,
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:|#)/i,
  // Attributes whose values are not URLs (DOMPurify checks unknown ones as URLs).
  ADD_URI_SAFE_ATTR: ["start", "data-lang", "data-display"],
  RETURN_DOM_FRAGMENT: true,
};

const purify = DOMPurify(window);
purify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

// Sanitised nodes of an HTML string, as a DocumentFragment.
export function sanitize(html) {
  return purify.sanitize(html, CONFIG);
}
