"""HTML to plain text for ingest: the stdlib ``html.parser`` with scripts, styles and the head
dropped, the ``<title>`` kept, blocks on their own lines and headings marked Markdown-style.

Its own module so that :mod:`._sources` (walking and reading sources) stays about sources.
"""

from __future__ import annotations

from html.parser import HTMLParser

__all__ = ["html_to_text"]

_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_SKIP_TAGS = frozenset({"script", "style", "noscript", "template", "svg", "head", "iframe"})
_BLOCK_TAGS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "dd",
        "details",
        "dialog",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "summary",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "ul",
    ]
)


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self._skip = 0
        self._in_title = False
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in _SKIP_TAGS:
            self._skip += 1
        elif tag in _HEADINGS:
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")  # Markdown-style: a heading path
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n" if tag in ("p", "pre") else "\n")
            if tag == "pre":
                self._pre += 1
            if tag == "li":
                self.parts.append("- ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("br", "hr"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")
            if tag == "pre":
                self._pre = max(0, self._pre - 1)

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._skip:
            if self._pre:
                self.parts.append(data)
            elif data.strip():
                self.parts.append(_spaced(data))
            elif data:
                self.parts.append(" ")


def _spaced(data: str) -> str:
    """Collapse whitespace but keep a single space at the ends (inline elements join words)."""
    core = " ".join(data.split())
    return (" " if data[:1].isspace() else "") + core + (" " if data[-1:].isspace() else "")


def html_to_text(html: str) -> tuple[str | None, str]:
    """(title, text) of an HTML document: scripts, styles and the head dropped, blocks on their
    own lines, entities decoded, runs of blank lines collapsed."""
    parser = _TextParser()
    parser.feed(html)
    parser.close()
    lines = [line.strip() for line in "".join(parser.parts).splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    title = " ".join("".join(parser.title).split()) or None
    return title, "\n".join(out).strip()
