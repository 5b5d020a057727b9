"""Markdown to one self-contained HTML page, through markdown-it-py.

Three small additions to CommonMark + tables, each a markdown-it rule: headings get ``id``
anchors and the level-1 heading is followed by a table of contents of the level-2 ones; a
``<!-- table: NAME -->`` line gives the next table the class NAME; images are embedded as base64
``data:`` URIs read from the report directory, so the page needs no other file.
"""

from __future__ import annotations

import base64
import re
from html import escape
from pathlib import Path
from typing import Any

from jinja2 import Environment
from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore

_TABLE_MARKER = re.compile(r"^<!-- table: ([\w-]+) -->$")


def anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _table_classes(state: StateCore) -> None:
    tokens, kept, css, i = state.tokens, [], None, 0
    while i < len(tokens):
        token = tokens[i]
        marker = (
            _TABLE_MARKER.match(tokens[i + 1].content.strip())
            if token.type == "paragraph_open" and i + 2 < len(tokens) and tokens[i + 1].type == "inline"
            else None
        )
        if marker:  # the marker's paragraph (open, inline, close) is dropped
            css, i = marker.group(1), i + 3
            continue
        if token.type == "table_open" and css is not None:
            token.attrSet("class", css)
            css = None
        kept.append(token)
        i += 1
    state.tokens = kept


def _heading_anchors(state: StateCore) -> None:
    toc = []
    for i, token in enumerate(state.tokens):
        if token.type == "heading_open":
            text = state.tokens[i + 1].content
            token.attrSet("id", anchor(text))
            if token.tag == "h2":
                toc.append((anchor(text), text))
    state.env["toc"] = toc


def converter(base_dir: Path) -> MarkdownIt:
    """CommonMark with tables, raw HTML off (every ``<`` of the text is escaped)."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    md.core.ruler.push("table_classes", _table_classes)
    md.core.ruler.push("heading_anchors", _heading_anchors)

    def image(renderer, tokens, idx, options, env) -> str:
        token = tokens[idx]
        source = base_dir / str(token.attrGet("src"))
        data = base64.b64encode(source.read_bytes()).decode("ascii")
        alt = renderer.renderInlineAsText(token.children or [], options, env)
        return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'

    def heading_close(renderer, tokens, idx, options, env) -> str:
        html = renderer.renderToken(tokens, idx, options, env)
        if tokens[idx].tag == "h1" and env.get("toc"):
            items = "".join(
                f'<li><a href="#{target}">{md.renderInline(text)}</a></li>' for target, text in env["toc"]
            )
            html += f"<nav><ul>{items}</ul></nav>\n"
        return html

    md.add_render_rule("image", image)
    md.add_render_rule("heading_close", heading_close)
    return md


def inline_html(text: str) -> str:
    """Escape ``text`` and turn its inline Markdown (`code`, **bold**) into tags."""
    return MarkdownIt("commonmark", {"html": False}).renderInline(text)


def render_page(markdown: str, title: str, base_dir: Path, templates: Environment) -> str:
    """The whole page: ``page.html.j2`` around the converted ``markdown``."""
    env: dict[str, Any] = {}
    body = converter(base_dir).render(markdown, env)
    return templates.get_template("page.html.j2").render(title=title, body=body)
