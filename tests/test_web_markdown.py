"""The page's markdown renderer in Chromium (web/src/markdown/): what models write renders
as it should, a streamed answer renders exactly as the finished one, and model output
never runs script -- an XSS corpus through the renderer and through a real stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from inferd.testing.fakes import FakeBackend, make_app
from inferd.testing.live import live_server
from tests.browser import WebPage, open_page

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Renders text into a fresh element attached to the page (so anything that could run,
# would) and describes the result.
RENDER = """async (text) => {
  const { renderMarkdown } = await import('/static/app.js');
  const box = document.createElement('div');
  box.className = 'msg-content rendered';
  document.body.append(box);
  box.append(renderMarkdown(text));
  return box.innerHTML;
}"""
# Everything in the document that could run script or leave the page.
AUDIT = """() => {
  const found = [];
  // KaTeX's formulas and the code blocks' headers are the page's own nodes.
  const outsideKatex = (node) => !node.closest('.katex, .code-head');
  const risky = 'script, iframe, object, embed, form, input, img, style, base, meta, link, '
    + 'svg, math, details, video, audio, source';
  for (const box of document.querySelectorAll('.msg-content')) {
    for (const node of box.querySelectorAll(risky)) {
      const katexOwn = ['svg', 'math'].includes(node.localName) && !outsideKatex(node);
      if (!katexOwn) found.push(node.localName);
    }
    for (const node of box.querySelectorAll('*')) {
      for (const attr of node.attributes) {
        const value = attr.value.replace(/[\\s\\u0000-\\u001f]/g, '').toLowerCase();
        if (attr.name.startsWith('on')) found.push(`${node.localName}[${attr.name}]`);
        const scheme = /^(javascript|vbscript|data):/.test(value);
        if (scheme) found.push(`${node.localName}[${attr.name}]`);
        if (attr.name === 'style' && outsideKatex(node)) found.push(`${node.localName}[style]`);
      }
    }
    for (const link of box.querySelectorAll('a')) {
      const safe = link.rel === 'noopener noreferrer' && link.target === '_blank'
        && /^(https?:|mailto:)/.test(link.getAttribute('href') ?? '');
      if (!safe) found.push(`link ${link.outerHTML}`);
    }
  }
  return { found, pwned: window.__pwned ?? null, violations: window.__violations ?? [] };
}"""
# Flags a payload would set if it ran, and CSP violations (which would mean a payload
# reached the page and only the policy stopped it).
TRAPS = """() => {
  window.__pwned = null;
  window.__violations = [];
  window.alert = window.confirm = window.prompt = (m) => { window.__pwned = `dialog ${m}`; };
  document.addEventListener('securitypolicyviolation',
    (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));
}"""

P = "window.__pwned='{}'"
XSS_CORPUS = [
    f"<script>{P.format(1)}</script>",
    f'<img src=x onerror="{P.format(2)}">',
    f'<svg onload="{P.format(3)}"><circle r=5></svg>',
    f"<svg><script>{P.format(4)}</script></svg>",
    f'<iframe src="javascript:{P.format(5)}"></iframe>',
    f'<iframe srcdoc="<script>parent.{P.format(6)}</script>"></iframe>',
    f'<a href="javascript:{P.format(7)}">html link</a>',
    f"[md link](javascript:{P.format(8)})",
    f"[case](JaVaScRiPt:{P.format(9)})",
    f"[entity](&#106;avascript:{P.format(10)})",
    f"[tab](java&#x09;script:{P.format(11)})",
    f"[spaces](<  javascript:{P.format(12)}>)",
    "[vb](vbscript:msgbox(13))",
    "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxNCk8L3NjcmlwdD4=)",
    f"![image](javascript:{P.format(15)})",
    "![svg](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMTYpPjwvc3ZnPg==)",
    "![pixel](https://tracker.example/p.gif)",
    f"<javascript:{P.format(17)}>",
    f'[title](https://example.com "x\\" onmouseover=\\"{P.format(18)})',
    f'<a href="https://example.com" onclick="{P.format(19)}">click</a>',
    f'<details open ontoggle="{P.format(20)}"><summary>x</summary></details>',
    f"<math><mtext><table><mglyph><style><img src=x onerror={P.format(21)}>",
    "<style>body { display: none }</style>",
    '<form action="https://evil.example"><input type=submit></form>',
    f'<object data="javascript:{P.format(22)}"></object><embed src="javascript:0">',
    '<base href="https://evil.example/">',
    '<meta http-equiv="refresh" content="0;url=https://evil.example">',
    f'```python" onmouseover="{P.format(23)}\nprint(1)\n```',
    f"```<img src=x onerror={P.format(24)}>\ncode\n```",
    f"`<img src=x onerror={P.format(25)}>`",
    f"| a | b |\n|---|---|\n| <script>{P.format(26)}</script> | <b onclick=x>c</b> |",
    f"$\\href{{javascript:{P.format(27)}}}{{click}}$",
    f"$\\url{{javascript:{P.format(28)}}}$",
    "$$\\htmlClass{x}{y} \\htmlStyle{color:red}{z} \\htmlId{i}{j} \\htmlData{a=b}{c}$$",
    "$\\includegraphics{https://tracker.example/p.png}$",
    f"$x$<img src=x onerror={P.format(29)}>",
    f"\\(\\text{{<img src=x onerror={P.format(30)}>}}\\)",
    f"$$\\begin{{array}}{{c}} <script>{P.format(31)}</script> \\end{{array}}$$",
    "$\\def\\a{\\a}\\a$",  # endless macro expansion: KaTeX's maxExpand stops it
    f"> quote <img src=x onerror={P.format(32)}>\n> - list <svg onload={P.format(33)}>",
    f"[ref]: javascript:{P.format(34)}\n\n[ref link][ref]",
    f"www.example.com/<script>{P.format(35)}</script>",
    f'https://example.com/"><img src=x onerror={P.format(36)}>',
    "<!-- comment --><![CDATA[x]]><?xml version='1.0'?>",
    "\u0000<scr\u0000ipt>window.__pwned='37'</script>",
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def page(browser, tmp_path_factory) -> AsyncIterator[WebPage]:
    """One page for the module: each test renders into a fresh element of it."""
    app = make_app(tmp_path_factory.mktemp("markdown"))
    async with live_server(app) as base, open_page(browser, f"{base}/") as web:
        await web.ready()
        await web.evaluate(TRAPS)
        yield web


@pytest_asyncio.fixture(loop_scope="module")
async def web(page: WebPage) -> WebPage:
    """The module's page, cleared of earlier tests' renders and flags."""
    await page.evaluate(
        "() => { document.querySelectorAll('.rendered').forEach((n) => n.remove());"
        " window.__pwned = null; window.__violations = []; }"
    )
    page.errors.clear()
    return page


async def render(web: WebPage, text: str) -> str:
    return await web.evaluate(RENDER, text)


async def query(web: WebPage, text: str, script: str) -> Any:
    """Render `text`, then evaluate `script` (a function of the rendered element)."""
    await render(web, text)
    return await web.evaluate(f"() => ({script})(document.body.lastElementChild)")


async def test_what_models_write_renders_as_markdown(web):
    text = (
        "# Title\n\nSome **bold**, *italic*, ~~struck~~ and `code`.\n\n"
        "| left | right |\n|:--|--:|\n| 1 | 2 |\n\n"
        "- one\n  - nested\n- two\n\n1. first\n2. second\n\n---\n\n"
        "> quoted\n\nA [link](https://example.com) and https://inferd.dev bare.\n"
        "Next line after a single newline.\n\nmain.py is a file, not a link."
    )
    found = await query(
        web,
        text,
        """(box) => ({
      h1: box.querySelector('h1')?.innerText,
      strong: box.querySelector('strong')?.innerText,
      em: box.querySelector('em')?.innerText,
      struck: box.querySelector('s, del')?.innerText,
      code: box.querySelector(':not(pre) > code')?.innerText,
      table: [...box.querySelectorAll('.table-wrap table th')].map((th) => th.className),
      nested: box.querySelectorAll('ul ul li').length,
      ordered: box.querySelectorAll('ol li').length,
      rule: box.querySelectorAll('hr').length,
      quote: box.querySelector('blockquote')?.innerText.trim(),
      links: [...box.querySelectorAll('a')].map((a) => [a.getAttribute('href'), a.rel, a.target]),
      breaks: box.querySelectorAll('p br').length,
    })""",
    )
    assert found == {
        "h1": "Title",
        "strong": "bold",
        "em": "italic",
        "struck": "struck",
        "code": "code",
        "table": ["align-left", "align-right"],
        "nested": 1,
        "ordered": 2,
        "rule": 1,
        "quote": "quoted",
        "links": [
            ["https://example.com", "noopener noreferrer", "_blank"],
            ["https://inferd.dev", "noopener noreferrer", "_blank"],
        ],
        "breaks": 1,
    }


async def test_code_is_highlighted_with_a_header_and_math_is_typeset(web):
    text = (
        "```python\ndef f(x):\n    return x  # note\n```\n\n```\nplain <b>text</b>\n```\n\n"
        "Inline $e^{i\\pi} + 1 = 0$ and \\(a^2\\), display:\n\n$$\\int_0^1 x\\,dx$$\n\n"
        "\\[\\sqrt{2}\\]\n\nPrices: $5 and $10."
    )
    found = await query(
        web,
        text,
        """(box) => ({
      langs: [...box.querySelectorAll('.code-lang')].map((n) => n.innerText),
      keywords: [...box.querySelectorAll('.code .hljs-keyword')].map((n) => n.innerText),
      comment: box.querySelector('.hljs-comment')?.innerText,
      plain: box.querySelectorAll('.code')[1].querySelector('code').innerText,
      plainSpans: box.querySelectorAll('.code')[1].querySelectorAll('code span').length,
      inline: box.querySelectorAll('p .katex:not(.katex-display .katex)').length,
      display: box.querySelectorAll('.katex-display').length,
      prices: [...box.querySelectorAll('p')].at(-1).innerText,
    })""",
    )
    assert found == {
        "langs": ["python", "text"],
        "keywords": ["def", "return"],
        "comment": "# note",
        "plain": "plain <b>text</b>\n",
        "plainSpans": 0,
        "inline": 2,
        "display": 2,
        "prices": "Prices: $5 and $10.",
    }


async def test_bad_tex_shows_as_an_error_not_an_exception(web):
    found = await query(
        web,
        "$\\frac{1}{$ and $\\unknowncommand$",
        """(box) => ({
      errors: [...box.querySelectorAll('.math-error')].map((n) => n.title.slice(0, 15)),
      text: box.innerText })""",
    )
    assert found["errors"] == ["KaTeX parse err"] * 2
    assert "\\unknowncommand" in found["text"]
    assert web.unexpected_errors() == []


SAMPLES = [
    "# Plan\n\n1. Parse\n2. Render\n\n```js\nconst x = 1;\nconsole.log(x);\n```\n\nDone.",
    "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n\nThen $x^2$ and\n\n$$y = mx + b$$\n\n> end",
    "Text [ref][r] here.\n\n[r]: https://example.com\n\n- a\n\n- b\n\n  more b\n",
]


@pytest.mark.parametrize("text", SAMPLES)
async def test_a_streamed_answer_renders_exactly_as_the_finished_one(web, text):
    """MarkdownView re-renders only the blocks that changed; fed the text one character
    at a time, it must end where a fresh render of the whole text does."""
    same = await web.evaluate(
        """async (text) => {
          const { MarkdownView, renderMarkdown } = await import('/static/app.js');
          const streamed = document.createElement('div');
          const view = new MarkdownView(streamed);
          for (let end = 1; end <= text.length; end++) view.update(text.slice(0, end));
          const atOnce = document.createElement('div');
          atOnce.append(renderMarkdown(text));
          view.update(text, { final: true });
          return [streamed.innerHTML === atOnce.innerHTML, view.blocks.length];
        }""",
        text,
    )
    assert same[0] is True
    assert same[1] > 1


@pytest.mark.parametrize("payload", XSS_CORPUS)
async def test_model_output_never_runs_script(web, payload):
    html = await render(web, payload)
    await web.page.wait_for_timeout(50)  # let any handler that got through fire
    audit = await web.evaluate(AUDIT)
    assert audit == {"found": [], "pwned": None, "violations": []}, html
    assert web.unexpected_errors() == []


async def test_the_whole_corpus_streamed_through_the_page_runs_nothing(browser, tmp_path):
    """The real path: SSE token by token, every partial text rendered on the way."""
    reply = "\n\n".join(XSS_CORPUS)
    app = make_app(tmp_path, FakeBackend(reply=reply))
    async with live_server(app) as base, open_page(browser, f"{base}/") as web:
        await web.ready()
        await web.evaluate(TRAPS)
        await web.send("Show me")
        await web.answer(timeout=30_000)
        await web.page.wait_for_timeout(100)
        audit = await web.evaluate(AUDIT)
        assert audit == {"found": [], "pwned": None, "violations": []}
        text = await web.page.inner_text(".msg.assistant .msg-content")
        assert "<script>" in text  # shown as text, not run
        assert web.unexpected_errors() == []
