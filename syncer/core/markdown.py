"""Values into Markdown: the one place that decides how text from upstream, the records and
the catalog is written into a page, the plan or the run summary.

A value is inline text (``text``), a code span (``code``) or a link target (``target``); each
gives a ``Markdown`` string, which ``text`` lets through unchanged. The report templates'
environment has ``text`` as its ``finalize``, so every value a template writes is escaped
unless it is already ``Markdown``; the plan and the run summary pass each cell through
``text`` the same way. The renderer aimed at is GitHub's: cmark-gfm with the table,
strikethrough, autolink and tagfilter extensions, then GitHub's filters, of which the mention
filter links ``@name`` in any text node outside code and links.

What ``text`` does, and why. Each character that could start Markdown gets a backslash where
it could, and only there, so that messages stay readable in a terminal (``syncer plan``):

- whitespace runs, newlines included, become one space: a value stays in its cell or item;
- a backslash, a backtick, ``*``, ``~``, ``[``, ``]``, ``|``, ``<``, ``>`` and ``$`` always:
  no escape, code span, emphasis, strikethrough (a single ``~`` pairs with the next:
  ``1~deb12u1 … 2~deb12u2``), link, image, table cell boundary, raw HTML, autolink, block
  quote or math can start inside a value, and the source shows no tag either. ``(``, ``)``
  and ``!`` mean something only next to ``[`` or ``]`` (links, images): they are left as
  they are;
- ``_`` unless between two letters or digits, where it cannot open or close emphasis
  (``HUB_TOKEN`` stays as it is); ``&`` before ``#`` or a letter or digit, where it would
  start an entity (``&#64;`` is an ``@``);
- a heading's ``#``, a list marker (``-``, ``+``, ``1.``, ``1)``) or a thematic break
  (``---``) at the start of a value, as a value may begin a line;
- ``://`` and ``www.`` get a backslash before ``:`` and ``.``: the autolink extension links
  bare URLs, and an escaped character ends the text it scans;
- ``@`` before a letter or digit is followed by U+2060 WORD JOINER (invisible), so that
  neither the mention filter (it wants a name character right after ``@``) nor the email
  autolinker sees a name. An entity (``&#64;``) or a backslash would not do: both are
  decoded before the filter runs, and it reads the text, not the source.
"""

from __future__ import annotations

import re
from urllib.parse import quote

WORD_JOINER = "\u2060"

_ESCAPED = re.compile(r"[\\`*~\[\]|<>$]|(?<![^\W_])_|_(?![^\W_])|&(?=[#A-Za-z0-9])")
_BLOCK_START = re.compile(r"^(?:#{1,6}(?=\s|$)|[+-](?=\s|$|-)|\d{1,9}(?=[.)](?:\s|$)))")
_URL = re.compile(r"(?i)(www)\.|:(?=//)")
_MENTION = re.compile(r"@(?=[A-Za-z0-9])")


class Markdown(str):
    """Text that is already Markdown: written as it is, never escaped again."""


def text(value: object) -> Markdown:
    """``value`` as inline Markdown text that renders as exactly its characters; a value that
    is already ``Markdown`` is returned as it is."""
    if isinstance(value, Markdown):
        return value
    escaped = _ESCAPED.sub(r"\\\g<0>", " ".join(str(value).split()))
    escaped = _BLOCK_START.sub(_escape_block_start, escaped)
    escaped = _URL.sub(lambda m: m.group(1) + "\\." if m.group(1) else "\\:", escaped)
    return Markdown(_MENTION.sub("@" + WORD_JOINER, escaped))


def _escape_block_start(match: re.Match[str]) -> str:
    marker = match.group(0)
    # An ordered list's number is followed by its `.` or `)`; the backslash goes before that.
    return marker + "\\" if marker.isdigit() else "\\" + marker


def code(value: object) -> Markdown:
    """``value`` as a code span (digests, tags, references), whose delimiters are longer than
    any run of backticks inside it. A value holding ``|`` is written as text instead: inside a
    table, a code span needs ``\\|``, which outside a table shows the backslash."""
    content = " ".join(str(value).split())
    if not content:
        return Markdown("")
    if "|" in content:
        return text(content)
    fence = "`" * (max((len(run) for run in re.findall(r"`+", content)), default=0) + 1)
    pad = " " if content.startswith("`") or content.endswith("`") else ""
    return Markdown(f"{fence}{pad}{content}{pad}{fence}")


_WEB_URL = re.compile(r"https?://[^\s\x00-\x1f\x7f]{1,2000}")


def is_web_url(url: str) -> bool:
    """An absolute http(s) URL without whitespace or control characters: the only kind of
    link a value from outside (Trivy's advisory URL, a record) may become."""
    return bool(_WEB_URL.fullmatch(url))


def link(label: object, url: str) -> Markdown:
    """``label`` as text linked to ``url``; only the text when ``url`` is not a web URL."""
    return Markdown(f"[{text(label)}]({target(url)})") if is_web_url(url) else text(label)


def target(url: str) -> Markdown:
    """``url`` as a link's destination: percent-encoded where a character (space, ``(``, ``)``,
    ``<``, ``>``, a backslash) would end it early or be read as Markdown."""
    return Markdown(quote(url, safe="/:?#[]@!$&'*+,;=%-._~"))
