"""Markdown to one self-contained HTML page, through markdown-it-py.

Three small additions to CommonMark + tables, each a markdown-it rule: headings get ``id``
anchors and the level-1 heading is followed by a table of contents of the level-2 ones; a
``<!-- table: NAME -->`` line gives the next table the class NAME; the report's own figures are
embedded as base64 ``data:`` URIs, so the page needs no other file.

Only the report's figures are ever read: an image whose path, resolved, is a regular ``.png`` file
directly inside ``<report>/figures/`` and starts with the PNG signature. Any other image (an
absolute path, ``../``, a symlink out of the folder, a device, a directory, a URL) is shown as its
alt text: nothing is read from disk because of a string in run data (docs/security.md).
"""

from __future__ import annotations

import base64
import re
import stat
from html import escape
from pathlib import Path
from typing import Any

from jinja2 import Environment
from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markupsafe import Markup

FIGURE_DIR = "figures"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_FIGURE_BYTES = 20 * 1024 * 1024
_FIGURE_SOURCE = re.compile(r"figures/[A-Za-z0-9_.-]+\.png")
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


def figure_bytes(base_dir: Path, source: str) -> bytes | None:
    """The PNG ``source`` names if it is one of the report's figures (a regular ``.png`` file
    directly inside ``base_dir/figures``, symlinks resolved, PNG signature checked), else None."""
    if not _FIGURE_SOURCE.fullmatch(source):
        return None
    folder = (base_dir / FIGURE_DIR).resolve()
    path = (base_dir / source).resolve()
    if path.parent != folder:
        return None
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FIGURE_BYTES:
            return None
        with path.open("rb") as handle:
            data = handle.read(MAX_FIGURE_BYTES + 1)
    except OSError:
        return None
    return data if data.startswith(PNG_SIGNATURE) and len(data) <= MAX_FIGURE_BYTES else None


def converter(base_dir: Path) -> MarkdownIt:
    """CommonMark with tables, raw HTML off (every ``<`` of the text is escaped)."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    md.core.ruler.push("table_classes", _table_classes)
    md.core.ruler.push("heading_anchors", _heading_anchors)

    def image(renderer, tokens, idx, options, env) -> str:
        token = tokens[idx]
        alt = renderer.renderInlineAsText(token.children or [], options, env)
        data = figure_bytes(base_dir, str(token.attrGet("src") or ""))
        if data is None:
            return f'<span class="no-figure">{escape(alt)}</span>'
        encoded = base64.b64encode(data).decode("ascii")
        return f'<img alt="{escape(alt)}" src="data:image/png;base64,{encoded}">'

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
    """The whole page: ``page.html.j2`` around the converted ``markdown`` (HTML-escaped values)."""
    env: dict[str, Any] = {}
    body = converter(base_dir).render(markdown, env)
    page = templates.overlay(autoescape=True, finalize=None)
    return page.get_template("page.html.j2").render(title=title, body=Markup(body))
