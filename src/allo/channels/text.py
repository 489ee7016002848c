"""Customer text made safe to store and to show."""

from __future__ import annotations

import html as html_lib
import re

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
    r"d'origine)\s*-{2,}\s*$|(?:From|De)\s?: .+$|>)",
    re.IGNORECASE | re.MULTILINE,
)


def split_quote(value: str) -> tuple[str, str]:
    """An email's own words and the quoted conversation below them (shown collapsed). A message
    that is all quote keeps it as its words."""
    found = QUOTE_START.search(value)
    if found is None or not value[: found.start()].strip():
        return value, ""
    return value[: found.start()].rstrip(), value[found.start() :]
