"""GitHub's Markdown rendered by Debian's ``cmark-gfm`` (the C library GitHub's renderer is
built on) with GitHub's extensions, and the HTML read back as what a reader sees.

``--unsafe`` passes raw HTML and every link through, as GitHub does before its sanitizer:
a test then sees any element a value injects, instead of cmark-gfm's "raw HTML omitted".
GitHub's mention filter is not part of cmark-gfm; ``mentions`` finds what it would link.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser

from syncer.core.markdown import WORD_JOINER

EXTENSIONS = ("table", "strikethrough", "autolink", "tagfilter")
BLOCKS = {"p", "li", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "summary", "blockquote", "pre"}
# What GitHub's mention filter links, in a text node outside code and links: `@name` or
# `@org/team` after the start or a character that is not a word character.
_MENTION = re.compile(r"(?:^|\W)@[A-Za-z0-9]", re.MULTILINE)


def render(markdown: str) -> str:
    binary = shutil.which("cmark-gfm")
    if binary is None:
        raise RuntimeError("cmark-gfm is not installed: run scripts/setup (Debian package cmark-gfm)")
    argv = [binary, "--unsafe", *(arg for ext in EXTENSIONS for arg in ("-e", ext))]
    return subprocess.run(argv, input=markdown, capture_output=True, text=True, check=True, timeout=30).stdout


@dataclass
class Page:
    """A rendered page: its elements in document order (tag and attributes, the text left
    out), the visible text of each block (paragraph, item, cell, heading), and the text that
    GitHub's mention filter reads (outside code and links)."""

    skeleton: list[tuple[str, tuple[tuple[str, str | None], ...]]] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    filtered_text: list[str] = field(default_factory=list)

    def tags(self, name: str) -> list[dict[str, str | None]]:
        return [dict(attrs) for tag, attrs in self.skeleton if tag == name]

    def mentions(self) -> list[str]:
        return [t for t in self.filtered_text if _MENTION.search(t)]


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._open: list[tuple[str, int]] = []  # blocks open: (tag, index in page.blocks)
        self._ignored = 0  # depth inside code or a link

    def handle_starttag(self, tag, attrs):
        self.page.skeleton.append((tag, tuple(attrs)))
        if tag in BLOCKS:
            self._open.append((tag, len(self.page.blocks)))
            self.page.blocks.append("")
        if tag in ("code", "a"):
            self._ignored += 1

    def handle_endtag(self, tag):
        self.page.skeleton.append(("/" + tag, ()))
        if tag in BLOCKS and self._open and self._open[-1][0] == tag:
            self._open.pop()
        if tag in ("code", "a"):
            self._ignored -= 1

    def handle_comment(self, data):
        self.page.skeleton.append(("!--", ()))

    def handle_data(self, data):
        if self._open:
            self.page.blocks[self._open[-1][1]] += data
        if not self._ignored:
            self.page.filtered_text.append(data)


def read(markdown: str) -> Page:
    reader = _Reader()
    reader.feed(render(markdown))
    reader.close()
    page = reader.page
    # What a reader sees: the word joiner is invisible; whitespace runs read as one space.
    page.blocks = [visible(b) for b in page.blocks]
    return page


def visible(value: str) -> str:
    return " ".join(value.replace(WORD_JOINER, "").split())
