"""Customer text made safe to store and to show."""

from __future__ import annotations

import html as html_lib
import re
from typing import Any

import nh3

REPLACEMENT_CHARACTER = "\ufffd"
# Block elements separate words even where the HTML has no space between them.
BLOCK_TAG = re.compile(
    r"</?(?:p|div|br|hr|li|ul|ol|tr|td|th|table|h[1-6]|blockquote|pre|section|article)\b[^>]*>",
    re.IGNORECASE,
)


def clean_text(value: str) -> str:
    """Replace NUL, which PostgreSQL text cannot hold, with U+FFFD; everything else stays intact.

    The raw event keeps the exact bytes, so nothing is lost by this.
    """
    return value.replace("\x00", REPLACEMENT_CHARACTER)


def sanitise_html(value: str) -> str:
    """HTML reduced to inert markup: no scripts, handlers, styles or dangerous URL schemes."""
    return nh3.clean(clean_text(value), url_schemes={"http", "https", "mailto", "cid"})


def html_to_text(value: str) -> str:
    """The visible text of an HTML body, for search and for channels without markup."""
    spaced = BLOCK_TAG.sub(" ", clean_text(value))
    stripped = nh3.clean(spaced, tags=set(), clean_content_tags={"script", "style"})
    return " ".join(html_lib.unescape(stripped).split())


# Where an email reply starts quoting: "On Mon, 3 Nov 2026, Ana <a@b> wrote:", "Le lun. 3 nov.
# 2026 à 10:02, Ana a écrit :", an Outlook "-----Original Message-----" / "De :" header, or the
# first line of a block of "> " lines.
QUOTE_START = re.compile(
    r"^(?:On .{0,300}wrote:\s*$|Le .{0,300}a écrit\s?:\s*$|-{2,}\s*(?:Original Message|Message "
    r"d'origine)\s*-{2,}\s*$|(?:From|De)\s?: .+$|-- ?$|>)",
    re.IGNORECASE | re.MULTILINE,
)


def split_quote(value: str) -> tuple[str, str]:
    """An email's own words and what it quotes (the earlier conversation, a signature), shown
    collapsed. Answers above the quote and below it (bottom-posting) are both found; a message
    that is all quote keeps it as its words."""
    found = QUOTE_START.search(value)
    if found is None:
        return value, ""
    if not value[: found.start()].strip():
        return _bottom_posted(value)
    start = found.start()
    if value.startswith(">", start):
        start = _attribution_start(value, start)
    own = value[:start].strip()
    return (own, value[start:]) if own else (value, "")


def _bottom_posted(value: str) -> tuple[str, str]:
    """A reply written below the quote it answers: the attribution and "> " lines come first."""
    lines = value.split("\n")
    end = 0
    while end < len(lines) and (
        lines[end].startswith(">") or not lines[end].strip() or QUOTE_START.match(lines[end])
    ):
        end += 1
    own = "\n".join(lines[end:]).strip()
    return (own, "\n".join(lines[:end])) if own and end else (value, "")


def _attribution_start(value: str, quote: int) -> int:
    """Where the lines introducing a "> " block begin, in any language: lines just above it
    that end with ":" or name an address ("… <bob@example.com> написал:")."""
    lines = value[:quote].rstrip("\n").split("\n")
    kept = len(lines)
    while kept > 1:
        line = lines[kept - 1].strip()
        if not line or not (line.endswith(":") or "@" in line or line.endswith("<")):
            break
        kept -= 1
    if kept == len(lines):
        return quote
    return len("\n".join(lines[:kept])) + 1


def clean_json(value: Any) -> Any:
    """Raw payload kept as JSON (attachments' metadata): every string without NUL, which
    PostgreSQL's jsonb cannot hold."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_json(v) for v in value]
    return value
